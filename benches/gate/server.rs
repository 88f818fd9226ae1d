//! A small, fast loopback HTTP/1.1 keep-alive server for the benchmarks (std threads, one per
//! connection), and a minimal raw-socket client used to measure the server's own ceiling.
//!
//! Routes:
//! - `GET /api`: 200 `ok` if the bearer token is live, else 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token"`.
//! - `GET /ping?ms=N`: 200 `ok` without auth, after sleeping N ms (used to open connections).
//! - `POST /token`: an OAuth2 refresh-token grant. Sleeps the configured delay, then rotates:
//!   a new access token `at-N` and refresh token `rt-N`. Counts calls. A refresh token other
//!   than the current one is counted as reuse and answered with `invalid_grant`.
//!
//! Which access tokens are live:
//! - the current one, until its server-side expiry (if the server enforces a lifetime);
//! - in `keep_previous` mode, also the one it replaced, until that one's expiry (real servers
//!   accept any unexpired access token); otherwise a refresh revokes the previous token at once;
//! - `Bearer static`, if `accept_static` is set (for the raw-ureq reference).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer error=\"invalid_token\"\r\ncontent-length: 0\r\n\r\n";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";

/// The request the minimal client sends (same shape as ureq's, minus a few headers).
const RAW_REQUEST: &[u8] =
    b"GET /api HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer static\r\n\r\n";

struct TokState {
    access: u64,
    access_exp: Option<Instant>,
    prev: Option<(u64, Option<Instant>)>,
    refresh: u64,
}

/// Counters and settings shared by all connection threads.
pub struct Shared {
    tokens: RwLock<TokState>,
    /// Token-endpoint latency, in microseconds.
    token_delay_us: AtomicU64,
    /// Lifetime of issued access tokens, in ms (announced as `expires_in` and enforced);
    /// 0: announce an hour and do not enforce.
    lifetime_ms: AtomicU64,
    keep_previous: AtomicBool,
    accept_static: AtomicBool,
    /// Token-endpoint calls.
    pub token_calls: AtomicU64,
    /// Refresh calls that presented a refresh token other than the current one.
    pub reuse: AtomicU64,
    pub api_ok: AtomicU64,
    pub api_401: AtomicU64,
    /// Connections accepted since start.
    pub conns: AtomicU64,
}

/// A running server. Its threads live as long as the process (idle connection threads end
/// when the client closes the connection).
pub struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            tokens: RwLock::new(TokState {
                access: 0,
                access_exp: None,
                prev: None,
                refresh: 0,
            }),
            token_delay_us: AtomicU64::new(0),
            lifetime_ms: AtomicU64::new(0),
            keep_previous: AtomicBool::new(false),
            accept_static: AtomicBool::new(true),
            token_calls: AtomicU64::new(0),
            reuse: AtomicU64::new(0),
            api_ok: AtomicU64::new(0),
            api_401: AtomicU64::new(0),
            conns: AtomicU64::new(0),
        });
        let sh = Arc::clone(&shared);
        thread::Builder::new()
            .name("srv-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    sh.conns.fetch_add(1, Relaxed);
                    let sh = Arc::clone(&sh);
                    // Small stacks: a storm opens a thousand connections.
                    let spawned = thread::Builder::new()
                        .name("srv-conn".into())
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            let _ = serve(stream, &sh);
                        });
                    if spawned.is_err() {
                        eprintln!("server: could not spawn a connection thread");
                    }
                }
            })
            .expect("spawn accept thread");
        Server { addr, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Starts a new session: every earlier access token is revoked, counters are zeroed, and
    /// a fresh refresh token is issued. Returns `(stale access token, refresh token)`: the
    /// access token is rejected with 401, the refresh token works once.
    pub fn new_session(&self, token_delay: Duration, lifetime: Option<Duration>) -> Session {
        let sh = &self.shared;
        sh.token_delay_us
            .store(token_delay.as_micros() as u64, Relaxed);
        sh.lifetime_ms
            .store(lifetime.map_or(0, |d| d.as_millis() as u64), Relaxed);
        let mut t = sh.tokens.write();
        t.access += 1_000_000;
        t.refresh += 1_000_000;
        t.prev = None;
        t.access_exp = None;
        sh.token_calls.store(0, Relaxed);
        sh.reuse.store(0, Relaxed);
        sh.api_ok.store(0, Relaxed);
        sh.api_401.store(0, Relaxed);
        Session {
            stale_access: "at-stale".into(),
            live_access: format!("at-{}", t.access),
            refresh: format!("rt-{}", t.refresh),
        }
    }

    pub fn set_keep_previous(&self, yes: bool) {
        self.shared.keep_previous.store(yes, Relaxed);
    }

    /// Makes the current access token expire `after` from now (server side).
    pub fn expire_current_in(&self, after: Duration) {
        self.shared.tokens.write().access_exp = Some(Instant::now() + after);
    }

    pub fn conns(&self) -> u64 {
        self.shared.conns.load(Relaxed)
    }

    pub fn token_calls(&self) -> u64 {
        self.shared.token_calls.load(Relaxed)
    }
}

