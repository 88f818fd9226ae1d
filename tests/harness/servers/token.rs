//! A stateful OAuth2 token server and API on httpmock.
//!
//! The server behaves like a strict real one:
//! - access tokens expire (server-side lifetime) and can be revoked at once;
//! - every refresh rotates the refresh token; reusing a rotated refresh token is treated as
//!   theft: the whole session is revoked and counted in `reuse_detected`;
//! - the API accepts only live access tokens and answers 401 with
//!   `WWW-Authenticate: Bearer error="invalid_token"` otherwise.
//!
//! Only loopback: httpmock binds 127.0.0.1. Clients built here never use environment proxies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use httpmock::prelude::*;
use httpmock::{HttpMockRequest, HttpMockResponse};
use parking_lot::Mutex;
use tokengate::{AuthClient, AuthClientBuilder, AuthServer, OAuth2Refresh, Tokens};

use super::{json, raw};

/// Everything the server knows. Guarded by `TokenServer::state`.
#[derive(Debug)]
pub struct State {
    /// Lifetime of new access tokens, enforced by the server and announced as `expires_in`.
    pub lifetime: Duration,
    /// Live access tokens and when each expires.
    pub access: HashMap<String, Instant>,
    /// The one valid refresh token.
    pub refresh: Option<String>,
    /// Refresh tokens already used (rotated out).
    pub rotated: HashSet<String>,
    /// The session was revoked (reuse detected or `revoke_session`).
    pub revoked: bool,
    pub next_id: u64,
    /// Calls of the token endpoint (all grants, all outcomes).
    pub refresh_calls: u64,
    /// Refresh calls that presented a rotated refresh token.
    pub reuse_detected: u64,
    pub api_calls: u64,
    pub api_401s: u64,
    /// Every `Authorization` header value seen by the token endpoint (must be Basic, never Bearer).
    pub token_endpoint_auth: Vec<String>,
    /// When generation N (`at-N`/`rt-N`) was minted: `minted_at[N - 1]`.
    pub minted_at: Vec<Instant>,
    /// Every refresh_token grant call, in arrival order.
    pub token_calls: Vec<TokenCall>,
    /// The next this many refresh_token grant calls answer 503 without touching the refresh
    /// token (counted, and recorded in `token_calls`).
    pub unavailable: u32,
    /// API calls that carried an `x-request-id` header, by that id, in arrival order.
    pub api_attempts: HashMap<String, Vec<ApiAttempt>>,
}

/// One call of the refresh_token grant.
#[derive(Clone, Copy, Debug)]
pub struct TokenCall {
    pub arrived: Instant,
    /// N of the presented `rt-N`, if it was one of ours.
    pub presented: Option<u64>,
}

/// One API call, as the server saw it.
#[derive(Clone, Copy, Debug)]
pub struct ApiAttempt {
    pub status: u16,
    /// N of the presented `at-N`, if it was one of ours.
    pub generation: Option<u64>,
    /// The token was one of ours and past its server-side lifetime when the call arrived.
    pub expired: bool,
}

/// N of a token named `{prefix}N`.
fn generation_of(token: &str, prefix: &str) -> Option<u64> {
    token.strip_prefix(prefix)?.parse().ok()
}

pub struct TokenServer {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    /// With a token delay: the token endpoint, on a raw TCP server that rotates as soon as a
    /// request arrives and answers `delay` later (httpmock's own delay comes *before* the
    /// handler runs, so a client that went away would never have rotated anything).
    late: Option<raw::RawServer>,
}

