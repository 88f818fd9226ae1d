//! # tokengate
//!
//! A bearer-token HTTP client for **blocking, threaded** Rust programs, built on [`ureq`].
//! It attaches the access token to every request to your API, refreshes it before it expires
//! or when the API answers 401, retries the request, and ends the session when the refresh
//! token itself is dead. However many threads see the expiry at once, the token endpoint is
//! called **exactly once**: servers that rotate refresh tokens never see one reused.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokengate::{AuthClient, AuthServer, Tokens};
//!
//! # fn main() -> Result<(), tokengate::Error> {
//! let client = AuthClient::builder("https://api.example.com/v1/")      // base URL; requests use relative paths
//!     .refresher(
//!         AuthServer::new("https://auth.example.com/oauth/token")
//!             .client_id("my-app")
//!             .client_secret("s3cret")                                 // client_secret_basic when a secret is set
//!             .refresh_grant(),                                        // RFC 6749 §6 refresh_token grant
//!     )
//!     .tokens(
//!         Tokens::new("access-token")
//!             .with_refresh_token("refresh-token")
//!             .with_expires_in(Duration::from_secs(3600)),
//!     )
//!     .on_session_expired(|| eprintln!("session expired: log in again"))
//!     .build()?;
//!
//! let worker = client.clone();                                         // cheap; shares tokens and the gate
//! std::thread::spawn(move || worker.get("products").query("page", "2").call());
//! let mut resp = client.post("orders").send_json(&serde_json::json!({"sku": 1}))?;  // http::Response<ureq::Body>
//! let text = resp.body_mut().read_to_string()?;                        // ureq's error converts too
//! client.set_tokens(Tokens::new("new-access").with_refresh_token("new-refresh"))?;  // after a fresh login
//! client.clear_tokens()?;                                              // logout
//! # let _ = text; Ok(()) }
//! ```
//!
//! ## How a request goes
//! 1. The current token is read (one uncontended read lock). If it is past its expiry, this
//!    thread refreshes it (or waits for the thread that does). If it is merely inside the
//!    refresh window (`refresh_skew` before expiry), a background refresh starts and the
//!    request goes out with the still-valid token.
//! 2. The request is sent with `Authorization: Bearer …` (only to the base URL's origin).
//! 3. On 401 the request's token generation is compared with the current one: if another
//!    thread already refreshed, the request simply retries with the newer token; otherwise it
//!    goes through the refresh gate (one thread refreshes, the rest wait) and retries once.
//!    A second 401 is [`Error::Unauthorized`], never a loop.
//! 4. Connect failures, 502/503/504/429, timeouts and resets are retried per the
//!    [`RetryPolicy`] (only idempotent methods once the request may have been sent), and
//!    redirects are followed by tokengate itself, with the token only ever sent to the base
//!    URL's origin. One call makes at most `2 + max_retries + max_redirects` requests.
//!
//! ## Threads
//! [`AuthClient`] is `Clone + Send + Sync + 'static`; clone it into every thread.
//! See [`AuthClient`]'s sections on concurrent calls, panics and deadlocks.
//!
//! ## Tokens on disk, shared by processes
//! [`FileStore`] keeps the tokens in a private JSON file (written atomically) for CLI tools
//! and daemons ([`FileStore::for_app`] picks the user's configuration directory). Processes sharing the file coordinate through a lock file, so several of them
//! running at once still make one refresh per expiry, and a login or logout in one is seen by
//! the others. A program that ends while a background refresh is on the wire keeps its
//! result: dropping the last [`AuthClient`] handle (or [`AuthClient::close`], before
//! `std::process::exit`) waits for it and saves it.
//!
//! ## Errors, faults
//! Every call returns [`Error`]; `?` also carries ureq's errors (reading a body) into it, and
//! `{:#}` prints it with every cause. [`faults`] lists each fault tokengate meets (the API,
//! the token endpoint, stores, Redis, logins, logout), what it does, and what the caller sees.
//!
//! ## Logging and secrets
//! tokengate logs through the [`log`](https://docs.rs/log) facade, with target `tokengate`
//! (e.g. `RUST_LOG=tokengate=debug` with `env_logger`):
//!
//! | level | what |
//! |---|---|
//! | `debug` | each refresh started (reason, generation, thread) and finished (new generation, duration, how many threads waited); each 401 handled; each retry (origin, delay, cause) and redirect hop (origins); a wait for another thread's refresh |
//! | `info` | a session that ended; a login, logout or refresh of another process adopted |
//! | `warn` | a failed refresh, a panicking refresher, a failed save, a login or logout that could not be written and was dropped for a newer login made elsewhere, a failed revocation, a refresh that did not finish before the client was closed |
//!
//! No level is unredacted: records name origins (`scheme://host:port`), never a path or query,
//! and never a token, secret or code. The same things are reported as [`Event`]s to an
//! optional listener ([`AuthClientBuilder::on_event`]); events carry no secrets either. Tokens and client secrets never
//! appear in `Debug` or `Display` output of any tokengate type or error: [`AccessToken`],
//! [`RefreshToken`], [`IdToken`] and [`ClientSecret`] print `[redacted]`, and the `Authorization` header is
//! marked sensitive. The access token is only sent to the base URL's origin; the refresh token
//! and client secret only to the authorization server's endpoints (token, and for the login
//! and logout below, device authorization and revocation); a device code, an authorization
//! code and a PKCE verifier only to the token endpoint; an ID token nowhere.
//!
//! ## A fleet of machines (feature `redis`)
//! `RedisStore` keeps one session in Redis for any number of machines: a refresh takes a
//! lease on the session's lock and re-reads the record under it (one refresh per expiry
//! across the fleet), writes are compare-and-set on the record's generation (a paused lock
//! holder never overwrites newer tokens), requests never wait on Redis, and a Redis outage
//! keeps the session (refreshes fail closed). See `RedisStore`'s docs (with the feature
//! enabled, as on docs.rs).
//!
//! ## From login to logout
//! [`AuthServer`] holds the client's identity and the authorization server's endpoints, and
//! builds every flow: [`AuthServer::discover`] finds the endpoints (RFC 8414 / OpenID Connect
//! Discovery, the document's `issuer` checked against mix-ups; [`login::Discovery`] for more
//! control); [`AuthServer::interactive_login`] logs a tool's user in, through the browser
//! ([`AuthServer::browser_flow`]: authorization code + PKCE over a loopback listener, RFC 8252)
//! or from a terminal ([`AuthServer::device_flow`], RFC 8628), or with a pasted redirect;
//! [`AuthClient::logout`] clears the tokens and revokes the session at the server (RFC 7009)
//! with [`AuthServer::refresh_grant`]. The rest of the login API is in [`login`].
//! `cargo run --example device_login` and `cargo run --example browser_login` run them
//! against a local server.
//!
//! ```no_run
//! use tokengate::{AuthClient, AuthServer, FileStore};
//!
//! # fn main() -> Result<(), tokengate::Error> {
//! let server = AuthServer::discover("https://auth.example.com")?      // token, device, revocation endpoints
//!     .client_id("my-cli");
//! let client = AuthClient::builder("https://api.example.com/v1/")
//!     .refresher(server.refresh_grant())
//!     .store(FileStore::for_app("my-cli")?)                            // ~/.config/my-cli/tokens.json
//!     .build()?;
//! if client.tokens().is_none() {
//!     let pending = server.device_flow()?.start()?;
//!     println!("Open {} and enter {}", pending.verification_uri(), pending.user_code());
//!     client.set_tokens(pending.wait()?)?;                             // polls until approved
//! }
//! client.get("me").call()?;
//! client.logout()?;                                                    // revoked at the server too
//! # Ok(()) }
//! ```
//!
//! ## Defaults
//! | setting | default |
//! |---|---|
//! | `refresh_skew` | 30 s, clamped to ¼ of the token's lifetime (less 1 s for a lifetime in whole seconds, which is also treated as expired 1 s early, at most half the lifetime): a 2 s token is refreshed after 0.75 s |
//! | `refresh_timeout` (wait for another thread's refresh) | the longest refresh: 152 s, 340 s with a [`FileStore`] or `RedisStore` |
//! | dropping the last handle, [`AuthClient::close`] | waits for a refresh on the wire, once: token timeout + 2 s at most; then one more try of a pending save, which may wait for the store's lock (its lock timeout) |
//! | a refresh holding a shared store's lock | at most its token calls (each after a 2 s check of the lock), backoffs and save, 160 s, counted from when it got the lock (below the 180 s another process waits) |
//! | API timeout (per phase: send, response head, body) / token-endpoint timeout (whole call) / connect timeout | 60 s / 30 s / 10 s |
//! | token response size limit | 64 KiB |
//! | a server's `error_description`, kept in errors | printable characters, at most 400 |
//! | `http_status_as_error` | true |
//! | retries | 3, full-jitter backoff 200 ms → 10 s ([`RetryPolicy`]) |
//! | redirects followed | 5 ([`AuthClientBuilder::DEFAULT_MAX_REDIRECTS`]) |
//! | paths resolving to another origin | rejected ([`AuthClientBuilder::allow_other_origins`]) |
//! | plain `http://` | loopback hosts only |
//! | proxy | the environment's (as ureq reads it), never for loopback hosts nor for the hosts `NO_PROXY` names; one set with [`AuthClientBuilder::proxy`] is used for every host |
//! | store | [`MemoryStore`] (see [`FileStore`]) |
//! | discovery / device flow agent | like the token agent: 30 s whole call, connect 10 s, proxy from the environment |
//! | metadata document size limit | 64 KiB |
//! | device flow polling | the server's `interval` (5 s if none, at least 1 s), +5 s on `slow_down`, doubled after a failed poll, 3 failed polls in a row end it; each wait reported to [`login::DeviceAuthorization::wait_with`], and ended by [`login::DeviceCancel::cancel`] (between polls at once; a poll on the wire first finishes) |
//! | [`FileStore::for_app`] | `$XDG_CONFIG_HOME/{app}/tokens.json` (else `~/.config/…`) on Linux, `~/Library/Application Support/{app}/` on macOS, `%APPDATA%\{app}\` on Windows; the directory created 0700 |
//! | revocation timeout (whole call) | 5 s ([`login::REVOCATION_TIMEOUT`]) |
//! | browser login | redirect `http://127.0.0.1:{free port}/callback`; waits 5 min ([`login::DEFAULT_BROWSER_TIMEOUT`]); opens `$BROWSER`, else the platform's opener; the URL always printed |

