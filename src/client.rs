//! [`AuthClient`]: attach → send → 401 → refresh (through the gate) → retry once.
//! The refresh path itself, and how the client keeps its store in step, are in `session.rs`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use ureq::http::{self, request::Parts, HeaderName, HeaderValue, Method, Request, Response, Uri};
use ureq::{Agent, Body};

use crate::challenge::{parse_bearer, BearerChallenge};
use crate::clock::Clock;
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::Gate;
use crate::logging::{Chain, OriginOf, TARGET};
use crate::redirect;
use crate::refresh::Refresh;
use crate::request::RequestBuilder;
use crate::retry::{self, RetryPolicy, Sleeper};
use crate::session::{FlightLock, Persisted};
use crate::stats::{Counters, Stats};
use crate::store::TokenStore;
use crate::tokens::{Current, Tokens};
use crate::transport;
use crate::util::{has_http_scheme, Origin};

/// A thread-safe HTTP client that attaches a bearer token to every request to its API and
/// keeps that token fresh.
///
/// Cloning is cheap (one `Arc`) and clones share the tokens, the refresh gate and the
/// connection pools. `AuthClient` is `Clone + Send + Sync + 'static`.
///
/// # Concurrent calls
/// Any number of threads may call at once. When the token expires or draws a 401, exactly one
/// thread calls the refresher; the others wait and then retry with the new token. A thread
/// whose token is still valid never waits for a refresh: a refresh that starts inside the
/// refresh window (`refresh_skew` before expiry) runs in the background. A waiting thread gives
/// up only after `refresh_timeout`, which by default outlasts the longest refresh the client
/// can make (see [`AuthClientBuilder::refresh_timeout`](crate::AuthClientBuilder::refresh_timeout)).
///
/// # Ending a program
/// Dropping the last handle (the last clone) waits for a refresh still in flight, bounded by
/// the token call's timeout, and saves its result: a short-lived tool that returns from
/// `main` while a background refresh is on the wire does not lose the rotated refresh token.
/// [`AuthClient::close`] does the same and reports what went wrong. What is **not** safe:
/// `std::process::exit` (or a panic with `panic = "abort"`, or being killed) while a handle is
/// alive, which skips `Drop` — call `close()` first; and leaking a handle (`mem::forget`, a
/// handle stored in a `static`, or a cycle through a listener that owns a handle).
///
/// # Panics
/// A panicking refresher panics the thread that ran it (as any Rust callback would); every
/// thread waiting on that refresh gets [`Error::RefresherPanicked`] at once, and the next call
/// may refresh again (a panicking background refresh is not retried in the background for
/// the same tokens). No lock is poisoned.
///
/// # Deadlocks
/// No lock of the client is held while the refresher or a listener runs. The refresher, the
/// store and the listeners called during a refresh run on the thread leading it: a call back
/// into the client from there that would need a refresh, or a store write, returns
/// [`Error::Reentrant`] at once instead of waiting for itself. A refresher should use the
/// `ureq::Agent` it is handed. Listeners called after a refresh (`on_session_expired`, the
/// `Refreshed`/`SessionExpired` events) may call the client freely.
#[derive(Clone)]
pub struct AuthClient {
    handle: Arc<Handle>,
}

/// The users' handle on the client. Dropped when the last `AuthClient` clone is: then it
/// waits for a refresh in flight and saves it (see [`AuthClient::close`]). Background
/// refreshes hold the [`Inner`] only, so they never keep the handle alive.
struct Handle {
    inner: Arc<Inner>,
    /// Set by [`AuthClient::close`] once it shut the client down: `Drop` does not again.
    closed: bool,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.closed {
            // Errors have been reported as events; `close()` is the way to receive them.
            let _ = self.inner.shut_down(true);
        }
    }
}

pub(crate) type Listener = Box<dyn Fn() + Send + Sync>;
pub(crate) type EventListener = Box<dyn Fn(&Event) + Send + Sync>;

