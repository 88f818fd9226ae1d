//! [`TransportError`]: a request that got no usable answer, and the proxy it went through.

use std::fmt;

/// A request that got no usable answer: the connection failed, timed out or broke, TLS
/// failed, the answer could not be read. Wraps ureq's error and names the proxy the request
/// went through, if one did (an unreachable proxy fails every request with what looks like
/// the server's fault; see the README's "Proxies").
///
/// `Display` is ureq's message, then ` (through the proxy http://host:port)`; the proxy is
/// named without credentials. `source()` is the cause of the error ureq wraps (an I/O error's,
/// your own `Other` error's), whose message `Display` already holds.
#[derive(Debug)]
pub struct TransportError {
    /// Boxed: [`crate::Error`] stays small.
    error: Box<ureq::Error>,
    /// Scheme, host and port only.
    proxy: Option<Box<str>>,
}

impl TransportError {
    /// `error`, on a request that went through `proxy` (named without credentials), if any:
    /// see `transport::failure`.
    pub(crate) fn new(error: ureq::Error, proxy: Option<String>) -> Self {
        TransportError {
            error: Box::new(error),
            proxy: proxy.map(String::into_boxed_str),
        }
    }

    /// ureq's error.
    pub fn ureq_error(&self) -> &ureq::Error {
        &self.error
    }

    /// ureq's error, owned.
    pub fn into_ureq_error(self) -> ureq::Error {
        *self.error
    }

    /// The proxy the request went through (`http://host:port`, without credentials), if one did.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref()
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(proxy) = &self.proxy {
            write!(f, " (through the proxy {proxy})")?;
        }
        Ok(())
    }
}

impl TransportError {
    /// Whether trying again may succeed: false for what a retry would only repeat (an unusable
    /// URL or proxy, too many redirects, a body over its limit or not the JSON asked for, an
    /// error of your own in `Other`), true for the connection's faults (refused, reset,
    /// timed out, TLS), as before.
    pub(crate) fn is_transient(&self) -> bool {
        !matches!(
            &*self.error,
            ureq::Error::BadUri(_)
                | ureq::Error::RequireHttpsOnly(_)
                | ureq::Error::InvalidProxyUrl
                | ureq::Error::TooManyRedirects
                | ureq::Error::RedirectFailed
                | ureq::Error::Http(_)
                | ureq::Error::BodyExceedsLimit(_)
                | ureq::Error::LargeResponseHeader(..)
                | ureq::Error::Json(_)
                | ureq::Error::Other(_)
                | ureq::Error::TlsRequired
        )
    }
}

impl std::error::Error for TransportError {
    /// The cause of ureq's error (ureq's own type reports none): for `Io`, `Json` and `Other`,
    /// the wrapped error's cause (its message is already in `Display`).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.error {
            ureq::Error::Io(e) => e.source(),
            ureq::Error::Json(e) => e.source(),
            ureq::Error::Other(e) => e.source(),
            _ => None,
        }
    }
}
