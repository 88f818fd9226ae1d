//! The crate's error types, [`Error`] and [`RefreshError`] (the login flows' own errors are in
//! `login/error.rs`). None of them ever prints a token or a client secret.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::login::error::{described, BrowserError, DeviceError, DiscoveryError, RevocationError};
use crate::tokens::IdTokenError;
use crate::transport_error::TransportError;

/// Everything an [`AuthClient`](crate::AuthClient) call can fail with.
///
/// Predicates ([`Error::is_session_expired`], [`Error::is_transient`], [`Error::status`]) let
/// callers act without matching every variant.
///
/// `Display` says what failed and, for a variant that wraps an error ([`RefreshError`],
/// [`DeviceError`], …), that error's message too: what the server answered (its OAuth `error`
/// and `error_description`), which endpoint could not be reached:
///
/// ```text
/// token refresh failed: the token endpoint answered 401 with error invalid_client: AADSTS7000215: Invalid client secret provided.
/// ```
///
/// `source()` then goes on from the wrapped error's own cause (a transport error, an I/O
/// error), so a chain printed cause by cause says each thing once. Match the variant for the
/// wrapped error itself.
///
/// The alternate form, `{:#}`, prints that whole chain on one line, each cause after a `: `
/// (as `anyhow` does), for a program's last word:
///
/// ```no_run
/// # fn run() -> Result<(), tokengate::Error> { Ok(()) }
/// fn main() -> std::process::ExitCode {
///     if let Err(e) = run() {
///         eprintln!("error: {e:#}"); // error: token refresh failed: …: Connection refused
///         return std::process::ExitCode::FAILURE;
///     }
///     std::process::ExitCode::SUCCESS
/// }
/// ```
///
/// # `?` in a function returning `Result<_, tokengate::Error>`
/// Every fallible call of tokengate returns this error, but the store interface
/// ([`TokenStore`](crate::TokenStore) and [`StoreLock`](crate::store::StoreLock), for stores'
/// implementors: an [`io::Error`](std::io::Error)) and the test kit (`tokengate::testing`).
/// The other errors a program meets on the way convert with `?`:
/// - [`ureq::Error`] (reading a response body, `resp.body_mut().read_to_string()?`, or calling
///   ureq yourself, e.g. on an agent with [`TokenMiddleware`](crate::TokenMiddleware)):
///   `StatusCode(401)` becomes [`Error::Unauthorized`], another `StatusCode(n)`
///   [`Error::StatusCode`], `Json` (from `read_json`) [`Error::Json`], `Other` holding a `tokengate::Error` (the middleware's) that
///   error, anything else [`Error::Http`] (a [`TransportError`] that names no proxy; a URL
///   in ureq's message is cut to its origin: see the `From<ureq::Error>` impl below).
/// - [`IdTokenError`](crate::IdTokenError) ([`IdToken::unverified_claims`](crate::IdToken::unverified_claims)):
///   [`Error::IdToken`].
///
/// ```
/// use tokengate::{AuthClient, FileStore};
///
/// fn whoami(client: &AuthClient) -> Result<String, tokengate::Error> {
///     let mut resp = client.get("me").call()?;
///     Ok(resp.body_mut().read_to_string()?)             // a ureq::Error converts too
/// }
/// # fn main() -> Result<(), tokengate::Error> {
/// # let dir = std::env::temp_dir().join(format!("tokengate-doc-q-{}", std::process::id()));
/// let store = FileStore::new(dir.join("tokens.json"))?;
/// # let _ = (store, whoami as fn(&AuthClient) -> _); let _ = std::fs::remove_dir_all(&dir);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The session ended: the authorization server rejected the refresh token
    /// (`invalid_grant`, or a 400/401/403 from a [`JsonRefresh`](crate::JsonRefresh)
    /// endpoint), or the tokens expired (or drew a 401) and cannot be refreshed (no refresh
    /// token: see [`Refresh::can_refresh`](crate::Refresh::can_refresh)). The tokens were
    /// cleared from the store, the `on_session_expired` listener ran once, and every call
    /// returns this error until [`AuthClient::set_tokens`](crate::AuthClient::set_tokens).
    SessionExpired,

    /// There are no tokens: none were given, or [`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens) logged out.
    NoTokens,

    /// The server answered 401 and a refresh could not help. That is: the 401 came for a
    /// freshly refreshed token (tokengate replays a request at most once after a refresh);
    /// or there is no refresher; or the challenge said `invalid_request` (the request, not
    /// the token, is wrong; `insufficient_scope` is [`Error::InsufficientScope`]); or the 401
    /// came from another origin (with `http_status_as_error`, the default).
    /// Returned whatever `http_status_as_error` says when the client's own token was rejected.
    Unauthorized,

    /// The API answered 401 or 403 to the client's token with `WWW-Authenticate: Bearer
    /// error="insufficient_scope"` (RFC 6750 §3.1): the token is valid but lacks a scope, so
    /// no refresh is made; ask the user to consent to `scope` (the one the server named, if
    /// it did, printable ASCII of at most 256 bytes) and log in again. Returned whatever
    /// `http_status_as_error` says.
    InsufficientScope {
        /// 401 or 403.
        status: u16,
        /// The scope the server asked for.
        scope: Option<String>,
    },

    /// The final response had a 4xx or 5xx status (only when `http_status_as_error` is on,
    /// the default). The status is never 401: that one is [`Error::Unauthorized`].
    StatusCode(u16),

    /// A refresh failed in a way that keeps the session: the token endpoint was unreachable,
    /// slow, answered 5xx/429, another OAuth2 error than `invalid_grant` (e.g.
    /// `invalid_client`), or something unusable; a shared store could not be locked or read
    /// ([`RefreshError::Store`]); or [`AuthClient::force_refresh`](crate::AuthClient::force_refresh)
    /// found no refresh token. The tokens were kept; a later call
    /// tries again. Every thread that waited on that refresh gets this same error.
    Refresh(Arc<RefreshError>),

    /// The refresher panicked. The panic propagated in the thread that ran it; every thread
    /// waiting on that refresh gets this error, and the next call can refresh again.
    RefresherPanicked,

    /// This thread waited longer than `refresh_timeout` for another thread's refresh, or
    /// [`AuthClient::close`](crate::AuthClient::close) waited this long (the token timeout +
    /// 2 s on the last handle) for a refresh in flight.
    RefreshTimeout(Duration),

    /// A token given to or received by tokengate is empty, too long, or holds characters that
    /// cannot travel in an HTTP header (CR, LF, NUL, spaces, non-ASCII). It was not stored or sent.
    InvalidToken(&'static str),

    /// A URL or path is not usable: unparsable, not http(s), or a path that would leave the
    /// base URL's origin (e.g. `//evil.example/`).
    InvalidUrl(String),

    /// Plain `http://` to a host other than loopback, without
    /// [`AuthClientBuilder::allow_insecure_http`](crate::AuthClientBuilder::allow_insecure_http)
    /// (for the device flow's endpoints,
    /// [`AuthServer::allow_insecure_http`](crate::AuthServer::allow_insecure_http)).
    InsecureUrl(String),

    /// A header name or value given to a request builder is invalid.
    InvalidHeader(String),

    /// A JSON body could not be written (`send_json`), or a response body read with ureq's
    /// `read_json` (through `?`) was not the JSON asked for.
    Json(serde_json::Error),

    /// The token store failed to load, save or clear, or its lock could not be taken; or
    /// [`FileStore::new`](crate::FileStore::new) refused its path, or
    /// [`FileStore::app_dir`](crate::FileStore::app_dir) found no home directory (the error
    /// names the variable to set). What
    /// became of the tokens in memory is documented on the call that returned it (a login
    /// whose write failed, and any logout, are in use in memory, and written later; see
    /// [`AuthClient::set_tokens`](crate::AuthClient::set_tokens) and
    /// [`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens)).
    Store(Arc<std::io::Error>),

    /// The client was configured inconsistently: reported by `build()`, by
    /// [`AuthClient::force_refresh`](crate::AuthClient::force_refresh) on a client without a
    /// refresher, by `RedisStore::open` for an unusable session name, and by
    /// [`AuthServer::device_flow`](crate::AuthServer::device_flow) without a device
    /// authorization endpoint (and its twins for the browser and interactive logins), and by
    /// [`FileStore::app_dir`](crate::FileStore::app_dir) for an unusable app name.
    Config(&'static str),

    /// More redirects than `max_redirects` (the number given) in one call.
    TooManyRedirects(u32),

    /// A redirect could not be followed: no or unparsable `Location`, or a non-http(s) target.
    BadRedirect(&'static str),

    /// The request would have been retried (or replayed after a refresh, or re-sent to a
    /// 307/308 target), but its body was streamed with
    /// [`send_reader`](crate::RequestBuilder::send_reader) and cannot be sent twice. The
    /// error that stopped it is the source.
    NotReplayable(Box<Error>),

    /// A transport error from ureq talking to the API: connection, TLS, timeout, protocol.
    Http(TransportError),

    /// The client was called from inside itself: from its refresher, its store, or an event
    /// listener running while it refreshes or writes the store. Waiting there would wait for
    /// the very refresh (or store lock) the calling thread holds, so the call fails at once.
    /// Requests that need no refresh still work from a listener.
    Reentrant,

    /// Fetching or checking an issuer's metadata failed ([`Discovery`](crate::login::Discovery)).
    Discovery(DiscoveryError),

    /// A device login ([`DeviceFlow`](crate::login::DeviceFlow)) failed: denied, expired, refused,
    /// or the server could not be reached.
    Device(DeviceError),

    /// A browser login ([`BrowserFlow`](crate::login::BrowserFlow)) failed: refused,
    /// timed out, no port to listen on, or the code exchange failed.
    Browser(BrowserError),

    /// [`AuthClient::logout`](crate::AuthClient::logout) logged out locally (memory and store
    /// cleared), but the server did not confirm the revocation of the session: it may stay
    /// valid at the server until it expires.
    RevocationFailed(RevocationError),
    /// An ID token could not be read ([`IdToken::unverified_claims`](crate::IdToken::unverified_claims)).
    IdToken(IdTokenError),
}

/// Each variant says what failed; one that wraps an error shows that error's message too
/// (what the server said, which endpoint, which proxy), and `source()` then goes on from that
/// error's own cause, so a chain printed cause by cause says each thing once. `{:#}` adds
/// each cause, after a `: `.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.message(f)?;
        if f.alternate() {
            let mut cause = std::error::Error::source(self);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl Error {
    /// What failed, with a wrapped error's own message: `Display` without the causes.
    fn message(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SessionExpired => f.write_str("session expired: log in again"),
            Error::NoTokens => f.write_str("no tokens: log in first"),
            Error::Unauthorized => f.write_str("the server answered 401 Unauthorized"),
            Error::InsufficientScope { status, .. } => {
                write!(f, "the token lacks a scope the API requires ({status})")
            }
            Error::StatusCode(s) => write!(f, "http status: {s}"),
            Error::Refresh(e) => write!(f, "token refresh failed: {e}"),
            Error::RefresherPanicked => f.write_str("the token refresher panicked"),
            Error::RefreshTimeout(d) => write!(f, "timed out waiting {d:?} for a token refresh"),
            Error::InvalidToken(what) => write!(
                f,
                "invalid {what}: tokens must be 1 to 16384 bytes of visible ASCII"
            ),
            Error::InvalidUrl(why) => write!(f, "invalid url: {why}"),
            Error::InsecureUrl(origin) => write!(
                f,
                "refusing to send credentials over plain http to a non-loopback host: {origin}"
            ),
            Error::InvalidHeader(why) => write!(f, "invalid header {why}"),
            Error::Json(e) => write!(f, "json body: {e}"),
            Error::Store(e) => write!(f, "token store failed: {e}"),
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::TooManyRedirects(n) => write!(f, "too many redirects (more than {n})"),
            Error::BadRedirect(why) => write!(f, "cannot follow redirect: {why}"),
            Error::NotReplayable(e) => write!(
                f,
                "the request failed and its streamed body cannot be re-sent: {e}"
            ),
            Error::Http(e) => write!(f, "http transport error: {e}"),
            Error::Reentrant => {
                f.write_str("called back into the client from its own refresher, store or listener")
            }
            Error::Discovery(e) => write!(f, "authorization server discovery failed: {e}"),
            Error::Device(e) => write!(f, "device login failed: {e}"),
            Error::Browser(e) => write!(f, "browser login failed: {e}"),
            Error::RevocationFailed(e) => write!(
                f,
                "logged out locally, but revoking the session at the server failed: {e}"
            ),
            Error::IdToken(e) => write!(f, "could not read the ID token: {e}"),
        }
    }
}

impl std::error::Error for Error {
    /// The cause of the error `Display` shows: for a variant that wraps an error, that
    /// error's own cause (its message is already in this one's).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Refresh(e) => e.source(),
            Error::Json(e) => e.source(),
            Error::Store(e) => e.source(),
            Error::NotReplayable(e) => e.source(),
            Error::Http(e) => e.source(),
            Error::Discovery(e) => e.source(),
            Error::Device(e) => e.source(),
            Error::Browser(e) => e.source(),
            Error::RevocationFailed(e) => e.source(),
            Error::IdToken(e) => e.source(),
            _ => None,
        }
    }
}