/// Everything the client shares between clones and its background refreshes. Fields are
/// written once by `build()`, except: the gate (see `gate.rs` for which lock guards what),
/// the atomics (each says who writes it) and `flight_lock` (its own mutex).
pub(crate) struct Inner {
    /// The base URL, ending in `/`.
    pub(crate) base: String,
    /// `scheme://authority` of the base URL, for paths starting with `/`.
    pub(crate) base_root: String,
    /// The only origin that ever sees the access token.
    pub(crate) origin: Origin,
    pub(crate) api: Agent,
    /// True if `api` already has the settings tokengate needs (no per-request override).
    pub(crate) api_configured: bool,
    pub(crate) token_agent: Agent,
    pub(crate) refresher: Option<Box<dyn Refresh>>,
    /// The tokens, the refresh gate, and (under its persist lock) what the store holds.
    pub(crate) gate: Gate<Current, Arc<RefreshError>, Persisted>,
    pub(crate) store: Box<dyn TokenStore>,
    /// The store is shared ([`TokenStore::poll`] answered at build): it is polled before
    /// requests and written only under its lock.
    pub(crate) store_shared: bool,
    /// Mirrors `Persisted::base` (the store revision memory corresponds to), so a request can
    /// poll the store without taking the persist lock. Written under the persist lock.
    pub(crate) base_revision: AtomicU64,
    /// Mirrors `Persisted::unsaved.is_some()`: memory holds a change the store did not take.
    /// Written under the persist lock; read by every request to decide whether to retry.
    pub(crate) unsaved: AtomicBool,
    /// A thread retrying a failed write to a shared store runs (at most one at a time).
    pub(crate) saving: AtomicBool,
    /// Set once the last handle is dropped or closed: a flight still running makes no new
    /// token call (it finishes the one on the wire and saves it).
    pub(crate) closing: AtomicBool,
    /// The store lock held by the flight running now, so a flight that outlives its bound
    /// (a hung custom refresher) can be made to give it up. Guarded by its own mutex.
    pub(crate) flight_lock: parking_lot::Mutex<Option<FlightLock>>,
    pub(crate) clock: Box<dyn Clock>,
    pub(crate) skew: Duration,
    /// How long a thread waits for another thread's refresh.
    pub(crate) refresh_timeout: Duration,
    /// The longest one token call can take (the token agent's timeout).
    pub(crate) token_call_limit: Duration,
    /// The longest a whole refresh can take: lock wait, then `hold_limit`.
    pub(crate) flight_limit: Duration,
    /// The longest a refresh may hold a shared store's lock: its token calls, the backoffs
    /// between them and the save. Measured from when it got the lock; a flight that holds it
    /// longer (a hung custom refresher) has it taken away. With default settings 160 s, below
    /// the 180 s another process waits for the lock.
    pub(crate) hold_limit: Duration,
    pub(crate) status_as_error: bool,
    pub(crate) retry: RetryPolicy,
    pub(crate) sleeper: Box<dyn Sleeper>,
    pub(crate) max_redirects: u32,
    /// Headers dropped (besides Authorization, Cookie, Proxy-Authorization) whenever a
    /// redirect changes origin.
    pub(crate) sensitive_headers: Vec<HeaderName>,
    /// Whether request paths may resolve to another origin (sent without the token).
    pub(crate) allow_other_origins: bool,
    pub(crate) on_session_expired: Option<Listener>,
    pub(crate) on_event: Option<EventListener>,
    /// What the client did; atomics, bumped with no lock held.
    pub(crate) stats: Counters,
}

impl AuthClient {
    /// Starts building a client for the API at `base_url` (e.g. `https://api.example.com/v1/`).
    /// Request paths are resolved against it.
    pub fn builder(base_url: impl Into<String>) -> crate::AuthClientBuilder {
        crate::AuthClientBuilder::new(base_url.into())
    }

