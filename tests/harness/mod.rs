//! The test harness: one for every test binary (each area's `main.rs` reaches it with
//! `#[path = "../harness/mod.rs"] mod harness;`).
//!
//! - [`servers`]: every server a test talks to. The token server (`token.rs`: the public
//!   test kit's `tokengate::testing::TestServer`, with rotation, reuse detection, device and
//!   revocation endpoints and a journal, plus a JSON refresh endpoint of tokengate's own),
//!   the scripted `Api` (`api.rs`), a raw TCP server for faults httpmock cannot make and a
//!   recording front for the kit (`raw.rs`), the fault-injecting server of the stress test
//!   (`faults.rs`), an HTTPS + HTTP server (`tls.rs`, certificates in `servers/tls/`), and a
//!   `redis-server` launcher with a RESP client (`redis.rs`).
//! - [`fixtures`]: what tests build: `TempDir`, tokens and JWTs, stores that fail on purpose
//!   (`FailingWrites`), stores of a test's own that forward to a real one (`Forwarding`), refreshers, sleepers and clocks, `ClientSlot`, addresses nobody
//!   answers on.
//! - [`observe`]: what tests watch with: the event `Recorder` and its predicates, bounded
//!   waits (`wait_until`, `must_not_block`, all under `HANG_GUARD`), `Seen` (a request as a
//!   server received it), `release_together`, `test_name!` for child processes.
//!
//! All the tests of an area run in one process, in parallel. So: nothing here sets an
//! environment variable or installs a logger (`tests/logging.rs`, which does, is a binary of
//! its own); every `TempDir` is unique in the process; httpmock keeps at most 25 servers
//! alive per process (a 26th `MockServer::start` waits for one to be dropped), and no test
//! holds more than two at once (the kit's servers have no such limit).
#![allow(dead_code)] // each test binary uses a different subset

pub mod fixtures;
pub mod observe;
pub mod servers;
