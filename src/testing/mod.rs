//! A runtime-free OAuth2 authorization server and protected API on loopback, for tests of
//! programs that use tokengate (feature `testing`, off by default).
//!
//! [`TestServer::start`] binds 127.0.0.1 on a free port in well under a millisecond and
//! serves, on plain `std` threads (no async runtime, nothing but httparse and ring, which
//! ureq already brings):
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` (and `/.well-known/oauth-authorization-server`) | metadata (RFC 8414): [`AuthServer::discover`](crate::AuthServer::discover) works |
//! | `POST /oauth/token` | the `refresh_token`, `client_credentials`, `device_code` and `authorization_code` grants |
//! | `POST /oauth/device` | device authorization (RFC 8628) |
//! | `POST /oauth/revoke` | revocation (RFC 7009) |
//! | `GET /oauth/authorize` | authorization (RFC 6749 §4.1) with PKCE S256 required; approves at once and redirects |
//! | `GET /testing/counters` | the [`Counters`] as JSON, for a test's child processes |
//! | `/api/…` | a protected API (RFC 6750): 200 to a live access token (`/api/status/NNN` answers NNN instead), 401 with `WWW-Authenticate: Bearer error="invalid_token"` to a dead or unknown one (a bare `Bearer realm=…` challenge to a request without one), 403 `insufficient_scope` where [`require_scope`](TestServerBuilder::require_scope) says |
//!
//! # The rules it keeps
//! - **Clients**: [`CLIENT_ID`]/[`CLIENT_SECRET`] (confidential: HTTP Basic or the form,
//!   `client_secret_basic`/`client_secret_post`) and [`PUBLIC_CLIENT_ID`] (public), unless
//!   [`TestServerBuilder::client`] names others. A wrong secret is 401 `invalid_client`.
//! - **Refresh tokens rotate** on every refresh; presenting a rotated one is taken as theft
//!   (RFC 9700 §4.14.2): that whole login is revoked (its refresh token and every access
//!   token it issued) and the call counted in [`reuse_detected`](TestServer::reuse_detected).
//!   A refresh token works only for the client it was issued to.
//! - **Tokens are named by generation**: the N-th issuance is `at-N` (and `rt-N`), counting
//!   from 1 across the server, so a test can say which one a client holds. `expires_in` is
//!   the configured lifetime ([`access_token_lifetime`](TestServerBuilder::access_token_lifetime),
//!   an hour by default) in whole seconds, as servers announce it (a lifetime with a fraction
//!   of a second, for fast tests, is announced as a fraction).
//! - **Scopes**: a login's scope is granted as asked; a refresh may ask for a narrower one (its
//!   access token then has only that; the login keeps its own), a wider one is
//!   `invalid_scope`.
//! - **Device logins** stay `authorization_pending` until the test answers for the user:
//!   [`approve`](TestServer::approve), [`deny`](TestServer::deny) or
//!   [`expire`](TestServer::expire), by user code (there is no page at the
//!   `verification_uri`: those calls are the user). User codes are counted like tokens, so
//!   a server's first one is the same in every run. A device code is used once, and expires
//!   with its lifetime whatever the user did.
//! - **No ID tokens**: the `openid` scope is granted like any other, but no `id_token` is
//!   issued (a "logged in as …" display cannot be tested against the kit).
//! - **Browser logins**: the authorization request needs a known client, a loopback `http`
//!   or an `https` redirect URI and a PKCE S256 challenge (the verifier 43 to 128 characters,
//!   RFC 7636 §4.1); the code is bound to client,
//!   redirect URI and challenge, works once, and a second exchange revokes what the first
//!   issued (RFC 6749 §4.1.2). [`TestServer::open_in_browser`] is the whole browser step in
//!   one call.
//! - **Revocation** of a refresh token (current or rotated) ends its login; of an access
//!   token, itself; an unknown token is answered 200 too (RFC 7009 §2.2); another client's
//!   token is refused.
//!
//! # Faults, per call
//! [`fault_next_token_calls`](TestServer::fault_next_token_calls) (and the revocation and API
//! twins) queue a [`Fault`] for the next N calls: 503 or 429 with `Retry-After`, 500,
//! `invalid_grant`, `slow_down`, `authorization_pending`, `expired_token`, an OAuth error at
//! HTTP 200, a malformed body, a delay before or after the grant is applied, a dropped
//! connection before or after it (a rotation the client never hears about).
//! [`revoke_access_tokens`](TestServer::revoke_access_tokens) makes the API answer 401 to the
//! current access tokens (server-side revocation); [`TestServer::refresh`] rotates a refresh
//! token behind the client's back, as another process would.
//!
//! # A journal to assert on
//! Every call of the token, device authorization and revocation endpoints and of the API is
//! recorded when it arrives, in arrival order, and completed when it is handled
//! ([`token_calls`](TestServer::token_calls), [`api_calls`](TestServer::api_calls),
//! [`revocation_calls`](TestServer::revocation_calls),
//! [`device_authorizations`](TestServer::device_authorizations)): grant, client, the
//! generation of the refresh token presented, the outcome (recorded under the same lock that
//! applies the grant, so the counters and the tokens issued always agree). Counters say it
//! in one line ([`counters`](TestServer::counters) takes them all at once, also served as JSON
//! for child processes): [`refreshes`](TestServer::refreshes), [`reuse_detected`](TestServer::reuse_detected),
//! [`presented_twice`](TestServer::presented_twice), [`api_401s`](TestServer::api_401s), …
//! The journal, `Debug` and the log lines (target `tokengate::testing`, level debug) name
//! tokens by generation, never by value, and never show a client secret.
//!
//! # Example: 64 threads, one 401 storm, exactly one refresh
//! ```
//! use std::sync::Barrier;
//! use tokengate::testing::TestServer;
//! use tokengate::AuthClient;
//!
//! let server = TestServer::start();
//! let client = AuthClient::builder(server.api_url())
//!     .tokens(server.login())
//!     .refresher(server.auth_server().refresh_grant())
//!     .build()?;
//! server.revoke_access_tokens(); // the server ends the access token early
//!
//! let barrier = Barrier::new(64);
//! std::thread::scope(|s| {
//!     for _ in 0..64 {
//!         s.spawn(|| {
//!             barrier.wait();
//!             let resp = client.get("items").call().unwrap();
//!             assert_eq!(resp.status(), 200);
//!         });
//!     }
//! });
//! assert_eq!(server.refreshes(), 1);
//! assert_eq!(server.reuse_detected(), 0);
//! assert_eq!(server.presented_twice(), 0);
//! # Ok::<(), tokengate::Error>(())
//! ```
//!
//! # Stopping
//! Dropping the [`TestServer`] stops it: its threads are joined (a scripted delay is cut
//! short) and its port closed before `drop` returns. (Should the process have no file
//! descriptor free for a second to wake its accept thread, that one thread is left to end at
//! the server's next connection.) Servers are independent: a test binary
//! may run many side by side (BENCHMARKS.md measures 1,000 in one process).

mod clients;
mod endpoints;
mod error;
mod faults;
mod journal;
mod rules;
mod server;
mod shared;

pub use clients::{TestClient, CLIENT_ID, CLIENT_SECRET, PUBLIC_CLIENT_ID};
pub use error::TestServerError;
pub use faults::Fault;
pub use journal::{
    ApiCall, ClientAuthUsed, Counters, DeviceAuthorizationCall, Grant, Outcome, RevocationCall,
    TokenCall,
};
pub use server::{TestServer, TestServerBuilder};