    pub(crate) fn from_inner(inner: Inner) -> AuthClient {
        AuthClient {
            handle: Arc::new(Handle {
                inner: Arc::new(inner),
                closed: false,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// A GET request to `path` (relative to the base URL, or absolute).
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }
    /// A HEAD request.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }
    /// A DELETE request.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }
    /// A POST request.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }
    /// A PUT request.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }
    /// A PATCH request.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// A request with any method.
    ///
    /// `path` is resolved against the base URL: `items/7` appends to the base path, `/items/7`
    /// replaces it. An absolute `http(s)://` URL is used as is; it carries the token only if
    /// it has the base URL's origin (scheme, host and port). A scheme-relative `//host/..` or
    /// any other scheme is rejected with [`Error::InvalidUrl`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(self.clone(), method, path)
    }

    /// Replaces the tokens (after a fresh login). Waiting threads retry with them at once; a
    /// refresh still running for the old tokens is discarded when it finishes. With a shared
    /// store the login is written under the store's lock, after a refresh another process (or
    /// this one) is making.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] if a token cannot travel in a header (nothing changes then);
    /// [`Error::Store`] if the store failed. If a shared store's lock could not be taken
    /// (another process held it past the lock timeout, Redis down), nothing changes: the
    /// caller still has the tokens and may try again. If the write failed, the tokens are in
    /// use in memory all the same, and the write is retried (on a later request, the next
    /// refresh, `close()`) over whatever the store holds by then: another process's refresh
    /// of the old session never replaces this login. (Nor does a login or logout another
    /// process makes meanwhile: the store keeps no order between the two, and the retry
    /// writes the change this client was asked for.) [`Error::Reentrant`] from the client's
    /// own refresher, store or a listener running during a refresh.
    pub fn set_tokens(&self, tokens: Tokens) -> Result<(), Error> {
        let inner = self.inner();
        let current = inner.stamp(tokens).map_err(Error::InvalidToken)?;
        inner.replace(Some(current))
    }

    /// Forgets the tokens (logout): clears memory and the store. Later calls return
    /// [`Error::NoTokens`] until [`AuthClient::set_tokens`].
    ///
    /// # Errors
    /// [`Error::Store`] if the store could not be cleared, also when a shared store's lock
    /// could not be taken: memory is cleared all the same (a user who logged out must not go
    /// on sending the token), and the logout is written later (on a later request,
    /// `close()`) over whatever the store holds by then: another process's refresh of the
    /// old session never undoes it. [`Error::Reentrant`] as for [`AuthClient::set_tokens`].
    pub fn clear_tokens(&self) -> Result<(), Error> {
        self.inner().replace(None)
    }

    /// A copy of the current tokens, if any (with `expires_at` and `issued_at` resolved).
    pub fn tokens(&self) -> Option<Tokens> {
        self.inner()
            .gate
            .snapshot()
            .tokens
            .map(|c| c.tokens.clone())
    }

    /// How many threads are blocked right now waiting for another thread's refresh to finish.
    ///
    /// A diagnostic (for metrics, or for tests that need to know that waiters have arrived
    /// before letting a refresh finish): the value may be out of date as soon as it returns.
    /// A thread counted here is waiting on the refresh running now, and gets that refresh's
    /// outcome instead of starting another one.
    pub fn refresh_waiters(&self) -> usize {
        self.inner().gate.waiting()
    }

    /// Refreshes the tokens now, through the refresh gate, e.g. after the user's permissions
    /// changed. Threads calling at the same instant (or meeting a 401 or an expiry then)
    /// share one refresh, exactly as after a 401; a call made after that refresh finished
    /// makes a new one. With a shared store, tokens another process stored meanwhile are
    /// adopted instead.
    ///
    /// # Errors
    /// The refresh's error: [`Error::Refresh`] (tokens kept; also when the tokens have no
    /// refresh token, in which case nothing is sent), [`Error::SessionExpired`] (the server
    /// rejected the refresh token: the session is over), [`Error::RefresherPanicked`],
    /// [`Error::RefreshTimeout`]; [`Error::NoTokens`] without tokens (unless the refresher
    /// acquires them, like [`ClientCredentials`](crate::ClientCredentials));
    /// [`Error::Config`] without a refresher; [`Error::Store`] if a shared store cannot be
    /// read; [`Error::Reentrant`] from the client's own refresher, store or listeners.
    pub fn force_refresh(&self) -> Result<(), Error> {
        let inner = self.inner();
        let Some(refresher) = &inner.refresher else {
            return Err(Error::Config("force_refresh needs a refresher"));
        };
        inner.sync_store()?;
        let snap = inner.gate.snapshot();
        if snap.tokens.is_none() && !refresher.acquires_without_tokens() {
            return Err(if snap.expired {
                Error::SessionExpired
            } else {
                Error::NoTokens
            });
        }
        inner
            .renew(snap.generation, RefreshReason::Forced)
            .map(drop)
    }

    /// What the client did so far: requests sent, 401s, refreshes (made, failed, adopted from
    /// other processes), waits, retries, sessions ended. Shared by all clones; cheap (a few
    /// atomic loads), and counting costs the request path one atomic add per event.
    pub fn stats(&self) -> Stats {
        self.inner().stats.snapshot()
    }

    /// Ends this handle: waits for a refresh in flight, saves what it got, and retries a save
    /// that failed earlier. Call it before `std::process::exit`, or to learn whether the
    /// session was stored. Dropping the last handle does the same but cannot report errors;
    /// a handle closed here is not shut down again when it drops, so the wait happens once.
    ///
    /// On the last handle, a refresh in flight makes no further token call, and the wait is
    /// bounded by one token call: the token timeout + 2 s. With other clones still alive,
    /// they go on working, and the wait is bounded by the longest refresh (the default
    /// `refresh_timeout`).
    ///
    /// # Errors
    /// [`Error::Store`] if tokens in memory could not be saved; [`Error::RefreshTimeout`] if a
    /// refresh did not finish in time. On the last handle its store lock is then released
    /// (the tokens it may get are not saved); on another handle only if the refresh has held
    /// it past its bound, as any thread giving up on a refresh does. [`Error::Reentrant`]
    /// from inside the client's own refresh.
    pub fn close(self) -> Result<(), Error> {
        let inner = Arc::clone(self.inner());
        match Arc::into_inner(self.handle) {
            // The last handle: shut down once, here, and not again when it drops.
            Some(mut handle) => {
                handle.closed = true;
                inner.shut_down(true)
            }
            None => inner.shut_down(false),
        }
    }
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        let snap = inner.gate.snapshot();
        f.debug_struct("AuthClient")
            .field("base_url", &inner.base)
            .field("has_tokens", &snap.tokens.is_some())
            .field("generation", &snap.generation)
            .field("session_expired", &snap.expired)
            .finish_non_exhaustive()
    }
}

/// The body of a request. Bytes are borrowed for each attempt, so a retried or replayed
/// request is re-sent byte for byte; a reader can be sent only once.
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    Reader(Option<&'a mut dyn std::io::Read>),
}

/// Per-request options from the [`RequestBuilder`].
#[derive(Clone, Copy, Default)]
pub(crate) struct RequestOptions {
    /// Retry this POST/PATCH like an idempotent request.
    pub(crate) retry_non_idempotent: bool,
    /// Send no token, make no refresh, treat a 401 as a plain status.
    pub(crate) without_auth: bool,
    /// Overrides the client's `http_status_as_error` for this request.
    pub(crate) status_as_error: Option<bool>,
}

impl Inner {
    /// Runs one request to completion. Each attempt re-reads the token (it may have been
    /// refreshed meanwhile) and attaches it only if the target is the base URL's origin
    /// (`base_origin`, as [`Inner::resolve`] found for `parts.uri`; checked again for each
    /// redirect hop). Then, depending on the answer: a 401 goes through the refresh gate and
    /// is replayed once; a retryable failure waits and retries (bounded by the
    /// [`RetryPolicy`]); a redirect is followed (bounded by `max_redirects`). At most
    /// `2 + max_retries + max_redirects` requests.
    pub(crate) fn execute(
        self: &Arc<Self>,
        mut parts: Parts,
        mut base_origin: bool,
        mut payload: Payload<'_>,
        opts: RequestOptions,
    ) -> Result<Response<Body>, Error> {
        let replayable = !matches!(payload, Payload::Reader(_));
        let mut retries = 0;
        let mut redirects = 0;
        let mut refreshed = false;
        loop {
            // The token goes to the base URL's origin only; another origin's 401 is just a
            // status, and so is one to a request sent `without_auth`.
            let token = if base_origin && !opts.without_auth {
                Some(self.usable_tokens()?)
            } else {
                None
            };
            let may_retry_sent = retry::is_idempotent(&parts.method)
                || opts.retry_non_idempotent
                || self.retry.allows_non_idempotent();
            let can_retry = retries < self.retry.retries();

            Counters::bump(&self.stats.requests);
            let authorization = token.as_ref().map(|(current, _)| &current.header);
            let mut resp = match self.send_once(&parts, authorization, &mut payload) {
                Ok(resp) => resp,
                Err(e) => {
                    let retryable = retry::nothing_sent(&e)
                        || (may_retry_sent && retry::transient_after_send(&e));
                    if !(retryable && can_retry) {
                        return Err(Error::Http(e));
                    }
                    if !replayable {
                        return Err(Error::NotReplayable(Box::new(Error::Http(e))));
                    }
                    self.backoff(retries, None, |delay| {
                        log::debug!(target: TARGET, "retry {} of {} to {} in {delay:?} after: {}",
                            retries + 1, self.retry.retries(), OriginOf(&parts.uri), Chain(&e));
                    });
                    retries += 1;
                    continue;
                }
            };
            let status = resp.status();

            if let Some((_, generation)) = token {
                if matches!(status.as_u16(), 401 | 403) {
                    let challenge = bearer_challenge(&resp);
                    let code = challenge.as_ref().and_then(|c| c.error.as_deref());
                    if status == http::StatusCode::UNAUTHORIZED {
                        Counters::bump(&self.stats.unauthorized);
                    }
                    if code == Some("insufficient_scope") {
                        // A new token would have the same scopes: no refresh.
                        transport::drain(&mut resp);
                        return Err(Error::InsufficientScope {
                            status: status.as_u16(),
                            scope: challenge.and_then(|c| c.scope),
                        });
                    }
                    // `invalid_request`: the request, not the token, is wrong.
                    if status == http::StatusCode::UNAUTHORIZED && code != Some("invalid_request") {
                        transport::drain(&mut resp);
                        self.emit(Event::Unauthorized { generation });
                        if refreshed || self.refresher.is_none() {
                            log::debug!(target: TARGET, "401 from {} for token generation {generation}: final ({})",
                                OriginOf(&parts.uri),
                                if refreshed { "after a refresh" } else { "no refresher" });
                            return Err(Error::Unauthorized);
                        }
                        log::debug!(target: TARGET, "401 from {} for token generation {generation}: refreshing",
                            OriginOf(&parts.uri));
                        // Refresh even for a body that cannot be replayed, so the next call works.
                        self.renew(generation, RefreshReason::Unauthorized)?;
                        if !replayable {
                            return Err(Error::NotReplayable(Box::new(Error::Unauthorized)));
                        }
                        refreshed = true;
                        continue;
                    }
                }
            }

            if retry::retryable_status(status) && may_retry_sent && can_retry {
                if !replayable {
                    let code = status.as_u16();
                    return Err(Error::NotReplayable(Box::new(Error::StatusCode(code))));
                }
                let after = retry::retry_after(resp.headers(), self.clock.now());
                transport::drain(&mut resp);
                self.backoff(retries, after, |delay| {
                    log::debug!(target: TARGET, "retry {} of {} to {} in {delay:?} after status {}",
                        retries + 1, self.retry.retries(), OriginOf(&parts.uri), status.as_u16());
                });
                retries += 1;
                continue;
            }

            if redirect::is_redirect(status) && self.max_redirects > 0 {
                if redirects >= self.max_redirects {
                    return Err(Error::TooManyRedirects(self.max_redirects));
                }
                let hop = redirect::next_hop(status, &parts.method, &parts.uri, resp.headers())?;
                if !hop.to_get && !replayable {
                    let code = status.as_u16();
                    return Err(Error::NotReplayable(Box::new(Error::StatusCode(code))));
                }
                transport::drain(&mut resp);
                if hop.to_get {
                    parts.method = Method::GET;
                    payload = Payload::None;
                    parts.headers.remove(http::header::CONTENT_TYPE);
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                }
                // Credentials belong to the origin they were set for: any change of origin
                // (not only leaving the base URL's) drops them. The token is attached again
                // if and only if the next hop is the base URL's origin.
                let other_origin = Origin::of(&hop.uri) != Origin::of(&parts.uri);
                if other_origin {
                    redirect::strip_sensitive(&mut parts.headers, &self.sensitive_headers);
                }
                log::debug!(target: TARGET, "redirect {} from {} to {}{}", status.as_u16(),
                    OriginOf(&parts.uri), OriginOf(&hop.uri),
                    if other_origin { " (another origin: credentials dropped)" } else { "" });
                base_origin = self.origin.matches(&hop.uri);
                parts.uri = hop.uri;
                redirects += 1;
                continue;
            }
            return self.finish(resp, opts);
        }
    }

