//! The two ureq agents and the small amount of HTTP plumbing tokengate needs around them.

use std::time::Duration;

use ureq::config::ConfigBuilder;
use ureq::http::{self, Request, Response};
use ureq::typestate::HttpCrateScope;
use ureq::{Agent, Body};

use crate::config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TOKEN_TIMEOUT};
use crate::error::RefreshError;
use crate::proxy;
use crate::transport_error::TransportError;

/// Largest token-endpoint response body read, in bytes.
pub(crate) const TOKEN_RESPONSE_LIMIT: u64 = 64 * 1024;
/// Largest 401 body drained before a retry (so the connection can be reused).
pub(crate) const DRAIN_LIMIT: u64 = 64 * 1024;

/// How an agent's `timeout` is applied.
#[derive(Clone, Copy)]
pub(crate) enum TimeoutKind {
    /// One budget for the whole call (token endpoint: refreshes are rare and waiters depend on
    /// a firm bound). ureq then resolves the host on a helper thread, once per call.
    WholeCall,
    /// The same budget for each phase: sending, waiting for the response head, reading the
    /// body (API calls). ureq spawns no thread per request this way.
    PerPhase,
}

/// Builds an agent configured the way tokengate drives it: statuses come back as responses
/// (a 401 must be seen with its headers), and redirects are not followed by ureq (which would
/// decide on its own which origin sees the token).
pub(crate) fn default_agent(
    timeout: Duration,
    kind: TimeoutKind,
    proxy: Option<Option<ureq::Proxy>>,
) -> Agent {
    let mut cfg = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(DEFAULT_CONNECT_TIMEOUT))
        .user_agent(concat!("tokengate/", env!("CARGO_PKG_VERSION")));
    cfg = match kind {
        TimeoutKind::WholeCall => cfg.timeout_global(Some(timeout)),
        // A global (or per-call, or resolve) timeout makes ureq 3.5 resolve the host on a new
        // thread for every request, pooled connection or not (measured in BENCHMARKS.md:
        // one clone3 per request). Phase timeouts bound the same waits without it.
        TimeoutKind::PerPhase => cfg
            .timeout_send_request(Some(timeout))
            .timeout_send_body(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout)),
    };
    if let Some(proxy) = proxy {
        cfg = cfg.proxy(proxy);
    }
    cfg.build().into()
}

/// The longest one call on `agent` can take, from its timeouts: the whole-call budget if it
/// has one, else the sum of its phase timeouts if each is set, else [`DEFAULT_TOKEN_TIMEOUT`]
/// (an agent without timeouts is not bounded at all; this is what the client assumes).
pub(crate) fn call_limit(agent: &Agent) -> Duration {
    let t = agent.config().timeouts();
    if let Some(d) = t.global.or(t.per_call) {
        return d;
    }
    let phases = [
        t.connect,
        t.send_request,
        t.send_body,
        t.recv_response,
        t.recv_body,
    ];
    phases
        .iter()
        .try_fold(Duration::ZERO, |sum, p| Some(sum.saturating_add((*p)?)))
        .unwrap_or(DEFAULT_TOKEN_TIMEOUT)
}

/// True when `agent` already returns statuses as responses and never redirects on its own.
pub(crate) fn agent_fits(agent: &Agent) -> bool {
    let c = agent.config();
    !c.http_status_as_error() && c.max_redirects() == 0
}

/// Runs `req` on `agent`, overriding per request what tokengate needs if the agent (one the
/// user passed in) is configured otherwise, and the agent's proxy where [`crate::proxy`]
/// sends the request directly.
pub(crate) fn run<B: ureq::AsSendBody>(
    agent: &Agent,
    fits: bool,
    req: Request<B>,
) -> Result<Response<Body>, ureq::Error> {
    let direct = proxy::bypasses(agent, req.uri());
    if fits && !direct {
        agent.run(req)
    } else {
        agent.run(configured(agent, req, direct).build())
    }
}

/// `req` with tokengate's per-request settings: statuses as responses, no redirects by ureq,
/// and no proxy if `direct`.
fn configured<B: ureq::AsSendBody>(
    agent: &Agent,
    req: Request<B>,
    direct: bool,
) -> ConfigBuilder<HttpCrateScope<B>> {
    let cfg = agent
        .configure_request(req)
        .http_status_as_error(false)
        .max_redirects(0);
    if direct {
        cfg.proxy(None)
    } else {
        cfg
    }
}

