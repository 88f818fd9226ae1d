//! The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636 S256) for native apps
//! (RFC 8252): the browser login of command-line tools.
//!
//! [`BrowserFlow::start`] binds a loopback listener and builds the authorization URL; the
//! user's browser opens it, the server sends the browser back to the listener with a code;
//! [`BrowserAuthorization::wait`] exchanges it for tokens. [`BrowserFlow::run`] does all
//! of it, opening the browser and printing the URL.

mod callback;
mod listener;
pub(crate) mod open;
mod pkce;
mod wait;

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use ureq::Agent;

#[cfg(feature = "testing")]
pub(crate) use pkce::challenge_s256;
pub use wait::BrowserAuthorization;

use super::error::{BrowserError, DeviceError};
use super::AuthServer;
use crate::encoding::form_body;
use crate::error::Error;
use crate::refresh::{Client, Params};
use crate::tokens::Tokens;
use crate::url::GivenUrl;

/// How long [`BrowserAuthorization::wait`] waits for the browser, by default.
pub const DEFAULT_BROWSER_TIMEOUT: Duration = Duration::from_secs(300);
/// The callback path served, by default.
const DEFAULT_PATH: &str = "/callback";

/// [`BrowserFlow::open_with`]'s hook.
type OpenHook = dyn Fn(&str) -> std::io::Result<()> + Send + Sync;

/// What the flow does to open the browser.
#[derive(Clone)]
enum Opener {
    /// `$BROWSER`, then the platform's opener.
    System,
    /// The caller's hook.
    Hook(Arc<OpenHook>),
    /// Nothing: the URL is only printed.
    Never,
}

/// A login through the user's browser, for command-line tools: the authorization code grant
/// with PKCE (RFC 7636, `S256`) and a `state`, the browser sent back to a loopback listener
/// (RFC 8252 §7.3), the code exchanged at the token endpoint.
///
/// Built by [`AuthServer::browser_flow`], with the server's client identity, authorization
/// and token endpoints, extra parameters, agent and `allow_insecure_http`:
///
/// ```no_run
/// use tokengate::AuthServer;
/// # fn main() -> Result<(), tokengate::Error> {
/// let tokens = AuthServer::discover("https://accounts.example.com")?  // or AuthServer::new(…).authorization_url(…)
///     .client_id("my-cli")
///     .browser_flow()?
///     .scope("openid offline_access api")
///     .run(&mut std::io::stderr())?;       // prints the URL, opens the browser, waits
/// # let _ = tokens; Ok(()) }
/// ```
///
/// What it guarantees:
/// - **PKCE and state**: a 32-byte verifier and a separate 32-byte `state`, both from the
///   operating system's cryptographic source ([`BrowserError::Randomness`] if it fails: no
///   fallback); the `state` is compared in constant time, on the listener and on a paste.
/// - **The listener**: `http://127.0.0.1:{port}/callback` on a port the OS picks, unless
///   [`ports`](BrowserFlow::ports) lists the ones registered at the server (the first free one
///   is used, [`BrowserError::PortsBusy`] names them when none is). With
///   [`localhost(true)`](BrowserFlow::localhost) the redirect says `localhost` and the
///   listener answers on both 127.0.0.1 and `[::1]` at the same port. Only the callback path
///   is served (404 elsewhere: browsers ask for `/favicon.ico`); a callback with another
///   login's `state` gets an error page and does not count; the first valid callback ends
///   the wait, later ones get a "finished" page. The pages are static: they never echo the
///   code or any parameter, send no referrer and load nothing. The listener stops when the
///   login ends.
/// - **A timeout**: [`BrowserError::Timeout`] after 5 minutes ([`DEFAULT_BROWSER_TIMEOUT`],
///   [`timeout`](BrowserFlow::timeout)) without an answer, so a closed tab never hangs the
///   tool.
/// - **Opening the browser never fails the login**: the URL is printed first; then
///   `$BROWSER`, or the platform's opener (`xdg-open`; under WSL `wslview` or PowerShell's
///   `Start-Process`; `open` on macOS; the URL handler on Windows), or your
///   [`open_with`](BrowserFlow::open_with) hook.
/// - **A paste fallback** ([`BrowserAuthorization::wait_or_paste`]): over SSH or in a
///   container, where the browser's redirect cannot reach the listener, the user pastes the
///   URL the browser ended on (or the bare code), raced against the listener.
///
/// Neither the code nor the verifier nor the `state` appear in `Debug`, errors or logs.
///
/// What it cannot prevent: the authorization URL (with the `state`) is an argument of the
/// opener's process, which other local users can read; one who does can end the login early
/// with a forged error or code at the listener (a failed login, never a session of theirs:
/// the PKCE verifier never leaves this process). The listener serves GET only, reads no
/// request body, and serves at most 32 connections at once on each address (a new one
/// closes the oldest: a local process holding connections open cannot lock the browser out).
#[derive(Clone)]
pub struct BrowserFlow {
    authorization_url: GivenUrl,
    token_url: GivenUrl,
    client: Client,
    scope: Option<String>,
    /// The server's extra parameters, then the flow's: sent to both endpoints.
    params: Params,
    /// Sent in the authorization request only (`prompt`, `access_type`, `login_hint`, …).
    authorization_params: Params,
    agent: Option<Agent>,
    allow_insecure_http: bool,
    localhost: bool,
    ports: Vec<u16>,
    path: String,
    timeout: Duration,
    opener: Opener,
}

