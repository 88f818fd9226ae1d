//! [`TokenMiddleware`]: the client's tokens and refresh gate on an existing `ureq::Agent`.

use std::fmt;

use ureq::http::{self, Request, Response};
use ureq::middleware::{Middleware, MiddlewareNext};
use ureq::{Body, SendBody};

use crate::challenge::{classify, Rejection};
use crate::client::AuthClient;
use crate::event::{Event, RefreshReason};
use crate::hooks::Tally;
use crate::logging::OriginOf;

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
/// - A 401 to the token (a response, or `ureq::Error::StatusCode(401)` when the agent turns
///   statuses into errors) makes it refresh through the gate before returning, so your own
///   retry of the request gets the new token. The 401 is returned unchanged.
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
        if !self.client.config().base().origin().matches(request.uri()) {
            return next.handle(request);
        }
        let (current, generation) = session
            .usable_tokens()
            .map_err(|e| ureq::Error::Other(Box::new(e)))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, current.header.clone());
        let uri = request.uri().clone();
        session.hooks().tally(Tally::Request);
        let result = next.handle(request);
        let rejected = match &result {
            Ok(resp) => classify(resp.status(), resp.headers()) == Rejection::Token,
            // The agent turns statuses into errors: there is no challenge to read.
            Err(ureq::Error::StatusCode(401)) => true,
            _ => false,
        };
        if rejected {
            let origin = OriginOf(&uri);
            let refreshing = session.has_refresher();
            let then = if refreshing {
                "refreshing for the caller's retry"
            } else {
                "final (no refresher)"
            };
            session.hooks().report(
                Event::Unauthorized { generation },
                format_args!("401 from {origin} for token generation {generation} (through the middleware): {then}"),
            );
            if refreshing {
                // Through the gate: one refresh for all threads that saw this generation
                // rejected. Its error, if any, reaches the caller on its retry.
                let _ = session.renew(generation, RefreshReason::Unauthorized);
            }
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
