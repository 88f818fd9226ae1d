//! The device authorization grant (RFC 8628): logging in from a terminal.
//!
//! [`DeviceFlow::start`] asks the device authorization endpoint for a user code; the user
//! enters it in a browser; [`DeviceAuthorization::wait`] polls the token endpoint until the
//! user approves or denies, or the code expires ([`DeviceAuthorization::wait_with`] reports
//! its progress; a [`DeviceCancel`] ends it from another thread).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ureq::Agent;

use super::device_wait::{DeviceCancel, DeviceProgress};
use super::discovery::login_agent;
use super::error::DeviceError;
use super::AuthServer;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, RefreshError};
use crate::redacted::Redacted;
use crate::refresh::{
    error_of, expires_in_field, json_object, meaning, parse, polling_code, redact_echo,
    string_field, Client, Meaning, Params,
};
use crate::retry::Sleeper;
use crate::tokens::{Tokens, MAX_TOKEN_LEN};
use crate::url::{has_http_scheme, insecure, GivenUrl, UrlProblem};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Polling interval when the server names none (RFC 8628 §3.2).
const DEFAULT_DEVICE_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Added to the interval on each `slow_down` (RFC 8628 §3.5).
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The shortest interval honoured, whatever the server says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval reached by doubling after failed polls.
const MAX_INTERVAL: Duration = Duration::from_secs(300);
/// Failed polls in a row (unreachable, timeout, 5xx, 429) after which `wait` gives up.
const MAX_FAILED_POLLS: u32 = 3;
/// Longest `user_code`, in characters, and longest verification URI, in bytes, accepted.
const MAX_USER_CODE_CHARS: usize = 256;
const MAX_URI_LEN: usize = 4096;

impl DeviceError {
    /// From a token-endpoint-style error, its code read in the one table (`oauth_error.rs`);
    /// `secrets` are hidden from echoed codes and descriptions.
    pub(super) fn from_endpoint(e: RefreshError, secrets: &[&str]) -> DeviceError {
        match redact_echo(e, secrets).into_server_said() {
            Ok((status, said)) => match meaning(&said.code) {
                Meaning::Denied => DeviceError::AccessDenied,
                Meaning::Expired => DeviceError::ExpiredToken,
                _ => DeviceError::OAuth {
                    status,
                    error: said.code,
                    description: said.description,
                },
            },
            // Without a code (`parse` gives none such): the status is all there is.
            Err(RefreshError::InvalidGrant { status, .. }) => DeviceError::OAuth {
                status,
                error: "invalid_grant".into(),
                description: None,
            },
            Err(RefreshError::Status { status, .. }) => DeviceError::Status(status),
            Err(RefreshError::Transport(e)) => DeviceError::Transport(e),
            Err(RefreshError::InvalidResponse(what)) => DeviceError::InvalidResponse(what),
            // `OAuth` is an `Ok` above.
            Err(
                RefreshError::OAuth { .. }
                | RefreshError::NoRefreshToken
                | RefreshError::Store(_)
                | RefreshError::Custom { .. },
            ) => DeviceError::InvalidResponse("unexpected answer"),
        }
    }
}

/// A login with the device authorization grant (RFC 8628), for tools that run in a terminal:
/// the user opens a URL on any device, enters a short code, and the tool receives tokens.
///
/// Built by [`AuthServer::device_flow`], with the server's client identity, device
/// authorization and token endpoints, agent and `allow_insecure_http`:
///
/// ```no_run
/// use tokengate::AuthServer;
/// # fn main() -> Result<(), tokengate::Error> {
/// # let client = tokengate::AuthClient::builder("https://api.example.com/").build()?;
/// let flow = AuthServer::new("https://auth.example.com/token")   // or AuthServer::discover(issuer)?
///     .device_authorization_url("https://auth.example.com/device")
///     .client_id("my-cli")
///     .device_flow()?
///     .scope("openid offline_access api");
/// let pending = flow.start()?;                  // POST to the device endpoint
/// println!("Open {} and enter {}", pending.verification_uri(), pending.user_code());
/// let tokens = pending.wait()?;                 // polls the token endpoint
/// client.set_tokens(tokens)?;
/// # Ok(()) }
/// ```
///
/// Polling follows RFC 8628 §3.5: every `interval` the server gave (5 s if none, at least
/// 1 s), 5 s more after each `slow_down`, on through `authorization_pending`; it stops with
/// [`DeviceError::AccessDenied`], [`DeviceError::ExpiredToken`], or
/// [`DeviceError::CodeExpired`] when the code's `expires_in` runs out. A poll that fails
/// (unreachable, timeout, 5xx, 429) doubles the interval; three in a row end the wait.
///
/// [`DeviceAuthorization::wait_with`] reports each wait ([`DeviceProgress`]), and a
/// [`DeviceCancel`] from [`DeviceAuthorization::canceller`] ends it from another thread.
///
/// The clock and the sleep are injectable ([`DeviceFlow::clock`], [`DeviceFlow::sleeper`]),
/// so a test can run the whole flow without waiting (a shared `Arc<ManualClock>` does both).
#[derive(Clone)]
pub struct DeviceFlow {
    device_url: GivenUrl,
    token_url: GivenUrl,
    client: Client,
    scope: Option<String>,
    /// The server's extra parameters, then the flow's.
    params: Params,
    agent: Option<Agent>,
    clock: Arc<dyn Clock>,
    /// `None`: a wait on a condition variable that a [`DeviceCancel`] wakes.
    sleeper: Option<Arc<dyn Sleeper>>,
    allow_insecure_http: bool,
}

