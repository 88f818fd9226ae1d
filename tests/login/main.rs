//! Logging in: discovery (RFC 8414, OpenID Connect) and the device authorization grant
//! (RFC 8628).
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod browser;
mod device_flow;
mod discovery;
