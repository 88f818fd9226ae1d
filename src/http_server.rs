//! A small HTTP/1.1 server: std threads on a loopback `TcpListener`, request heads parsed
//! by httparse. It serves the browser login's redirect listener (`login::browser`) and the
//! test kit (`tokengate::testing`). One accept thread per listener and one thread per
//! connection (keep-alive); a request is handed to the `Handler` and its `Reply` written back.
//!
//! Stopping ([`Listener`]'s `Drop`): the stop flag is raised and the sleeps of every handler
//! cut short ([`Stop::sleep`]), the accept loop is woken by a connection of its own and
//! joined, every open connection is shut down (which ends its blocking read) and its thread
//! joined. After `drop` returns no thread of the server runs and its port is closed (unless
//! the process had no descriptor free for a second to wake the accept thread: that one thread
//! then ends at the next connection).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The largest request head (request line and headers) read; a longer one is answered 431.
const MAX_HEAD: usize = 64 * 1024;
/// The largest request body the test kit reads ([`Limits::GENEROUS`]); a larger one is
/// answered 413.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Headers parsed per request; more is answered 431.
const MAX_HEADERS: usize = 64;
/// A connection whose client sends nothing for this long (between requests or inside one) is
/// closed, so a client that went away without closing holds a thread only that long.
const IDLE: Duration = Duration::from_secs(30);
/// Stacks of the server's threads: they hold a request, a reply and the handler's frames.
const STACK: usize = 256 * 1024;

/// One request as received. Header names are lowercase.
#[derive(Clone)]
pub(crate) struct Request {
    pub method: String,
    /// The request target's path, without the query.
    pub path: String,
    /// The query, without `?` (empty when none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // only the test kit reads bodies
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to do with one request.
pub(crate) enum Reply {
    /// Answer: status, headers, body (`content-length` is added).
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // the test kit's faults
    Drop,
    /// This answer, then this call, once the answer is written (or failed to be): what must
    /// not happen before the client has its answer.
    Then(Box<Reply>, Box<dyn FnOnce() + Send>),
}

impl Reply {
    /// A JSON answer.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }

    /// This answer with one more header (a dropped connection stays dropped).
    pub fn with_header(self, name: &'static str, value: String) -> Reply {
        match self {
            Reply::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value));
                Reply::Respond {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Drop => Reply::Drop,
            Reply::Then(reply, then) => Reply::Then(Box::new(reply.with_header(name, value)), then),
        }
    }

    /// This answer, then `then` once it is written.
    pub fn then(self, then: impl FnOnce() + Send + 'static) -> Reply {
        Reply::Then(Box::new(self), Box::new(then))
    }

    /// The status answered; 0 for a dropped connection.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn status(&self) -> u16 {
        match self {
            Reply::Respond { status, .. } => *status,
            Reply::Drop => 0,
            Reply::Then(reply, _) => reply.status(),
        }
    }

    /// An OAuth error answer (RFC 6749 §5.2).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
        let body = serde_json::json!({"error": error, "error_description": description});
        Reply::json(status, &body)
    }
}

/// The server's side of every request.
pub(crate) type Handler = dyn Fn(&Request, &Stop) -> Reply + Send + Sync;

/// The stop signal, shared by the listener, its threads and the handler.
pub(crate) struct Stop {
    stopping: AtomicBool,
    /// Guards nothing but the condvar's wait (the flag above is the state).
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    fn new() -> Stop {
        Stop {
            stopping: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or until the server stops. Returns false if it stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        // A delay past the end of time (`Duration::MAX`) lasts until the server stops.
        let deadline = std::time::Instant::now().checked_add(d);
        let mut guard = self.lock.lock();
        while !self.stopping() {
            match deadline {
                Some(deadline) => {
                    if self.wake.wait_until(&mut guard, deadline).timed_out() {
                        return !self.stopping();
                    }
                }
                None => self.wake.wait(&mut guard),
            }
        }
        false
    }

    fn raise(&self) {
        let _guard = self.lock.lock();
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_all();
    }
}

/// Open connections: a clone of each stream (to shut it down on stop) and each thread.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    /// Streams of connections still being served, by id; a connection's thread removes its own.
    open: Mutex<HashMap<u64, TcpStream>>,
    /// Threads of connections, finished ones pruned at each accept.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What one listener accepts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The largest request body read; a larger one is answered 413 and never kept.
    pub max_body: usize,
    /// Connections served at once; one more closes the oldest.
    pub max_connections: usize,
}

impl Limits {
    /// The test kit's: bodies up to `MAX_BODY`, any number of connections.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub const GENEROUS: Limits = Limits {
        max_body: MAX_BODY,
        max_connections: usize::MAX,
    };
}