#![forbid(unsafe_code)]
// docs.rs (`--cfg docsrs`, Cargo.toml) marks each feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod builder;
mod challenge;
mod client;
mod clock;
mod config;
mod credential;
mod encoding;
mod error;
mod error_from;
mod event;
mod hooks;
mod http_server;

mod gate;
mod handle;
mod logging;
pub mod login;
mod logout;
mod middleware;
mod proxy;
mod random;
mod redacted;
mod redirect;
mod reentry;
mod refresh;
mod request;
mod retry;
mod run;
mod session;
mod stats;
pub mod store;
mod sync;
#[doc = include_str!("faults.md")]
pub mod faults {}
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod timing;
mod tokens;
mod transport;
mod transport_error;
mod url;

// Thin wrappers around the private parsers, for `fuzz/` and `tests/fuzz_corpus.rs` only.
#[doc(hidden)]
#[path = "fuzz_api.rs"]
pub mod __fuzz;

pub use builder::AuthClientBuilder;
pub use client::AuthClient;
pub use error::{Error, RefreshError};
pub use event::{Event, RefreshReason};
pub use login::AuthServer;
pub use middleware::TokenMiddleware;
pub use refresh::{ClientAuth, ClientCredentials, JsonRefresh, OAuth2Refresh, Refresh};
pub use request::RequestBuilder;
pub use retry::RetryPolicy;
pub use stats::Stats;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisStore;
pub use store::{FileStore, MemoryStore, TokenStore};
pub use tokens::{
    AccessToken, ClientSecret, IdToken, IdTokenClaims, IdTokenError, Lineage, RefreshToken, Tokens,
};
pub use transport_error::TransportError;

