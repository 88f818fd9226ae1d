//! The loopback listener the browser is redirected to (RFC 8252 §7.3): bound on a free port
//! or the first free one of a list, on 127.0.0.1 (and on `[::1]` at the same port when the
//! redirect URI says `localhost`), serving only the callback path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use super::callback::from_query;
use super::pkce::Pkce;
use super::Event;
use crate::http_server::{Limits, Listener, Reply, Request, Stop};
use crate::login::error::BrowserError;

/// What the listener accepts: no request body (a callback is a GET), and a few connections
/// at once (a browser opens a handful; a local process opening thousands gets no thread each).
const LIMITS: Limits = Limits {
    max_body: 0,
    max_connections: 32,
};

/// Free ports tried when the redirect says `localhost` and the port the OS gave for
/// 127.0.0.1 is taken on `[::1]`.
const FREE_PORT_TRIES: usize = 16;

/// Bound sockets, not yet served.
pub(super) struct Bound {
    pub(super) port: u16,
    sockets: Vec<TcpListener>,
}

/// Binds the listener: on `ports` in order (the first free one), or on a port the OS picks
/// when `ports` is empty; on `[::1]` too when `both` (the redirect says `localhost`), where the
/// machine has IPv6 loopback.
///
/// # Errors
/// [`BrowserError::PortsBusy`] when every port of the list is in use;
/// [`BrowserError::Listen`] when no loopback socket can be bound at all.
pub(super) fn bind(ports: &[u16], both: bool) -> Result<Bound, BrowserError> {
    if ports.is_empty() {
        for _ in 0..FREE_PORT_TRIES {
            match bind_port(0, both) {
                Err(Bind::Busy) => continue,
                Err(Bind::Failed(e)) => return Err(BrowserError::Listen(e.to_string())),
                Ok(bound) => return Ok(bound),
            }
        }
        return Err(BrowserError::Listen(
            "no port was free on both 127.0.0.1 and [::1]".into(),
        ));
    }
    for &port in ports {
        match bind_port(port, both) {
            Err(Bind::Busy) => {
                log::debug!(target: "tokengate", "browser login: port {port} is in use")
            }
            Err(Bind::Failed(e)) => return Err(BrowserError::Listen(e.to_string())),
            Ok(bound) => return Ok(bound),
        }
    }
    Err(BrowserError::PortsBusy(ports.to_vec()))
}

enum Bind {
    Busy,
    Failed(io::Error),
}

/// Binds 127.0.0.1:`port` (0: any), then `[::1]` on the same port when `both`.
fn bind_port(port: u16, both: bool) -> Result<Bound, Bind> {
    let failed = |e: io::Error| match e.kind() {
        // A port below 1024 without the privilege: as unusable as a busy one.
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied => Bind::Busy,
        _ => Bind::Failed(e),
    };
    let v4 = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        .map_err(failed)?;
    let port = v4.local_addr().map_err(Bind::Failed)?.port();
    let mut sockets = vec![v4];
    if both {
        match TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)) {
            Ok(v6) => sockets.push(v6),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(Bind::Busy),
            // No IPv6 loopback on this machine: `localhost` can only mean 127.0.0.1 here.
            Err(e) => {
                log::debug!(target: "tokengate", "browser login: no [::1] listener ({e})");
            }
        }
    }
    Ok(Bound { port, sockets })
}

/// What the listener's handler needs: the path it serves, the login's state, and where it
/// sends the first valid callback.
pub(super) struct Callbacks {
    pub(super) path: String,
    pub(super) pkce: Arc<Pkce>,
    /// Set by the first valid callback: later ones do not count.
    pub(super) answered: AtomicBool,
    /// To the wait.
    pub(super) events: Sender<Event>,
}

impl Bound {
    /// Serves the callback on every socket, until the returned listeners are dropped.
    ///
    /// # Errors
    /// [`BrowserError::Listen`] when a thread cannot be started.
    pub(super) fn serve(self, callbacks: Arc<Callbacks>) -> Result<Vec<Listener>, BrowserError> {
        let mut listeners = Vec::new();
        for socket in self.sockets {
            let c = callbacks.clone();
            let handler = Arc::new(move |req: &Request, _: &Stop| handle(&c, req));
            let listener = Listener::start("tokengate-login", socket, handler, LIMITS)
                .map_err(|e| BrowserError::Listen(e.to_string()))?;
            listeners.push(listener);
        }
        Ok(listeners)
    }
}

/// One request to the listener.
fn handle(c: &Callbacks, req: &Request) -> Reply {
    if req.path != c.path {
        return page(404, NOT_FOUND);
    }
    // Only a GET delivers: a HEAD (a link checker's, a prefetcher's) must not use up the code.
    if req.method != "GET" {
        return page(405, NOT_ALLOWED).with_header("allow", "GET".to_owned());
    }
    // `from_query` never reads a bare code: a code here came with a `state`.
    let (event, answer_page) = match from_query(&req.query).checked(&c.pkce) {
        Ok(code) => (Event::Code(code), SUCCESS),
        Err(e @ BrowserError::Refused { .. }) => (Event::Refused(e), REFUSED),
        Err(e) => {
            if matches!(e, BrowserError::StateMismatch) {
                log::debug!(target: "tokengate", "browser login: refused a callback whose state is not this login's");
            }
            return page(400, WRONG_LOGIN);
        }
    };
    if c.answered.swap(true, Ordering::SeqCst) {
        return page(200, ALREADY);
    }
    log::debug!(target: "tokengate", "browser login: the browser came back to the listener");
    // Sent once the page is written: the wait stops the listener when it has the event, and
    // must not cut the browser's answer short.
    let events = c.events.clone();
    page(200, answer_page).then(move || {
        let _ = events.send(event);
    })
}

/// A static page (nothing from the request is ever echoed), never cached, sending no
/// referrer (the page's URL holds the code) and loading nothing.
fn page(status: u16, body: &str) -> Reply {
    Reply::Respond {
        status,
        headers: vec![
            ("content-type", "text/html; charset=utf-8".to_owned()),
            ("cache-control", "no-store".to_owned()),
            ("referrer-policy", "no-referrer".to_owned()),
            (
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'".to_owned(),
            ),
            ("x-content-type-options", "nosniff".to_owned()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

macro_rules! html {
    ($title:literal, $text:literal) => {
        concat!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width\">",
            "<title>", $title, "</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em}</style>",
            "</head><body><h1>", $title, "</h1><p>", $text, "</p></body></html>\n"
        )
    };
}

/// The page for the first valid callback.
const SUCCESS: &str = html!(
    "Login received",
    "The application has received your login. You can close this tab and return to it."
);
const REFUSED: &str = html!(
    "Login not completed",
    "The authorization server did not grant access. You can close this tab; the application says why."
);
const ALREADY: &str = html!(
    "Login already received",
    "This login has already finished. You can close this tab."
);
const WRONG_LOGIN: &str = html!(
    "Not this login",
    "This page does not belong to the login in progress. Start the login again from the application."
);
const NOT_FOUND: &str = html!("Not found", "Nothing is served here.");
const NOT_ALLOWED: &str = html!(
    "Method not allowed",
    "The login's address is only opened (GET) by the browser."
);