/// A running server; stops on drop.
pub(crate) struct Listener {
    addr: SocketAddr,
    stop: Arc<Stop>,
    conns: Arc<Connections>,
    accept: Option<JoinHandle<()>>,
}

impl Listener {
    /// Serves every request `listener` accepts with `handler`, within `limits`, until
    /// dropped. `name` starts the threads' names (`{name}-{port}`).
    pub fn start(
        name: &str,
        listener: TcpListener,
        handler: Arc<Handler>,
        limits: Limits,
    ) -> io::Result<Listener> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(Stop::new());
        let conns = Arc::new(Connections::default());
        let (s, c, n) = (stop.clone(), conns.clone(), name.to_owned());
        let accept = thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .stack_size(STACK)
            .spawn(move || accept_loop(&n, &listener, &handler, limits, &s, &c))?;
        Ok(Listener {
            addr,
            stop,
            conns,
            accept: Some(accept),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.raise();
        // Wake the accept loop (it checks the flag after each accept) with a connection of its
        // own, retried for at most a second while the process has no descriptor free. A
        // refused connection means the loop already ended (it accepted another after the flag
        // was raised). Should it never be woken, the accept thread is left to end at its next
        // connection.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut ended = false;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match TcpStream::connect_timeout(&self.addr, left.max(Duration::from_millis(1))) {
                Ok(_) => ended = true,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => ended = true,
                Err(_) => {}
            }
            let finished = self.accept.as_ref().is_none_or(JoinHandle::is_finished);
            if ended || finished {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(accept) = self.accept.take() {
            if ended {
                let _ = accept.join();
            }
        }
        for stream in self.conns.open.lock().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *self.conns.threads.lock());
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    name: &str,
    listener: &TcpListener,
    handler: &Arc<Handler>,
    limits: Limits,
    stop: &Arc<Stop>,
    conns: &Arc<Connections>,
) {
    for stream in listener.incoming() {
        if stop.stopping() {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors (or another transient failure): wait a little rather than
            // spin on an accept that fails at once.
            stop.sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(copy) = stream.try_clone() else {
            continue;
        };
        let id = conns.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = conns.open.lock();
            if open.len() >= limits.max_connections {
                // Full: the oldest connection is closed (its thread's read ends), never the
                // new one, so clients holding connections open cannot lock others out.
                let oldest = open.keys().min().copied();
                if let Some(stream) = oldest.and_then(|id| open.remove(&id)) {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            open.insert(id, copy);
        }
        let (h, s, c) = (handler.clone(), stop.clone(), conns.clone());
        let spawned = thread::Builder::new()
            .name(format!("{name}-conn"))
            .stack_size(STACK)
            .spawn(move || {
                // Forgets the stream's clone when the thread ends, also by a panic of the
                // handler: the connection is then closed, never left open unanswered.
                let _forget = Forget(&c, id);
                serve(stream, &*h, limits.max_body, &s);
            });
        let mut threads = conns.threads.lock();
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                if let Some(stream) = conns.open.lock().remove(&id) {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Removes connection `.1` from the open ones when dropped.
struct Forget<'a>(&'a Connections, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.open.lock().remove(&self.1);
    }
}

/// Serves one connection's requests until it closes, errs, idles or the server stops.
fn serve(mut stream: TcpStream, handler: &Handler, max_body: usize, stop: &Stop) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    while !stop.stopping() {
        let req = match read_request(&mut stream, &mut buf, max_body) {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(status) => {
                let close = [("connection", "close".to_owned())];
                let _ = write_reply(&mut stream, false, status, &close, b"");
                linger(&mut stream);
                return;
            }
        };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let go_on = answer(&mut stream, &req, handler(&req, stop));
        if !go_on || stop.stopping() {
            return;
        }
        if close {
            return;
        }
    }
}

/// Writes `reply` to `req`; false when the connection is done (dropped, or the write failed).
fn answer(stream: &mut TcpStream, req: &Request, reply: Reply) -> bool {
    match reply {
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let head_only = req.method == "HEAD";
            write_reply(stream, head_only, status, &headers, &body).is_ok()
        }
        Reply::Then(reply, then) => {
            let go_on = answer(stream, req, *reply);
            then();
            go_on
        }
        Reply::Drop => {
            let _ = stream.shutdown(Shutdown::Both);
            false
        }
    }
}

/// Closes after an error answer without losing it: closing a socket with unread input
/// resets the connection, and the reset can discard the answer before the client reads it.
/// So: end the sending side, then read and discard what the client still sends (at most
/// `MAX_BODY` bytes, at most one second of silence).
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 8192];
    let mut discarded = 0;
    while discarded < MAX_BODY {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// Writes an answer. No body (nor `content-length`) for 1xx, 204 and 304 (RFC 9110 §6.4.1);
/// no body to a HEAD, whose `content-length` is that of the answer it would have had.
fn write_reply(
    stream: &mut TcpStream,
    head_only: bool,
    status: u16,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> io::Result<()> {
    // No body, and no content-length either (RFC 9110 §8.6).
    let bodiless = matches!(status, 100..=199 | 204 | 304);
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if !bodiless {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only && !bodiless {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        501 => "Not Implemented",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads the next request. `Ok(None)`: the connection ended (or idled) between requests.
/// `Err(status)`: a request that cannot be served (answered with that status, then closed).
/// `buf` carries bytes read past one request into the next.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> Result<Option<Request>, u16> {
    let head_len = loop {
        match find_head_end(buf) {
            Some(end) if end > MAX_HEAD => return Err(431),
            Some(end) => break end,
            None if buf.len() > MAX_HEAD => return Err(431),
            None => {}
        }
        // End of stream, the idle timeout or a reset: between requests the connection just
        // ends; inside a head it is a bad request.
        if !fill(stream, buf).unwrap_or(false) {
            return if buf.is_empty() { Ok(None) } else { Err(400) };
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        _ => return Err(400),
    }
    let method = parsed.method.unwrap_or("").to_owned();
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).into_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    buf.drain(..head_len);
    let body = read_body(stream, buf, &headers, max_body)?;
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
    }))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads more bytes into `buf`; false at end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Reads more bytes of a request that must go on: its end (or an error) is a bad request.
fn more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), u16> {
    match fill(stream, buf) {
        Ok(true) => Ok(()),
        _ => Err(400),
    }
}

/// The body after a head (RFC 9112 §6): chunked when `transfer-encoding` says exactly
/// `chunked`, else `content-length` bytes, else none. Anything ambiguous about where the body
/// ends (both headers, two lengths, another coding, a length that is not digits) is a 400 (a
/// 501 for another coding), so a request can never be read as two.
fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
    max_body: usize,
) -> Result<Vec<u8>, u16> {
    let all = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .collect()
    };
    let (codings, lengths) = (all("transfer-encoding"), all("content-length"));
    match (codings.as_slice(), lengths.as_slice()) {
        ([], []) => Ok(Vec::new()),
        ([coding], []) if coding.eq_ignore_ascii_case("chunked") => {
            read_chunked(stream, buf, max_body)
        }
        ([_], []) => Err(501),
        ([], [len]) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
            let len: usize = len.parse().map_err(|_| 413u16)?;
            if len > max_body {
                return Err(413);
            }
            while buf.len() < len {
                more(stream, buf)?;
            }
            Ok(buf.drain(..len).collect())
        }
        _ => Err(400),
    }
}

