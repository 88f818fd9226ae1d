//! A browser login in progress: the listener running, the URL built; waiting for the
//! browser (or a paste), then the code exchange.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ureq::Agent;

use super::callback::from_paste;
use super::listener::{self, Callbacks};
use super::pkce::Pkce;
use super::{open, BrowserFlow, Event, Opener};
use crate::error::Error;
use crate::error::RefreshError;
use crate::http_server::Listener;
use crate::login::device::endpoint_error;
use crate::login::discovery::login_agent;
use crate::login::error::{BrowserError, DeviceError};
use crate::redacted::Redacted;
use crate::refresh::{error_of, parse};
use crate::tokens::Tokens;

const GRANT_TYPE: &str = "authorization_code";
/// The longest pasted line read (a longer one is skipped, and answered).
const MAX_LINE: u64 = 16 * 1024;
/// The most skipped of one over-long line before the paste reader stops reading.
const MAX_SKIPPED: usize = 1024 * 1024;
/// How long the platform's opener may take to say whether it opened the browser.
const OPEN_PATIENCE: Duration = Duration::from_secs(2);
/// Refused with `Error::Config`.
const NO_CLIENT_ID: &str = "the browser login needs a client id: set AuthServer::client_id";
const BAD_PATH: &str = "the callback path must start with '/' and hold only URL path characters \
     (letters, digits, and - . _ ~ ! $ & ' ( ) * + , ; = : @ / %)";

/// A browser login in progress, from [`BrowserFlow::start`]: show
/// [`authorization_url`](BrowserAuthorization::authorization_url), then
/// [`wait`](BrowserAuthorization::wait). The loopback listener runs until this is consumed
/// or dropped. `Debug` hides the URL (it carries the `state`) and the verifier.
pub struct BrowserAuthorization {
    flow: BrowserFlow,
    agent: Agent,
    pkce: Arc<Pkce>,
    url: String,
    redirect_uri: String,
    /// `None`: the timeout runs past the clock's end, so there is none.
    deadline: Option<Instant>,
    /// Guards nothing but the receiver, so that this is `Sync` (only `wait` receives).
    events: Mutex<Receiver<Event>>,
    /// For the paste reader's thread (the listener's handler holds its own).
    sender: Sender<Event>,
    /// Stopped (dropped) as soon as an answer arrives.
    listeners: Vec<Listener>,
}

