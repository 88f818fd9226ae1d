//! A fault-injecting OAuth2 token server and API, for `tests/gate/stress.rs`.
//!
//! Like [`super::TokenServer`] it rotates refresh tokens and treats the reuse of a rotated
//! one as theft (counted, session revoked), and its API accepts only live access tokens. On
//! top of that it:
//! - injects faults on a fixed schedule: every n-th API call answers 503 or 500 before looking
//!   at the request, every n-th token-endpoint call answers 503 or 500 *before* touching the
//!   refresh token (so a failed refresh never consumes it), and every n-th call of each is
//!   slow. Each injected fault is counted by kind, so every failure a client sees can be
//!   matched against one;
//! - verifies an `x-body-fnv1a` header (FNV-1a 64 of the body, hex) against every API body it
//!   receives, and keeps, per `x-request-id`, every attempt (status, token generation,
//!   checksum), so retries can be checked to re-send the body byte for byte;
//! - records when each token generation was minted and when each token-endpoint call arrived,
//!   on the process's monotonic clock, so the test can check that no generation was refreshed
//!   before it was due.
//!
//! The schedule is counter-based, not random: the number of faults of each kind is fixed by
//! the number of calls, while which request gets one depends on thread timing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use httpmock::prelude::*;
use httpmock::{HttpMockRequest, HttpMockResponse};
use parking_lot::Mutex;
use tokengate::Tokens;

use super::{form, json};

/// What to inject. A period of 0 disables that fault.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Lifetime of access tokens, enforced by the API and announced as `expires_in`.
    pub lifetime: Duration,
    /// Every n-th API call answers 503.
    pub api_503_every: u64,
    /// Every n-th API call (that is not already a 503) answers 500.
    pub api_500_every: u64,
    /// Token-endpoint call number `k` (from 1) fails when `k % every == phase`, alternately
    /// with 503 and 500.
    pub token_fault_every: u64,
    pub token_fault_phase: u64,
    /// Every n-th API call is delayed by `slow` before it is handled.
    pub api_slow_every: u64,
    /// Every n-th token-endpoint call is delayed by `slow` before it is handled.
    pub token_slow_every: u64,
    pub slow: Duration,
}

/// One token generation: generation 0 is the login, generation k+1 the refresh of k.
#[derive(Debug)]
pub struct Generation {
    pub minted: Instant,
    pub access: String,
    pub refresh: String,
}

/// What the token endpoint did with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Rotated: minted this generation.
    Minted(u64),
    /// An injected fault with this status.
    Injected(u16),
    /// `invalid_grant`: unknown, rotated-out (reuse) or revoked refresh token.
    Rejected,
}

#[derive(Debug)]
pub struct TokenCall {
    pub arrived: Instant,
    /// The generation whose refresh token was presented, if it was one of ours.
    pub presented: Option<u64>,
    pub outcome: TokenOutcome,
}

/// One API call, as the server saw it.
#[derive(Clone, Debug)]
pub struct ApiAttempt {
    pub arrived: Instant,
    pub status: u16,
    /// True if `status` is an injected fault.
    pub injected: bool,
    /// The generation of the bearer token, if it was one of ours.
    pub generation: Option<u64>,
    /// True if that token had expired when the call arrived.
    pub token_expired: bool,
    /// FNV-1a of the body received and its length.
    pub body_fnv: u64,
    pub body_len: usize,
}

/// Everything the server knows. Guarded by `FaultServer::state`.
#[derive(Debug)]
pub struct FaultState {
    pub plan: FaultPlan,
    /// Indexed by generation.
    pub generations: Vec<Generation>,
    access_index: HashMap<String, u64>,
    refresh_index: HashMap<String, u64>,
    /// The session was revoked (reuse detected).
    pub revoked: bool,
    pub token_calls: Vec<TokenCall>,
    pub reuse_detected: u64,
    /// Injected faults by status.
    pub injected_token: BTreeMap<u16, u64>,
    pub injected_api: BTreeMap<u16, u64>,
    pub api_calls: u64,
    pub api_401s: u64,
    /// Requests delayed by `plan.slow`.
    pub slow_api: u64,
    pub slow_token: u64,
    /// Requests the slow twins' matchers have seen.
    token_seen: u64,
    api_seen: u64,
    /// Bodies whose checksum header was missing or did not match.
    pub checksum_mismatches: u64,
    /// Attempts by `x-request-id`, in arrival order.
    pub requests: HashMap<String, Vec<ApiAttempt>>,
    /// Arrival of the last API call.
    pub last_api_arrival: Option<Instant>,
}

