//! [`AuthClient`]: attach → send → 401 → refresh (through the gate) → retry once.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::http::{self, request::Parts, Method, Request, Response, Uri};
use ureq::{Agent, Body};

use crate::challenge::parse_bearer;
use crate::clock::Clock;
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::{Attempt, Claim, Failure, Fresh, Gate, Role, Snapshot};
use crate::refresh::Refresh;
use crate::request::RequestBuilder;
use crate::store::{RefreshLock, TokenStore};
use crate::tokens::{Current, Tokens};
use crate::transport;
use crate::util::Origin;

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
        let current = Current::new(tokens, self.inner.clock.now(), self.inner.skew)
            .map_err(Error::InvalidToken)?;
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

/// The body of a request, borrowed for each attempt so it is re-sent byte for byte.
#[derive(Clone, Copy)]
pub(crate) enum SendBody<'a> {
    None,
    Bytes(&'a [u8]),
}

impl Inner {
    /// Runs one request to completion: resolve, attach, send, and on 401 refresh and retry once.
    pub(crate) fn execute(
        self: &Arc<Self>,
        mut parts: Parts,
        body: SendBody<'_>,
    ) -> Result<Response<Body>, Error> {
        if Origin::of(&parts.uri).as_ref() != Some(&self.origin) {
            // Another origin never sees the token, and its 401 is just a status.
            parts.headers.remove(http::header::AUTHORIZATION);
            let resp = self.send_once(&parts, body)?;
            return self.finish(resp);
        }
        let (mut current, mut generation) = self.usable_tokens()?;
        let mut refreshed = false;
        loop {
            parts
                .headers
                .insert(http::header::AUTHORIZATION, current.header.clone());
            let mut resp = self.send_once(&parts, body)?;
            if resp.status() != http::StatusCode::UNAUTHORIZED || !token_rejected(&resp) {
                return self.finish(resp);
            }
            transport::drain(&mut resp);
            self.emit(Event::Unauthorized { generation });
            if refreshed || self.refresher.is_none() {
                return Err(Error::Unauthorized);
            }
            (current, generation) =
                self.refresh_blocking(generation, RefreshReason::Unauthorized)?;
            refreshed = true;
        }
    }

    fn send_once(&self, parts: &Parts, body: SendBody<'_>) -> Result<Response<Body>, Error> {
        let result = match body {
            SendBody::None => transport::run(
                &self.api,
                self.api_fits,
                Request::from_parts(parts.clone(), ()),
            ),
            SendBody::Bytes(b) => transport::run(
                &self.api,
                self.api_fits,
                Request::from_parts(parts.clone(), b),
            ),
        };
        result.map_err(Error::Http)
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
        // A cross-process refresh lock, held until the result is saved (dropped at return).
        let mut _xlock = None;
        let (role, result) = self.gate.refresh(
            seen,
            deadline,
            |tokens| self.run_refresher(tokens, reason, seen, &mut _xlock),
            |snap| store_err = self.persist(snap),
        );
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
                        Some(t) => match Current::new(t, now, self.skew) {
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
        match refresher.refresh(&self.token_agent, current) {
            Ok(new) => {
                let new = new.keep_refresh_token(current.refresh_token());
                match Current::new(new, self.clock.now(), self.skew) {
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

    /// Adopts tokens another process wrote to a shared store (a login, a logout, a refresh).
    fn adopt_external_change(&self) -> Result<(), Error> {
        let changed = self
            .store
            .poll_external_change()
            .map_err(|e| Error::Store(Arc::new(e)))?;
        if let Some(tokens) = changed {
            let current = tokens
                .map(|t| Current::new(t, self.clock.now(), self.skew))
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
        let lower = path.get(..8).unwrap_or(path).to_ascii_lowercase();
        let mut url = if lower.starts_with("https://") || lower.starts_with("http://") {
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
        } else if path.starts_with('/') {
            format!("{}{}", self.base_root, path)
        } else {
            format!("{}{}", self.base, path)
        };
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(query);
        }
        let uri: Uri = url
            .parse()
            .map_err(|_| Error::InvalidUrl("not a valid URL".into()))?;
        if Origin::of(&uri).is_none() {
            return Err(Error::InvalidUrl(
                "only http and https URLs with a host are allowed".into(),
            ));
        }
        Ok(uri)
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
        let mut _xlock = None;
        let result = inner.gate.lead_claimed(
            claim,
            |tokens| inner.run_refresher(tokens, RefreshReason::Proactive, seen, &mut _xlock),
            |snap| store_err = inner.persist(snap),
        );
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
