//! The client: one request's life. The token attached to its origin only, reactive and
//! proactive refresh, requests that never wait for a background refresh, per-request
//! controls, retries, redirects and the combined limit, the token endpoint's failure
//! classes, the built-in refresh strategies, sessions that end, secrets that never print,
//! the transport, which proxy a request goes through, the ureq middleware, and hostile or
//! faulty servers.
//!
//! One module per behaviour file; the shared servers, fixtures and observers are in
//! `tests/harness/`.

#[path = "../harness/mod.rs"]
mod harness;

mod access_token;
mod attach;
mod contract;
mod faults;
mod hostile;
mod limits;
mod middleware;
mod no_refresh_token;
mod no_wait;
mod proactive;
mod proxy;
mod reactive;
mod redirect;
mod redirect_hygiene;
mod refresh_strategies;
mod request_controls;
mod retry;
mod secrets;
mod session;
mod token_endpoint_retry;
mod transport;
mod try_operator;