pub struct FaultServer {
    pub server: MockServer,
    pub state: Arc<Mutex<FaultState>>,
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn every(n: u64, period: u64) -> bool {
    period != 0 && n.is_multiple_of(period)
}

impl FaultServer {
    pub fn start(plan: FaultPlan) -> Self {
        let server = MockServer::start();
        let state = Arc::new(Mutex::new(FaultState {
            plan: plan.clone(),
            generations: Vec::new(),
            access_index: HashMap::new(),
            refresh_index: HashMap::new(),
            revoked: false,
            token_calls: Vec::new(),
            reuse_detected: 0,
            injected_token: BTreeMap::new(),
            injected_api: BTreeMap::new(),
            api_calls: 0,
            api_401s: 0,
            slow_api: 0,
            slow_token: 0,
            token_seen: 0,
            api_seen: 0,
            checksum_mismatches: 0,
            requests: HashMap::new(),
            last_api_arrival: None,
        }));
        // httpmock applies a mock's delay before calling its responder, on its async runtime
        // (other requests go on meanwhile). The first matching mock wins, so a "slow" twin
        // registered first takes every n-th request: its matcher counts the requests it sees.
        let s = state.clone();
        server.mock(move |when, then| {
            let seen = s.clone();
            when.method(POST)
                .path("/oauth/token")
                .is_true(move |req| slow_turn(&seen, req, Kind::Token));
            then.delay(plan.slow)
                .respond_with(move |req| token_endpoint(&s, req));
        });
        let s = state.clone();
        server.mock(move |when, then| {
            when.method(POST).path("/oauth/token");
            then.respond_with(move |req| token_endpoint(&s, req));
        });
        let s = state.clone();
        server.mock(move |when, then| {
            let seen = s.clone();
            when.path_prefix("/api/")
                .is_true(move |req| slow_turn(&seen, req, Kind::Api));
            then.delay(plan.slow).respond_with(move |req| api(&s, req));
        });
        let s = state.clone();
        server.mock(move |when, then| {
            when.path_prefix("/api/");
            then.respond_with(move |req| api(&s, req));
        });
        FaultServer { server, state }
    }

    /// The login: generation 0.
    pub fn login(&self) -> Tokens {
        let mut s = self.state.lock();
        assert!(s.generations.is_empty(), "one login per server");
        let g = s.mint();
        let lifetime = s.plan.lifetime;
        let g = &s.generations[g as usize];
        Tokens::new(g.access.clone())
            .with_refresh_token(g.refresh.clone())
            .with_expires_in(lifetime)
    }

    pub fn token_url(&self) -> String {
        self.server.url("/oauth/token")
    }

