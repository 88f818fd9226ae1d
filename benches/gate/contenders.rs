//! The four contenders, each making one authenticated `GET /api` per call and reading the body.
//!
//! 1. `raw`: a plain `ureq::Agent` with a static `Authorization` header (the upper bound).
//! 2. `authclient`: tokengate's `AuthClient`.
//! 3. `naive`: what most hand-written clients do: one `Mutex` around the tokens, held across
//!    the expiry check and the refresh; a 401 refreshes (under the same lock) and retries once.
//! 4. `seed`: the seed's algorithm ported literally: a refresh `Mutex`; on 401 (or an expired
//!    token) take it, re-read the store, and skip the refresh if the stored token is no longer
//!    the one the request sent; otherwise refresh under the lock, save, and retry once.
//!
//! All four use the same agent configuration, and the three that refresh use the same
//! refresher (`OAuth2Refresh`) on their own token agent: only the coordination differs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokengate::ureq::Agent;
use tokengate::{
    AuthClient, AuthServer, Event, MemoryStore, OAuth2Refresh, Refresh, TokenStore, Tokens,
};

/// What every agent here shares: no proxy, statuses as responses, no redirects followed.
fn base_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
}

/// The agent every contender sends API requests through. The pool is large enough for the
/// largest storm, so no contender pays for reconnects (ureq's default keeps 3 idle
/// connections per host), and no timeout is set: with a global, per-call or resolve timeout,
/// ureq 3.5 resolves the host on a new thread for every request (see BENCHMARKS.md).
pub fn api_agent() -> Agent {
    base_config()
        .max_idle_connections(4096)
        .max_idle_connections_per_host(4096)
        .build()
        .into()
}