impl BrowserAuthorization {
    /// [`BrowserFlow::start`].
    pub(super) fn start(flow: BrowserFlow) -> Result<Self, Error> {
        let endpoint = check(&flow)?;
        let pkce = Arc::new(Pkce::new().map_err(Error::Browser)?);
        let bound = listener::bind(&flow.ports, flow.localhost).map_err(Error::Browser)?;
        let host = if flow.localhost {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let redirect_uri = format!("http://{host}:{}{}", bound.port, flow.path);
        let (sender, events) = mpsc::channel();
        let callbacks = Arc::new(Callbacks {
            path: flow.path.clone(),
            pkce: pkce.clone(),
            answered: AtomicBool::new(false),
            events: sender.clone(),
        });
        let listeners = bound.serve(callbacks).map_err(Error::Browser)?;
        log::debug!(target: "tokengate", "browser login: listening at {redirect_uri}");
        let url = flow.authorization_request(&endpoint, &redirect_uri, &pkce);
        Ok(BrowserAuthorization {
            agent: flow.agent.clone().unwrap_or_else(login_agent),
            deadline: Instant::now().checked_add(flow.timeout),
            flow,
            pkce,
            url,
            redirect_uri,
            events: Mutex::new(events),
            sender,
            listeners,
        })
    }

    /// The URL to open in a browser: the authorization endpoint with the request's
    /// parameters (`response_type=code`, `client_id`, `redirect_uri`, `scope`, `state`,
    /// `code_challenge`, `code_challenge_method=S256`, then the extra parameters).
    pub fn authorization_url(&self) -> &str {
        &self.url
    }

    /// The redirect URI the listener serves: `http://127.0.0.1:{port}/callback` by default.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Opens the authorization URL with the flow's opener (`$BROWSER`, the platform's, or
    /// [`BrowserFlow::open_with`]'s hook). True if it opened; false when there is none or it
    /// failed (logged at debug level, never with the URL). Opening never fails the login.
    pub fn open_browser(&self) -> bool {
        self.try_open().is_ok()
    }

    fn try_open(&self) -> Result<String, String> {
        let result = match &self.flow.opener {
            Opener::Never => Err("opening a browser is turned off".to_owned()),
            // Its error's kind only: the caller's message could quote the URL.
            Opener::Hook(open) => open(&self.url)
                .map(|()| "the caller's hook".to_owned())
                .map_err(|e| format!("the opener failed: {}", e.kind())),
            Opener::System => {
                let surroundings = open::Surroundings::from_env();
                open::open_url(&self.url, &surroundings, OPEN_PATIENCE).map_err(|e| e.to_string())
            }
        };
        match &result {
            Ok(how) => log::debug!(target: "tokengate", "browser login: opened the URL with {how}"),
            Err(why) => {
                log::debug!(target: "tokengate", "browser login: the URL was not opened: {why}")
            }
        }
        result
    }

    /// Prints the URL to `out`, then opens the browser (saying so when it cannot). True if
    /// a browser was opened.
    pub(crate) fn show(&self, out: &mut dyn Write) -> bool {
        let _ = writeln!(
            out,
            "To log in, open this address in a browser:\n\n    {}\n",
            self.url
        );
        // Seen at once, also through a buffered writer: the wait (or the opener) comes next.
        let _ = out.flush();
        if matches!(self.flow.opener, Opener::Never) {
            return false;
        }
        // A hook of the program's own may not be a browser (a webview, a test).
        let hook = matches!(self.flow.opener, Opener::Hook(_));
        let opened = match self.try_open() {
            Ok(_) => {
                let browser = if hook { "" } else { " in your browser" };
                let _ = writeln!(out, "Opened it{browser}; waiting for the login…");
                true
            }
            Err(why) => {
                let what = if hook { "it" } else { "a browser" };
                let _ = writeln!(
                    out,
                    "Could not open {what} ({why}): open the address above by hand."
                );
                false
            }
        };
        let _ = out.flush();
        opened
    }

    /// Waits for the browser to come back to the listener, then exchanges the code for
    /// tokens. Blocks until then, or until the flow's timeout (counted from
    /// [`BrowserFlow::start`]). The listener stops when this returns.
    ///
    /// # Errors
    /// [`Error::Browser`]: [`BrowserError::Timeout`]; [`BrowserError::Refused`] for an
    /// error callback (`access_denied` when the user declined); the exchange's errors
    /// ([`BrowserError::OAuth`], [`BrowserError::Status`], [`BrowserError::Transport`],
    /// [`BrowserError::InvalidResponse`]).
    pub fn wait(self) -> Result<Tokens, Error> {
        self.wait_for(None)
    }

    /// As [`wait`](BrowserAuthorization::wait), and at the same time reads lines from
    /// `input` (stdin, for a person): the address the browser ended on, pasted from another
    /// machine (its `state` checked, as the listener checks it), or the bare code. Whichever
    /// comes first counts. A line that is neither, another login's address, a line over
    /// 16 KiB, or a code that does not log in (the token endpoint refuses it or cannot be
    /// reached) is answered on `out` and the wait goes on, the listener still listening; a
    /// pasted error address of this login ends it ([`BrowserError::Refused`]). The end of
    /// `input` (or a line of over 1 MiB) leaves the listener waiting alone.
    ///
    /// `input` is read on a thread of its own: a blocking read cannot be cancelled, so if the
    /// listener wins, that thread ends at the next line or end of `input` (a line typed
    /// after the login is consumed by it).
    ///
    /// # Errors
    /// As [`wait`](BrowserAuthorization::wait).
    pub fn wait_or_paste<R: Read + Send + 'static>(
        self,
        input: R,
        out: &mut dyn Write,
    ) -> Result<Tokens, Error> {
        let _ = writeln!(
            out,
            "If your browser is on another machine, log in there, then paste here the address it ended on (it starts with {}):",
            self.redirect_uri
        );
        let _ = out.flush();
        let sender = self.sender.clone();
        let spawned = std::thread::Builder::new()
            .name("tokengate-login-paste".into())
            .spawn(move || read_lines(input, &sender));
        if spawned.is_err() {
            let _ = writeln!(
                out,
                "(cannot read a paste: no thread; waiting for the browser)"
            );
        }
        self.wait_for(Some(out))
    }

    /// Completes the login with what the user pasted, without waiting: the address the
    /// browser ended on (its `state` must be this login's) or the bare code. The listener
    /// stops.
    ///
    /// # Errors
    /// [`Error::Browser`]: [`BrowserError::NotARedirect`], [`BrowserError::StateMismatch`],
    /// [`BrowserError::Refused`] for an error redirect, or the exchange's errors.
    pub fn complete(mut self, pasted: &str) -> Result<Tokens, Error> {
        self.listeners.clear();
        let code = self.read_paste(pasted).map_err(Error::Browser)?;
        self.exchange(&code).map_err(Error::Browser)
    }

