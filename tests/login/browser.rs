//! The browser login (authorization code + PKCE over a loopback listener, RFC 6749 §4.1,
//! RFC 7636, RFC 8252) against the test kit's server, which requires PKCE S256, checks the
//! redirect URI, and makes codes single-use. The "browser" is the kit's `open_in_browser`
//! (the authorization endpoint's redirect followed with a GET) or a plain HTTP client.
//!
//! This file: the authorization request, the `state`, the listener's ports and hosts, the
//! timeout, error callbacks; and the helpers of the other browser files
//! (`browser_listener.rs`, `browser_paste.rs`, `interactive.rs`).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use tokengate::login::{BrowserError, BrowserFlow};
use tokengate::testing::{Grant, Outcome, TestServer, CLIENT_ID};
use tokengate::ureq::Agent;
use tokengate::{AuthClient, Error, Tokens};

use crate::harness::fixtures::{no_proxy_agent, refused_addr};
use crate::harness::observe::HANG_GUARD;
use crate::harness::servers::form;

/// The kit's confidential client, its agent without proxies, the browser never opened.
pub(crate) fn flow(srv: &TestServer) -> BrowserFlow {
    srv.auth_server()
        .agent(no_proxy_agent())
        .browser_flow()
        .unwrap()
        .open_browser(false)
}

/// An answer of the listener, as a browser gets it.
pub(crate) struct Page {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// `method url` as a browser sends it: no proxy, no redirect followed, any status.
pub(crate) fn request(method: &str, url: &str) -> Page {
    let agent: Agent = Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(HANG_GUARD))
        .build()
        .into();
    let sent = match method {
        "GET" => agent.get(url).call(),
        "POST" => agent.post(url).send_empty(),
        "HEAD" => agent.head(url).call(),
        other => panic!("no {other} here"),
    };
    let mut resp = sent.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    Page {
        status: resp.status().as_u16(),
        headers,
        body: resp.body_mut().read_to_string().unwrap(),
    }
}

pub(crate) fn get(url: &str) -> Page {
    request("GET", url)
}

/// The query parameters of `url`, decoded.
pub(crate) fn query_of(url: &str) -> HashMap<String, String> {
    form(url.split_once('?').unwrap().1.as_bytes())
}

