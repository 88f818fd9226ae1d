//! [`AuthClient`]: attach → send → 401 → refresh (through the gate) → retry once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::http::{self, request::Parts, HeaderName, Method, Request, Response, Uri};
use ureq::{Agent, Body};

use crate::challenge::parse_bearer;
use crate::clock::Clock;
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::{Attempt, Claim, Failure, Fresh, Gate, Role, Snapshot};
use crate::redirect;
use crate::refresh::Refresh;
use crate::request::RequestBuilder;
use crate::retry::{self, RetryPolicy, Sleeper};
use crate::store::{RefreshLock, TokenStore};
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
/// thread calls the refresher; the others wait (at most `refresh_timeout`) and then retry with
/// the new token. A thread whose token is still valid never waits for a refresh: a refresh
/// that starts inside the refresh window (`refresh_skew` before expiry) runs in the background.
///
/// # Panics
/// A panicking refresher panics the thread that ran it (as any Rust callback would); every
/// thread waiting on that refresh gets [`Error::RefresherPanicked`] at once, and the next call
/// may refresh again. No lock is poisoned.
///
/// # Deadlocks
/// No lock is held while the refresher, the store or a listener runs, so a listener may call
/// back into the client. A refresher that itself makes requests through the same `AuthClient`
/// would wait for its own refresh: give it the `ureq::Agent` it is handed instead.
#[derive(Clone)]
pub struct AuthClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) type Listener = Box<dyn Fn() + Send + Sync>;
pub(crate) type EventListener = Box<dyn Fn(&Event) + Send + Sync>;

/// Everything the client shares between clones. Fields are written once by `build()`;
/// the only mutable state lives in `gate` (see `gate.rs` for which lock guards what).
pub(crate) struct Inner {
    /// The base URL, ending in `/`.
    pub(crate) base: String,
    /// `scheme://authority` of the base URL, for paths starting with `/`.
    pub(crate) base_root: String,
    /// The only origin that ever sees the access token.
    pub(crate) origin: Origin,
    pub(crate) api: Agent,
    /// True if `api` already has the settings tokengate needs (no per-request override).
    pub(crate) api_fits: bool,
    pub(crate) token_agent: Agent,
    pub(crate) refresher: Option<Box<dyn Refresh>>,
    pub(crate) gate: Gate<Current, Arc<RefreshError>>,
    pub(crate) store: Box<dyn TokenStore>,
    pub(crate) clock: Box<dyn Clock>,
    pub(crate) skew: Duration,
    pub(crate) refresh_timeout: Duration,
    pub(crate) status_as_error: bool,
    pub(crate) retry: RetryPolicy,
    pub(crate) sleeper: Box<dyn Sleeper>,
    pub(crate) max_redirects: u32,
    /// Headers dropped (besides Authorization, Cookie, Proxy-Authorization) when a redirect
    /// leaves the base URL's origin.
    pub(crate) sensitive_headers: Vec<HeaderName>,
    /// Whether request paths may resolve to another origin (sent without the token).
    pub(crate) allow_other_origins: bool,
    pub(crate) on_session_expired: Option<Listener>,
    pub(crate) on_event: Option<EventListener>,
}

