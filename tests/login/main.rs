//! Logging in: discovery (RFC 8414, OpenID Connect), the device authorization grant
//! (RFC 8628), the browser login (authorization code + PKCE, RFC 6749 §4.1, RFC 7636,
//! RFC 8252) and the interactive login that picks one.
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod browser;
mod browser_listener;
mod browser_paste;
mod device_flow;
mod device_wait;
mod discovery;
mod interactive;