/// `url` with the value of its query parameter `name` replaced by `value` (not encoded).
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let prefix = format!("{name}=");
    let pairs: Vec<String> = query
        .split('&')
        .map(|kv| match kv.strip_prefix(&prefix) {
            Some(_) => format!("{prefix}{value}"),
            None => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// The loopback address of a redirect URI `http://127.0.0.1:{port}/…`.
pub(crate) fn addr_of(redirect_uri: &str) -> SocketAddr {
    let authority = redirect_uri.strip_prefix("http://").unwrap();
    authority.split('/').next().unwrap().parse().unwrap()
}

/// The port of a redirect URI `http://{host}:{port}/…`.
pub(crate) fn port_of(redirect_uri: &str) -> u16 {
    let authority = redirect_uri.strip_prefix("http://").unwrap();
    let authority = authority.split('/').next().unwrap();
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

pub(crate) fn browser_error(result: Result<Tokens, Error>) -> BrowserError {
    match result {
        Err(Error::Browser(e)) => e,
        other => panic!("expected a browser error, got {other:?}"),
    }
}

/// Exactly one call of the token endpoint: an `authorization_code` grant that issued
/// generation `generation`.
pub(crate) fn one_code_exchange(srv: &TestServer, generation: u64) {
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].grant, Grant::AuthorizationCode);
    assert_eq!(calls[0].outcome, Outcome::Issued(generation));
}

/// A writer that hands each complete line to `on_line` as it is written, and keeps the
/// whole text: what a person at the terminal reads, and answers.
pub(crate) struct Watcher<F: FnMut(&str)> {
    bytes: Vec<u8>,
    /// The bytes of the lines already handed over.
    handed: usize,
    on_line: F,
}

impl<F: FnMut(&str)> Watcher<F> {
    pub(crate) fn new(on_line: F) -> Self {
        Watcher {
            bytes: Vec::new(),
            handed: 0,
            on_line,
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).unwrap()
    }
}

impl<F: FnMut(&str)> Write for Watcher<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        while let Some(end) = self.bytes[self.handed..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.bytes[self.handed..self.handed + end]);
            let line = line.into_owned();
            self.handed += end + 1;
            (self.on_line)(&line);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader of what the test sends through a channel (a person typing, late): blocks until
/// the next piece arrives; ends when the sender is dropped.
pub(crate) struct ChannelReader {
    pieces: Receiver<String>,
    left: Vec<u8>,
}

impl ChannelReader {
    pub(crate) fn new() -> (mpsc::Sender<String>, ChannelReader) {
        let (tx, rx) = mpsc::channel();
        let reader = ChannelReader {
            pieces: rx,
            left: Vec::new(),
        };
        (tx, reader)
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left.is_empty() {
            match self.pieces.recv() {
                Ok(piece) => self.left = piece.into_bytes(),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.left.len());
        buf[..n].copy_from_slice(&self.left[..n]);
        self.left.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_login_through_the_browser_gets_tokens_that_work() {
    let srv = TestServer::start();
    let pending = flow(&srv).scope("api").start().unwrap();
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    let tokens = pending.wait().unwrap();
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].grant, Grant::AuthorizationCode);
    let client = AuthClient::builder(srv.api_url())
        .refresher(srv.auth_server().refresh_grant())
        .tokens(tokens)
        .build()
        .unwrap();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
}

/// The authorization URL asks for PKCE S256 with a fresh 43-character challenge and state;
/// a challenge changed on the way makes the server refuse the code at the exchange: the
/// verifier it checks is the login's own.
#[test]
fn the_request_carries_an_s256_challenge_that_the_server_verifies() {
    let srv = TestServer::start();
    let pending = flow(&srv).scope("api").start().unwrap();
    let url = pending.authorization_url().to_owned();
    assert!(
        url.starts_with(&format!("{}?", srv.authorization_url())),
        "{url}"
    );
    let q = query_of(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], pending.redirect_uri());
    assert_eq!(q["scope"], "api");
    assert_eq!(q["code_challenge_method"], "S256");
    for name in ["code_challenge", "state"] {
        assert_eq!(q[name].len(), 43, "{name}: {}", q[name]);
        assert!(
            q[name]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{name}: {}",
            q[name]
        );
    }
    assert_ne!(q["state"], q["code_challenge"]);
    assert_eq!(q.len(), 7, "{q:?}");
    let debug = format!("{pending:?}");
    assert!(!debug.contains(&q["state"]), "{debug}");

    // Another login's challenge: the code is issued for it, and the verifier does not match.
    let other = flow(&srv).start().unwrap();
    let other_challenge = query_of(other.authorization_url())["code_challenge"].clone();
    assert_ne!(other_challenge, q["code_challenge"]);
    let altered = with_param(&url, "code_challenge", &other_challenge);
    assert_eq!(srv.open_in_browser(&altered).unwrap(), 200);
    match browser_error(pending.wait()) {
        BrowserError::OAuth { status, error, .. } => {
            assert_eq!((status, error.as_str()), (400, "invalid_grant"));
        }
        other => panic!("{other:?}"),
    }
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].grant, Grant::AuthorizationCode);
    assert!(
        matches!(&calls[0].outcome, Outcome::Refused { status: 400, error } if error == "invalid_grant"),
        "{calls:?}"
    );
    assert_eq!(srv.issued(), 0);
}