impl TokenServer {
    /// A server whose access tokens live an hour (expiry is then driven by the test).
    pub fn start() -> Self {
        Self::with_lifetime(Duration::from_secs(3600))
    }

    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self::with_lifetime_and_delay(lifetime, Duration::ZERO)
    }

    /// A server whose token endpoints take `token_delay` to answer. The OAuth2 endpoint
    /// rotates the refresh token when the request arrives and answers `token_delay` later,
    /// as a real server does: a client that stops listening meanwhile has lost the new tokens.
    pub fn with_lifetime_and_delay(lifetime: Duration, token_delay: Duration) -> Self {
        let server = MockServer::start();
        let state = Arc::new(Mutex::new(State {
            lifetime,
            access: HashMap::new(),
            refresh: None,
            rotated: HashSet::new(),
            revoked: false,
            next_id: 0,
            refresh_calls: 0,
            reuse_detected: 0,
            api_calls: 0,
            api_401s: 0,
            token_endpoint_auth: Vec::new(),
            minted_at: Vec::new(),
            token_calls: Vec::new(),
            unavailable: 0,
            api_attempts: HashMap::new(),
        }));
        let s = state.clone();
        server.mock(move |when, then| {
            when.method(POST).path("/oauth/token");
            then.delay(token_delay)
                .respond_with(move |req| oauth_token(&s, req));
        });
        let late = (!token_delay.is_zero()).then(|| {
            let s = state.clone();
            raw::RawServer::start(move |req| {
                let auth = req.header("authorization").map(str::to_owned);
                let (status, body) = oauth_grant(&s, &req.body, auth, token_delay);
                std::thread::sleep(token_delay);
                raw::Action::Respond(
                    status,
                    vec![b"content-type: application/json".to_vec()],
                    body.to_string().into_bytes(),
                )
            })
        });
        let s = state.clone();
        server.mock(move |when, then| {
            when.method(POST).path("/json/refresh");
            then.delay(token_delay)
                .respond_with(move |req| json_refresh(&s, req));
        });
        // For a test's child process (which cannot read `state`): how many refresh_token grant
        // calls have arrived (counted when a call arrives, before its answer).
        let s = state.clone();
        server.mock(move |when, then| {
            when.method(GET).path("/refresh-calls");
            then.respond_with(move |_| json(200, s.lock().refresh_calls));
        });
        let s = state.clone();
        server.mock(move |when, then| {
            when.path_prefix("/api/");
            then.respond_with(move |req| api(&s, req));
        });
        TokenServer {
            server,
            state,
            late,
        }
    }

    /// A fresh login: new access and refresh tokens, un-revokes the session.
    pub fn login(&self) -> Tokens {
        let mut s = self.state.lock();
        s.revoked = false;
        let (access, refresh) = s.mint();
        Tokens::new(access)
            .with_refresh_token(refresh)
            .with_expires_in(s.lifetime)
    }

    pub fn token_url(&self) -> String {
        match &self.late {
            Some(late) => late.url("/oauth/token"),
            None => self.server.url("/oauth/token"),
        }
    }

    pub fn json_url(&self) -> String {
        self.server.url("/json/refresh")
    }

    pub fn api_url(&self) -> String {
        self.server.url("/api/")
    }

    /// Another user's login: a live access token (`user2-at`) the API accepts, with a
    /// refresh token the server does not know. The session's own tokens are not touched.
    pub fn second_user_login(&self) -> Tokens {
        let mut s = self.state.lock();
        let expires = Instant::now() + s.lifetime;
        s.access.insert("user2-at".to_owned(), expires);
        Tokens::new("user2-at")
            .with_refresh_token("user2-rt")
            .with_expires_in(s.lifetime)
    }

    /// The next `n` refresh calls answer 503 before looking at the refresh token.
    pub fn answer_503_to_next_refreshes(&self, n: u32) {
        self.state.lock().unavailable = n;
    }

    /// N of the `rt-N` each refresh_token grant call presented, in arrival order.
    pub fn presented(&self) -> Vec<Option<u64>> {
        let s = self.state.lock();
        s.token_calls.iter().map(|c| c.presented).collect()
    }

    /// Revokes every live access token: the next API call with any of them gets 401.
    pub fn expire_access_tokens(&self) {
        self.state.lock().access.clear();
    }

    /// Ends the session server-side: the refresh token stops working (invalid_grant).
    pub fn revoke_session(&self) {
        let mut s = self.state.lock();
        s.revoked = true;
        s.access.clear();
    }

    pub fn refresh_calls(&self) -> u64 {
        self.state.lock().refresh_calls
    }

    pub fn reuse_detected(&self) -> u64 {
        self.state.lock().reuse_detected
    }

    pub fn api_calls(&self) -> u64 {
        self.state.lock().api_calls
    }

    pub fn api_401s(&self) -> u64 {
        self.state.lock().api_401s
    }

    /// The OAuth2 refresher for this server: client `test-app` with a client secret.
    pub fn refresher(&self) -> OAuth2Refresh {
        refresher_at(self.token_url())
    }

    /// A client builder for this server: its [`refresher`](Self::refresher), no proxy.
    pub fn client_builder(&self) -> AuthClientBuilder {
        AuthClient::builder(self.api_url())
            .proxy(None)
            .refresher(self.refresher())
    }

    /// A client builder for the token server whose `server.base_url()` is `base_url`, for a
    /// child process, which has only that: [`client_builder`](Self::client_builder) of a
    /// server whose token endpoint is its own (no `late` one).
    pub fn client_builder_at(base_url: &str) -> AuthClientBuilder {
        AuthClient::builder(format!("{base_url}/api/"))
            .proxy(None)
            .refresher(refresher_at(format!("{base_url}/oauth/token")))
    }
}

