//! Helpers for the behaviour tests: an event recorder, bounded waits, and a scripted API
//! (httpmock) that records every request byte for byte.
//!
//! Every wait here is bounded by [`HANG_GUARD`]: it turns a bug that would hang into a failed
//! test. It is never a measured claim about speed.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use httpmock::prelude::*;
use httpmock::{HttpMockRequest, HttpMockResponse};
use tokengate::store::{LockedWrite, Revision, StoreLock, Stored};
use tokengate::ureq::Agent;
use tokengate::{Event, RefreshError, TokenStore, Tokens};

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
    fn of(req: &HttpMockRequest) -> Seen {
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

/// A scripted API on its own httpmock server.
///
/// Everything under `/api/` answers 200 (JSON `{"token": …}`) to a bearer token in the
/// `accepted` set and 401 (`WWW-Authenticate: Bearer error="invalid_token"`) otherwise.
/// `/api/status/NNN` answers NNN to an accepted token; `/api/scope` always answers 401 with
/// `error="insufficient_scope"`. Every request is recorded.
pub struct Api {
    pub server: MockServer,
    pub accepted: Arc<Mutex<HashSet<String>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Api {
    pub fn start(accepted: &[&str]) -> Api {
        let server = MockServer::start();
        let accepted = Arc::new(Mutex::new(
            accepted
                .iter()
                .map(|s| s.to_string())
                .collect::<HashSet<_>>(),
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (acc, log) = (accepted.clone(), seen.clone());
        server.mock(move |when, then| {
            when.path_prefix("/api/");
            then.respond_with(move |req| {
                let s = Seen::of(req);
                log.lock().unwrap().push(s.clone());
                let path = req.uri().path().to_owned();
                if path == "/api/scope" {
                    return HttpMockResponse::builder()
                        .status(401)
                        .header(
                            "www-authenticate",
                            r#"Bearer error="insufficient_scope", scope="admin""#,
                        )
                        .build();
                }
                let ok = s.bearer().is_some_and(|t| acc.lock().unwrap().contains(t));
                if !ok {
                    return HttpMockResponse::builder()
                        .status(401)
                        .header("www-authenticate", r#"Bearer error="invalid_token""#)
                        .body("{\"error\":\"invalid_token\"}")
                        .build();
                }
                let status = path
                    .strip_prefix("/api/status/")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(200);
                json(
                    status,
                    &serde_json::json!({"token": s.bearer(), "path": path}).to_string(),
                )
            });
        });
        Api {
            server,
            accepted,
            seen,
        }
    }

    /// The base URL: `http://127.0.0.1:PORT/api/`.
    pub fn url(&self) -> String {
        self.server.url("/api/")
    }

    pub fn accept(&self, token: &str) {
        self.accepted.lock().unwrap().insert(token.to_owned());
    }

    pub fn reject(&self, token: &str) {
        self.accepted.lock().unwrap().remove(token);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Bearer tokens of the recorded API requests, in order.
    pub fn tokens_seen(&self) -> Vec<Option<String>> {
        self.seen()
            .iter()
            .map(|s| s.bearer().map(str::to_owned))
            .collect()
    }

    /// Adds a POST endpoint at `path` on the same server that records each request and
    /// answers `(status, json body)` computed by `respond`. Returns the log.
    pub fn endpoint(
        &self,
        path: &str,
        respond: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    ) -> Arc<Mutex<Vec<Seen>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        self.server.mock(move |when, then| {
            when.method(POST).path(path);
            then.respond_with(move |req| {
                let s = Seen::of(req);
                let (status, body) = respond(&s);
                l.lock().unwrap().push(s);
                json(status, &body)
            });
        });
        log
    }

    /// A token endpoint at `path` answering an RFC 6749 success with a new access token
    /// `{prefix}{n}` (which the API then accepts) and refresh token `rt-{prefix}{n}`.
    pub fn minting_endpoint(&self, path: &str, prefix: &str) -> Arc<Mutex<Vec<Seen>>> {
        let acc = self.accepted.clone();
        let n = AtomicUsize::new(0);
        let prefix = prefix.to_owned();
        self.endpoint(path, move |_| {
            let k = n.fetch_add(1, Ordering::SeqCst) + 1;
            let access = format!("{prefix}{k}");
            acc.lock().unwrap().insert(access.clone());
            (
                200,
                serde_json::json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "refresh_token": format!("rt-{prefix}{k}"),
                })
                .to_string(),
            )
        })
    }
}

fn json(status: u16, body: &str) -> HttpMockResponse {
    HttpMockResponse::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .build()
}

/// A closure refresher that mints `new-1`, `new-2`, … (accepted by `api`) and counts its calls.
pub fn minting_refresher(
    api: &Api,
    calls: Arc<AtomicUsize>,
) -> impl Fn(&Agent, &Tokens) -> Result<Tokens, RefreshError> + Send + Sync + 'static {
    let acc = api.accepted.clone();
    move |_: &Agent, _: &Tokens| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let access = format!("new-{n}");
        acc.lock().unwrap().insert(access.clone());
        Ok(Tokens::new(access).with_refresh_token(format!("rt-new-{n}")))
    }
}

/// A loopback address nothing listens on (connection refused).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A loopback server that accepts one connection and never answers (for timeouts).
pub struct Silent {
    pub addr: SocketAddr,
    stop: Option<mpsc::Sender<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Ok((conn, _)) = l.accept() {
                let _ = rx.recv_timeout(HANG_GUARD);
                drop(conn);
            }
        });
        Silent {
            addr,
            stop: Some(tx),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        drop(self.stop.take());
        // Unblocks the accept if nothing ever connected.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Standard base64 with padding.
pub fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An unsigned JWT with the given claims (tokengate reads `exp`/`iat` without verifying).
pub fn jwt(claims: &serde_json::Value) -> String {
    let url = |s: &str| {
        base64(s.as_bytes())
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.c2ln",
        url(r#"{"alg":"none","typ":"JWT"}"#),
        url(&claims.to_string())
    )
}

/// Whole seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
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

/// Lets a refresher closure, given to the builder before the client exists, ask the client
/// how many threads wait on its refresh (`AuthClient::refresh_waiters`).
#[derive(Clone, Default)]
pub struct ClientSlot(Arc<Mutex<Option<tokengate::AuthClient>>>);

impl ClientSlot {
    pub fn set(&self, c: &tokengate::AuthClient) {
        *self.0.lock().unwrap() = Some(c.clone());
    }

    pub fn waiters(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |c| c.refresh_waiters())
    }

    /// Blocks until `n` threads wait on the running refresh (bounded by [`HANG_GUARD`]).
    pub fn wait_for_waiters(&self, n: usize) {
        wait_until(&format!("{n} threads waiting on the refresh"), || {
            self.waiters() == n
        });
    }

    /// Breaks the client → refresher → slot → client cycle.
    pub fn clear(&self) {
        self.0.lock().unwrap().take();
    }
}

/// A fresh, empty directory for one test under Cargo's scratch space, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shared store (`FileStore`, `RedisStore`) whose writes under its lock can be made to
/// fail, as on a full disk or a read-only mount: while `fail` is set, a locked write returns
/// an error and changes nothing. Taking the lock, reading and polling are the real store's.
pub struct FailingWrites<S> {
    pub store: S,
    pub fail: Arc<AtomicBool>,
}

impl<S: TokenStore> FailingWrites<S> {
    /// Wraps `store`; returns it with its switch (writes succeed until it is set).
    pub fn new(store: S) -> (Self, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        let wrapped = FailingWrites {
            store,
            fail: Arc::clone(&fail),
        };
        (wrapped, fail)
    }
}

struct FailingWrite {
    lock: StoreLock,
    fail: Arc<AtomicBool>,
}

impl LockedWrite for FailingWrite {
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("No space left on device"));
        }
        self.lock.write(tokens)
    }
    fn reread(&mut self) -> io::Result<Option<Stored>> {
        self.lock.reread().map(|s| s.cloned())
    }
    fn still_held(&mut self) -> io::Result<bool> {
        self.lock.still_held()
    }
}

impl<S: TokenStore> TokenStore for FailingWrites<S> {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.store.load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        self.lock()?.unwrap().write(Some(tokens)).map(drop)
    }
    fn clear(&self) -> io::Result<()> {
        self.lock()?.unwrap().write(None).map(drop)
    }
    fn is_shared(&self) -> bool {
        self.store.is_shared()
    }
    fn lock(&self) -> io::Result<Option<StoreLock>> {
        let lock = self.store.lock()?.expect("a shared store");
        let stored = lock.stored().cloned();
        let writer = FailingWrite {
            lock,
            fail: Arc::clone(&self.fail),
        };
        Ok(Some(match stored {
            Ok(stored) => StoreLock::new(stored, writer),
            Err(e) => StoreLock::unreadable(&e, writer),
        }))
    }
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        self.store.poll(since)
    }
    fn lock_timeout(&self) -> std::time::Duration {
        self.store.lock_timeout()
    }
}