    /// Waits before retry number `retry` (0-based), reporting it first (`log` writes the
    /// record, given the delay).
    fn backoff(&self, retry: u32, retry_after: Option<Duration>, log: impl FnOnce(Duration)) {
        Counters::bump(&self.stats.retries);
        let delay = self.retry.delay(retry, retry_after, retry::random());
        log(delay);
        self.emit(Event::Retrying {
            retry: retry + 1,
            delay,
        });
        self.sleeper.sleep(delay);
    }

    /// Waits before retry number `retry` of a token call (the same policy as the API's).
    pub(crate) fn token_backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        cause: &RefreshError,
    ) {
        self.backoff(retry, retry_after, |delay| {
            log::debug!(target: TARGET, "token endpoint: retry {} of {} in {delay:?} after: {}",
                retry + 1, self.retry.retries(), Chain(cause));
        });
    }

    /// Sends one attempt: a copy of `parts` (which stay as they are, for a retry or a
    /// redirect) with `authorization` set, if given, replacing any the caller set.
    fn send_once(
        &self,
        parts: &Parts,
        authorization: Option<&HeaderValue>,
        payload: &mut Payload<'_>,
    ) -> Result<Response<Body>, ureq::Error> {
        let (api, configured) = (&self.api, self.api_configured);
        let mut parts = parts.clone();
        if let Some(value) = authorization {
            parts
                .headers
                .insert(http::header::AUTHORIZATION, value.clone());
        }
        match payload {
            Payload::None => transport::run(api, configured, Request::from_parts(parts, ())),
            Payload::Bytes(b) => transport::run(api, configured, Request::from_parts(parts, *b)),
            Payload::Reader(reader) => {
                let reader = reader.take().ok_or_else(|| {
                    ureq::Error::Io(std::io::Error::other(
                        "a streamed body can be sent only once",
                    ))
                })?;
                let body = ureq::SendBody::from_reader(reader);
                transport::run(api, configured, Request::from_parts(parts, body))
            }
        }
    }