impl BrowserFlow {
    /// For [`AuthServer::browser_flow`]: `authorization_url` is the server's authorization
    /// endpoint.
    pub(super) fn from_server(authorization_url: GivenUrl, server: &AuthServer) -> Self {
        BrowserFlow {
            authorization_url,
            token_url: server.token_url.clone(),
            client: server.client.clone(),
            scope: None,
            params: server.params.clone(),
            authorization_params: Params::default(),
            agent: server.agent.clone(),
            allow_insecure_http: server.allow_insecure_http,
            localhost: false,
            ports: Vec::new(),
            path: DEFAULT_PATH.to_owned(),
            timeout: DEFAULT_BROWSER_TIMEOUT,
            opener: Opener::System,
        }
    }

    /// Requests this scope (e.g. `openid offline_access api`). Defaults to none.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a parameter to the authorization request and to the code exchange, after the
    /// server's ([`AuthServer::extra_param`], which says which names are refused). Repeatable.
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name.into(), value.into());
        self
    }

    /// Adds a parameter to the authorization request only (the URL the browser opens):
    /// Google's `access_type=offline` and `prompt=consent` (for a refresh token),
    /// `login_hint`, `prompt=select_account`, … Repeatable; the same names are refused as
    /// for [`AuthServer::extra_param`].
    #[must_use]
    pub fn authorization_param(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.authorization_params.push(name.into(), value.into());
        self
    }

    /// The redirect URI says `http://localhost:{port}…` (for servers where that is what is
    /// registered) and the listener answers on both 127.0.0.1 and `[::1]` at that port, since
    /// `localhost` may resolve to either. Defaults to false: `http://127.0.0.1:{port}…`, as
    /// RFC 8252 §8.3 recommends.
    #[must_use]
    pub fn localhost(mut self, localhost: bool) -> Self {
        self.localhost = localhost;
        self
    }

    /// The ports to listen on, in order of preference, for servers that register exact
    /// redirect URIs: the first free one is used. Defaults to none: a free port the OS
    /// picks (RFC 8252 §7.3 servers accept any port).
    #[must_use]
    pub fn ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.ports = ports.into_iter().collect();
        self
    }

    /// The redirect URI's path, served by the listener (every other path is 404). Defaults
    /// to `/callback`. Must start with `/` and hold only URL path characters (checked by
    /// [`start`](BrowserFlow::start)).
    #[must_use]
    pub fn callback_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// How long to wait for the browser to come back (counted from
    /// [`start`](BrowserFlow::start)). Defaults to [`DEFAULT_BROWSER_TIMEOUT`], 5 minutes.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens the authorization URL with `open` instead of `$BROWSER` or the platform's
    /// opener: a GUI's own web view, or a test's browser. An error it returns is said (its
    /// kind only: a message could quote the URL) and the login goes on (the URL was printed
    /// before).
    #[must_use]
    pub fn open_with(
        mut self,
        open: impl Fn(&str) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.opener = Opener::Hook(Arc::new(open));
        self
    }

    /// Whether [`run`](BrowserFlow::run) opens a browser at all. Defaults to true; with
    /// false the URL is only printed.
    #[must_use]
    pub fn open_browser(mut self, open: bool) -> Self {
        if !open {
            self.opener = Opener::Never;
        } else if matches!(self.opener, Opener::Never) {
            self.opener = Opener::System;
        }
        self
    }

    /// Binds the loopback listener and builds the authorization URL: show it to the user
    /// (or [`BrowserAuthorization::open_browser`]), then [`BrowserAuthorization::wait`].
    /// The timeout runs from here.
    ///
    /// # Errors
    /// [`Error::Config`] for a flow without a client id, a bad callback path or a refused
    /// extra parameter; [`Error::InvalidUrl`] / [`Error::InsecureUrl`] for an unusable
    /// endpoint URL; [`Error::Browser`] when no listener can be bound
    /// ([`BrowserError::PortsBusy`], [`BrowserError::Listen`]) or the OS has no randomness
    /// ([`BrowserError::Randomness`]). Nothing is sent.
    pub fn start(&self) -> Result<BrowserAuthorization, Error> {
        BrowserAuthorization::start(self.clone())
    }

    /// The whole login: [`start`](BrowserFlow::start), print the URL to `out` (so the user
    /// can open it by hand), open the browser, wait for it, exchange the code.
    ///
    /// # Errors
    /// As [`start`](BrowserFlow::start) and [`BrowserAuthorization::wait`].
    pub fn run(&self, out: &mut dyn Write) -> Result<Tokens, Error> {
        let pending = self.start()?;
        let _ = pending.show(out);
        pending.wait()
    }

    /// The authorization request's URL (RFC 6749 §4.1.1, RFC 7636 §4.3).
    fn authorization_request(
        &self,
        endpoint: &str,
        redirect_uri: &str,
        pkce: &pkce::Pkce,
    ) -> String {
        let mut query = vec![("response_type", "code")];
        query.extend(self.client.id.as_deref().map(|id| ("client_id", id)));
        query.push(("redirect_uri", redirect_uri));
        query.extend(self.scope.as_deref().map(|s| ("scope", s)));
        query.push(("state", pkce.state()));
        query.push(("code_challenge", pkce.challenge()));
        query.push(("code_challenge_method", "S256"));
        self.params.add_to(&mut query);
        self.authorization_params.add_to(&mut query);
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{separator}{}", form_body(query))
    }
}