/// The settings of tokengate's own default API agent (src/transport.rs): ureq's default pool,
/// a 10 s connect timeout and 60 s for each phase (send, response head, body).
pub fn tokengate_default_agent() -> Agent {
    base_config()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_send_request(Some(Duration::from_secs(60)))
        .timeout_send_body(Some(Duration::from_secs(60)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .user_agent(concat!("tokengate/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// tokengate's default API agent before the fix: a 60 s *global* timeout, which makes ureq
/// 3.5 resolve the host on a new thread for every request.
pub fn global_timeout_agent() -> Agent {
    base_config()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// ureq's default pool (3 idle connections per host) and no timeout.
pub fn default_pool_agent() -> Agent {
    base_config().build().into()
}

pub fn token_agent() -> Agent {
    base_config().build().into()
}

/// Which contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Auth,
    Naive,
    Seed,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Raw, Kind::Auth, Kind::Naive, Kind::Seed];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw ureq",
            Kind::Auth => "AuthClient",
            Kind::Naive => "naive Mutex",
            Kind::Seed => "seed port",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Auth => "authclient",
            Kind::Naive => "naive",
            Kind::Seed => "seed",
        }
    }

    pub fn from_id(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.id() == s)
    }
}

/// How to build a contender.
pub struct Setup {
    pub base_url: String,
    pub token_url: String,
    pub api: Agent,
    /// Tokens to start with (ignored by `raw`, which sends `static_auth`).
    pub access: String,
    pub refresh: String,
    pub expires_in: Duration,
    /// Refresh-ahead window for `authclient` (clamped by it to ¼ of the lifetime) and `naive`.
    pub skew: Duration,
    /// The header `raw` sends.
    pub static_auth: String,
    /// Give `authclient` its own default agent instead of `api`.
    pub auth_default_agent: bool,
}

/// One contender, ready to call.
pub trait Contender: Send + Sync {
    /// One `GET /api`; `Err` if it did not end in a 200.
    fn call(&self) -> Result<(), String>;
    /// 401s this contender has seen.
    fn unauthorized(&self) -> u64;
    /// Refreshes this contender ran: `(start, end)`.
    fn refreshes(&self) -> Vec<(Instant, Instant)>;
}

pub fn build(kind: Kind, s: &Setup) -> Arc<dyn Contender> {
    match kind {
        Kind::Raw => Arc::new(Raw {
            agent: s.api.clone(),
            url: format!("{}api", s.base_url),
            auth: s.static_auth.clone(),
            unauthorized: AtomicU64::new(0),
        }),
        Kind::Auth => Arc::new(Auth::new(s)),
        Kind::Naive => Arc::new(Naive {
            agent: s.api.clone(),
            token_agent: token_agent(),
            url: format!("{}api", s.base_url),
            refresher: AuthServer::new(s.token_url.clone()).refresh_grant(),
            skew: s.skew,
            state: Mutex::new(NaiveState {
                tokens: Tokens::new(s.access.clone()).with_refresh_token(s.refresh.clone()),
                expires_at: Instant::now() + s.expires_in,
            }),
            unauthorized: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }),
        Kind::Seed => Arc::new(Seed {
            agent: s.api.clone(),
            token_agent: token_agent(),
            url: format!("{}api", s.base_url),
            refresher: AuthServer::new(s.token_url.clone()).refresh_grant(),
            store: MemoryStore::with_tokens(
                Tokens::new(s.access.clone())
                    .with_refresh_token(s.refresh.clone())
                    .with_expires_at(SystemTime::now() + s.expires_in),
            ),
            lock: Mutex::new(()),
            unauthorized: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }),
    }
}

/// Sends `GET url` with `auth`; returns the status after reading the body.
fn send(agent: &Agent, url: &str, auth: &str) -> Result<u16, String> {
    let mut resp = agent
        .get(url)
        .header("Authorization", auth)
        .call()
        .map_err(|e| e.to_string())?;
    resp.body_mut().read_to_vec().map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

fn ok(status: u16) -> Result<(), String> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

// ---------------------------------------------------------------------------------------------

struct Raw {
    agent: Agent,
    url: String,
    auth: String,
    unauthorized: AtomicU64,
}

impl Contender for Raw {
    fn call(&self) -> Result<(), String> {
        let status = send(&self.agent, &self.url, &self.auth)?;
        if status == 401 {
            self.unauthorized.fetch_add(1, Relaxed);
        }
        ok(status)
    }
    fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Relaxed)
    }
    fn refreshes(&self) -> Vec<(Instant, Instant)> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------

struct Auth {
    client: AuthClient,
    events: Arc<AuthEvents>,
}

#[derive(Default)]
struct AuthEvents {
    unauthorized: AtomicU64,
    started: Mutex<Vec<Instant>>,
    done: Mutex<Vec<Instant>>,
}

impl Auth {
    fn new(s: &Setup) -> Auth {
        let events = Arc::new(AuthEvents::default());
        let ev = Arc::clone(&events);
        let mut b = AuthClient::builder(s.base_url.clone())
            .proxy(None)
            .token_agent(token_agent())
            .refresher(AuthServer::new(s.token_url.clone()).refresh_grant())
            .tokens(
                Tokens::new(s.access.clone())
                    .with_refresh_token(s.refresh.clone())
                    .with_expires_in(s.expires_in),
            )
            .refresh_skew(s.skew)
            .on_event(move |e| match e {
                Event::Unauthorized { .. } => {
                    ev.unauthorized.fetch_add(1, Relaxed);
                }
                Event::RefreshStarted { .. } => ev.started.lock().unwrap().push(Instant::now()),
                Event::Refreshed { .. } | Event::RefreshFailed { .. } => {
                    ev.done.lock().unwrap().push(Instant::now())
                }
                _ => {}
            });
        if !s.auth_default_agent {
            b = b.api_agent(s.api.clone());
        }
        Auth {
            client: b.build().expect("build AuthClient"),
            events,
        }
    }
}

impl Contender for Auth {
    fn call(&self) -> Result<(), String> {
        let mut resp = self.client.get("api").call().map_err(|e| e.to_string())?;
        resp.body_mut().read_to_vec().map_err(|e| e.to_string())?;
        ok(resp.status().as_u16())
    }
    fn unauthorized(&self) -> u64 {
        self.events.unauthorized.load(Relaxed)
    }
    fn refreshes(&self) -> Vec<(Instant, Instant)> {
        let started = self.events.started.lock().unwrap();
        let done = self.events.done.lock().unwrap();
        started.iter().copied().zip(done.iter().copied()).collect()
    }
}

// ---------------------------------------------------------------------------------------------

struct NaiveState {
    tokens: Tokens,
    expires_at: Instant,
}

struct Naive {
    agent: Agent,
    token_agent: Agent,
    url: String,
    refresher: OAuth2Refresh,
    skew: Duration,
    state: Mutex<NaiveState>,
    unauthorized: AtomicU64,
    log: Mutex<Vec<(Instant, Instant)>>,
}

impl Naive {
    /// Refreshes with the lock held (the caller holds `state`).
    fn refresh_locked(&self, s: &mut NaiveState) -> Result<(), String> {
        let start = Instant::now();
        let new = self
            .refresher
            .refresh(&self.token_agent, &s.tokens)
            .map_err(|e| e.to_string())?;
        let end = Instant::now();
        s.expires_at = end + new.expires_in().unwrap_or(Duration::from_secs(3600));
        s.tokens = new;
        self.log.lock().unwrap().push((start, end));
        Ok(())
    }

    /// The header to send: checks expiry and refreshes, all under the one lock.
    fn header(&self) -> Result<String, String> {
        let mut s = self.state.lock().unwrap();
        if Instant::now() + self.skew >= s.expires_at {
            self.refresh_locked(&mut s)?;
        }
        Ok(format!("Bearer {}", s.tokens.access_token().secret()))
    }
}

impl Contender for Naive {
    fn call(&self) -> Result<(), String> {
        let auth = self.header()?;
        let status = send(&self.agent, &self.url, &auth)?;
        if status != 401 {
            return ok(status);
        }
        self.unauthorized.fetch_add(1, Relaxed);
        let auth = {
            let mut s = self.state.lock().unwrap();
            self.refresh_locked(&mut s)?;
            format!("Bearer {}", s.tokens.access_token().secret())
        };
        ok(send(&self.agent, &self.url, &auth)?)
    }
    fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Relaxed)
    }
    fn refreshes(&self) -> Vec<(Instant, Instant)> {
        self.log.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------

struct Seed {
    agent: Agent,
    token_agent: Agent,
    url: String,
    refresher: OAuth2Refresh,
    store: MemoryStore,
    lock: Mutex<()>,
    unauthorized: AtomicU64,
    log: Mutex<Vec<(Instant, Instant)>>,
}

impl Seed {
    fn load(&self) -> Result<Tokens, String> {
        self.store
            .load()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no tokens".to_owned())
    }

    /// Tokens newer than `sent`: under the lock, re-read the store; refresh only if it still
    /// holds the token that was sent.
    fn renew(&self, sent: &Tokens) -> Result<Tokens, String> {
        let _guard = self.lock.lock().unwrap();
        let stored = self.load()?;
        if stored.access_token().secret() != sent.access_token().secret() {
            return Ok(stored);
        }
        let start = Instant::now();
        let new = self
            .refresher
            .refresh(&self.token_agent, &stored)
            .map_err(|e| e.to_string())?;
        let end = Instant::now();
        let lifetime = new.expires_in().unwrap_or(Duration::from_secs(3600));
        let new = new.with_expires_at(SystemTime::now() + lifetime);
        self.store.save(&new).map_err(|e| e.to_string())?;
        self.log.lock().unwrap().push((start, end));
        Ok(new)
    }
}

fn expired(t: &Tokens) -> bool {
    t.expires_at().is_some_and(|at| SystemTime::now() >= at)
}

impl Contender for Seed {
    fn call(&self) -> Result<(), String> {
        let mut tokens = self.load()?;
        if expired(&tokens) {
            tokens = self.renew(&tokens)?;
        }
        let auth = format!("Bearer {}", tokens.access_token().secret());
        let status = send(&self.agent, &self.url, &auth)?;
        if status != 401 {
            return ok(status);
        }
        self.unauthorized.fetch_add(1, Relaxed);
        let tokens = self.renew(&tokens)?;
        let auth = format!("Bearer {}", tokens.access_token().secret());
        ok(send(&self.agent, &self.url, &auth)?)
    }
    fn unauthorized(&self) -> u64 {
        self.unauthorized.load(Relaxed)
    }
    fn refreshes(&self) -> Vec<(Instant, Instant)> {
        self.log.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------

/// The storm's ideal, run with raw ureq and perfect coordination: every thread sends the stale
/// token (401), all meet at a barrier, exactly one refreshes while the rest wait at a second
/// barrier, then all retry with the new token. One 401 round + one refresh + one retry round.
pub struct Oracle {
    pub agent: Agent,
    pub token_agent: Agent,
    pub url: String,
    pub refresher: OAuth2Refresh,
    pub stale: String,
    pub refresh: String,
    pub after_401: std::sync::Barrier,
    pub after_refresh: std::sync::Barrier,
    pub fresh: Mutex<Option<String>>,
}

impl Oracle {
    pub fn call(&self) -> Result<(), String> {
        let status = send(&self.agent, &self.url, &format!("Bearer {}", self.stale))?;
        if status != 401 {
            return Err(format!("expected 401, got {status}"));
        }
        if self.after_401.wait().is_leader() {
            let cur = Tokens::new(self.stale.clone()).with_refresh_token(self.refresh.clone());
            let new = self.refresher.refresh(&self.token_agent, &cur);
            *self.fresh.lock().unwrap() = new
                .ok()
                .map(|t| format!("Bearer {}", t.access_token().secret()));
        }
        self.after_refresh.wait();
        let auth = self.fresh.lock().unwrap().clone().ok_or("refresh failed")?;
        ok(send(&self.agent, &self.url, &auth)?)
    }
}