    /// The final response, or its status as an error (per the request's or the client's
    /// `http_status_as_error`).
    fn finish(&self, resp: Response<Body>, opts: RequestOptions) -> Result<Response<Body>, Error> {
        let status = resp.status();
        let as_error = opts.status_as_error.unwrap_or(self.status_as_error);
        if as_error && (status.is_client_error() || status.is_server_error()) {
            return Err(if status == http::StatusCode::UNAUTHORIZED {
                Error::Unauthorized
            } else {
                Error::StatusCode(status.as_u16())
            });
        }
        Ok(resp)
    }

    /// The tokens to send now. Blocks only if there is no valid token: expired (or none, with a
    /// strategy that can acquire one). Inside the refresh window it starts a background refresh
    /// (when one can succeed) and returns the still-valid token at once.
    pub(crate) fn usable_tokens(self: &Arc<Self>) -> Result<(Arc<Current>, u64), Error> {
        self.sync_store()?;
        let snap = self.gate.snapshot();
        let Some(current) = snap.tokens else {
            return match &self.refresher {
                _ if snap.expired => Err(Error::SessionExpired),
                Some(r) if r.acquires_without_tokens() => {
                    self.renew(snap.generation, RefreshReason::Acquire)
                }
                _ => Err(Error::NoTokens),
            };
        };
        if let (Some(refresher), Some(_)) = (&self.refresher, current.refresh_at) {
            let now = self.clock.now();
            if current.wants_refresh(now) {
                if current.is_expired(now) {
                    return self.renew(snap.generation, RefreshReason::Expired);
                }
                if refresher.can_refresh(&current.tokens) {
                    self.refresh_ahead(snap.generation);
                }
            }
        }
        Ok((current, snap.generation))
    }

