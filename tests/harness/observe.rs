//! What tests watch with: an event recorder, bounded waits, the requests a server received
//! (`Seen`), response bodies, the threads released at once by `release_together`, and child
//! processes that run one test of the binary (`test_name!`, `child_test`).
//!
//! Every wait here is bounded by [`HANG_GUARD`]: it turns a bug that would hang into a failed
//! test. It is never a measured claim about speed.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use httpmock::HttpMockRequest;
use tokengate::{AuthClient, Event};

/// Upper bound for every wait in the tests (only ever reached by a bug).
pub const HANG_GUARD: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds; panics after [`HANG_GUARD`].
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !cond() {
        assert!(Instant::now() < deadline, "hang guard: never saw {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on another thread and returns its result; panics if it has not returned within
/// [`HANG_GUARD`] (i.e. it blocked when it must not).
pub fn must_not_block<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG_GUARD)
        .unwrap_or_else(|_| panic!("{what} blocked"))
}

/// Events with the name of the thread each was reported on, and a condvar signalled on push.
type EventLog = (Mutex<Vec<(Event, String)>>, Condvar);

/// Records every [`Event`] with the name of the thread it was reported on.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<EventLog>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A listener for `AuthClientBuilder::on_event`.
    pub fn listener(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let me = self.clone();
        move |e: &Event| me.push(*e)
    }

    pub fn push(&self, e: Event) {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        self.inner.0.lock().unwrap().push((e, name));
        self.inner.1.notify_all();
    }

    pub fn all(&self) -> Vec<Event> {
        self.inner
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| *e)
            .collect()
    }

    /// Events reported on the thread named `thread`.
    pub fn on_thread(&self, thread: &str) -> Vec<Event> {
        self.inner
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| t == thread)
            .map(|(e, _)| *e)
            .collect()
    }

    pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.inner
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _)| pred(e))
            .count()
    }

    /// Blocks until at least `n` recorded events match `pred` (bounded by [`HANG_GUARD`]).
    pub fn wait_for(&self, what: &str, n: usize, pred: impl Fn(&Event) -> bool) {
        let (lock, cond) = &*self.inner;
        let deadline = Instant::now() + HANG_GUARD;
        let mut events = lock.lock().unwrap();
        while events.iter().filter(|(e, _)| pred(e)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "hang guard: never saw {n} x {what}");
            events = cond.wait_timeout(events, left).unwrap().0;
        }
    }
}

pub fn is_unauthorized(e: &Event) -> bool {
    matches!(e, Event::Unauthorized { .. })
}
pub fn is_refresh_started(e: &Event) -> bool {
    matches!(e, Event::RefreshStarted { .. })
}
pub fn is_refreshed(e: &Event) -> bool {
    matches!(e, Event::Refreshed { .. })
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Every header line, in order, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub(crate) fn of(req: &HttpMockRequest) -> Seen {
        Seen {
            method: req.method_str().to_owned(),
            target: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: req
                .headers_vec()
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            body: req.body_ref().to_vec(),
        }
    }

    /// All values of header `name`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }

    /// The bearer token the request carried, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    /// Headers other than `Authorization`, sorted (to compare an attempt with its retry).
    pub fn headers_without_auth(&self) -> Vec<(String, String)> {
        let mut h: Vec<_> = self
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .cloned()
            .collect();
        h.sort();
        h
    }
}

/// Starts `n` threads that wait on one `Barrier`, so they all call at once, and then run
/// `f(i, &client)` with their own clone of the client.
pub fn release_together<T: Send + 'static>(
    n: usize,
    client: &tokengate::AuthClient,
    f: impl Fn(usize, &tokengate::AuthClient) -> T + Send + Sync + 'static,
) -> Vec<std::thread::JoinHandle<T>> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let f = std::sync::Arc::new(f);
    (0..n)
        .map(|i| {
            let (c, b, f) = (client.clone(), barrier.clone(), f.clone());
            std::thread::spawn(move || {
                b.wait();
                f(i, &c)
            })
        })
        .collect()
}

/// Reads a response body as JSON.
pub fn body_json(
    resp: &mut tokengate::ureq::http::Response<tokengate::ureq::Body>,
) -> serde_json::Value {
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// The token an API of the token server saw on a GET of `items` (its JSON answer's `token`).
/// Makes requests from `client` (each may adopt a record, or retry an unsaved change) until
/// it holds the access token `token`, bounded by the hang guard.
pub fn until_holding(client: &AuthClient, token: &str) {
    wait_until(&format!("the client holding {token}"), || {
        let _ = client.get("items").call();
        client
            .tokens()
            .is_some_and(|t| t.access_token().secret() == token)
    });
}

pub fn token_of(client: &AuthClient) -> String {
    let mut r = client.get("items").call().unwrap();
    body_json(&mut r)["token"].as_str().unwrap().to_owned()
}

/// `test_name!(f)`: the name the test harness knows the test function `f` of the calling
/// module by, for a child process that runs that test alone (`current_exe() <name>
/// --exact`). A test binary names its tests by their path without the crate: `exit::f` for
/// `f` in tests/lifecycle/exit.rs. `f` must be a `fn()` of the calling module, so a name
/// that matches no test does not compile (a filter that matched nothing would run nothing,
/// and pass).
#[allow(unused_macros)] // only the binaries that start child processes use it
macro_rules! test_name {
    ($f:ident) => {{
        let _: fn() = $f;
        $crate::harness::observe::path_in_binary(module_path!(), stringify!($f))
    }};
}
#[allow(unused_imports)] // as the macro
pub(crate) use test_name;

/// The environment variable that gives a child process its role (unset in the parent: a
/// test that finds it set runs as that child).
pub const ROLE: &str = "TOKENGATE_TEST_ROLE";
/// The environment variable that gives a child process the base URL of the parent's token
/// server (`TokenServer::client_builder_at` builds a client of it).
pub const URL: &str = "TOKENGATE_TEST_URL";
/// The environment variable that gives a child process the token file it shares.
pub const FILE: &str = "TOKENGATE_TEST_FILE";

/// A command that runs this test binary's test `name` (from `test_name!`) alone, as a child
/// process in `role` ([`ROLE`]), its output not captured by the test harness: its stdout
/// piped to the parent, its stderr the parent's. The caller adds the rest of its environment
/// and starts it.
pub fn child_test(name: &str, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// `module::name` for `module` given as `module_path!()` (`lifecycle::exit`): the path of
/// `name` inside its test binary, without the crate.
pub fn path_in_binary(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    }
}
