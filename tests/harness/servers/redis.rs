//! A real `redis-server` for the `RedisStore` tests: started on a free loopback port with its
//! own temporary directory, stopped (SIGKILL) when dropped; it can be stopped and started
//! again on the same port, with or without its data. Plus a minimal RESP client, so the
//! tests can look at (and tamper with) the keys without another dependency.
//!
//! `redis-server` must be installed (`apt-get install redis-server`; `.ci/run` installs it):
//! without it these tests fail, they never skip.
//!
//! Self-contained (it uses nothing else of the harness): the `redis` scenario of
//! `benches/gate` includes this file alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for a server to answer PING after it was started (only a bug reaches it).
const START_GUARD: Duration = Duration::from_secs(20);

pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a free loopback port, no persistence (`--save '' --appendonly no`).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra command-line arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tokengate-redis-{}-{}",
            std::process::id(),
            unique()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port: 0,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        // A port found free can be taken by someone else before redis-server binds it:
        // try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!("redis-server did not start (see {})", server.dir.display());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The URL with a password (for a server started with `--requirepass`).
    pub fn url_with_password(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}/", self.port)
    }

    /// Stops the server at once (SIGKILL): what it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server after saving its data to its directory (`SHUTDOWN SAVE`), as a
    /// maintenance restart does; `start_again` loads it.
    pub fn shut_down_saving(&mut self) {
        let mut conn = self.conn();
        let _ = conn.send(&["SHUTDOWN", "SAVE"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (and directory: a saved dump is loaded).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let deadline = Instant::now() + START_GUARD;
        // The port may take a moment to be free again.
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server (SIGSTOP): it answers nothing, and time runs on for its keys' TTLs.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("kill")
            .arg(which)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {which} failed");
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A RESP connection to the server (authenticated for `--requirepass`, if given).
    pub fn conn(&self) -> Resp {
        let mut conn = Resp::connect(self.port);
        if let Some(i) = self.extra.iter().position(|a| a == "--requirepass") {
            let password = self.extra[i + 1].clone();
            conn.cmd(&["AUTH", &password]);
        }
        conn
    }

    /// Starts `redis-server` and waits until it answers PING. False if it exited early
    /// (the port was taken).
    fn launch(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the RedisStore tests need it \
                 (DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; .ci/run does this)"
            ),
            Err(e) => panic!("could not start redis-server: {e}"),
        };
        let deadline = Instant::now() + START_GUARD;
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                let mut conn = Resp::from_stream(stream);
                if let Some(Reply::Status(s) | Reply::Error(s)) = conn.send(&["PING"]) {
                    // NOAUTH also means it is up.
                    if s == "PONG" || s.starts_with("NOAUTH") {
                        self.child = Some(child);
                        return true;
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {} never answered PING", self.port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of a redis-server that loses one reply on purpose: once armed with
/// a marker, it forwards the first command holding the marker to Redis, reads Redis's reply
/// (so the command was applied), and then closes the client's connection without passing the
/// reply on, as a connection lost at the worst moment does. Everything else passes through.
pub struct ReplyLosingProxy {
    port: u16,
    shared: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// The marker of the command whose reply is to be lost; taken by that command.
    armed: Mutex<Option<Vec<u8>>>,
    lost: AtomicUsize,
    /// After losing the armed reply, every connection is cut and new ones are refused until
    /// `heal` (a network outage that begins at the worst moment).
    cut_after_loss: AtomicBool,
    /// New connections are closed at once.
    refusing: AtomicBool,
    /// Every connection passed through, to cut them.
    conns: Mutex<Vec<TcpStream>>,
}

impl ReplyLosingProxy {
    pub fn start(redis_port: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyState::default());
        let state = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if state.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, redis_port)) else {
                    continue;
                };
                if let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) {
                    state.conns.lock().unwrap().extend([c, u]);
                }
                let state = Arc::clone(&state);
                std::thread::spawn(move || proxy_connection(client, upstream, &state));
            }
        });
        ReplyLosingProxy { port, shared }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The reply to the next command holding `marker` will be lost.
    pub fn lose_reply_to(&self, marker: &str) {
        *self.shared.armed.lock().unwrap() = Some(marker.as_bytes().to_vec());
    }

    /// The reply to the next command holding `marker` will be lost, and then every
    /// connection is cut and new ones are refused until [`ReplyLosingProxy::heal`]: neither
    /// a re-send nor a read-back can reach Redis.
    pub fn lose_reply_and_cut(&self, marker: &str) {
        self.shared.cut_after_loss.store(true, Ordering::SeqCst);
        self.lose_reply_to(marker);
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
    }

    /// How many replies were lost so far.
    pub fn replies_lost(&self) -> usize {
        self.shared.lost.load(Ordering::SeqCst)
    }
}

