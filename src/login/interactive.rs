//! One call for a tool's login that picks the way: the browser where one can be opened,
//! the device flow on a headless machine, a pasted redirect otherwise.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use super::browser::open::Surroundings;
use super::{
    AuthServer, BrowserFlow, DeviceFlow, DeviceProgress, NO_AUTHORIZATION_ENDPOINT,
    NO_DEVICE_ENDPOINT,
};
use crate::error::Error;
use crate::tokens::Tokens;

/// How [`InteractiveLogin::run`] logs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginMethod {
    /// Pick from the surroundings (the default): [`Browser`](LoginMethod::Browser) where a
    /// browser can be opened on the user's screen (a display, macOS, Windows or WSL outside
    /// SSH, or `$BROWSER` set outside SSH; over SSH only with a forwarded display) and the
    /// server has an authorization endpoint; otherwise [`Device`](LoginMethod::Device) when
    /// the server has a device authorization endpoint; otherwise
    /// [`Paste`](LoginMethod::Paste).
    #[default]
    Auto,
    /// The browser login ([`BrowserFlow`]): the URL printed, the browser opened, the
    /// loopback listener waited for (and, when no browser could be opened, a paste read
    /// from the input as in [`Paste`](LoginMethod::Paste)).
    Browser,
    /// The device flow ([`DeviceFlow`]): a URL and a code printed, the token endpoint polled,
    /// with a line printed when the server asks to poll less often or a poll fails (nothing
    /// while the user has not approved).
    Device,
    /// The browser login for a browser on another machine: the URL printed (no browser
    /// opened), then the address the browser ended on (or the code) pasted, raced against
    /// the loopback listener ([`BrowserAuthorization::wait_or_paste`](super::BrowserAuthorization::wait_or_paste)).
    Paste,
}

/// A tool's interactive login, in one call that picks the way ([`LoginMethod`]) and returns
/// the [`Tokens`], ready for [`AuthClient::set_tokens`](crate::AuthClient::set_tokens) or a
/// store. Built by [`AuthServer::interactive_login`]:
///
/// ```no_run
/// use tokengate::{AuthClient, AuthServer, FileStore};
/// # fn main() -> Result<(), tokengate::Error> {
/// let server = AuthServer::discover("https://accounts.example.com")?.client_id("my-cli");
/// let tokens = server
///     .interactive_login()
///     .scope("openid offline_access api")
///     .run(&mut std::io::stderr(), std::io::stdin())?;   // prompts on stderr, reads a paste from stdin
/// let client = AuthClient::builder("https://api.example.com/")
///     .refresher(server.refresh_grant())
///     .store(FileStore::for_app("my-cli")?)                // ~/.config/my-cli/tokens.json
///     .build()?;
/// client.set_tokens(tokens)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InteractiveLogin {
    /// `None`: the server has no authorization endpoint.
    browser: Option<BrowserFlow>,
    /// `None`: the server has no device authorization endpoint.
    device: Option<DeviceFlow>,
    method: LoginMethod,
}

impl InteractiveLogin {
    pub(super) fn new(server: &AuthServer) -> Self {
        InteractiveLogin {
            browser: server.browser_flow().ok(),
            device: server.device_flow().ok(),
            method: LoginMethod::Auto,
        }
    }

    /// Forces a way to log in. Defaults to [`LoginMethod::Auto`].
    #[must_use]
    pub fn method(mut self, method: LoginMethod) -> Self {
        self.method = method;
        self
    }

    /// Requests this scope, whichever way the login goes. Defaults to none.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        self.browser = self.browser.map(|f| f.scope(scope.clone()));
        self.device = self.device.map(|f| f.scope(scope));
        self
    }

    /// Adjusts the browser login (ports, `localhost`, timeout, an opener hook, …), if the
    /// server has an authorization endpoint.
    #[must_use]
    pub fn browser(mut self, adjust: impl FnOnce(BrowserFlow) -> BrowserFlow) -> Self {
        self.browser = self.browser.map(adjust);
        self
    }

    /// Adjusts the device flow (clock, sleeper, extra parameters), if the server has a device
    /// authorization endpoint.
    #[must_use]
    pub fn device(mut self, adjust: impl FnOnce(DeviceFlow) -> DeviceFlow) -> Self {
        self.device = self.device.map(adjust);
        self
    }

    /// The way [`run`](InteractiveLogin::run) would log in here: the forced method, or what
    /// [`LoginMethod::Auto`] picks from this process's environment (`$BROWSER`, `$DISPLAY`,
    /// `$WAYLAND_DISPLAY`, `$SSH_CONNECTION`/`$SSH_TTY`, WSL). Never `Auto`.
    ///
    /// # Errors
    /// [`Error::Config`] when the server lacks the endpoint the method needs (or both).
    pub fn chosen(&self) -> Result<LoginMethod, Error> {
        pick(
            self.method,
            Surroundings::from_env().browser_is_here(),
            self.browser.is_some(),
            self.device.is_some(),
        )
        .map_err(Error::Config)
    }

    /// Logs in the [chosen](InteractiveLogin::chosen) way: prompts on `out` (stderr for a
    /// person), reads a paste from `input` (stdin) in [`LoginMethod::Paste`]. Blocks until
    /// the login ends.
    ///
    /// # Errors
    /// As [`chosen`](InteractiveLogin::chosen), then the flow's: [`Error::Browser`] (as
    /// [`BrowserFlow::start`] and [`BrowserAuthorization::wait`](super::BrowserAuthorization::wait))
    /// or [`Error::Device`] (as [`DeviceFlow::start`] and
    /// [`DeviceAuthorization::wait`](super::DeviceAuthorization::wait)).
    pub fn run<R: Read + Send + 'static>(
        self,
        out: &mut dyn Write,
        input: R,
    ) -> Result<Tokens, Error> {
        let chosen = self.chosen()?;
        log::debug!(target: "tokengate", "interactive login: {chosen:?}");
        match (chosen, self.browser, self.device) {
            (LoginMethod::Device, _, Some(device)) => device_login(&device, out),
            (LoginMethod::Paste, Some(browser), _) => {
                let pending = browser.open_browser(false).start()?;
                let _ = pending.show(out);
                pending.wait_or_paste(input, out)
            }
            (_, Some(browser), _) => {
                // No browser came up: the user opens the URL elsewhere, and may paste back.
                let pending = browser.start()?;
                if pending.show(out) {
                    pending.wait()
                } else {
                    pending.wait_or_paste(input, out)
                }
            }
            // `pick` chose a method whose flow exists.
            _ => Err(Error::Config(NO_AUTHORIZATION_ENDPOINT)),
        }
    }
}