/// Reads and discards up to [`DRAIN_LIMIT`] bytes so a keep-alive connection can be reused.
pub(crate) fn drain(resp: &mut Response<Body>) {
    let _ = resp
        .body_mut()
        .with_config()
        .limit(DRAIN_LIMIT)
        .read_to_vec();
}

/// POSTs `body` with `content_type` to an endpoint of the authorization server (token,
/// device authorization, revocation; or a [`JsonRefresh`](crate::JsonRefresh) endpoint) and
/// returns the status, the `Retry-After` header and the body (at most
/// [`TOKEN_RESPONSE_LIMIT`] bytes). `authorization` is marked sensitive. With `timeout`, the
/// call has that whole-call budget whatever the agent says; without, the agent's own.
pub(crate) fn post_token_request(
    agent: &Agent,
    url: &str,
    content_type: &str,
    authorization: Option<&str>,
    body: &[u8],
    timeout: Option<Duration>,
) -> Result<TokenResponse, PostError> {
    let mut builder = Request::post(url)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json");
    if let Some(auth) = authorization {
        let mut v = http::HeaderValue::try_from(auth)
            .map_err(|e| PostError::Credentials(http::Error::from(e)))?;
        v.set_sensitive(true);
        builder = builder.header(http::header::AUTHORIZATION, v);
    }
    // Not sent: no proxy to name.
    let req = builder
        .body(body)
        .map_err(|e| PostError::Send(TransportError::new(ureq::Error::Http(e), None)))?;
    let failed = |e| PostError::Send(failure(agent, url, e));
    let sent = match timeout {
        Some(t) => {
            let direct = proxy::bypasses(agent, req.uri());
            let req = configured(agent, req, direct)
                .timeout_global(Some(t))
                .build();
            agent.run(req)
        }
        None => run(agent, agent_fits(agent), req),
    };
    let mut resp = sent.map_err(failed)?;
    let status = resp.status().as_u16();
    let retry_after = crate::retry::retry_after(resp.headers(), std::time::SystemTime::now());
    let body = resp
        .body_mut()
        .with_config()
        .limit(TOKEN_RESPONSE_LIMIT)
        .read_to_vec()
        .map_err(|error| match error {
            ureq::Error::BodyExceedsLimit(_) => PostError::TooLarge { status },
            error => PostError::Body {
                status,
                error: failure(agent, url, error),
            },
        })?;
    Ok(TokenResponse {
        status,
        retry_after,
        body,
    })
}

/// `error`, on a request to `url` sent with `agent`, naming the proxy it went through.
pub(crate) fn failure(agent: &Agent, url: &str, error: ureq::Error) -> TransportError {
    TransportError::new(error, proxy::proxy_for(agent, url))
}

/// Why [`post_token_request`] has no answer to give. Each caller maps it to its own error:
/// a refresh to a [`RefreshError`] (the `From` below), a revocation to a `RevocationError`.
#[derive(Debug)]
pub(crate) enum PostError {
    /// The `Authorization` value (the client's credentials) cannot travel in a header.
    /// Nothing was sent.
    Credentials(http::Error),
    /// The request could not be built or sent, or no response came.
    Send(TransportError),
    /// A response with `status` came, but its body is over [`TOKEN_RESPONSE_LIMIT`].
    TooLarge { status: u16 },
    /// A response with `status` came, but its body could not be read (cut short).
    Body { status: u16, error: TransportError },
}

impl From<PostError> for RefreshError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::Credentials(_) => {
                RefreshError::InvalidResponse("client credentials not valid in a header")
            }
            PostError::TooLarge { .. } => {
                RefreshError::InvalidResponse("response body over 64 KiB")
            }
            PostError::Send(e) | PostError::Body { error: e, .. } => RefreshError::Transport(e),
        }
    }
}

/// A token endpoint's answer, read in full.
pub(crate) struct TokenResponse {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl TokenResponse {
    /// The error for a status that is neither success nor a recognised rejection.
    pub(crate) fn unexpected(&self) -> RefreshError {
        RefreshError::Status {
            status: self.status,
            retry_after: self.retry_after,
        }
    }
}