    fn wait_for(mut self, mut out: Option<&mut dyn Write>) -> Result<Tokens, Error> {
        loop {
            let left = self.deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let event = match self.events.get_mut().recv_timeout(left) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(Error::Browser(BrowserError::Timeout(self.flow.timeout)));
                }
            };
            let pasted = match event {
                Event::Code(code) => {
                    // The browser came back: its code is this login's, and the only one.
                    self.listeners.clear();
                    return self.exchange(&code).map_err(Error::Browser);
                }
                Event::Refused(e) => return Err(Error::Browser(e)),
                Event::InputEnded => continue,
                Event::PastedTooLong => Err(BrowserError::NotARedirect),
                // The listener keeps waiting meanwhile: a paste that is not it (or whose code
                // the server refuses) must not end a login the browser may still complete.
                Event::Pasted(text) => self.read_paste(&text).and_then(|code| self.exchange(&code)),
            };
            match pasted {
                Ok(tokens) => return Ok(tokens),
                Err(e @ (BrowserError::NotARedirect | BrowserError::StateMismatch)) => {
                    tell(&mut out, &format!("That is not it: {e}."));
                }
                // A pasted error address of this login: the user's answer.
                Err(e @ BrowserError::Refused { .. }) => return Err(Error::Browser(e)),
                // A pasted code that failed at the token endpoint (refused, mistyped, or the
                // server unreachable): said, and the login goes on until the timeout.
                Err(e) => {
                    tell(&mut out, &format!("That code did not log in: {e}."));
                }
            }
        }
    }

    /// The code in a paste, held against this login's `state` as the listener holds a
    /// callback ([`Answer::checked`](super::callback::Answer::checked)).
    fn read_paste(&self, text: &str) -> Result<String, BrowserError> {
        from_paste(text).map_or(Err(BrowserError::NotARedirect), |a| a.checked(&self.pkce))
    }

    /// The access token request (RFC 6749 §4.1.3, RFC 7636 §4.5), through the same form POST
    /// as every grant.
    fn exchange(&self, code: &str) -> Result<Tokens, BrowserError> {
        log::debug!(target: "tokengate", "browser login: exchanging the code at the token endpoint");
        let flow = &self.flow;
        let mut form = vec![
            ("grant_type", GRANT_TYPE),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", self.pkce.verifier()),
        ];
        flow.params.add_to(&mut form);
        let secrets = [code, self.pkce.verifier(), flow.client.secret_str()];
        let failed =
            |e: RefreshError| BrowserError::from_endpoint(DeviceError::from_endpoint(e, &secrets));
        let resp = flow
            .client
            .post_form(&self.agent, flow.token_url.as_str(), form, None)
            .map_err(|e| failed(e.into()))?;
        if let Some(err) = error_of(&resp) {
            return Err(failed(err));
        }
        parse(&resp, &Tokens::new("-")).map_err(failed)
    }
}

/// Says `what` on the paste prompt's writer, and asks again.
fn tell(out: &mut Option<&mut dyn Write>, what: &str) {
    if let Some(out) = out.as_deref_mut() {
        let _ = writeln!(
            out,
            "{what} Paste the whole address the browser ended on, or the code:"
        );
        let _ = out.flush();
    }
}

/// The flow's checks before anything is bound or sent; the authorization endpoint's URL.
fn check(flow: &BrowserFlow) -> Result<String, Error> {
    if let Some(problem) = flow
        .params
        .problem()
        .or(flow.authorization_params.problem())
    {
        return Err(Error::Config(problem));
    }
    if flow.client.id.as_deref().is_none_or(str::is_empty) {
        return Err(Error::Config(NO_CLIENT_ID));
    }
    if !is_path(&flow.path) {
        return Err(Error::Config(BAD_PATH));
    }
    let endpoint = flow
        .authorization_url
        .check(flow.allow_insecure_http)
        .map_err(|p| endpoint_error(p, "authorization endpoint"))?;
    if endpoint.as_str().contains('#') {
        return Err(Error::InvalidUrl(
            "authorization endpoint must not have a fragment (RFC 6749 §3.1)".into(),
        ));
    }
    flow.token_url
        .check(flow.allow_insecure_http)
        .map_err(|p| endpoint_error(p, "token endpoint"))?;
    Ok(endpoint.as_str().to_owned())
}

/// An absolute URL path (RFC 3986 `path-absolute` characters, `%` escapes allowed as written).
fn is_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 1024
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
}

/// The paste reader's thread: each line to the wait (a line over `MAX_LINE` bytes as
/// `PastedTooLong`, the rest of it skipped), then `InputEnded`.
fn read_lines<R: Read>(input: R, events: &Sender<Event>) {
    let mut reader = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        let event = match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::InputEnded);
                return;
            }
            Ok(_) if line.ends_with(b"\n") || line.len() < MAX_LINE as usize => {
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                if text.is_empty() {
                    continue;
                }
                Event::Pasted(text)
            }
            Ok(_) => {
                if !skip_line(&mut reader) {
                    let _ = events.send(Event::InputEnded);
                    return;
                }
                Event::PastedTooLong
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// Reads and drops the rest of a line; false at the end of the input, an error, or after
/// `MAX_SKIPPED` bytes without a line break (an input of no lines: reading stops).
fn skip_line<R: Read>(reader: &mut BufReader<R>) -> bool {
    let mut skipped = 0;
    loop {
        if skipped > MAX_SKIPPED {
            return false;
        }
        let (done, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            },
        };
        reader.consume(used);
        skipped += used;
        if done {
            return true;
        }
    }
}

impl fmt::Debug for BrowserAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserAuthorization")
            .field("authorization_url", &Redacted)
            .field("redirect_uri", &self.redirect_uri)
            .field("flow", &self.flow)
            .finish_non_exhaustive()
    }
}