/// The OAuth2 refresher for the token endpoint at `token_url`: client `test-app` with a
/// client secret.
fn refresher_at(token_url: String) -> OAuth2Refresh {
    AuthServer::new(token_url)
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant()
}

impl State {
    /// Asserts that every refresh call presented a generation at least ¾ of `lifetime`
    /// (less a slack of 5 ms for the clients' whole-millisecond wall-clock stamps against
    /// this server's monotonic clock) after the server minted it. A client refreshes
    /// generation g at ¾ of its lifetime after it was issued (every process computes the
    /// window from the stored issue time), or later when the API rejects it, and g was
    /// issued after it was minted: a second refresh of one expiry, or a process that ignored
    /// the stored issue time, would present a generation before it was due.
    pub fn assert_no_generation_refreshed_before_due(&self, lifetime: Duration) {
        let due = lifetime * 3 / 4 - Duration::from_millis(5);
        assert!(!self.token_calls.is_empty());
        for call in &self.token_calls {
            let g = call
                .presented
                .expect("only our refresh tokens are presented");
            let minted = self.minted_at[g as usize - 1];
            assert!(
                call.arrived >= minted + due,
                "generation {g} was refreshed {:?} after it was minted (due after {due:?})",
                call.arrived - minted
            );
        }
    }

    pub(super) fn mint(&mut self) -> (String, String) {
        self.mint_answered_in(Duration::ZERO)
    }

    /// Mints tokens whose lifetime starts when they are delivered, `answered_in` from now.
    fn mint_answered_in(&mut self, answered_in: Duration) -> (String, String) {
        self.next_id += 1;
        let access = format!("at-{}", self.next_id);
        let refresh = format!("rt-{}", self.next_id);
        let now = Instant::now();
        self.minted_at.push(now);
        self.access
            .insert(access.clone(), now + answered_in + self.lifetime);
        if let Some(old) = self.refresh.replace(refresh.clone()) {
            self.rotated.insert(old);
        }
        (access, refresh)
    }

    /// The refresh_token grant with rotation and reuse detection.
    fn rotate(&mut self, presented: &str) -> Result<(String, String), ()> {
        self.rotate_answered_in(presented, Duration::ZERO)
    }