/// Time, made injectable: the clock tokens expire by, and what waits between retries.
/// Tests use [`ManualClock`](time::ManualClock), which is both.
pub mod time {
    pub use crate::clock::{Clock, ManualClock, SystemClock};
    pub use crate::retry::{Sleeper, ThreadSleeper};
}

/// Re-exported so users name the same `ureq` (and `http`) types tokengate uses.
pub use ureq;

// Every public type a program may hand to another thread is `Send + Sync`: checked when the
// crate compiles, so a field that would take it away fails the build, not a user's.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<AuthClient>();
    send_sync::<AuthClientBuilder>();
    send_sync::<RequestBuilder>();
    send_sync::<TokenMiddleware>();
    send_sync::<Error>();
    send_sync::<RefreshError>();
    send_sync::<Event>();
    send_sync::<Stats>();
    send_sync::<Tokens>();
    send_sync::<AccessToken>();
    send_sync::<RefreshToken>();
    send_sync::<ClientSecret>();
    send_sync::<AuthServer>();
    send_sync::<OAuth2Refresh>();
    send_sync::<ClientCredentials>();
    send_sync::<JsonRefresh>();
    send_sync::<RetryPolicy>();
    send_sync::<MemoryStore>();
    send_sync::<FileStore>();
    #[cfg(feature = "redis")]
    send_sync::<RedisStore>();
    #[cfg(feature = "testing")]
    send_sync::<testing::TestServer>();
    #[cfg(feature = "testing")]
    send_sync::<testing::TestServerError>();
    send_sync::<store::Revision>();
    send_sync::<store::Stored>();
    send_sync::<login::Discovery>();
    send_sync::<login::ServerMetadata>();
    send_sync::<login::DeviceFlow>();
    send_sync::<login::DeviceAuthorization>();
    send_sync::<login::DeviceCancel>();
    send_sync::<login::DiscoveryError>();
    send_sync::<login::DeviceError>();
    send_sync::<login::BrowserFlow>();
    send_sync::<login::BrowserAuthorization>();
    send_sync::<login::BrowserError>();
    send_sync::<login::InteractiveLogin>();
    send_sync::<login::RevocationError>();
    send_sync::<time::ManualClock>();
    send_sync::<time::SystemClock>();
    send_sync::<time::ThreadSleeper>();
};

// The README's Rust examples compile as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