impl DeviceFlow {
    /// For [`AuthServer::device_flow`]: `device_url` is the server's device authorization
    /// endpoint.
    pub(super) fn from_server(device_url: GivenUrl, server: &AuthServer) -> Self {
        DeviceFlow {
            device_url,
            token_url: server.token_url.clone(),
            client: server.client.clone(),
            scope: None,
            params: server.params.clone(),
            agent: server.agent.clone(),
            clock: Arc::new(SystemClock),
            sleeper: None,
            allow_insecure_http: server.allow_insecure_http,
        }
    }

    /// Requests this scope (e.g. `openid offline_access api`; `offline_access` is how many
    /// servers are asked for a refresh token). Defaults to none.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a parameter to the device authorization request and to every poll, after the
    /// server's ([`AuthServer::extra_param`], which says which names are refused):
    /// `audience` for Auth0, `resource` for Microsoft Entra v1. Repeatable.
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name.into(), value.into());
        self
    }

    /// The clock that decides when the device code has expired. Defaults to [`SystemClock`].
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// What waits between polls. Defaults to a wait on a condition variable, which a
    /// [`DeviceCancel`] ends at once; a sleeper given here sleeps each whole wait, and a
    /// cancel is seen before and after it (a [`ManualClock`](crate::time::ManualClock) makes
    /// the waits instant in tests).
    #[must_use]
    pub fn sleeper(mut self, sleeper: impl Sleeper) -> Self {
        self.sleeper = Some(Arc::new(sleeper));
        self
    }

    /// Asks the device authorization endpoint for a device code and a user code (RFC 8628 §3.1).
    /// Show the user [`DeviceAuthorization::verification_uri`] and
    /// [`DeviceAuthorization::user_code`], then call [`DeviceAuthorization::wait`].
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] / [`Error::InsecureUrl`] for an unusable endpoint URL (nothing is
    /// sent); [`Error::Device`] if the server cannot be reached ([`DeviceError::Transport`]),
    /// refuses ([`DeviceError::OAuth`], [`DeviceError::Status`]) or answers something
    /// unusable ([`DeviceError::InvalidResponse`]).
    pub fn start(&self) -> Result<DeviceAuthorization, Error> {
        if let Some(problem) = self.params.problem() {
            return Err(Error::Config(problem));
        }
        let device_url = self
            .device_url
            .check(self.allow_insecure_http)
            .map_err(|p| endpoint_error(p, "device authorization endpoint"))?;
        self.token_url
            .check(self.allow_insecure_http)
            .map_err(|p| endpoint_error(p, "token endpoint"))?;
        let agent = self.agent.clone().unwrap_or_else(login_agent);
        let mut form = Vec::new();
        form.extend(self.scope.as_deref().map(|s| ("scope", s)));
        self.params.add_to(&mut form);
        // RFC 8628 §3.1: a client that does not authenticate sends its client_id in the form.
        let secrets = [self.client.secret_str()];
        let resp = self
            .client
            .post_form(&agent, device_url.as_str(), form, None)
            .map_err(|e| Error::Device(DeviceError::from_endpoint(e.into(), &secrets)))?;
        if let Some(err) = error_of(&resp) {
            return Err(Error::Device(DeviceError::from_endpoint(err, &secrets)));
        }
        let now = self.clock.now();
        DeviceAuthorization::from_response(&resp.body, self.clone(), agent, now)
            .map_err(Error::Device)
    }
}