    pub fn api_url(&self) -> String {
        self.server.url("/api/")
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Token,
    Api,
}

/// The slow twin's matcher: true (and counted) for every n-th request of its kind. It checks
/// the path itself, in case httpmock runs custom matchers before the path matcher.
fn slow_turn(state: &Mutex<FaultState>, req: &HttpMockRequest, kind: Kind) -> bool {
    let uri = req.uri();
    let path = uri.path();
    let mut s = state.lock();
    let s = &mut *s;
    let (period, seen, slow) = match kind {
        Kind::Token if path == "/oauth/token" => (
            s.plan.token_slow_every,
            &mut s.token_seen,
            &mut s.slow_token,
        ),
        Kind::Api if path.starts_with("/api/") => {
            (s.plan.api_slow_every, &mut s.api_seen, &mut s.slow_api)
        }
        _ => return false,
    };
    *seen += 1;
    let turn = every(*seen, period);
    if turn {
        *slow += 1;
    }
    turn
}

impl FaultState {
    fn mint(&mut self) -> u64 {
        let g = self.generations.len() as u64;
        let access = format!("at-{g}-{:x}", fnv1a(&g.to_le_bytes()));
        let refresh = format!("rt-{g}-{:x}", fnv1a(&(g + 1).to_le_bytes()));
        self.access_index.insert(access.clone(), g);
        self.refresh_index.insert(refresh.clone(), g);
        self.generations.push(Generation {
            minted: Instant::now(),
            access,
            refresh,
        });
        g
    }
}

fn token_endpoint(state: &Mutex<FaultState>, req: &HttpMockRequest) -> HttpMockResponse {
    let arrived = Instant::now();
    let form = form(req.body_ref());
    let mut s = state.lock();
    let n = s.token_calls.len() as u64 + 1;
    let presented = form
        .get("refresh_token")
        .and_then(|t| s.refresh_index.get(t).copied());
    let plan = &s.plan;
    if plan.token_fault_every != 0 && n % plan.token_fault_every == plan.token_fault_phase {
        let faults: u64 = s.injected_token.values().sum();
        let status = if faults.is_multiple_of(2) { 503 } else { 500 };
        *s.injected_token.entry(status).or_default() += 1;
        s.token_calls.push(TokenCall {
            arrived,
            presented,
            outcome: TokenOutcome::Injected(status),
        });
        return json(status, serde_json::json!({"error": "injected"}));
    }
    let current = s.generations.len() as u64 - 1;
    let outcome = match presented {
        _ if form.get("grant_type").map(String::as_str) != Some("refresh_token") => {
            TokenOutcome::Rejected
        }
        Some(g) if g != current => {
            // A rotated-out refresh token: theft, by the book. Revoke the session.
            s.reuse_detected += 1;
            s.revoked = true;
            TokenOutcome::Rejected
        }
        Some(_) if !s.revoked => TokenOutcome::Minted(s.mint()),
        _ => TokenOutcome::Rejected,
    };
    s.token_calls.push(TokenCall {
        arrived,
        presented,
        outcome,
    });
    match outcome {
        TokenOutcome::Minted(g) => {
            let g = &s.generations[g as usize];
            json(
                200,
                serde_json::json!({
                    "access_token": g.access,
                    "token_type": "Bearer",
                    "expires_in": s.plan.lifetime.as_secs_f64(),
                    "refresh_token": g.refresh,
                }),
            )
        }
        _ => json(400, serde_json::json!({"error": "invalid_grant"})),
    }
}

fn api(state: &Mutex<FaultState>, req: &HttpMockRequest) -> HttpMockResponse {
    let arrived = Instant::now();
    let body = req.body_ref();
    let body_fnv = fnv1a(body);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let id = header("x-request-id").unwrap_or_default();
    let checksum_ok = header("x-body-fnv1a")
        .and_then(|h| u64::from_str_radix(&h, 16).ok())
        .is_some_and(|sum| sum == body_fnv);
    let token = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));

    let mut s = state.lock();
    s.api_calls += 1;
    s.last_api_arrival = Some(arrived);
    let n = s.api_calls;
    let generation = token
        .as_deref()
        .and_then(|t| s.access_index.get(t).copied());
    let token_expired =
        generation.is_some_and(|g| arrived >= s.generations[g as usize].minted + s.plan.lifetime);
    let (status, injected) = if !checksum_ok {
        s.checksum_mismatches += 1;
        (400, false)
    } else if every(n, s.plan.api_503_every) {
        (503, true)
    } else if every(n, s.plan.api_500_every) {
        (500, true)
    } else if generation.is_none() || token_expired {
        s.api_401s += 1;
        (401, false)
    } else {
        (200, false)
    };
    if injected {
        *s.injected_api.entry(status).or_default() += 1;
    }
    s.requests.entry(id.clone()).or_default().push(ApiAttempt {
        arrived,
        status,
        injected,
        generation,
        token_expired,
        body_fnv,
        body_len: body.len(),
    });
    drop(s);
    match status {
        401 => HttpMockResponse::builder()
            .status(401)
            .header("www-authenticate", r#"Bearer error="invalid_token""#)
            .body("{\"error\":\"unauthorized\"}")
            .build(),
        200 => json(
            200,
            serde_json::json!({"id": id, "fnv": format!("{body_fnv:016x}"), "generation": generation}),
        ),
        _ => json(
            status,
            serde_json::json!({"error": "injected or bad checksum"}),
        ),
    }
}