impl fmt::Debug for BrowserFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserFlow")
            .field("authorization_url", &self.authorization_url)
            .field("token_url", &self.token_url)
            .field("client", &self.client)
            .field("scope", &self.scope)
            .field("extra_params", &self.params)
            .field("authorization_params", &self.authorization_params)
            .field("localhost", &self.localhost)
            .field("ports", &self.ports)
            .field("callback_path", &self.path)
            .field("timeout", &self.timeout)
            .field("custom_agent", &self.agent.is_some())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish_non_exhaustive()
    }
}

/// What the wait receives: from the listener, or from the paste reader.
pub(crate) enum Event {
    /// A callback with this login's state and a code.
    Code(String),
    /// A callback with this login's state and an error.
    Refused(BrowserError),
    /// A line the user pasted.
    Pasted(String),
    /// A pasted line too long to be a redirect (skipped).
    PastedTooLong,
    /// The paste reader ended (EOF or an error).
    InputEnded,
}

impl BrowserError {
    /// An error callback's fields, made printable; `secrets` hidden.
    pub(crate) fn refused(error: &str, description: Option<&str>, secrets: &[&str]) -> Self {
        use crate::refresh::{redact_code, sanitize_code, sanitize_description};
        BrowserError::Refused {
            error: redact_code(sanitize_code(error), secrets),
            description: description.map(|d| redact_code(sanitize_description(d), secrets)),
        }
    }

    /// The code exchange's error, read with the device flow's table.
    fn from_endpoint(e: DeviceError) -> Self {
        match e {
            DeviceError::AccessDenied => BrowserError::Refused {
                error: "access_denied".into(),
                description: None,
            },
            DeviceError::OAuth {
                status,
                error,
                description,
            } => BrowserError::OAuth {
                status,
                error,
                description,
            },
            DeviceError::Status(s) => BrowserError::Status(s),
            DeviceError::Transport(t) => BrowserError::Transport(t),
            DeviceError::InvalidResponse(w) => BrowserError::InvalidResponse(w),
            // Not a token endpoint's answer: the device flow's own.
            DeviceError::Cancelled => BrowserError::InvalidResponse("unexpected answer"),
            DeviceError::ExpiredToken | DeviceError::CodeExpired => BrowserError::OAuth {
                status: 400,
                error: "expired_token".into(),
                description: None,
            },
        }
    }
}
