//! What tokengate writes to the [`log`] facade (target `tokengate`), and the helpers that keep
//! secrets out of it: only origins (scheme, host, port) of URLs, never a path, query, token,
//! secret or code. See "Logging and secrets" in the crate docs for the levels.

use std::fmt;

use ureq::http::Uri;

/// The target of every record.
pub(crate) const TARGET: &str = "tokengate";

/// `scheme://host:port` of a URI: what a log record may say about where a request went.
pub(crate) struct OriginOf<'a>(pub(crate) &'a Uri);

impl fmt::Display for OriginOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let uri = self.0;
        let scheme = uri.scheme_str().unwrap_or("?");
        let host = uri.host().unwrap_or("?");
        match uri.port_u16() {
            Some(port) => write!(f, "{scheme}://{host}:{port}"),
            None => write!(f, "{scheme}://{host}"),
        }
    }
}

/// The current thread, by name if it has one.
pub(crate) struct ThisThread;

impl fmt::Display for ThisThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = std::thread::current();
        match t.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{:?}", t.id()),
        }
    }
}

/// An error and its causes, as one line (`a: b: c`). Errors of tokengate never hold secrets.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