/// Pumps one connection both ways, losing the reply to the armed command.
fn proxy_connection(client: TcpStream, upstream: TcpStream, state: &ProxyState) {
    let swallow = Arc::new(AtomicBool::new(false));
    let (mut from_redis, mut to_client) =
        (upstream.try_clone().unwrap(), client.try_clone().unwrap());
    let swallow_reply = Arc::clone(&swallow);
    let cut = Arc::new(AtomicBool::new(false));
    let cut_all = Arc::clone(&cut);
    let all: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::clone(&all);
    let replies = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from_redis.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if swallow_reply.load(Ordering::SeqCst) {
                // Applied, and its sender never hears so.
                let _ = to_client.shutdown(Shutdown::Both);
                let _ = from_redis.shutdown(Shutdown::Both);
                if cut.load(Ordering::SeqCst) {
                    for conn in all.lock().unwrap().drain(..) {
                        let _ = conn.shutdown(Shutdown::Both);
                    }
                }
                break;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (mut from_client, mut to_redis) = (client, upstream);
    let mut buf = [0u8; 16 * 1024];
    // The end of the previous read, so that a marker split between two reads is found.
    let mut window: Vec<u8> = Vec::new();
    loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        window.extend_from_slice(&buf[..n]);
        {
            let mut armed = state.armed.lock().unwrap();
            let hit = armed
                .as_ref()
                .is_some_and(|m| window.windows(m.len()).any(|w| w == m.as_slice()));
            if hit {
                *armed = None;
                if state.cut_after_loss.swap(false, Ordering::SeqCst) {
                    state.refusing.store(true, Ordering::SeqCst);
                    let mut others = state.conns.lock().unwrap();
                    conns.lock().unwrap().extend(others.drain(..));
                    cut_all.store(true, Ordering::SeqCst);
                }
                swallow.store(true, Ordering::SeqCst);
                state.lost.fetch_add(1, Ordering::SeqCst);
            }
        }
        let keep = window.len().saturating_sub(256);
        window.drain(..keep);
        if to_redis.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to_redis.shutdown(Shutdown::Both);
    let _ = replies.join();
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A RESP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// A bulk string as text (`None` for nil).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Status(s) => Some(s.clone()),
            Reply::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// A minimal blocking RESP2 client.
pub struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        Self::from_stream(stream)
    }

    fn from_stream(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Resp {
            reader: BufReader::new(stream),
        }
    }

    /// Sends a command; `None` if the connection failed.
    pub fn send(&mut self, args: &[&str]) -> Option<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out).ok()?;
        self.read()
    }

    /// Sends a command and returns its reply; panics on a failed connection.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.send(args)
            .unwrap_or_else(|| panic!("redis command {:?} failed", args.first()))
    }

    /// `HGET key field` as text.
    pub fn hget(&mut self, key: &str, field: &str) -> Option<String> {
        self.cmd(&["HGET", key, field]).text()
    }

    pub fn get(&mut self, key: &str) -> Option<String> {
        self.cmd(&["GET", key]).text()
    }

    /// The record's generation (0 if none).
    pub fn generation(&mut self, session: &str) -> u64 {
        self.hget(&format!("{{{session}}}:tokens"), "generation")
            .map_or(0, |g| g.parse().unwrap())
    }

    /// The record's token JSON, parsed (`None` if logged out or never written).
    pub fn tokens(&mut self, session: &str) -> Option<serde_json::Value> {
        self.hget(&format!("{{{session}}}:tokens"), "tokens")
            .map(|t| serde_json::from_str(&t).unwrap())
    }

    /// The access token stored for `session`.
    pub fn access_token(&mut self, session: &str) -> Option<String> {
        self.tokens(session)
            .map(|t| t["access_token"].as_str().unwrap().to_owned())
    }

    /// Who holds the session's lease, if anyone.
    pub fn lock_holder(&mut self, session: &str) -> Option<String> {
        self.get(&format!("{{{session}}}:lock"))
    }

    /// How many times Redis ran `command` (from `INFO commandstats`, lowercase name).
    pub fn calls_of(&mut self, command: &str) -> u64 {
        let info = self
            .cmd(&["INFO", "commandstats"])
            .text()
            .unwrap_or_default();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        Some(line.trim_end_matches("\r\n").to_owned())
    }

    fn read(&mut self) -> Option<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        Some(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().ok()?),
            "$" => {
                let len: i64 = rest.parse().ok()?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0; len as usize + 2];
                    std::io::Read::read_exact(&mut self.reader, &mut buf).ok()?;
                    buf.truncate(len as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let len: i64 = rest.parse().ok()?;
                let mut items = Vec::new();
                for _ in 0..len.max(0) {
                    items.push(self.read()?);
                }
                Reply::Array(items)
            }
            _ => return None,
        })
    }
}
