//! Faults a test scripts for the next calls of an endpoint, and how each is played.

use std::collections::VecDeque;
use std::time::Duration;

use crate::http_server::{Reply, Stop};

/// What the server does instead of (or around) its normal answer to one call.
///
/// Queue faults with [`TestServer::fault_next_token_calls`](super::TestServer::fault_next_token_calls)
/// (every call of the token endpoint: refreshes, device polls, code exchanges, client
/// credentials), [`fault_next_revocations`](super::TestServer::fault_next_revocations) or
/// [`fault_next_api_calls`](super::TestServer::fault_next_api_calls). Each call takes the
/// next fault of its endpoint's queue; with none queued it is answered normally.
///
/// Unless its doc says otherwise a fault is played *before* the call is looked at: the
/// grant is not applied, the refresh token not rotated, nothing is issued.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 503 `temporarily_unavailable`, with `Retry-After: seconds` when given.
    Unavailable {
        /// The `Retry-After` header's seconds, if any.
        retry_after: Option<u64>,
    },
    /// 429, with `Retry-After: seconds` when given.
    TooManyRequests {
        /// The `Retry-After` header's seconds, if any.
        retry_after: Option<u64>,
    },
    /// 500 `server_error`.
    ServerError,
    /// 400 `invalid_grant`: the server says the grant is dead, though it is not.
    InvalidGrant,
    /// 400 `slow_down` (RFC 8628 §3.5).
    SlowDown,
    /// 400 `authorization_pending` (RFC 8628 §3.5).
    AuthorizationPending,
    /// 400 `expired_token` (RFC 8628 §3.5).
    ExpiredToken,
    /// HTTP 200 carrying an OAuth error, `{"error": code}`, as GitHub answers its token
    /// endpoint's errors.
    ErrorAt200(String),
    /// 200 with a body that is not the JSON it announces.
    MalformedBody,
    /// Waits this long, then handles the call normally.
    DelayBefore(Duration),
    /// Handles the call (the grant is applied: a refresh token rotates) and answers this
    /// long later: a client that gave up meanwhile never hears of the rotation.
    DelayAfter(Duration),
    /// Closes the connection without answering.
    Drop,
    /// Handles the call (the grant is applied: a refresh token rotates), then closes the
    /// connection without answering: a rotation the client never hears about.
    DropAfterGrant,
}

impl Fault {
    /// The answer played before the call is handled, if this fault replaces it. Sleeps for
    /// [`DelayBefore`](Fault::DelayBefore) (cut short, with a drop, if the server stops).
    pub(crate) fn before(&self, stop: &Stop) -> Option<Reply> {
        let error =
            |status: u16, code: &str| Reply::json(status, &serde_json::json!({ "error": code }));
        let with_retry_after = |reply: Reply, after: &Option<u64>| match after {
            Some(seconds) => reply.with_header("retry-after", seconds.to_string()),
            None => reply,
        };
        Some(match self {
            Fault::Unavailable { retry_after } => {
                with_retry_after(error(503, "temporarily_unavailable"), retry_after)
            }
            Fault::TooManyRequests { retry_after } => {
                with_retry_after(error(429, "too_many_requests"), retry_after)
            }
            Fault::ServerError => error(500, "server_error"),
            Fault::InvalidGrant => error(400, "invalid_grant"),
            Fault::SlowDown => error(400, "slow_down"),
            Fault::AuthorizationPending => error(400, "authorization_pending"),
            Fault::ExpiredToken => error(400, "expired_token"),
            Fault::ErrorAt200(code) => error(200, code),
            Fault::MalformedBody => Reply::Respond {
                status: 200,
                headers: vec![("content-type", "application/json".to_owned())],
                body: b"{\"access_token\": \"at-".to_vec(),
            },
            Fault::Drop => Reply::Drop,
            Fault::DelayBefore(d) => return (!stop.sleep(*d)).then_some(Reply::Drop),
            Fault::DelayAfter(_) | Fault::DropAfterGrant => return None,
        })
    }
}

/// What becomes of the normal answer once the call was handled, under `fault` (if any).
pub(crate) fn after(fault: Option<&Fault>, reply: Reply, stop: &Stop) -> Reply {
    match fault {
        Some(Fault::DelayAfter(d)) if !stop.sleep(*d) => Reply::Drop,
        Some(Fault::DropAfterGrant) => Reply::Drop,
        _ => reply,
    }
}

/// The queued faults of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Queue(VecDeque<Fault>);

impl Queue {
    pub fn push(&mut self, n: usize, fault: &Fault) {
        self.0.extend(std::iter::repeat_n(fault, n).cloned());
    }

    pub fn next(&mut self) -> Option<Fault> {
        self.0.pop_front()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}