/// Callbacks with a wrong `state`, none, an empty one, another login's, or without a code
/// are answered 400 and do not count, error callbacks included; the real one then logs in,
/// with exactly one code exchange.
#[test]
fn callbacks_without_this_logins_state_get_400_and_do_not_count() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let other = flow(&srv).start().unwrap();
    let state = query_of(pending.authorization_url())["state"].clone();
    let other_state = query_of(other.authorization_url())["state"].clone();
    let callback = pending.redirect_uri().to_owned();
    for query in [
        "code=x&state=wrong".to_owned(),
        "code=x".to_owned(),
        "code=x&state=".to_owned(),
        format!("code=x&state={other_state}"),
        format!("code=x&state={}", &state[..42]),
        "error=access_denied&state=wrong".to_owned(),
        "error=access_denied".to_owned(),
        format!("error=access_denied&state={other_state}"),
        format!("state={state}"),
        format!("code=&state={state}"),
    ] {
        let page = get(&format!("{callback}?{query}"));
        assert_eq!(page.status, 400, "{query}");
        assert!(
            page.body.contains("Not this login"),
            "{query}: {}",
            page.body
        );
        for value in ["wrong", &other_state, &state] {
            assert!(!page.body.contains(value), "{query}: {}", page.body);
        }
    }
    assert_eq!(srv.token_calls().len(), 0);
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    let tokens = pending.wait().unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    one_code_exchange(&srv, 1);
}

