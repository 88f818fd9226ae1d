//! One request's life, top to bottom: attach the token → send → read the answer → refresh
//! and replay, retry, follow a redirect, or finish. Each attempt re-reads the token (it may
//! have been refreshed meanwhile) and attaches it only if the target is the base URL's
//! origin. At most `2 + max_retries + max_redirects` requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ureq::http::{self, request::Parts, Method, Request, Response};
use ureq::Body;

use crate::config::Config;
use crate::credential::{self, Presented, Verdict, Via};
use crate::error::Error;
use crate::event::RefreshReason;
use crate::hooks::Tally;
use crate::logging::{Chain, OriginOf, TARGET};
use crate::redirect::{self, Hop};
use crate::retry;
use crate::session::Session;
use crate::transport;
use crate::url::Origin;

/// The body of a request. Bytes are borrowed for each attempt, so a retried or replayed
/// request is re-sent byte for byte; a reader can be sent only once.
pub(crate) enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    Reader(Option<&'a mut dyn std::io::Read>),
}

/// Per-request options from the [`RequestBuilder`](crate::RequestBuilder).
#[derive(Clone, Copy, Default)]
pub(crate) struct RequestOptions {
    /// Retry this POST/PATCH like an idempotent request.
    pub(crate) retry_non_idempotent: bool,
    /// Send no token, make no refresh, treat a 401 as a plain status.
    pub(crate) without_auth: bool,
    /// Overrides the client's `http_status_as_error` for this request.
    pub(crate) status_as_error: Option<bool>,
}

/// What an attempt leads to.
enum Next {
    /// The final response.
    Done(Response<Body>),
    /// The API rejected the token of this generation: refresh it (through the gate), replay.
    Refresh(u64),
    /// Wait (the retry policy's delay, or the server's `Retry-After`) and send again.
    Retry {
        retry_after: Option<Duration>,
        cause: Cause,
    },
    /// Follow a redirect; `other_origin`: it changes origin.
    Redirect { hop: Hop, other_origin: bool },
    /// Stop with this error.
    Fail(Error),
}

/// Why an attempt is retried, for the log.
enum Cause {
    Error(ureq::Error),
    Status(u16),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Error(e) => write!(f, ": {}", Chain(e)),
            Cause::Status(status) => write!(f, " status {status}"),
        }
    }
}

/// One request in progress.
struct Run<'a, 'b> {
    config: &'a Config,
    session: &'a Arc<Session>,
    parts: Parts,
    /// `parts.uri` has the base URL's origin (the only one that sees the token).
    base_origin: bool,
    payload: Payload<'b>,
    opts: RequestOptions,
    replayable: bool,
    retries: u32,
    redirects: u32,
    /// A refresh was made for this request already: a second 401 is final.
    refreshed: bool,
}

/// Runs one request to completion. `base_origin` says whether `parts.uri` has the base URL's
/// origin, as [`BaseUrl::resolve`](crate::url::BaseUrl::resolve) found.
pub(crate) fn execute(
    config: &Config,
    session: &Arc<Session>,
    parts: Parts,
    base_origin: bool,
    payload: Payload<'_>,
    opts: RequestOptions,
) -> Result<Response<Body>, Error> {
    let mut run = Run {
        config,
        session,
        parts,
        base_origin,
        replayable: !matches!(payload, Payload::Reader(_)),
        payload,
        opts,
        retries: 0,
        redirects: 0,
        refreshed: false,
    };
    loop {
        // A copy of `parts` (which stay as they are, for a retry or a redirect). The token
        // goes to the base URL's origin only; another origin's 401 is just a status, and so
        // is one to a request sent `without_auth`.
        let mut parts = run.parts.clone();
        let presented =
            session.authorize(run.base_origin && !opts.without_auth, &mut parts.headers)?;
        let next = match run.send(parts) {
            Ok(resp) => run.answered(resp, presented),
            Err(e) => run.failed(e),
        };
        match next {
            Next::Done(resp) => return run.finish(resp),
            Next::Fail(e) => return Err(e),
            Next::Refresh(generation) => run.refresh(generation)?,
            Next::Retry { retry_after, cause } => run.back_off(retry_after, &cause),
            Next::Redirect { hop, other_origin } => run.follow(hop, other_origin),
        }
    }
}

impl Run<'_, '_> {
    /// Sends one attempt: `parts`, as authorized.
    fn send(&mut self, parts: Parts) -> Result<Response<Body>, ureq::Error> {
        self.session.hooks().tally(Tally::Request);
        let (api, configured) = self.config.api();
        match &mut self.payload {
            Payload::None => transport::run(api, configured, Request::from_parts(parts, ())),
            Payload::Bytes(b) => transport::run(api, configured, Request::from_parts(parts, *b)),
            Payload::Reader(reader) => {
                let reader = reader.take().ok_or_else(|| {
                    ureq::Error::Io(std::io::Error::other(
                        "a streamed body can be sent only once",
                    ))
                })?;
                let body = ureq::SendBody::from_reader(reader);
                transport::run(api, configured, Request::from_parts(parts, body))
            }
        }
    }

    /// Whether this request may be sent again after it reached the server.
    fn may_retry_sent(&self) -> bool {
        retry::is_idempotent(&self.parts.method)
            || self.opts.retry_non_idempotent
            || self.config.retry().allows_non_idempotent()
    }

    fn can_retry(&self) -> bool {
        self.retries < self.config.retry().retries()
    }

