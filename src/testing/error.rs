//! The kit's error.

/// What a [`TestServer`](super::TestServer) method refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    /// No pending device login shows this user code (unknown, or already answered).
    #[error("no pending device login has this user code")]
    UnknownUserCode,
    /// The authorization request cannot be redirected: its client is unknown or its
    /// redirect URI is missing or not allowed, or the URL is not this server's authorization
    /// endpoint.
    #[error("bad authorization request: {0}")]
    BadAuthorizationRequest(&'static str),
    /// The refresh was refused, as the token endpoint would have answered.
    #[error("refused: {error} (HTTP {status})")]
    Refused {
        /// The HTTP status the endpoint would have answered.
        status: u16,
        /// The OAuth `error` code.
        error: &'static str,
    },
    /// Following the redirect to the client failed (the message of ureq's error).
    #[error("the redirect URI did not answer: {0}")]
    Redirect(String),
}
