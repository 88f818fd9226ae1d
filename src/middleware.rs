//! [`TokenMiddleware`]: the client's tokens and refresh gate on an existing `ureq::Agent`.

use std::fmt;

use ureq::http::{HeaderMap, Request, Response, StatusCode};
use ureq::middleware::{Middleware, MiddlewareNext};
use ureq::{Body, SendBody};

use crate::client::AuthClient;
use crate::credential::{sees_token, Verdict, Via};
use crate::event::RefreshReason;
use crate::hooks::Tally;

/// A [`ureq` middleware](ureq::middleware::Middleware) that puts an [`AuthClient`]'s token on
/// requests an existing `ureq::Agent` makes to the client's API. Made by
/// [`AuthClient::middleware`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let client = tokengate::AuthClient::builder("https://api.example.com/v1/").build()?;
/// let agent: ureq::Agent = ureq::Agent::config_builder()
///     .middleware(client.middleware()) // attaches the token, refreshes through the same gate
///     .build()
///     .into();
/// let resp = agent.get("https://api.example.com/v1/me").call()?;
/// # let _ = resp; Ok(()) }
/// ```
///
/// # What it does
/// - On a request to the client's base URL's origin (scheme, host and port), it replaces any
///   `Authorization` header with the current token, getting it exactly as the client's own
///   requests do: refreshed ahead of expiry in the background (never once per request),
///   refreshed first when expired (through the gate, shared with every thread and with the
///   client's own requests), adopted from a shared store.
/// - Requests to other origins pass through untouched: they never see the token.
/// - A 401 that rejects the token (a response whose challenge is not `insufficient_scope` or
///   `invalid_request`, or `ureq::Error::StatusCode(401)` when the agent turns statuses into
///   errors: it has no challenge to read) makes it refresh through the gate before
///   returning, so your own retry of the request gets the new token. Every answer is
///   returned unchanged, and read and counted as the client's own requests read and count
///   theirs (see [`Stats`](crate::Stats)).
/// - Without usable tokens (none, or the session ended) the request is not sent: the error
///   is `ureq::Error::Other` holding the [`Error`](crate::Error).
///
/// # What it cannot do
/// ureq gives a middleware one call downstream and a body that cannot be sent twice, so it
/// cannot replay a request after a 401: retry it yourself (or use the client's own
/// requests, which do). Redirects are followed by the agent, by its rules: ureq drops the
/// `Authorization` header on every redirect by default.
#[derive(Clone)]
pub struct TokenMiddleware {
    client: AuthClient,
}

impl AuthClient {
    /// A middleware for an existing `ureq::Agent`, sharing this client's tokens, refresh gate,
    /// store and counters (see [`TokenMiddleware`]). It holds a handle of the client.
    pub fn middleware(&self) -> TokenMiddleware {
        TokenMiddleware {
            client: self.clone(),
        }
    }
}

impl Middleware for TokenMiddleware {
    fn handle(
        &self,
        mut request: Request<SendBody>,
        next: MiddlewareNext,
    ) -> Result<Response<Body>, ureq::Error> {
        let session = self.client.session();
        let sees = sees_token(self.client.config(), request.uri());
        let presented = session
            .authorize(sees, request.headers_mut())
            .map_err(|e| ureq::Error::Other(Box::new(e)))?;
        let Some(presented) = presented else {
            return next.handle(request);
        };
        let uri = request.uri().clone();
        session.hooks().tally(Tally::Request);
        let result = next.handle(request);
        let verdict = match &result {
            Ok(resp) => session.judge(
                presented,
                Via::Middleware,
                &uri,
                resp.status(),
                resp.headers(),
            ),
            // The agent turns statuses into errors: there is no challenge to read.
            Err(ureq::Error::StatusCode(401)) => session.judge(
                presented,
                Via::Middleware,
                &uri,
                StatusCode::UNAUTHORIZED,
                &HeaderMap::new(),
            ),
            _ => Verdict::Pass,
        };
        if let Verdict::Refresh(generation) = verdict {
            // Through the gate: one refresh for all threads that saw this generation
            // rejected. Its error, if any, reaches the caller on its retry.
            let _ = session.renew(generation, RefreshReason::Unauthorized);
        }
        result
    }
}

impl fmt::Debug for TokenMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenMiddleware")
            .field("base_url", &self.client.config().base().as_str())
            .finish()
    }
}