/// A port of the list in use is skipped, and named when it was the only one.
#[test]
fn a_busy_port_is_named_and_the_next_free_one_of_the_list_is_used() {
    let srv = TestServer::start();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = held.local_addr().unwrap().port();
    let held2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let p2 = held2.local_addr().unwrap().port();
    match flow(&srv).ports([p]).start() {
        Err(Error::Browser(e @ BrowserError::PortsBusy(_))) => {
            assert!(matches!(&e, BrowserError::PortsBusy(ports) if *ports == [p]));
            assert_eq!(
                e.to_string(),
                format!(
                    "cannot listen for the browser's redirect: port {p} in use (or not permitted)"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    match flow(&srv).ports([p, p2]).start() {
        Err(Error::Browser(e @ BrowserError::PortsBusy(_))) => {
            assert!(matches!(&e, BrowserError::PortsBusy(ports) if *ports == [p, p2]));
            assert!(
                e.to_string()
                    .ends_with(&format!("ports {p}, {p2} in use (or not permitted)")),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }

    // q free: a port just released (another test may take it between the release and the
    // bind; then try another: the assertions below hold for the one that is used).
    let (pending, q) = (0..16)
        .find_map(|_| {
            let q = refused_addr().port();
            match flow(&srv).ports([p, q]).start() {
                Ok(pending) => Some((pending, q)),
                Err(Error::Browser(BrowserError::PortsBusy(ports))) if ports == [p, q] => None,
                Err(e) => panic!("{e:?}"),
            }
        })
        .expect("a free port in 16 tries");
    assert_eq!(
        pending.redirect_uri(),
        format!("http://127.0.0.1:{q}/callback")
    );
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    pending.wait().unwrap();
    one_code_exchange(&srv, 1);
    drop((held, held2));
}

/// With `localhost(true)` the redirect URI says `localhost`, and the listener answers at its
/// port on [::1] as on 127.0.0.1 (where `localhost` resolves to either), the callback path
/// only.
#[test]
fn a_localhost_redirect_is_served_on_ipv6_and_ipv4_loopback() {
    let srv = TestServer::start();
    for host in ["[::1]", "127.0.0.1"] {
        let pending = flow(&srv).localhost(true).start().unwrap();
        let port = port_of(pending.redirect_uri());
        let uri = format!("http://localhost:{port}/callback");
        assert_eq!(pending.redirect_uri(), uri);
        assert_eq!(query_of(pending.authorization_url())["redirect_uri"], uri);
        for any in ["[::1]", "127.0.0.1"] {
            let page = get(&format!("http://{any}:{port}/favicon.ico"));
            assert_eq!(page.status, 404, "{any}");
        }
        let redirect = srv.authorize(pending.authorization_url()).unwrap();
        assert!(redirect.starts_with(&format!("{uri}?")), "{redirect}");
        let there = redirect.replacen("http://localhost:", &format!("http://{host}:"), 1);
        assert_eq!(get(&there).status, 200, "{host}");
        let before = srv.token_calls().len();
        pending.wait().unwrap();
        let calls = srv.token_calls();
        assert_eq!(calls.len(), before + 1);
        assert!(
            matches!(calls[before].outcome, Outcome::Issued(_)),
            "{host}"
        );
    }
}

/// Nobody comes back: the wait ends with `Timeout`, and nothing was sent.
#[test]
fn no_browser_within_the_timeout_is_a_timeout() {
    let srv = TestServer::start();
    let pending = flow(&srv)
        .timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let e = browser_error(pending.wait());
    assert!(matches!(e, BrowserError::Timeout(_)), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("no answer from the browser within 300 ms"),
        "{e}"
    );
    assert_eq!(srv.token_calls().len(), 0);
    for (d, said) in [(300, "5 min"), (90, "90 s")] {
        let e = tokengate::login::BrowserError::Timeout(Duration::from_secs(d));
        assert!(e.to_string().contains(&format!("within {said} ")), "{e}");
    }
}

/// A timeout too large for the clock is no deadline: `start` does not panic, the login works.
#[test]
fn a_timeout_past_the_end_of_time_never_panics() {
    let srv = TestServer::start();
    let pending = flow(&srv).timeout(Duration::MAX).start().unwrap();
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    pending.wait().unwrap();
    one_code_exchange(&srv, 1);
}

/// The user declines: the error callback (with this login's `state`) ends the wait with
/// `Refused { access_denied }`; another error code is kept with its description, made
/// printable. No code is exchanged.
#[test]
fn an_error_callback_is_a_typed_refusal() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    srv.deny_next_authorizations(1);
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    let e = browser_error(pending.wait());
    assert!(e.is_access_denied(), "{e:?}");
    assert!(
        matches!(&e, BrowserError::Refused { error, description: None } if error == "access_denied"),
        "{e:?}"
    );
    assert!(!e.is_transient());

    let pending = flow(&srv).start().unwrap();
    let state = query_of(pending.authorization_url())["state"].clone();
    let page = get(&format!(
        "{}?error=invalid_scope&error_description=no+such%0Ascope&state={state}",
        pending.redirect_uri()
    ));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Login not completed"), "{}", page.body);
    assert!(!page.body.contains("invalid_scope") && !page.body.contains("no such"));
    let e = browser_error(pending.wait());
    assert!(!e.is_access_denied());
    match &e {
        BrowserError::Refused { error, description } => {
            assert_eq!(error, "invalid_scope");
            assert_eq!(description.as_deref(), Some("no such scope"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.token_calls().len(), 0);
}

/// `run` prints the URL and flushes it before it waits: a buffered writer (as `BufWriter`)
/// shows it while the login is waiting, not after.
#[test]
fn run_flushes_the_address_before_it_waits() {
    /// Hands over what was written only when flushed.
    struct Buffered {
        buf: Vec<u8>,
        flushed: mpsc::Sender<String>,
    }
    impl Write for Buffered {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.buf.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            let text = String::from_utf8(std::mem::take(&mut self.buf)).unwrap();
            let _ = self.flushed.send(text);
            Ok(())
        }
    }
    let srv = TestServer::start();
    let (tx, rx) = mpsc::channel();
    let login = flow(&srv).timeout(HANG_GUARD * 2);
    std::thread::scope(|s| {
        let run = s.spawn(move || {
            let mut out = Buffered {
                buf: Vec::new(),
                flushed: tx,
            };
            login.run(&mut out)
        });
        let shown = rx
            .recv_timeout(HANG_GUARD)
            .expect("the address was flushed before the wait");
        let url = shown
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&srv.authorization_url()))
            .unwrap_or_else(|| panic!("no address in {shown:?}"))
            .to_owned();
        assert_eq!(srv.open_in_browser(&url).unwrap(), 200);
        run.join().unwrap().unwrap();
    });
    one_code_exchange(&srv, 1);
}

/// Distinct `HashSet` sizes: a helper for the parallel test's counts.
pub(crate) fn distinct<T: Eq + std::hash::Hash>(items: impl IntoIterator<Item = T>) -> usize {
    items.into_iter().collect::<HashSet<_>>().len()
}
