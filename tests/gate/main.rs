//! The refresh gate under threads: one refresh per expiry however many threads see it, shared
//! failures and panics, waiters that give up, clients called back from their own refresh,
//! and 64 threads against a server injecting faults.
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod gate;
mod reentrant;
mod stress;