    fn rotate_answered_in(
        &mut self,
        presented: &str,
        answered_in: Duration,
    ) -> Result<(String, String), ()> {
        self.refresh_calls += 1;
        self.token_calls.push(TokenCall {
            arrived: Instant::now(),
            presented: generation_of(presented, "rt-"),
        });
        if self.rotated.contains(presented) {
            self.reuse_detected += 1;
            self.revoked = true;
            self.access.clear();
            return Err(());
        }
        if self.revoked || self.refresh.as_deref() != Some(presented) {
            return Err(());
        }
        Ok(self.mint_answered_in(answered_in))
    }
}

pub fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn oauth_token(state: &Mutex<State>, req: &HttpMockRequest) -> HttpMockResponse {
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let (status, body) = oauth_grant(state, req.body_ref(), auth, Duration::ZERO);
    json(status, body)
}

/// The token endpoint's logic: the refresh_token grant, rotated now, for an answer delivered
/// `answered_in` from now.
fn oauth_grant(
    state: &Mutex<State>,
    body: &[u8],
    auth: Option<String>,
    answered_in: Duration,
) -> (u16, serde_json::Value) {
    let f = form(body);
    let mut s = state.lock();
    if let Some(auth) = auth {
        s.token_endpoint_auth.push(auth);
    }
    if f.get("grant_type").map(String::as_str) != Some("refresh_token") {
        s.refresh_calls += 1;
        return (400, serde_json::json!({"error": "unsupported_grant_type"}));
    }
    let presented = f.get("refresh_token").cloned().unwrap_or_default();
    if s.unavailable > 0 {
        s.unavailable -= 1;
        s.refresh_calls += 1;
        s.token_calls.push(TokenCall {
            arrived: Instant::now(),
            presented: generation_of(&presented, "rt-"),
        });
        return (503, serde_json::json!({"error": "temporarily_unavailable"}));
    }
    match s.rotate_answered_in(&presented, answered_in) {
        Ok((access, refresh)) => (
            200,
            serde_json::json!({
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": s.lifetime.as_secs_f64(),
                "refresh_token": refresh,
            }),
        ),
        Err(()) => (400, serde_json::json!({"error": "invalid_grant"})),
    }
}

fn json_refresh(state: &Mutex<State>, req: &HttpMockRequest) -> HttpMockResponse {
    let body: serde_json::Value = serde_json::from_slice(req.body_ref()).unwrap_or_default();
    let presented = body["refreshToken"].as_str().unwrap_or_default().to_owned();
    let mut s = state.lock();
    match s.rotate(&presented) {
        Ok((access, refresh)) => json(
            200,
            serde_json::json!({"accessToken": access, "refreshToken": refresh}),
        ),
        Err(()) => json(401, serde_json::json!({"message": "refresh token expired"})),
    }
}

fn api(state: &Mutex<State>, req: &HttpMockRequest) -> HttpMockResponse {
    let mut s = state.lock();
    s.api_calls += 1;
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let now = Instant::now();
    let live = token
        .as_deref()
        .and_then(|t| s.access.get(t))
        .is_some_and(|exp| *exp > now);
    if let Some(id) = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        let generation = token.as_deref().and_then(|t| generation_of(t, "at-"));
        let expired = generation
            .and_then(|g| s.minted_at.get(usize::try_from(g).ok()?.checked_sub(1)?))
            .is_some_and(|minted| now >= *minted + s.lifetime);
        let attempt = ApiAttempt {
            status: if live { 200 } else { 401 },
            generation,
            expired,
        };
        s.api_attempts
            .entry(id.to_owned())
            .or_default()
            .push(attempt);
    }
    if !live {
        s.api_401s += 1;
        return HttpMockResponse::builder()
            .status(401)
            .header("www-authenticate", r#"Bearer error="invalid_token""#)
            .body("{\"error\":\"unauthorized\"}")
            .build();
    }
    json(
        200,
        serde_json::json!({
            "path": req.uri().path(),
            "method": req.method().as_str(),
            "token": token,
            "body_len": req.body_ref().len(),
        }),
    )
}