    /// Stamps `tokens` with this client's clock and skew (see [`Current::new`]).
    pub(crate) fn stamp(&self, tokens: Tokens) -> Result<Current, &'static str> {
        Current::new(tokens, self.clock.now(), self.skew)
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(listener) = &self.on_event {
            listener(&event);
        }
    }

    /// Identifies this client for [`crate::reentry`].
    pub(crate) fn key(&self) -> usize {
        self as *const Inner as usize
    }

    /// Resolves a request path against the base URL (see [`AuthClient::request`]). Also
    /// returns whether the URL has the base URL's origin (the only one the token goes to).
    pub(crate) fn resolve(&self, path: &str, query: &str) -> Result<(Uri, bool), Error> {
        let mut url = if has_http_scheme(path) {
            path.to_owned()
        } else if path.starts_with("//") || path.starts_with("\\\\") || path.starts_with("/\\") {
            return Err(Error::InvalidUrl(
                "a path starting with // would leave the base URL's origin".into(),
            ));
        } else if path
            .find([':', '/', '?', '#'])
            .is_some_and(|i| path.as_bytes()[i] == b':')
        {
            return Err(Error::InvalidUrl(
                "a path with a scheme other than http(s) is not allowed".into(),
            ));
        } else {
            let prefix = if path.starts_with('/') {
                &self.base_root
            } else {
                &self.base
            };
            let mut url = String::with_capacity(prefix.len() + path.len() + 1 + query.len());
            url.push_str(prefix);
            url.push_str(path);
            url
        };
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(query);
        }
        // From the `String` itself: parsing a `&str` would copy it.
        let uri = Uri::try_from(url).map_err(|_| Error::InvalidUrl("not a valid URL".into()))?;
        if self.origin.matches(&uri) {
            return Ok((uri, true));
        }
        match Origin::of(&uri) {
            None => Err(Error::InvalidUrl(
                "only http and https URLs with a host are allowed".into(),
            )),
            Some(o) if o != self.origin && !self.allow_other_origins => Err(Error::InvalidUrl(
                "the URL leaves the base URL's origin (see allow_other_origins)".into(),
            )),
            Some(_) => Ok((uri, false)),
        }
    }
}

/// The first `Bearer` challenge of a response's `WWW-Authenticate` headers, if any.
pub(crate) fn bearer_challenge(resp: &Response<Body>) -> Option<BearerChallenge> {
    resp.headers()
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer)
}