impl fmt::Debug for DeviceFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceFlow")
            .field("device_url", &self.device_url)
            .field("token_url", &self.token_url)
            .field("client", &self.client)
            .field("scope", &self.scope)
            .field("extra_params", &self.params)
            .field("custom_agent", &self.agent.is_some())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish_non_exhaustive()
    }
}

/// A device login in progress: what to show the user, and [`DeviceAuthorization::wait`]
/// (or [`wait_with`](DeviceAuthorization::wait_with), with progress). `Debug` hides the
/// device code.
pub struct DeviceAuthorization {
    flow: DeviceFlow,
    agent: Agent,
    /// Secret: whoever has it can collect the tokens once the user approves.
    device_code: String,
    user_code: String,
    verification_uri: String,
    verification_uri_complete: Option<String>,
    expires_in: Duration,
    /// On the flow's clock.
    expires_at: SystemTime,
    interval: Duration,
    cancel: DeviceCancel,
}

/// What the last poll said, for the next [`DeviceProgress`].
#[derive(Clone, Copy)]
enum Last {
    /// None yet, or `authorization_pending`.
    Pending,
    SlowDown,
    /// Failed polls in a row.
    Failed(u32),
}

impl DeviceAuthorization {
    /// Reads the device authorization response (RFC 8628 §3.2).
    fn from_response(
        body: &[u8],
        flow: DeviceFlow,
        agent: Agent,
        now: SystemTime,
    ) -> Result<Self, DeviceError> {
        let bad = DeviceError::InvalidResponse;
        let map = json_object(body).map_err(|_| bad("body is not a JSON object"))?;
        let field = |name: &str, what: &'static str| {
            string_field(&map, name, what)
                .map(|v| v.map(str::to_owned))
                .map_err(|_| bad(what))
        };
        let device_code = field("device_code", "device_code is not a string")?
            .filter(|c| !c.is_empty() && c.len() <= MAX_TOKEN_LEN)
            .ok_or(bad("missing or oversized device_code"))?;
        let user_code = field("user_code", "user_code is not a string")?
            .filter(|c| is_displayable(c) && c.chars().count() <= MAX_USER_CODE_CHARS)
            .ok_or(bad("missing or unprintable user_code"))?;
        // `verification_url`: the name some servers (Google) use.
        let verification_uri = match field("verification_uri", "verification_uri is not a string")?
        {
            Some(u) => Some(u),
            None => field("verification_url", "verification_url is not a string")?,
        }
        .filter(|u| is_uri(u))
        .ok_or(bad("missing or unusable verification_uri"))?;
        let verification_uri_complete = field(
            "verification_uri_complete",
            "verification_uri_complete is not a string",
        )?;
        if verification_uri_complete
            .as_deref()
            .is_some_and(|u| !is_uri(u))
        {
            return Err(bad("unusable verification_uri_complete"));
        }
        let expires_in = expires_in_field(&map, "expires_in")
            .map_err(|_| bad("expires_in is not a sane number of seconds"))?
            .ok_or(bad("missing expires_in"))?;
        let interval = expires_in_field(&map, "interval")
            .map_err(|_| bad("interval is not a sane number of seconds"))?
            .unwrap_or(DEFAULT_DEVICE_POLL_INTERVAL)
            .max(MIN_INTERVAL);
        Ok(DeviceAuthorization {
            flow,
            agent,
            device_code,
            user_code,
            verification_uri,
            verification_uri_complete,
            expires_in,
            expires_at: now.checked_add(expires_in).unwrap_or(now),
            interval,
            cancel: DeviceCancel::new(),
        })
    }

    /// The code the user enters at [`DeviceAuthorization::verification_uri`].
    pub fn user_code(&self) -> &str {
        &self.user_code
    }

    /// Where the user enters the code (show it; the user may be on another device).
    pub fn verification_uri(&self) -> &str {
        &self.verification_uri
    }

    /// A URL that carries the code too (for a QR code or a link), if the server gave one.
    pub fn verification_uri_complete(&self) -> Option<&str> {
        self.verification_uri_complete.as_deref()
    }

    /// How long the codes are valid, as the server said.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// The polling interval: the server's, 5 s if it gave none, at least 1 s.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Polls the token endpoint until the user approves (the tokens), denies, or the code
    /// expires, or the login is [cancelled](DeviceAuthorization::canceller). Blocks; each
    /// wait goes through the flow's [`Sleeper`]. The same as
    /// [`wait_with`](DeviceAuthorization::wait_with)`(|_| {})`.
    ///
    /// # Errors
    /// As [`wait_with`](DeviceAuthorization::wait_with).
    pub fn wait(self) -> Result<Tokens, Error> {
        self.wait_with(|_| {})
    }

    /// [`wait`](DeviceAuthorization::wait), calling `on_progress` before each wait between
    /// polls (before the first poll too) with where the login is: [`DeviceProgress::Waiting`]
    /// while the user has not approved, [`DeviceProgress::SlowDown`] after a `slow_down`,
    /// [`DeviceProgress::Retrying`] after a poll that failed but may pass. The callback runs
    /// on this thread, and the wait goes on when it returns.
    ///
    /// # Errors
    /// [`Error::Device`]: [`DeviceError::AccessDenied`], [`DeviceError::ExpiredToken`],
    /// [`DeviceError::CodeExpired`], another OAuth2 error ([`DeviceError::OAuth`]), an
    /// unusable answer ([`DeviceError::InvalidResponse`]) or a status other than 5xx/429
    /// ([`DeviceError::Status`]), each at once; [`DeviceError::Transport`], or
    /// [`DeviceError::Status`] for 5xx/429, after three failed polls in a row;
    /// [`DeviceError::Cancelled`] after a [`DeviceCancel::cancel`] (before the wait began: with
    /// no poll made).
    ///
    /// # Panics
    /// If `on_progress` panics: the panic goes on up from here (no poll follows).
    pub fn wait_with(self, mut on_progress: impl FnMut(DeviceProgress)) -> Result<Tokens, Error> {
        self.poll_until_done(&mut on_progress)
            .map_err(Error::Device)
    }

    /// Ends the wait from another thread (a Ctrl-C handler): see [`DeviceCancel`].
    pub fn canceller(&self) -> DeviceCancel {
        self.cancel.clone()
    }

    fn poll_until_done(
        mut self,
        on_progress: &mut dyn FnMut(DeviceProgress),
    ) -> Result<Tokens, DeviceError> {
        let mut last = Last::Pending;
        loop {
            if self.cancel.is_cancelled() {
                return Err(DeviceError::Cancelled);
            }
            let remaining = self
                .expires_at
                .duration_since(self.flow.clock.now())
                .unwrap_or(Duration::ZERO);
            if remaining.is_zero() {
                return Err(DeviceError::CodeExpired);
            }
            // Never sleeps past the expiry: the last wait is cut short, then the code is expired.
            let next_poll = self.interval.min(remaining);
            on_progress(self.progress(last, next_poll, remaining));
            if self.cancel.pause(self.flow.sleeper.as_deref(), next_poll) {
                return Err(DeviceError::Cancelled);
            }
            if self.flow.clock.now() >= self.expires_at {
                return Err(DeviceError::CodeExpired);
            }
            match self.poll() {
                Ok(tokens) => return Ok(tokens),
                Err(e) => last = self.after_failed_poll(e, last)?,
            }
        }
    }

    /// What to report before a wait of `next_poll`, after `last`.
    fn progress(&self, last: Last, next_poll: Duration, remaining: Duration) -> DeviceProgress {
        match last {
            Last::Pending => DeviceProgress::Waiting {
                remaining,
                next_poll,
            },
            Last::SlowDown => DeviceProgress::SlowDown {
                interval: self.interval,
                remaining,
            },
            Last::Failed(failed_polls) => DeviceProgress::Retrying {
                failed_polls,
                next_poll,
                remaining,
            },
        }
    }

    /// After a poll without tokens: go on (pending, slow_down: +5 s, a failure that may pass:
    /// the interval doubled), or the error that ends the wait.
    fn after_failed_poll(&mut self, e: RefreshError, last: Last) -> Result<Last, DeviceError> {
        match e {
            RefreshError::OAuth { error, .. } if meaning(&error) == Meaning::Pending => {
                Ok(Last::Pending)
            }
            RefreshError::OAuth { error, .. } if meaning(&error) == Meaning::SlowDown => {
                self.interval = self.interval.saturating_add(SLOW_DOWN_STEP);
                Ok(Last::SlowDown)
            }
            e => {
                let secrets = [self.device_code.as_str(), self.flow.client.secret_str()];
                let e = DeviceError::from_endpoint(e, &secrets);
                let failed_polls = match last {
                    Last::Failed(n) => n + 1,
                    _ => 1,
                };
                if !e.is_transient() || failed_polls >= MAX_FAILED_POLLS {
                    return Err(e);
                }
                self.interval = self.interval.saturating_mul(2).min(MAX_INTERVAL);
                Ok(Last::Failed(failed_polls))
            }
        }
    }

    /// One device access token request (RFC 8628 §3.4).
    fn poll(&self) -> Result<Tokens, RefreshError> {
        let flow = &self.flow;
        let mut form = vec![
            ("grant_type", GRANT_TYPE),
            ("device_code", self.device_code.as_str()),
        ];
        flow.params.add_to(&mut form);
        let resp = flow
            .client
            .post_form(&self.agent, flow.token_url.as_str(), form, None)?;
        if let Some(said) = polling_code(resp.status, &resp.body) {
            return Err(RefreshError::from_server(resp.status, said));
        }
        parse(&resp, &Tokens::new("-"))
    }
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &Redacted)
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// The error for an endpoint of the flow that breaks the URL rule (`what` names it).
pub(super) fn endpoint_error(problem: UrlProblem, what: &str) -> Error {
    match problem {
        UrlProblem::Unparsable | UrlProblem::NotHttp => {
            Error::InvalidUrl(format!("{what} is not an absolute http(s) URL"))
        }
        UrlProblem::Credentials => Error::InvalidUrl(format!(
            "{what} must not embed credentials: use client_id/client_secret"
        )),
        UrlProblem::Insecure(origin) => insecure(&origin),
    }
}

