//! The end of a program and of a session: tools that exit during a refresh, `close`,
//! hung refreshers and the store's lock, and `logout`.
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod close_bounds;
mod closing_log;
mod exit;
mod logout;