impl AuthClient {
    /// Starts building a client for the API at `base_url` (e.g. `https://api.example.com/v1/`).
    /// Request paths are resolved against it.
    pub fn builder(base_url: impl Into<String>) -> crate::AuthClientBuilder {
        crate::AuthClientBuilder::new(base_url.into())
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
    /// refresh still running for the old tokens is discarded when it finishes.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] if a token cannot travel in a header (nothing changes then);
    /// [`Error::Store`] if the store failed (the tokens are in use in memory all the same).
    pub fn set_tokens(&self, tokens: Tokens) -> Result<(), Error> {
        let current = self.inner.stamp(tokens).map_err(Error::InvalidToken)?;
        self.inner.replace(Some(current))
    }

    /// Forgets the tokens (logout): clears memory and the store. Later calls return
    /// [`Error::NoTokens`] until [`AuthClient::set_tokens`].
    ///
    /// # Errors
    /// [`Error::Store`] if the store could not be cleared (memory is cleared all the same).
    pub fn clear_tokens(&self) -> Result<(), Error> {
        self.inner.replace(None)
    }

    /// A copy of the current tokens, if any (with `expires_at` resolved).
    pub fn tokens(&self) -> Option<Tokens> {
        self.inner.gate.snapshot().tokens.map(|c| c.tokens.clone())
    }

    /// How many threads are blocked right now waiting for another thread's refresh to finish.
    ///
    /// A diagnostic (for metrics, or for tests that need to know that waiters have arrived
    /// before letting a refresh finish): the value may be out of date as soon as it returns.
    /// A thread counted here is waiting on the refresh running now, and gets that refresh's
    /// outcome instead of starting another one.
    pub fn refresh_waiters(&self) -> usize {
        self.inner.gate.waiting()
    }
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.inner.gate.snapshot();
        f.debug_struct("AuthClient")
            .field("base_url", &self.inner.base)
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
}

impl Inner {
    /// Runs one request to completion. Each attempt re-reads the token (it may have been
    /// refreshed meanwhile) and attaches it only if the target is the base URL's origin.
    /// Then, depending on the answer: a 401 goes through the refresh gate and is replayed once;
    /// a retryable failure waits and retries (bounded by the [`RetryPolicy`]); a redirect is
    /// followed (bounded by `max_redirects`). At most `2 + max_retries + max_redirects` requests.
    pub(crate) fn execute(
        self: &Arc<Self>,
        mut parts: Parts,
        mut payload: Payload<'_>,
        opts: RequestOptions,
    ) -> Result<Response<Body>, Error> {
        let replayable = !matches!(payload, Payload::Reader(_));
        let mut retries = 0;
        let mut redirects = 0;
        let mut refreshed = false;
        loop {
            let generation = if self.is_base_origin(&parts.uri) {
                let (current, generation) = self.usable_tokens()?;
                parts
                    .headers
                    .insert(http::header::AUTHORIZATION, current.header.clone());
                Some(generation)
            } else {
                // Another origin never sees the token, and its 401 is just a status.
                parts.headers.remove(http::header::AUTHORIZATION);
                None
            };
            let may_retry_sent = retry::is_idempotent(&parts.method)
                || opts.retry_non_idempotent
                || self.retry.allows_non_idempotent();
            let can_retry = retries < self.retry.retries();

            let mut resp = match self.send_once(&parts, &mut payload) {
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
                    self.backoff(retries, None);
                    retries += 1;
                    continue;
                }
            };
            let status = resp.status();

            if let Some(generation) = generation {
                if status == http::StatusCode::UNAUTHORIZED && token_rejected(&resp) {
                    transport::drain(&mut resp);
                    self.emit(Event::Unauthorized { generation });
                    if refreshed || self.refresher.is_none() {
                        return Err(Error::Unauthorized);
                    }
                    // Refresh even for a body that cannot be replayed, so the next call works.
                    self.refresh_blocking(generation, RefreshReason::Unauthorized)?;
                    if !replayable {
                        return Err(Error::NotReplayable(Box::new(Error::Unauthorized)));
                    }
                    refreshed = true;
                    continue;
                }
            }

            if retry::retryable_status(status) && may_retry_sent && can_retry {
                if !replayable {
                    let code = status.as_u16();
                    return Err(Error::NotReplayable(Box::new(Error::StatusCode(code))));
                }
                let after = retry::retry_after(resp.headers(), self.clock.now());
                transport::drain(&mut resp);
                self.backoff(retries, after);
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
                if !self.is_base_origin(&hop.uri) {
                    redirect::strip_sensitive(&mut parts.headers, &self.sensitive_headers);
                }
                parts.uri = hop.uri;
                redirects += 1;
                continue;
            }
            return self.finish(resp);
        }
    }

    /// True if `uri` has the base URL's origin: the only one that sees the token.
    fn is_base_origin(&self, uri: &Uri) -> bool {
        self.origin.matches(uri)
    }