/// The tokens of a fresh session.
pub struct Session {
    /// An access token the API rejects (401).
    pub stale_access: String,
    /// The access token the API currently accepts.
    pub live_access: String,
    /// The refresh token the token endpoint accepts.
    pub refresh: String,
}

fn serve(stream: TcpStream, sh: &Shared) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(8 * 1024, stream);
    let mut line = String::with_capacity(256);
    let mut auth = String::with_capacity(64);
    let mut body = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split(' ');
        let method_is_post = parts.next() == Some("POST");
        let target = parts.next().unwrap_or("").to_owned();
        auth.clear();
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("authorization") {
                auth.push_str(value);
            } else if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
        body.resize(content_length, 0);
        reader.read_exact(&mut body)?;

        let path = target.split('?').next().unwrap_or("");
        match path {
            "/api" => {
                if live(sh, &auth) {
                    sh.api_ok.fetch_add(1, Relaxed);
                    writer.write_all(OK)?;
                } else {
                    sh.api_401.fetch_add(1, Relaxed);
                    writer.write_all(UNAUTHORIZED)?;
                }
            }
            "/ping" => {
                let ms = target
                    .split_once("?ms=")
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if ms > 0 {
                    thread::sleep(Duration::from_millis(ms));
                }
                writer.write_all(OK)?;
            }
            "/token" if method_is_post => {
                let resp = token(sh, &body);
                writer.write_all(resp.as_bytes())?;
            }
            _ => writer.write_all(NOT_FOUND)?,
        }
        if close {
            return Ok(());
        }
    }
}

/// Whether `auth` (an `Authorization` header value) carries a live access token.
fn live(sh: &Shared, auth: &str) -> bool {
    let Some(tok) = auth.strip_prefix("Bearer ") else {
        return false;
    };
    if tok == "static" {
        return sh.accept_static.load(Relaxed);
    }
    let Some(n) = tok.strip_prefix("at-").and_then(|n| n.parse::<u64>().ok()) else {
        return false;
    };
    let t = sh.tokens.read();
    let unexpired = |exp: Option<Instant>| exp.is_none_or(|e| Instant::now() < e);
    if n == t.access {
        return unexpired(t.access_exp);
    }
    match t.prev {
        Some((p, exp)) if p == n && sh.keep_previous.load(Relaxed) => unexpired(exp),
        _ => false,
    }
}

/// The token endpoint: sleep, then rotate both tokens (or reject a reused refresh token).
fn token(sh: &Shared, body: &[u8]) -> String {
    sh.token_calls.fetch_add(1, Relaxed);
    let delay = sh.token_delay_us.load(Relaxed);
    if delay > 0 {
        thread::sleep(Duration::from_micros(delay));
    }
    let body = String::from_utf8_lossy(body);
    let presented = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("refresh_token="))
        .and_then(|v| v.strip_prefix("rt-"))
        .and_then(|v| v.parse::<u64>().ok());
    let lifetime_ms = sh.lifetime_ms.load(Relaxed);
    let mut t = sh.tokens.write();
    if presented != Some(t.refresh) {
        drop(t);
        sh.reuse.fetch_add(1, Relaxed);
        let json = r#"{"error":"invalid_grant"}"#;
        return format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        );
    }
    t.prev = Some((t.access, t.access_exp));
    t.access += 1;
    t.refresh += 1;
    let expires_in_ms = if lifetime_ms == 0 {
        t.access_exp = None;
        3_600_000
    } else {
        t.access_exp = Some(Instant::now() + Duration::from_millis(lifetime_ms));
        lifetime_ms
    };
    let json = format!(
        r#"{{"access_token":"at-{}","token_type":"Bearer","expires_in":{},"refresh_token":"rt-{}"}}"#,
        t.access,
        expires_in_ms as f64 / 1000.0,
        t.refresh
    );
    drop(t);
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{json}",
        json.len()
    )
}

/// One thread of the minimal client: a raw keep-alive socket sending a fixed request and
/// reading the fixed-size 200 answer. It does almost no work per request, so its throughput
/// approximates the server's ceiling on this machine.
pub fn raw_socket_loop(addr: SocketAddr, stop: &AtomicBool, count: &AtomicU64) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = [0u8; 256];
    while !stop.load(Relaxed) {
        s.write_all(RAW_REQUEST).expect("write");
        let mut got = 0;
        while got < OK.len() {
            let n = s.read(&mut buf[got..]).expect("read");
            assert!(n > 0, "server closed the connection");
            got += n;
        }
        assert_eq!(&buf[..got], OK, "unexpected answer from the bench server");
        count.fetch_add(1, Relaxed);
    }
}