/// The end of the next line in `buf` (the index of its CRLF), reading more as needed; a line
/// longer than `MAX_HEAD` is a 400.
fn line_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, u16> {
    let mut scanned: usize = 0;
    loop {
        let from = scanned.saturating_sub(1);
        if let Some(i) = buf[from..].windows(2).position(|w| w == b"\r\n") {
            return Ok(from + i);
        }
        if buf.len() > MAX_HEAD {
            return Err(400);
        }
        scanned = buf.len();
        more(stream, buf)?;
    }
}

fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> Result<Vec<u8>, u16> {
    let mut body = Vec::new();
    loop {
        let end = line_end(stream, buf)?;
        let line = std::str::from_utf8(&buf[..end]).map_err(|_| 400u16)?;
        // chunk-size = 1*HEXDIG, then optional whitespace and extensions (RFC 9112 §7.1).
        let size_text = line.split(';').next().unwrap_or("");
        let size_text = size_text.trim_end_matches([' ', '\t']);
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(400);
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| 413u16)?;
        if size > max_body - body.len() {
            return Err(413);
        }
        buf.drain(..end + 2);
        if size == 0 {
            // Trailer fields (ignored, at most `MAX_HEAD` bytes) end with an empty line.
            let mut trailers = 0;
            loop {
                let end = line_end(stream, buf)?;
                buf.drain(..end + 2);
                trailers += end + 2;
                if end == 0 {
                    return Ok(body);
                }
                if trailers > MAX_HEAD {
                    return Err(431);
                }
            }
        }
        while buf.len() < size + 2 {
            more(stream, buf)?;
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(400);
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}