impl Error {
    /// True for [`Error::SessionExpired`]: the user must log in again.
    pub fn is_session_expired(&self) -> bool {
        matches!(self, Error::SessionExpired)
    }

    /// True when only a login helps: [`Error::SessionExpired`] (this client saw the session
    /// end) or [`Error::NoTokens`] (there were none, or another process sharing the store saw
    /// the session end or logged out, and this client took that over).
    ///
    /// ```
    /// assert!(tokengate::Error::SessionExpired.needs_login());
    /// assert!(tokengate::Error::NoTokens.needs_login());
    /// assert!(!tokengate::Error::Unauthorized.needs_login());
    /// ```
    pub fn needs_login(&self) -> bool {
        matches!(self, Error::SessionExpired | Error::NoTokens)
    }

    /// True when trying the same call later may succeed: a transport error of the connection
    /// (refused, reset, timed out; not an unusable URL, a body over its limit, or one that is
    /// not the JSON asked for, nor an `Other` error from a connector or middleware of your own
    /// agent: see [`TransportError`]), a transient
    /// refresh failure, a refresh timeout or panic, a 5xx/429 status, a transient discovery
    /// or device-login error, or a `NotReplayable` whose cause is one; never `Store` or
    /// `RevocationFailed`.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Refresh(e) => !e.is_terminal(),
            Error::RefresherPanicked | Error::RefreshTimeout(_) => true,
            Error::Http(e) => e.is_transient(),
            Error::NotReplayable(e) => e.is_transient(),
            Error::StatusCode(s) => *s == 429 || *s >= 500,
            Error::Discovery(e) => e.is_transient(),
            Error::Device(e) => e.is_transient(),
            Error::Browser(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The HTTP status behind the error, if there is one (401 for [`Error::Unauthorized`];
    /// the cause's for [`Error::NotReplayable`]). For an OAuth error answer it is the status
    /// the server sent, which may be 200 (GitHub answers its errors with 200).
    ///
    /// ```
    /// use tokengate::Error;
    /// assert_eq!(Error::Unauthorized.status(), Some(401));
    /// assert_eq!(Error::NotReplayable(Box::new(Error::StatusCode(503))).status(), Some(503));
    /// assert!(Error::StatusCode(503).is_transient() && !Error::StatusCode(404).is_transient());
    /// assert_eq!(Error::NoTokens.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::StatusCode(s) => Some(*s),
            Error::Unauthorized => Some(401),
            Error::InsufficientScope { status, .. } => Some(*status),
            Error::Refresh(e) => e.status(),
            Error::NotReplayable(e) => e.status(),
            Error::Discovery(DiscoveryError::Status(s))
            | Error::Device(DeviceError::Status(s) | DeviceError::OAuth { status: s, .. })
            | Error::Browser(BrowserError::Status(s) | BrowserError::OAuth { status: s, .. })
            | Error::RevocationFailed(
                RevocationError::Status(s) | RevocationError::OAuth { status: s, .. },
            ) => Some(*s),
            _ => None,
        }
    }
}