    fn backoff(&self, retry: u32, retry_after: Option<Duration>) {
        let delay = self.retry.delay(retry, retry_after, retry::random());
        self.emit(Event::Retrying {
            retry: retry + 1,
            delay,
        });
        self.sleeper.sleep(delay);
    }

    fn send_once(
        &self,
        parts: &Parts,
        payload: &mut Payload<'_>,
    ) -> Result<Response<Body>, ureq::Error> {
        let (api, fits) = (&self.api, self.api_fits);
        match payload {
            Payload::None => transport::run(api, fits, Request::from_parts(parts.clone(), ())),
            Payload::Bytes(b) => transport::run(api, fits, Request::from_parts(parts.clone(), *b)),
            Payload::Reader(reader) => {
                let reader = reader.take().ok_or_else(|| {
                    ureq::Error::Io(std::io::Error::other(
                        "a streamed body can be sent only once",
                    ))
                })?;
                let body = ureq::SendBody::from_reader(reader);
                transport::run(api, fits, Request::from_parts(parts.clone(), body))
            }
        }
    }

    fn finish(&self, resp: Response<Body>) -> Result<Response<Body>, Error> {
        let status = resp.status();
        if self.status_as_error && (status.is_client_error() || status.is_server_error()) {
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
    /// and returns the still-valid token at once.
    fn usable_tokens(self: &Arc<Self>) -> Result<(Arc<Current>, u64), Error> {
        self.adopt_external_change()?;
        let snap = self.gate.snapshot();
        let Some(current) = snap.tokens else {
            return match &self.refresher {
                _ if snap.expired => Err(Error::SessionExpired),
                Some(r) if r.acquires_without_tokens() => {
                    self.refresh_blocking(snap.generation, RefreshReason::Acquire)
                }
                _ => Err(Error::NoTokens),
            };
        };
        if self.refresher.is_some() && current.refresh_at.is_some() {
            let now = self.clock.now();
            if current.is_expired(now) {
                return self.refresh_blocking(snap.generation, RefreshReason::Expired);
            }
            if current.wants_refresh(now) {
                self.refresh_ahead(snap.generation);
            }
        }
        Ok((current, snap.generation))
    }

    /// Gets tokens newer than `seen` through the gate, leading the refresh or waiting for it.
    fn refresh_blocking(
        self: &Arc<Self>,
        seen: u64,
        reason: RefreshReason,
    ) -> Result<(Arc<Current>, u64), Error> {
        let deadline = Instant::now()
            .checked_add(self.refresh_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let mut store_err = None;
        // A cross-process refresh lock, held until the result is saved.
        let mut xlock = None;
        let (role, result) = self.gate.refresh(
            seen,
            deadline,
            |tokens| self.run_refresher(tokens, reason, seen, &mut xlock),
            |snap| store_err = self.persist(snap),
        );
        // Released before any listener runs.
        drop(xlock);
        if role == Role::Waited {
            self.emit(Event::Waited { generation: seen });
        }
        let fresh = self.report(seen, role == Role::Led, result)?;
        if let Some(e) = store_err {
            return Err(Error::Store(e));
        }
        match fresh.snapshot.tokens {
            Some(c) => Ok((c, fresh.snapshot.generation)),
            None if fresh.snapshot.expired => Err(Error::SessionExpired),
            None => Err(Error::NoTokens),
        }
    }

    /// Claims a proactive refresh if none is running and runs it on a background thread.
    fn refresh_ahead(self: &Arc<Self>, seen: u64) {
        let Some(claim) = self.gate.try_claim(seen) else {
            return;
        };
        let pending = PendingClaim {
            inner: Arc::clone(self),
            claim: Some((claim, seen)),
        };
        // If the thread cannot be spawned, the closure (and `pending`) is dropped, and
        // `PendingClaim::drop` gives the claim back, so nobody waits on a flight that never runs.
        let _ = std::thread::Builder::new()
            .name("tokengate-refresh".into())
            .spawn(move || pending.run());
    }

    /// Calls the refresher (with no in-process lock held) and turns its answer into an
    /// [`Attempt`]. First takes the store's cross-process lock, if it has one, and adopts
    /// tokens another process already refreshed; the lock goes to `xlock` so the caller can
    /// hold it until the result is saved.
    fn run_refresher(
        &self,
        tokens: Option<&crate::sync::Arc<Current>>,
        reason: RefreshReason,
        generation: u64,
        xlock: &mut Option<RefreshLock>,
    ) -> Attempt<Current, Arc<RefreshError>> {
        let Some(refresher) = &self.refresher else {
            return Attempt::Failed(Arc::new(RefreshError::NoRefreshToken));
        };
        // Tokens another process stored that expired before anyone refreshed them: refreshed
        // here (with their refresh token, the newest one) instead of adopted.
        let mut stored_expired = None;
        match self.store.lock_for_refresh() {
            Ok(None) => {}
            Ok(Some(lock)) => {
                let sent = tokens.map(|c| c.tokens.access_token().secret());
                let stored = lock.stored().map(|t| t.access_token().secret());
                if stored != sent {
                    // Another process refreshed, logged in or out meanwhile: adopt its state.
                    let adopted = lock.stored().cloned();
                    *xlock = Some(lock);
                    let now = self.clock.now();
                    match adopted {
                        None => return Attempt::Expired,
                        Some(t) => match self.stamp_at(t, now) {
                            Ok(c) if c.is_expired(now) && c.tokens.refresh_token().is_some() => {
                                stored_expired = Some(c);
                            }
                            Ok(c) => return Attempt::Refreshed(c),
                            Err(_) => {
                                return Attempt::Failed(Arc::new(RefreshError::InvalidResponse(
                                    "stored token is empty, too long or has invalid characters",
                                )))
                            }
                        },
                    }
                } else {
                    *xlock = Some(lock);
                }
            }
            Err(e) => return Attempt::Failed(Arc::new(RefreshError::transient(e))),
        }
        self.emit(Event::RefreshStarted { reason, generation });
        let placeholder;
        let current = match (&stored_expired, tokens) {
            (Some(c), _) => &c.tokens,
            (None, Some(c)) => &c.tokens,
            (None, None) => {
                placeholder = Tokens::new("-");
                &placeholder
            }
        };
        let mut retries = 0;
        let answer = loop {
            match refresher.refresh(&self.token_agent, current) {
                Err(e) if retries < self.retry.retries() && refresh_retryable(&e) => {
                    let after = match &e {
                        RefreshError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    self.backoff(retries, after);
                    retries += 1;
                }
                answer => break answer,
            }
        };
        match answer {
            Ok(new) => {
                let new = new.keep_refresh_token(current.refresh_token());
                match self.stamp(new) {
                    Ok(c) => Attempt::Refreshed(c),
                    Err(_) => Attempt::Failed(Arc::new(RefreshError::InvalidResponse(
                        "token is empty, too long or has invalid characters",
                    ))),
                }
            }
            Err(e) if e.is_terminal() => Attempt::Expired,
            Err(e) => Attempt::Failed(Arc::new(e)),
        }
    }

    /// Emits the leader's events, runs the session listener, and maps gate failures to errors.
    fn report(
        &self,
        seen: u64,
        led: bool,
        result: Result<Fresh<Current>, Failure<Arc<RefreshError>>>,
    ) -> Result<Fresh<Current>, Error> {
        match result {
            Ok(fresh) => {
                if fresh.ended_session {
                    self.emit(Event::SessionExpired);
                    if let Some(listener) = &self.on_session_expired {
                        listener();
                    }
                } else if led {
                    self.emit(Event::Refreshed {
                        generation: fresh.snapshot.generation,
                    });
                }
                Ok(fresh)
            }
            Err(failure) => {
                if led {
                    self.emit(Event::RefreshFailed { generation: seen });
                }
                Err(match failure {
                    Failure::Failed(e) => Error::Refresh(e),
                    Failure::Panicked => Error::RefresherPanicked,
                    Failure::TimedOut => Error::RefreshTimeout(self.refresh_timeout),
                })
            }
        }
    }

    /// Writes a change through to the store. Called by the gate under its persist lock.
    fn persist(&self, snap: &Snapshot<Current>) -> Option<Arc<std::io::Error>> {
        let result = match &snap.tokens {
            Some(c) => self.store.save(&c.tokens),
            None => self.store.clear(),
        };
        result.err().map(Arc::new)
    }

    /// Stamps `tokens` with this client's clock and skew (see [`Current::new`]).
    fn stamp(&self, tokens: Tokens) -> Result<Current, &'static str> {
        self.stamp_at(tokens, self.clock.now())
    }

    fn stamp_at(
        &self,
        tokens: Tokens,
        now: std::time::SystemTime,
    ) -> Result<Current, &'static str> {
        Current::new(tokens, now, self.skew)
    }

    /// Adopts tokens another process wrote to a shared store (a login, a logout, a refresh).
    pub(crate) fn adopt_external_change(&self) -> Result<(), Error> {
        let changed = self
            .store
            .poll_external_change()
            .map_err(|e| Error::Store(Arc::new(e)))?;
        if let Some(tokens) = changed {
            let current = tokens
                .map(|t| self.stamp(t))
                .transpose()
                .map_err(Error::InvalidToken)?;
            // Already stored: nothing to write back.
            self.gate.replace(current, |_| {});
        }
        Ok(())
    }

    fn replace(&self, tokens: Option<Current>) -> Result<(), Error> {
        let mut store_err = None;
        self.gate
            .replace(tokens, |snap| store_err = self.persist(snap));
        store_err.map_or(Ok(()), |e| Err(Error::Store(e)))
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(listener) = &self.on_event {
            listener(&event);
        }
    }

    /// Resolves a request path against the base URL (see [`AuthClient::request`]).
    pub(crate) fn resolve(&self, path: &str, query: &str) -> Result<Uri, Error> {
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
        let uri: Uri = url
            .parse()
            .map_err(|_| Error::InvalidUrl("not a valid URL".into()))?;
        if self.origin.matches(&uri) {
            return Ok(uri);
        }
        match Origin::of(&uri) {
            None => Err(Error::InvalidUrl(
                "only http and https URLs with a host are allowed".into(),
            )),
            Some(o) if o != self.origin && !self.allow_other_origins => Err(Error::InvalidUrl(
                "the URL leaves the base URL's origin (see allow_other_origins)".into(),
            )),
            Some(_) => Ok(uri),
        }
    }
}

/// Whether a failed refresh may be retried within the same flight: only where the server
/// cannot have consumed the refresh token (nothing sent, or an explicit 503/429).
fn refresh_retryable(e: &RefreshError) -> bool {
    match e {
        RefreshError::Transport(t) => retry::nothing_sent(t),
        RefreshError::Status { status, .. } => matches!(status, 429 | 503),
        _ => false,
    }
}

/// True unless the 401's Bearer challenge says a new token would not help
/// (`invalid_request`, `insufficient_scope`, RFC 6750 §3.1). No challenge counts as rejected.
fn token_rejected(resp: &Response<Body>) -> bool {
    let challenge = resp
        .headers()
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer);
    !matches!(
        challenge.and_then(|c| c.error).as_deref(),
        Some("invalid_request" | "insufficient_scope")
    )
}

/// A claimed proactive flight on its way to a background thread. Dropped without running
/// (the thread could not be spawned), it hands the claim back to the gate.
struct PendingClaim {
    inner: Arc<Inner>,
    claim: Option<(Claim<Current>, u64)>,
}

impl PendingClaim {
    fn run(mut self) {
        let Some((claim, seen)) = self.claim.take() else {
            return;
        };
        let inner = &self.inner;
        let mut store_err = None;
        let mut xlock = None;
        let result = inner.gate.lead_claimed(
            claim,
            |tokens| inner.run_refresher(tokens, RefreshReason::Proactive, seen, &mut xlock),
            |snap| store_err = inner.persist(snap),
        );
        drop(xlock);
        // Nobody to return errors to: the next request sees the outcome through the gate.
        let _ = inner.report(seen, true, result);
    }
}

impl Drop for PendingClaim {
    fn drop(&mut self) {
        if let Some((claim, _)) = self.claim.take() {
            self.inner.gate.abandon(claim);
        }
    }
}
