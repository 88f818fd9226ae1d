//! Token revocation (RFC 7009), which [`AuthClient::logout`](crate::AuthClient::logout) uses
//! to end the session at the server.

use std::time::Duration;

use ureq::Agent;

use crate::refresh::{json_object, redact_code, sanitize_code, Client};
use crate::transport::PostError;

/// Whole-call timeout of a revocation request: logout is best effort and should not hang.
/// An agent with a shorter whole-call timeout keeps its own.
pub const REVOCATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why revoking a token at the server failed. Reported inside
/// [`Error::RevocationFailed`](crate::Error::RevocationFailed), after the local logout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The revocation endpoint could not be reached or did not answer in time.
    #[error("could not reach the revocation endpoint")]
    Transport(#[source] Box<ureq::Error>),

    /// The revocation endpoint answered an unexpected status (e.g. 503: try again later,
    /// RFC 7009 §2.2.1).
    #[error("the revocation endpoint answered {0}")]
    Status(u16),

    /// The revocation endpoint answered an OAuth2 error (`unsupported_token_type`,
    /// `invalid_client`, …). Only characters RFC 6749 allows are kept; an echo of a secret is
    /// shown as `[redacted]`.
    #[error("the revocation endpoint answered {status} with error {error:?}")]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code.
        error: String,
    },

    /// An error from a custom [`Refresh::revoke`](crate::Refresh::revoke) implementation.
    #[error("custom revocation failed")]
    Custom(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Revokes `token` at `url` (RFC 7009 §2.1) with the client's authentication, through the
/// same form POST as the grants, within [`REVOCATION_TIMEOUT`] (or the agent's shorter
/// whole-call timeout). `hint` is the `token_type_hint` (`refresh_token` or `access_token`).
pub(crate) fn revoke(
    agent: &Agent,
    url: &str,
    client: &Client,
    token: &str,
    hint: &str,
) -> Result<(), RevocationError> {
    let form = vec![("token", token), ("token_type_hint", hint)];
    let timeout = match agent.config().timeouts().global {
        Some(t) if t < REVOCATION_TIMEOUT => t,
        _ => REVOCATION_TIMEOUT,
    };
    let (status, body) = match client.post_form(agent, url, form, Some(timeout)) {
        Ok(resp) => (resp.status, resp.body),
        // The body is read (bounded) so the connection can be reused, and for the error code;
        // one that cannot be read leaves the status to decide.
        Err(PostError::Body { status, .. }) => (status, Vec::new()),
        Err(PostError::Send(e)) => return Err(RevocationError::Transport(Box::new(e))),
        Err(PostError::Credentials(e)) => {
            return Err(RevocationError::Transport(Box::new(ureq::Error::Http(e))))
        }
    };
    match status {
        // §2.2: 200 also for a token that was already invalid.
        200..=299 => Ok(()),
        400 | 401 => {
            let code = json_object(&body)
                .ok()
                .and_then(|m| m.get("error").and_then(|e| e.as_str()).map(sanitize_code));
            match code {
                Some(code) => Err(RevocationError::OAuth {
                    status,
                    error: redact_code(code, &[token, client.secret_str()]),
                }),
                None => Err(RevocationError::Status(status)),
            }
        }
        _ => Err(RevocationError::Status(status)),
    }
}