/// Why a refresh (a call of a [`Refresh`](crate::Refresh) strategy) failed.
///
/// [`RefreshError::is_terminal`] decides what happens next: a terminal error ends the session
/// ([`Error::SessionExpired`]); any other keeps the tokens ([`Error::Refresh`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The server rejected the refresh token: an OAuth error that only a new login cures
    /// (`invalid_grant`; GitHub's `bad_refresh_token`; OpenID Connect's
    /// `interaction_required`, `login_required`, `consent_required`, as Microsoft Entra sends
    /// when it now requires MFA), with any status but 5xx and 429 (GitHub answers with 200);
    /// or 400/401/403 from a [`JsonRefresh`](crate::JsonRefresh) endpoint. Terminal.
    #[error("the refresh token was rejected ({status}{}{})", code_suffix(.error), described(.description))]
    InvalidGrant {
        /// HTTP status of the token response.
        status: u16,
        /// The OAuth2 `error` code, if the server gave one.
        error: Option<String>,
        /// The server's `error_description`, made printable (control characters dropped,
        /// at most 400 characters), or `[redacted]` if it echoed a secret.
        description: Option<String>,
    },

    /// There is no refresh token to refresh with. Terminal.
    #[error("no refresh token")]
    NoRefreshToken,

    /// The token endpoint answered another OAuth2 error (e.g. `invalid_client`,
    /// `invalid_scope`, GitHub's `incorrect_client_credentials`), with any status but 5xx and
    /// 429. Not terminal: it is a configuration problem, not a dead session, so tokens are kept.
    #[error("the token endpoint answered {status} with error {error}{}", described(.description))]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code (only characters RFC 6749 allows are kept, at most 64), or
        /// `[redacted]` if it echoed a secret.
        error: String,
        /// The server's `error_description`, as for [`RefreshError::InvalidGrant`].
        description: Option<String>,
    },

    /// The token endpoint answered an unexpected status (5xx, 429, …). Not terminal.
    #[error("the token endpoint answered {status}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The `Retry-After` the server sent (seconds or an HTTP date, as a delay), if any.
        retry_after: Option<Duration>,
    },

    /// The token endpoint could not be reached or its answer not read (connection refused,
    /// timeout, reset mid-body). Not terminal.
    #[error("could not reach the token endpoint: {0}")]
    Transport(TransportError),

    /// The token endpoint answered 2xx with something that is not a usable token response:
    /// not JSON, wrong shape, missing `access_token`, a non-bearer `token_type`, a bad
    /// `expires_in`, invalid token characters, a body over the size limit. The body is never quoted.
    #[error("unusable token response: {0}")]
    InvalidResponse(&'static str),

    /// The shared store could not be locked or read before refreshing (e.g. another process
    /// held the lock past the lock timeout, or the token file is corrupt), or its lock was
    /// lost before a token call (a `RedisStore` lease that ran out while this process was
    /// paused or cut off). Nothing was sent to the token endpoint then. Not terminal.
    #[error("the token store could not be locked or read")]
    Store(#[source] Arc<std::io::Error>),

    /// An error from a custom [`Refresh`](crate::Refresh) implementation.
    #[error("custom refresher failed")]
    Custom {
        /// Whether the session is over.
        terminal: bool,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!(", {c}"))
        .unwrap_or_default()
}

impl RefreshError {
    /// A custom error that ends the session (like `invalid_grant`).
    pub fn terminal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        RefreshError::Custom {
            terminal: true,
            source: source.into(),
        }
    }

    /// A custom error that keeps the session (like a network failure).
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        RefreshError::Custom {
            terminal: false,
            source: source.into(),
        }
    }

    /// True when the session is over and the user must log in again.
    pub fn is_terminal(&self) -> bool {
        match self {
            RefreshError::InvalidGrant { .. } | RefreshError::NoRefreshToken => true,
            RefreshError::Custom { terminal, .. } => *terminal,
            _ => false,
        }
    }

    /// The token endpoint's HTTP status, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            RefreshError::InvalidGrant { status, .. }
            | RefreshError::OAuth { status, .. }
            | RefreshError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alternate_form_prints_every_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("cannot rename tokens.json")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = std::io::Error::other("disk full");
        let e = Error::Store(Arc::new(std::io::Error::other(Outer(inner))));
        assert_eq!(
            e.to_string(),
            "token store failed: cannot rename tokens.json"
        );
        assert_eq!(
            format!("{e:#}"),
            "token store failed: cannot rename tokens.json: disk full"
        );
        assert_eq!(format!("{:#}", Error::NoTokens), "no tokens: log in first");
    }

    #[test]
    fn errors_are_send_sync_and_small() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert_send_sync::<RefreshError>();
        assert!(
            std::mem::size_of::<Error>() <= 64,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn display_says_what_the_server_said_and_the_chain_says_each_thing_once() {
        use std::error::Error as _;
        let e = Error::Refresh(Arc::new(RefreshError::OAuth {
            status: 401,
            error: "invalid_client".into(),
            description: Some("AADSTS7000215: Invalid client secret provided.".into()),
        }));
        assert_eq!(
            e.to_string(),
            "token refresh failed: the token endpoint answered 401 with error invalid_client: \
             AADSTS7000215: Invalid client secret provided."
        );
        assert!(e.source().is_none());
        let e = Error::Device(DeviceError::AccessDenied);
        assert_eq!(
            e.to_string(),
            "device login failed: the user denied the login"
        );
        // A wrapped error with a cause: its message here, its cause next.
        let io = std::io::Error::other("disk on fire");
        let e = Error::Refresh(Arc::new(RefreshError::Store(Arc::new(io))));
        assert_eq!(
            e.to_string(),
            "token refresh failed: the token store could not be locked or read"
        );
        assert_eq!(e.source().unwrap().to_string(), "disk on fire");
        let e = Error::NotReplayable(Box::new(Error::Refresh(Arc::new(
            RefreshError::NoRefreshToken,
        ))));
        assert_eq!(
            e.to_string(),
            "the request failed and its streamed body cannot be re-sent: token refresh failed: \
             no refresh token"
        );
        assert!(e.source().is_none());
    }

    #[test]
    fn terminal_classification() {
        assert!(RefreshError::InvalidGrant {
            status: 400,
            error: None,
            description: None,
        }
        .is_terminal());
        assert!(RefreshError::NoRefreshToken.is_terminal());
        assert!(!RefreshError::Status {
            status: 503,
            retry_after: None
        }
        .is_terminal());
        assert!(!RefreshError::OAuth {
            status: 401,
            error: "invalid_client".into(),
            description: None,
        }
        .is_terminal());
        assert!(RefreshError::terminal("x").is_terminal());
        assert!(!RefreshError::transient("x").is_terminal());
        let e = Error::Refresh(Arc::new(RefreshError::Status {
            status: 503,
            retry_after: None,
        }));
        assert!(e.is_transient());
        assert_eq!(e.status(), Some(503));
        assert_eq!(
            RefreshError::InvalidGrant {
                status: 400,
                error: Some("invalid_grant".into()),
                description: None,
            }
            .to_string(),
            "the refresh token was rejected (400, invalid_grant)"
        );
    }
}
