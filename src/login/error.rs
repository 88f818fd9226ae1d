//! The errors of the login flows: [`DiscoveryError`], [`DeviceError`] and
//! [`RevocationError`], reported inside [`Error`](crate::Error). None of them ever quotes a
//! token, device code or client secret.

use crate::transport_error::TransportError;

/// Why discovery failed. Reported as [`Error::Discovery`](crate::Error::Discovery). The
/// document's body is never quoted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer given is not an absolute http(s) URL without query, fragment and credentials.
    #[error("invalid issuer URL: {0}")]
    InvalidIssuer(&'static str),

    /// The issuer, or an endpoint the document names (the field is given), is plain `http://`
    /// to a host other than loopback, without [`Discovery::allow_insecure_http`](crate::login::Discovery::allow_insecure_http).
    #[error("refusing plain http to a non-loopback host for {0}")]
    InsecureEndpoint(&'static str),

    /// The document could not be fetched (connection refused, DNS, TLS, timeout, …).
    #[error("could not fetch the metadata document: {0}")]
    Transport(TransportError),

    /// Neither well-known URL answered 2xx: the status of the last answer.
    #[error("the metadata document was not found (http status {0})")]
    Status(u16),

    /// The document is larger than 64 KiB.
    #[error("the metadata document is over 64 KiB")]
    TooLarge,

    /// The document is not a JSON object.
    #[error("the metadata document is not a JSON object")]
    NotJson,

    /// The document's `issuer` is missing or is not exactly the issuer asked for
    /// (RFC 8414 §3.3: it could be another server's document, a mix-up attack; the one
    /// exception, Microsoft Entra's multi-tenant issuers, is described on
    /// [`Discovery`](crate::login::Discovery)).
    ///
    /// Both issuers are quoted: `the metadata document's issuer "https://x" is not the issuer
    /// asked for ("https://y")`, or `the metadata document has no issuer (asked for
    /// "https://y")`.
    #[error("{}", issuer_mismatch(.found.as_deref(), .expected))]
    IssuerMismatch {
        /// The document's `issuer` (control characters dropped, cut at 256 characters), if any.
        found: Option<String>,
        /// The issuer asked for (control characters dropped, cut at 256 characters).
        expected: String,
    },

    /// The document has no `token_endpoint`.
    #[error("the metadata document has no token_endpoint")]
    MissingTokenEndpoint,

    /// A field naming an endpoint is not a string holding an absolute http(s) URL without
    /// credentials (the field is given).
    #[error("the metadata document's {0} is not a usable URL")]
    InvalidEndpoint(&'static str),
}

/// `: description`, or nothing: for the `Display` of errors that keep a server's
/// `error_description`.
pub(crate) fn described(description: &Option<String>) -> String {
    description
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// [`DiscoveryError::IssuerMismatch`]'s message.
fn issuer_mismatch(found: Option<&str>, expected: &str) -> String {
    match found {
        Some(found) => format!(
            "the metadata document's issuer {found:?} is not the issuer asked for ({expected:?})"
        ),
        None => format!("the metadata document has no issuer (asked for {expected:?})"),
    }
}

impl DiscoveryError {
    /// True when fetching again later may succeed: a transport error of the connection (see
    /// [`TransportError`]), 5xx or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            DiscoveryError::Transport(t) => t.is_transient(),
            DiscoveryError::Status(s) => *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

/// Why a device login failed. Reported as [`Error::Device`](crate::Error::Device). Never quotes
/// a device code, token or client secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The user denied the request (`access_denied`; Microsoft Entra's `authorization_declined`).
    #[error("the user denied the login")]
    AccessDenied,

    /// The server said the device code expired (`expired_token`) before the user approved.
    #[error(
        "the device code expired before the login was approved (the server said expired_token)"
    )]
    ExpiredToken,

    /// The device code's `expires_in` ran out (on the flow's clock) before the user approved.
    #[error("the device code expired before the login was approved")]
    CodeExpired,

    /// The wait was ended by [`DeviceCancel::cancel`](crate::login::DeviceCancel::cancel)
    /// (a Ctrl-C, say). Not transient: start again to log in.
    #[error("the login was cancelled")]
    Cancelled,

    /// The server answered another OAuth2 error (`invalid_client`, `invalid_scope`,
    /// `unauthorized_client`, `invalid_grant`, GitHub's `incorrect_device_code`, …), with any
    /// status but 5xx and 429 (GitHub answers with 200).
    #[error("the authorization server answered {status} with error {error}{}", described(.description))]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code (only characters RFC 6749 allows are kept, at most 64), or
        /// `[redacted]` if it echoed a secret.
        error: String,
        /// The server's `error_description`, made printable (control characters dropped, at
        /// most 400 characters), or `[redacted]` if it echoed a secret.
        description: Option<String>,
    },

    /// The server answered an unexpected status (for the token endpoint: after the retries,
    /// for 5xx and 429).
    #[error("the authorization server answered {0}")]
    Status(u16),

    /// The server could not be reached or its answer not read (for the token endpoint: after
    /// the retries).
    #[error("could not reach the authorization server: {0}")]
    Transport(TransportError),

    /// The server answered 2xx with something unusable: not JSON, a missing or malformed
    /// field, a body over 64 KiB. The body is never quoted.
    #[error("unusable answer: {0}")]
    InvalidResponse(&'static str),
}

impl DeviceError {
    /// True for [`DeviceError::ExpiredToken`] and [`DeviceError::CodeExpired`]: start again.
    pub fn is_expired(&self) -> bool {
        matches!(self, DeviceError::ExpiredToken | DeviceError::CodeExpired)
    }

    /// True when trying again later may succeed: a transport error of the connection, 5xx or
    /// 429.
    pub fn is_transient(&self) -> bool {
        match self {
            DeviceError::Transport(t) => t.is_transient(),
            DeviceError::Status(s) => *s == 429 || *s >= 500,
            _ => false,
        }
    }
}

/// Why revoking a token at the server failed. Reported inside
/// [`Error::RevocationFailed`](crate::Error::RevocationFailed), after the local logout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The revocation endpoint could not be reached or did not answer in time.
    #[error("could not reach the revocation endpoint: {0}")]
    Transport(TransportError),

    /// The revocation endpoint answered an unexpected status (e.g. 503: try again later,
    /// RFC 7009 §2.2.1).
    #[error("the revocation endpoint answered {0}")]
    Status(u16),

    /// The revocation endpoint answered an OAuth2 error (`unsupported_token_type`,
    /// `invalid_client`, …), with any status but 5xx and 429.
    #[error("the revocation endpoint answered {status} with error {error}{}", described(.description))]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code (only characters RFC 6749 allows are kept, at most 64), or
        /// `[redacted]` if it echoed a secret.
        error: String,
        /// The server's `error_description`, made printable (control characters dropped, at
        /// most 400 characters), or `[redacted]` if it echoed a secret.
        description: Option<String>,
    },

    /// An error from a custom [`Refresh::revoke`](crate::Refresh::revoke) implementation.
    #[error("custom revocation failed")]
    Custom(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a browser login failed. Reported as [`Error::Browser`](crate::Error::Browser). Never
/// quotes an authorization code, PKCE verifier, `state`, token or client secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    /// The authorization server sent the browser back with an error (RFC 6749 §4.1.2.1):
    /// `access_denied` when the user declined, or another code (`invalid_scope`,
    /// `unauthorized_client`, …). Only a callback carrying this login's `state` counts.
    #[error("the authorization server refused the login: {error}{}", described(.description))]
    Refused {
        /// The OAuth2 `error` code (only characters RFC 6749 allows are kept, at most 64).
        error: String,
        /// The server's `error_description`, made printable (control characters dropped, at
        /// most 400 characters).
        description: Option<String>,
    },

    /// No valid callback (nor paste) arrived within the flow's timeout.
    #[error("no answer from the browser within {} (was the tab closed? run the login again)", span(.0))]
    Timeout(std::time::Duration),

    /// Every port of [`BrowserFlow::ports`](crate::login::BrowserFlow::ports) is in use by
    /// another program (or may not be bound), so the registered redirect URI cannot be
    /// served: stop the other program, or register another port.
    #[error("cannot listen for the browser's redirect: port{} {} in use (or not permitted)", if .0.len() == 1 { "" } else { "s" }, ports(.0))]
    PortsBusy(Vec<u16>),

    /// No loopback socket could be bound, or its thread started (the OS's message).
    #[error("cannot listen for the browser's redirect on loopback: {0}")]
    Listen(String),

    /// The operating system's cryptographic random source failed (the PKCE verifier and the
    /// `state` come from it, with no fallback).
    #[error("the operating system's random source failed")]
    Randomness,

    /// What was passed to
    /// [`BrowserAuthorization::complete`](crate::login::BrowserAuthorization::complete) is
    /// not a redirect URL with a code, nor a code.
    #[error("not a redirect URL with a code, nor a code")]
    NotARedirect,

    /// A pasted redirect URL carries another login's `state` (an old tab, or someone else's
    /// link): refused.
    #[error("the redirect URL belongs to another login (its state differs)")]
    StateMismatch,

    /// The token endpoint refused the code exchange with an OAuth2 error (`invalid_grant`
    /// for a used or expired code or a wrong verifier, `invalid_client`, …), with any
    /// status but 5xx and 429.
    #[error("the token endpoint answered {status} with error {error}{}", described(.description))]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code, or `[redacted]` if it echoed a secret.
        error: String,
        /// The server's `error_description`, made printable, or `[redacted]` if it echoed
        /// a secret.
        description: Option<String>,
    },

    /// The token endpoint answered an unexpected status.
    #[error("the token endpoint answered {0}")]
    Status(u16),

    /// The token endpoint could not be reached, or its answer not read.
    #[error("could not reach the token endpoint: {0}")]
    Transport(TransportError),

    /// The token endpoint answered 2xx with something unusable (not JSON, no access token,
    /// over 64 KiB). The body is never quoted.
    #[error("unusable answer from the token endpoint: {0}")]
    InvalidResponse(&'static str),
}

/// `5 min`, `90 s`, `300 ms`.
fn span(d: &std::time::Duration) -> String {
    match (d.as_secs(), d.subsec_millis()) {
        (s, 0) if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        (0, ms) => format!("{ms} ms"),
        (s, _) => format!("{s} s"),
    }
}

/// `8400, 8401`.
fn ports(ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    list.join(", ")
}

impl BrowserError {
    /// True for [`BrowserError::Refused`] with `access_denied`: the user declined.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, BrowserError::Refused { error, .. } if error == "access_denied")
    }

    /// True when trying again later may succeed: the token endpoint unreachable, 5xx or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            BrowserError::Transport(t) => t.is_transient(),
            BrowserError::Status(s) => *s == 429 || *s >= 500,
            _ => false,
        }
    }
}