    /// An attempt that got no response: retried if nothing was sent (any method), or if the
    /// failure is transient and the request may be sent again.
    fn failed(&self, e: ureq::Error) -> Next {
        let retryable =
            retry::nothing_sent(&e) || (self.may_retry_sent() && retry::transient_after_send(&e));
        let transport = |e| {
            let url = self.parts.uri.to_string();
            Error::Http(transport::failure(self.config.api().0, &url, e))
        };
        if !(retryable && self.can_retry()) {
            return Next::Fail(transport(e));
        }
        if !self.replayable {
            return Next::Fail(Error::NotReplayable(Box::new(transport(e))));
        }
        Next::Retry {
            retry_after: None,
            cause: Cause::Error(e),
        }
    }

    /// What a response leads to: a rejected token, a retryable status, a redirect, or the
    /// end. `presented`: the token the attempt carried, if it carried one.
    fn answered(&self, mut resp: Response<Body>, presented: Option<Presented>) -> Next {
        if let Some(presented) = presented {
            if let Some(next) = self.rejected(&mut resp, presented) {
                return next;
            }
        }
        let status = resp.status();
        if retry::retryable_status(status) && self.may_retry_sent() && self.can_retry() {
            if !self.replayable {
                let code = status.as_u16();
                return Next::Fail(Error::NotReplayable(Box::new(Error::StatusCode(code))));
            }
            let retry_after = retry::retry_after(resp.headers(), self.config.clock().now());
            transport::drain(&mut resp);
            return Next::Retry {
                retry_after,
                cause: Cause::Status(status.as_u16()),
            };
        }
        if redirect::is_redirect(status) && self.config.max_redirects() > 0 {
            return self.redirected(resp);
        }
        Next::Done(resp)
    }

    /// What the answer to the client's token says about it ([`Session::judge`]; `None`: go
    /// on with the answer): a rejected token is refreshed once, an `insufficient_scope` is
    /// returned as such.
    fn rejected(&self, resp: &mut Response<Body>, presented: Presented) -> Option<Next> {
        let via = Via::Client {
            refreshed: self.refreshed,
        };
        let verdict = self.session.judge(
            presented,
            via,
            &self.parts.uri,
            resp.status(),
            resp.headers(),
        );
        let next = match verdict {
            Verdict::Pass => return None,
            // A new token would have the same scopes: no refresh.
            Verdict::InsufficientScope { status, scope } => {
                Next::Fail(Error::InsufficientScope { status, scope })
            }
            Verdict::Refresh(generation) => Next::Refresh(generation),
            Verdict::Final => Next::Fail(Error::Unauthorized),
        };
        transport::drain(resp);
        Some(next)
    }

    /// Refreshes generation `generation` through the gate (even for a body that cannot be
    /// replayed, so the next call works), then replays.
    fn refresh(&mut self, generation: u64) -> Result<(), Error> {
        self.session
            .renew(generation, RefreshReason::Unauthorized)?;
        if !self.replayable {
            return Err(Error::NotReplayable(Box::new(Error::Unauthorized)));
        }
        self.refreshed = true;
        Ok(())
    }

    fn back_off(&mut self, retry_after: Option<Duration>, cause: &Cause) {
        let origin = OriginOf(&self.parts.uri);
        let (retry, of) = (self.retries + 1, self.config.retry().retries());
        self.config.backoff().wait(
            self.session.hooks(),
            self.retries,
            retry_after,
            |f, delay| {
                write!(
                    f,
                    "retry {retry} of {of} to {origin} in {delay:?} after{cause}"
                )
            },
            &|| false,
        );
        self.retries += 1;
    }

    /// A redirect answered: where to (bounded by `max_redirects`), if it can be followed.
    fn redirected(&self, mut resp: Response<Body>) -> Next {
        let max = self.config.max_redirects();
        if self.redirects >= max {
            return Next::Fail(Error::TooManyRedirects(max));
        }
        let status = resp.status();
        let hop =
            match redirect::next_hop(status, &self.parts.method, &self.parts.uri, resp.headers()) {
                Ok(hop) => hop,
                Err(e) => return Next::Fail(e),
            };
        if !hop.to_get && !self.replayable {
            let code = status.as_u16();
            return Next::Fail(Error::NotReplayable(Box::new(Error::StatusCode(code))));
        }
        transport::drain(&mut resp);
        let other_origin = Origin::of(&hop.uri) != Origin::of(&self.parts.uri);
        log::debug!(target: TARGET, "redirect {} from {} to {}{}", status.as_u16(),
            OriginOf(&self.parts.uri), OriginOf(&hop.uri),
            if other_origin { " (another origin: credentials dropped)" } else { "" });
        Next::Redirect { hop, other_origin }
    }

    /// Moves the request to the next hop of a redirect. Credentials belong to the origin they
    /// were set for: any change of origin (not only leaving the base URL's) drops them. The
    /// token is attached again if and only if the next hop is the base URL's origin.
    fn follow(&mut self, hop: Hop, other_origin: bool) {
        if hop.to_get {
            self.parts.method = Method::GET;
            self.payload = Payload::None;
            self.parts.headers.remove(http::header::CONTENT_TYPE);
            self.parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        if other_origin {
            redirect::strip_sensitive(&mut self.parts.headers, self.config.sensitive_headers());
        }
        self.base_origin = credential::sees_token(self.config, &hop.uri);
        self.parts.uri = hop.uri;
        self.redirects += 1;
    }

    /// The final response, or its status as an error (per the request's or the client's
    /// `http_status_as_error`).
    fn finish(&self, resp: Response<Body>) -> Result<Response<Body>, Error> {
        let status = resp.status();
        let as_error = self
            .opts
            .status_as_error
            .unwrap_or(self.config.status_as_error());
        if as_error && (status.is_client_error() || status.is_server_error()) {
            return Err(if status == http::StatusCode::UNAUTHORIZED {
                Error::Unauthorized
            } else {
                Error::StatusCode(status.as_u16())
            });
        }
        Ok(resp)
    }
}