/// The device flow: the URI and code printed, then a line when polling slows down or fails.
fn device_login(device: &DeviceFlow, out: &mut dyn Write) -> Result<Tokens, Error> {
    let pending = device.start()?;
    let _ = writeln!(
        out,
        "To log in, open {} and enter the code {}",
        pending.verification_uri(),
        pending.user_code()
    );
    if let Some(complete) = pending.verification_uri_complete() {
        let _ = writeln!(out, "(or open {complete})");
    }
    let _ = out.flush();
    pending.wait_with(|progress| {
        if let Some(line) = progress_line(progress) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    })
}

/// The line [`InteractiveLogin::run`] prints for a device login's progress: none while the
/// user has not approved.
fn progress_line(progress: DeviceProgress) -> Option<String> {
    match progress {
        DeviceProgress::SlowDown { interval, .. } => Some(format!(
            "the server asked to poll less often: every {} s",
            whole_secs(interval)
        )),
        DeviceProgress::Retrying {
            failed_polls,
            next_poll,
            ..
        } => Some(format!(
            "a poll failed ({failed_polls} in a row); trying again in {} s",
            whole_secs(next_poll)
        )),
        DeviceProgress::Waiting { .. } => None,
    }
}

/// Seconds, a part of one counting as one.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What [`LoginMethod::Auto`] (or a forced method) comes to.
fn pick(
    method: LoginMethod,
    can_open_browser: bool,
    has_browser: bool,
    has_device: bool,
) -> Result<LoginMethod, &'static str> {
    use LoginMethod::{Auto, Browser, Device, Paste};
    match method {
        Browser | Paste if !has_browser => Err(NO_AUTHORIZATION_ENDPOINT),
        Device if !has_device => Err(NO_DEVICE_ENDPOINT),
        Browser | Paste | Device => Ok(method),
        Auto if has_browser && can_open_browser => Ok(Browser),
        Auto if has_device => Ok(Device),
        Auto if has_browser => Ok(Paste),
        Auto => Err(NO_LOGIN_ENDPOINT),
    }
}

/// [`InteractiveLogin::run`]'s error for a server with neither login endpoint.
const NO_LOGIN_ENDPOINT: &str = "the authorization server has neither an authorization \
     endpoint nor a device authorization endpoint: set one on AuthServer, or discover an issuer \
     that publishes one";

impl fmt::Debug for InteractiveLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InteractiveLogin")
            .field("method", &self.method)
            .field("browser", &self.browser)
            .field("device", &self.device)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LoginMethod::{Auto, Browser, Device, Paste};

    #[test]
    fn auto_picks_the_browser_where_it_can_open_one_then_the_device_flow_then_paste() {
        // (can open a browser, has an authorization endpoint, has a device endpoint)
        assert_eq!(pick(Auto, true, true, true), Ok(Browser));
        assert_eq!(pick(Auto, true, true, false), Ok(Browser));
        assert_eq!(pick(Auto, false, true, true), Ok(Device));
        assert_eq!(pick(Auto, false, true, false), Ok(Paste));
        assert_eq!(pick(Auto, true, false, true), Ok(Device));
        assert_eq!(pick(Auto, false, false, true), Ok(Device));
        assert_eq!(pick(Auto, true, false, false), Err(NO_LOGIN_ENDPOINT));
    }

    #[test]
    fn a_forced_method_is_kept_or_refused_for_a_missing_endpoint() {
        assert_eq!(pick(Browser, false, true, false), Ok(Browser));
        assert_eq!(pick(Paste, true, true, true), Ok(Paste));
        assert_eq!(pick(Device, true, true, true), Ok(Device));
        assert_eq!(
            pick(Browser, true, false, true),
            Err(NO_AUTHORIZATION_ENDPOINT)
        );
        assert_eq!(
            pick(Paste, true, false, true),
            Err(NO_AUTHORIZATION_ENDPOINT)
        );
        assert_eq!(pick(Device, true, true, false), Err(NO_DEVICE_ENDPOINT));
    }

    #[test]
    fn device_progress_lines_say_slow_downs_and_failures_only() {
        let s = Duration::from_secs;
        let waiting = DeviceProgress::Waiting {
            remaining: s(600),
            next_poll: s(5),
        };
        assert_eq!(progress_line(waiting), None);
        let slow = DeviceProgress::SlowDown {
            interval: s(10),
            remaining: s(590),
        };
        assert_eq!(
            progress_line(slow).unwrap(),
            "the server asked to poll less often: every 10 s"
        );
        let retrying = DeviceProgress::Retrying {
            failed_polls: 2,
            next_poll: Duration::from_millis(1500),
            remaining: s(30),
        };
        assert_eq!(
            progress_line(retrying).unwrap(),
            "a poll failed (2 in a row); trying again in 2 s"
        );
    }
}