/// Safe to print to a terminal: no control characters (no escape sequences, no line breaks).
fn is_displayable(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// An http(s) URI of visible ASCII, safe to print and to open.
fn is_uri(s: &str) -> bool {
    has_http_scheme(s) && s.len() <= MAX_URI_LEN && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<DeviceAuthorization, DeviceError> {
        let flow = AuthServer::new("https://a/token")
            .device_authorization_url("https://a/device")
            .device_flow()
            .unwrap();
        DeviceAuthorization::from_response(
            body.as_bytes(),
            flow,
            login_agent(),
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn reads_a_device_authorization_response() {
        let d = read(
            r#"{"device_code":"dc-secret","user_code":"WDJB-MJHT","verification_uri":"https://a/device",
                "verification_uri_complete":"https://a/device?user_code=WDJB-MJHT","expires_in":1800,"interval":2}"#,
        )
        .unwrap();
        assert_eq!(d.user_code(), "WDJB-MJHT");
        assert_eq!(d.interval(), Duration::from_secs(2));
        assert_eq!(d.expires_in(), Duration::from_secs(1800));
        assert!(!format!("{d:?}").contains("dc-secret"));
        let d = read(
            r#"{"device_code":"d","user_code":"U","verification_url":"https://g/device","expires_in":"60","interval":0}"#,
        )
        .unwrap();
        assert_eq!(d.verification_uri(), "https://g/device");
        assert_eq!(d.interval(), MIN_INTERVAL);
        assert_eq!(d.verification_uri_complete(), None);
        let d = read(r#"{"device_code":"d","user_code":"U","verification_uri":"https://g/","expires_in":60}"#)
            .unwrap();
        assert_eq!(d.interval(), DEFAULT_DEVICE_POLL_INTERVAL);
    }

    #[test]
    fn rejects_unusable_responses() {
        for body in [
            "<html>",
            r#"{"user_code":"U","verification_uri":"https://g/","expires_in":60}"#,
            r#"{"device_code":"d","verification_uri":"https://g/","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"U\u001b[2J","verification_uri":"https://g/","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"U","verification_uri":"javascript:x","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://g/\nx","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://g/"}"#,
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://g/","expires_in":-1}"#,
            r#"{"device_code":"d","user_code":"U","verification_uri":"https://g/","expires_in":60,"verification_uri_complete":"x"}"#,
        ] {
            assert!(
                matches!(read(body), Err(DeviceError::InvalidResponse(_))),
                "{body}"
            );
        }
    }
}
