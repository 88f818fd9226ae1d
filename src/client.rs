//! [`AuthClient`]: the users' handle. Requests go through `run.rs` (one request's life), the
//! tokens through the session (`session/`), settings through [`Config`].

use std::fmt;
use std::sync::Arc;

use ureq::http::Method;

use crate::config::Config;
use crate::error::Error;
use crate::handle::Handle;
use crate::request::RequestBuilder;
use crate::session::Session;
use crate::stats::Stats;
use crate::tokens::{AccessToken, Tokens};

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
/// the token call's timeout + 2 s (then a save that failed earlier is tried once more, which
/// may wait for the store's lock), and saves its result: a short-lived tool that returns from
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

impl AuthClient {
    /// Starts building a client for the API at `base_url` (e.g. `https://api.example.com/v1/`).
    /// Request paths are resolved against it.
    pub fn builder(base_url: impl Into<String>) -> crate::AuthClientBuilder {
        crate::AuthClientBuilder::new(base_url.into())
    }

    pub(crate) fn new(config: Arc<Config>, session: Session) -> AuthClient {
        AuthClient {
            handle: Handle::new(config, session),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.handle.config
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.handle.session
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
    /// replaces it. An absolute `http(s)://` URL of the base URL's origin (scheme, host
    /// and port) is used as is, with the token; one of another origin is rejected with
    /// [`Error::InvalidUrl`] unless
    /// [`allow_other_origins`](crate::AuthClientBuilder::allow_other_origins) is set, and is
    /// then sent without the token. A scheme-relative `//host/..` or any other scheme is
    /// rejected with [`Error::InvalidUrl`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder::new(Arc::clone(&self.handle), method, path)
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
        let session = self.session();
        // A login: a new lineage, kept by every refresh of it.
        let current = session
            .stamp(tokens.new_lineage())
            .map_err(Error::InvalidToken)?;
        session.replace(Some(current))
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
        self.session().replace(None)
    }

    /// A copy of the current tokens, if any (with `expires_at` and `issued_at` resolved).
    pub fn tokens(&self) -> Option<Tokens> {
        self.session().tokens()
    }

    /// An access token that is valid now, for use outside this client: to print it (like
    /// `gcloud auth print-access-token`), hand it to a git credential helper or another HTTP
    /// client.
    ///
    /// Gets the token as a request does (an expired one is refreshed first, through the
    /// refresh gate: one refresh shared with every thread that needs one; with a shared store,
    /// tokens another process stored are adopted instead), and one more thing: inside the
    /// refresh window it waits for the refresh-ahead (which a request would leave running in
    /// the background), because whoever gets the token cannot come back after a 401. As for
    /// requests, that refresh is one flight per token that never ends the session and is not
    /// tried again once it failed: the still-valid token is returned then, at once (the
    /// refresh at expiry decides). Outside the window, no refresh is made (a shared store is
    /// still read). [`AuthClient::tokens`] has the expiry.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), tokengate::Error> {
    /// # let client = tokengate::AuthClient::builder("https://api.example.com/").build()?;
    /// println!("{}", client.access_token()?.secret());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As for a request that needs a token: [`Error::NoTokens`] (none, and the refresher
    /// cannot acquire any), [`Error::SessionExpired`]; for an expired token, the refresh's
    /// errors as for [`AuthClient::force_refresh`]; [`Error::Store`] if a shared store cannot
    /// be read; [`Error::Reentrant`] from the client's own refresher, store or a listener
    /// during a refresh, when the token has expired.
    pub fn access_token(&self) -> Result<AccessToken, Error> {
        let current = self.session().valid_tokens()?;
        Ok(current.tokens.access_token().clone())
    }

    /// How many threads are blocked right now waiting for another thread's refresh to finish.
    ///
    /// A diagnostic (for metrics, or for tests that need to know that waiters have arrived
    /// before letting a refresh finish): the value may be out of date as soon as it returns.
    /// A thread counted here is waiting on the refresh running now, and gets that refresh's
    /// outcome instead of starting another one.
    pub fn refresh_waiters(&self) -> usize {
        self.session().waiting()
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
    /// rejected the refresh token, or the session had already ended),
    /// [`Error::RefresherPanicked`], [`Error::RefreshTimeout`]; [`Error::NoTokens`] without
    /// tokens (unless the refresher acquires them, like
    /// [`ClientCredentials`](crate::ClientCredentials));
    /// [`Error::Config`] without a refresher; [`Error::Store`] if a shared store cannot be
    /// read; [`Error::Reentrant`] from the client's own refresher, store or listeners.
    pub fn force_refresh(&self) -> Result<(), Error> {
        self.session().force_refresh()
    }

    /// What the client did so far: requests sent, 401s, refreshes (made, failed, adopted from
    /// other processes), waits, retries, sessions ended. Shared by all clones; cheap (a few
    /// atomic loads), and counting costs the request path one atomic add per event.
    pub fn stats(&self) -> Stats {
        self.session().hooks().stats()
    }

    /// Ends this handle: waits for a refresh in flight, saves what it got, and retries a save
    /// that failed earlier. Call it before `std::process::exit`, or to learn whether the
    /// session was stored. Dropping the last handle does the same but cannot report errors;
    /// a handle closed here is not shut down again when it drops, so the wait happens once.
    ///
    /// On the last handle, a refresh in flight makes no further token call (one still
    /// confirming its store's lock makes none at all), and the wait is bounded by one token
    /// call: the token timeout + 2 s. With other clones still alive, they go on working, and
    /// the wait is bounded by the longest refresh (the default `refresh_timeout`). Then a save
    /// that failed earlier is tried once more; with a shared store that try takes the store's
    /// lock, so it may wait up to the store's lock timeout while another process holds it.
    /// A store lock kept for a refresh that could not be written is released.
    ///
    /// # Errors
    /// [`Error::Store`] if tokens in memory could not be saved; [`Error::RefreshTimeout`] if a
    /// refresh did not finish in time. On the last handle its store lock is then released
    /// (the tokens it may get are not saved); on another handle only if the refresh has held
    /// it past its bound, as any thread giving up on a refresh does. [`Error::Reentrant`]
    /// from inside the client's own refresh, store or listener: the handle is then not
    /// closed here; if it was the last one, the client shuts down (on a thread of its own)
    /// once that refresh is over.
    pub fn close(self) -> Result<(), Error> {
        Handle::close(self.handle)
    }
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (has_tokens, generation, expired) = self.session().state();
        f.debug_struct("AuthClient")
            .field("base_url", &self.config().base().as_str())
            .field("has_tokens", &has_tokens)
            .field("generation", &generation)
            .field("session_expired", &expired)
            .finish_non_exhaustive()
    }
}
