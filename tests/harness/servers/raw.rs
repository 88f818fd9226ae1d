//! A tiny HTTP/1.1 server on raw TCP for faults httpmock cannot produce: a connection reset
//! in the middle of a body, header values that are not UTF-8, a server that never answers.
//! Each connection is served on its own thread; every request goes to the handler.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// One parsed request.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub enum Action {
    /// A complete response: status, raw header lines (bytes, so they may be invalid UTF-8), body.
    Respond(u16, Vec<Vec<u8>>, Vec<u8>),
    /// Announce `Content-Length: len`, send `partial`, then close the connection.
    CutBody { len: usize, partial: Vec<u8> },
    /// Close the connection without answering.
    Close,
    /// Keep the connection open without answering for this long, then close it.
    Hang(Duration),
}

pub struct RawServer {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawServer {
    pub fn start(handler: impl Fn(&RawRequest) -> Action + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handler = Arc::new(handler);
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (connections.clone(), requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, r) = (handler.clone(), r.clone());
                thread::spawn(move || serve(stream, &*h, &r));
            }
        });
        RawServer {
            port,
            connections,
            requests,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

fn serve(
    stream: TcpStream,
    handler: &(dyn Fn(&RawRequest) -> Action + Send + Sync),
    n: &AtomicUsize,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        n.fetch_add(1, Ordering::SeqCst);
        match handler(&req) {
            Action::Respond(status, headers, body) => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len())
                    .into_bytes();
                for h in headers {
                    out.extend_from_slice(&h);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body);
                if writer.write_all(&out).is_err() {
                    return;
                }
            }
            Action::CutBody { len, partial } => {
                let mut out = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n").into_bytes();
                out.extend_from_slice(&partial);
                let _ = writer.write_all(&out);
                let _ = writer.flush();
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Action::Close => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            Action::Hang(d) => {
                thread::sleep(d);
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Reads one request (head and a `content-length` body); `None` at end of stream or on garbage.
pub fn read_request(reader: &mut impl BufRead) -> Option<RawRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(RawRequest {
        method,
        path,
        headers,
        body,
    })
}

/// Records every request a server receives.
pub type Log = Arc<parking_lot::Mutex<Vec<RawRequest>>>;

/// A server that pushes every request onto `log`, then answers it with `f`.
pub fn recording(
    log: &Log,
    f: impl Fn(&RawRequest) -> Action + Send + Sync + 'static,
) -> RawServer {
    let log = log.clone();
    RawServer::start(move |req| {
        log.lock().push(req.clone());
        f(req)
    })
}

/// A server that runs `before` on each request, then forwards it (method, path, body,
/// `Authorization` and `Content-Type`) to `target` (a base URL, `http://127.0.0.1:PORT`)
/// and answers what `target` answered (status, `Content-Type`, body). For a test that must
/// see a request whole (the kit's journal keeps only what it understood), or act while the
/// request is in flight, in front of a `tokengate::testing::TestServer`.
pub fn forwarding(target: &str, before: impl Fn(&RawRequest) + Send + Sync + 'static) -> RawServer {
    let target = target.to_owned();
    let agent: tokengate::ureq::Agent = tokengate::ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    RawServer::start(move |req| {
        before(req);
        let mut out = tokengate::ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(format!("{target}{}", req.path));
        for name in ["authorization", "content-type"] {
            if let Some(value) = req.header(name) {
                out = out.header(name, value);
            }
        }
        let Ok(mut resp) = agent.run(out.body(req.body.clone()).unwrap()) else {
            return Action::Close;
        };
        let mut headers = Vec::new();
        if let Some(t) = resp.headers().get("content-type") {
            headers.push([b"content-type: ".as_slice(), t.as_bytes()].concat());
        }
        let body = resp.body_mut().read_to_vec().unwrap_or_default();
        Action::Respond(resp.status().as_u16(), headers, body)
    })
}
