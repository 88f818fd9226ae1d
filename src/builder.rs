//! [`AuthClientBuilder`]: every setting, checked once by `build()`, which assembles the
//! client's [`Config`], [`Hooks`] and [`Session`]. The defaults live in `config.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ureq::http::HeaderName;
use ureq::Agent;

use crate::client::AuthClient;
use crate::clock::Clock;
use crate::config::{self, Config, Limits, Settings, DEFAULT_API_TIMEOUT, DEFAULT_TOKEN_TIMEOUT};
use crate::error::Error;
use crate::event::Event;
use crate::hooks::{EventListener, Hooks, Listener};
use crate::refresh::Refresh;
use crate::retry::{RetryPolicy, Sleeper};
use crate::session::{self, Session, StoreMode};
use crate::store::{MemoryStore, Revision, TokenStore};
use crate::tokens::{Current, Tokens};
use crate::transport::{self, TimeoutKind};
use crate::url::{insecure, strip_userinfo, BaseUrl, EndpointUrl, UrlProblem};

/// Configures an [`AuthClient`]. Created by [`AuthClient::builder`].
#[must_use = "call build() to get a client"]
pub struct AuthClientBuilder {
    base_url: String,
    /// The client's settings, each held here once: `build()` checks them and moves them
    /// whole into the client's `Config`.
    settings: Settings,
    /// How the API and token agents are made (or the user's own).
    agents: Agents,
    refresher: Option<Box<dyn Refresh>>,
    tokens: Option<Tokens>,
    store: Option<Box<dyn TokenStore>>,
    /// The first invalid setting given, reported by `build()`.
    error: Option<Error>,
    on_session_expired: Option<Listener>,
    on_event: Option<EventListener>,
}

/// The agents' settings: the user's own agents, or what the default ones are made with.
struct Agents {
    api: Option<Agent>,
    token: Option<Agent>,
    /// `None`: ureq's default (the environment's proxy); `Some(None)`: no proxy.
    proxy: Option<Option<ureq::Proxy>>,
    api_timeout: Duration,
    token_timeout: Duration,
}

impl Agents {
    /// The API agent and whether it needs no per-request override, and the token agent.
    fn build(self) -> ((Agent, bool), Agent) {
        let api = self.api.unwrap_or_else(|| {
            transport::default_agent(self.api_timeout, TimeoutKind::PerPhase, self.proxy.clone())
        });
        let token = self.token.unwrap_or_else(|| {
            transport::default_agent(self.token_timeout, TimeoutKind::WholeCall, self.proxy)
        });
        let fits = transport::agent_fits(&api);
        ((api, fits), token)
    }
}

impl AuthClientBuilder {
    /// Default for [`AuthClientBuilder::refresh_skew`]: 30 s.
    pub const DEFAULT_REFRESH_SKEW: Duration = config::DEFAULT_REFRESH_SKEW;
    /// Default for [`AuthClientBuilder::max_redirects`]: 5.
    pub const DEFAULT_MAX_REDIRECTS: u32 = config::DEFAULT_MAX_REDIRECTS;

    pub(crate) fn new(base_url: String) -> Self {
        AuthClientBuilder {
            base_url,
            settings: Settings::default(),
            agents: Agents {
                api: None,
                token: None,
                proxy: None,
                api_timeout: DEFAULT_API_TIMEOUT,
                token_timeout: DEFAULT_TOKEN_TIMEOUT,
            },
            refresher: None,
            tokens: None,
            store: None,
            error: None,
            on_session_expired: None,
            on_event: None,
        }
    }

    /// How tokens are renewed. Defaults to none: a 401 is then final ([`Error::Unauthorized`]).
    pub fn refresher(mut self, refresher: impl Refresh) -> Self {
        self.refresher = Some(Box::new(refresher));
        self
    }

    /// The initial tokens (saved to the store by `build()`). Defaults to whatever the store loads.
    pub fn tokens(mut self, tokens: Tokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Where tokens are persisted. Defaults to a [`MemoryStore`].
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// The clock used for expiry. Defaults to [`SystemClock`](crate::time::SystemClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.settings.clock = Box::new(clock);
        self
    }

    /// How long before expiry a token is refreshed proactively. Defaults to 30 s
    /// ([`Self::DEFAULT_REFRESH_SKEW`]). It is clamped to a quarter of each token's lifetime,
    /// and a lifetime in whole seconds loses one more second (at most half of it) to servers
    /// that count whole seconds: a token living 2 s is refreshed after 0.75 s and treated as
    /// expired after 1 s, not refreshed on every request.
    pub fn refresh_skew(mut self, skew: Duration) -> Self {
        self.settings.skew = skew;
        self
    }

    /// How long a thread waits for another thread's refresh before giving up with
    /// [`Error::RefreshTimeout`]. Defaults to the longest a refresh can take, so a waiter never
    /// gives up on a leader still inside its own bounds: the store's lock wait
    /// ([`TokenStore::lock_timeout`]: 0 for [`MemoryStore`], 180 s for a
    /// [`FileStore`](crate::FileStore) or a `RedisStore`), plus one token call per attempt
    /// (the token agent's timeout, 30 s by default, × (1 + retries)) and the backoffs between
    /// them (the retry policy's max delay × retries), plus 2 s to save; with a shared store,
    /// 2 s more per token call, to confirm the store's lock first. With default settings:
    /// 152 s, or 340 s with a `FileStore` or `RedisStore`.
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.settings.refresh_timeout = Some(timeout);
        self
    }

    /// Whether a 4xx/5xx final response is returned as [`Error::StatusCode`] (ureq's convention).
    /// Defaults to true. A 401 is always handled by the refresh gate first.
    pub fn http_status_as_error(mut self, as_error: bool) -> Self {
        self.settings.status_as_error = as_error;
        self
    }

    /// Allows plain `http://` to non-loopback hosts, for the API and the token endpoint.
    /// Defaults to false: credentials over plain http are refused except to loopback.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.settings.allow_insecure_http = allow;
        self
    }

    /// How failed requests (API and token endpoint) are retried. Defaults to
    /// [`RetryPolicy::default`]: 3 retries, full-jitter exponential backoff from 200 ms to 10 s.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.backoff.set_policy(policy);
        self
    }

    /// What waits between retries. Defaults to [`ThreadSleeper`](crate::time::ThreadSleeper)'s
    /// `std::thread::sleep`, in slices, so that a refresh's backoff stops as soon as its store
    /// lock is found lost or the client closes; a sleeper given here sleeps each whole delay
    /// in one call.
    pub fn sleeper(mut self, sleeper: impl Sleeper) -> Self {
        self.settings.backoff.set_sleeper(Box::new(sleeper));
        self
    }

    /// The most redirects followed in one call; 0 returns 3xx responses as they are.
    /// Defaults to 5 ([`Self::DEFAULT_MAX_REDIRECTS`]). The token is only ever sent to the base URL's
    /// origin, so a redirect elsewhere (or from https to http) goes without it.
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.settings.max_redirects = n;
        self
    }

    /// Names a header (e.g. `X-Api-Key`) that must not follow a redirect to another origin,
    /// like `Authorization`, `Cookie` and `Proxy-Authorization`. Defaults to none.
    pub fn sensitive_header(mut self, name: &str) -> Self {
        match HeaderName::try_from(name) {
            Ok(n) => self.settings.sensitive_headers.push(n),
            Err(_) => {
                self.error
                    .get_or_insert(Error::Config("invalid sensitive header name"));
            }
        }
        self
    }

    /// Lets request paths be absolute URLs of other origins (they are sent without the
    /// token). Defaults to false: such a path is rejected with [`Error::InvalidUrl`], so a
    /// path built from untrusted input cannot point the client elsewhere.
    pub fn allow_other_origins(mut self, allow: bool) -> Self {
        self.settings.allow_other_origins = allow;
        self
    }

    /// Uses your agent for API requests. tokengate still receives statuses as responses and
    /// follows no redirect through ureq (it overrides those two settings per request if needed).
    pub fn api_agent(mut self, agent: Agent) -> Self {
        self.agents.api = Some(agent);
        self
    }

    /// Uses your agent for token-endpoint requests (same overrides as [`Self::api_agent`]).
    pub fn token_agent(mut self, agent: Agent) -> Self {
        self.agents.token = Some(agent);
        self
    }

    /// The proxy for the agents tokengate builds. Defaults to the environment's, as ureq reads
    /// it (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`), which tokengate never uses for a loopback
    /// host (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`) nor for the hosts `NO_PROXY`
    /// names (curl's reading: domains with their subdomains, `:port`, IP addresses, CIDR
    /// blocks, `*`). A proxy given here is used for every host, loopback included, except what
    /// its own `ProxyBuilder::no_proxy` list exempts. `None` disables proxies.
    pub fn proxy(mut self, proxy: Option<ureq::Proxy>) -> Self {
        self.agents.proxy = Some(proxy);
        self
    }

    /// Timeout of API requests on the default agent, applied to each phase: sending the
    /// request, waiting for the response head, reading the body. Defaults to 60 s (connect:
    /// 10 s). It is not one whole-call budget because that makes ureq resolve the host on a
    /// new thread for every request; pass your own agent ([`Self::api_agent`]) for that.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.agents.api_timeout = timeout;
        self
    }

    /// Whole-call timeout of token-endpoint requests on the default agent. Defaults to 30 s.
    /// It also bounds how long dropping (or closing) the last handle waits for a refresh on the
    /// wire.
    pub fn token_timeout(mut self, timeout: Duration) -> Self {
        self.agents.token_timeout = timeout;
        self
    }

    /// Called once each time the session ends (e.g. to show a login screen): the token
    /// endpoint rejected the refresh token, or the tokens expired (or drew a 401) and cannot
    /// be refreshed (no refresh token; see [`Refresh::can_refresh`]). Runs on the thread that
    /// led the refresh that ended it, with no lock held. Defaults to none. The same moment is
    /// also reported as [`Event::SessionExpired`].
    pub fn on_session_expired(mut self, listener: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_session_expired = Some(Box::new(listener));
        self
    }

    /// Receives an [`Event`] for what the client does: each 401 to its token
    /// ([`Event::Unauthorized`]); each refresh started, finished or failed
    /// ([`Event::RefreshStarted`], [`Event::Refreshed`], [`Event::RefreshFailed`]); each wait
    /// for another thread's refresh ([`Event::Waited`]); each retry ([`Event::Retrying`]);
    /// the session's end ([`Event::SessionExpired`]); tokens another process stored, adopted
    /// ([`Event::Adopted`]); a login or logout dropped for a newer one ([`Event::Superseded`]);
    /// a failed save ([`Event::StoreFailed`]); a failed revocation
    /// ([`Event::RevocationFailed`]). Events carry no secrets; see [`Event`] for the thread
    /// each runs on and what it may call. Defaults to none.
    pub fn on_event(mut self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Box::new(listener));
        self
    }

    /// Checks the settings and builds the client.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid setting (a [`RetryPolicy`] with more than 10 retries or
    /// a base delay above its max delay, an invalid [`sensitive_header`](Self::sensitive_header)
    /// name);
    /// [`Error::InvalidUrl`] for a base, token or revocation URL that does not parse, is not
    /// http(s) or embeds credentials (or a base URL with a query);
    /// [`Error::InsecureUrl`] for plain http to a non-loopback host without opt-in;
    /// [`Error::InvalidToken`] for initial or stored tokens that cannot travel in a header;
    /// [`Error::Store`] if the store fails to load or save (a shared store is read with
    /// [`TokenStore::poll`] first, then [`TokenStore::load`] if that found nothing; given
    /// tokens are written under its lock).
    ///
    /// ```
    /// use tokengate::{AuthClient, Error, RetryPolicy};
    /// let b = || AuthClient::builder("https://api.example.com/");
    /// let too_many = RetryPolicy::new().max_retries(RetryPolicy::MAX_RETRIES + 1);
    /// assert!(matches!(b().retry(too_many).build(), Err(Error::Config(_))));
    /// assert!(matches!(b().sensitive_header("bad name").build(), Err(Error::Config(_))));
    /// let plain = AuthClient::builder("http://api.example.com/").build();
    /// assert!(matches!(plain, Err(Error::InsecureUrl(_))));
    /// let query = AuthClient::builder("https://api.example.com/?k=v").build();
    /// assert!(matches!(query, Err(Error::InvalidUrl(_))));
    /// assert!(AuthClient::builder("http://127.0.0.1:8080/").build().is_ok()); // loopback
    /// ```
    pub fn build(self) -> Result<AuthClient, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let settings = self.settings;
        settings
            .backoff
            .policy()
            .validate()
            .map_err(Error::Config)?;
        let base = BaseUrl::parse(&self.base_url, settings.allow_insecure_http)?;
        check_endpoints(self.refresher.as_deref(), settings.allow_insecure_http)?;
        let store = self.store.unwrap_or_else(|| Box::new(MemoryStore::new()));
        let mode = if store.is_shared() {
            StoreMode::Shared
        } else {
            StoreMode::Private
        };
        let (tokens, revision) =
            initial_tokens(&*store, mode, self.tokens, &*settings.clock, settings.skew)?;
        let (api, token_agent) = self.agents.build();
        let limits = Limits::new(
            transport::call_limit(&token_agent),
            settings.backoff.policy(),
            store.lock_timeout(),
            mode == StoreMode::Shared,
            settings.refresh_timeout,
        );
        let config = Arc::new(Config::new(settings, base, api, limits));
        let session = Session::new(session::Parts {
            config: Arc::clone(&config),
            hooks: Hooks::new(self.on_session_expired, self.on_event),
            refresher: self.refresher,
            token_agent,
            store,
            mode,
            tokens,
            base: revision,
        });
        Ok(AuthClient::new(config, session))
    }
}

/// The refresher's token and revocation endpoints must parse, be http(s), carry no
/// credentials, and be https unless loopback or opted in.
fn check_endpoints(
    refresher: Option<&dyn Refresh>,
    allow_insecure_http: bool,
) -> Result<(), Error> {
    let endpoints = refresher.map_or([None, None], |r| {
        [
            r.endpoint().map(|e| ("token endpoint", e)),
            r.revocation_endpoint().map(|e| ("revocation endpoint", e)),
        ]
    });
    if let Some(problem) = refresher.and_then(|r| r.config_problem()) {
        return Err(Error::Config(problem));
    }
    for (what, endpoint) in endpoints.into_iter().flatten() {
        EndpointUrl::parse(endpoint, allow_insecure_http).map_err(|p| match p {
            UrlProblem::Unparsable => Error::InvalidUrl(format!("{what} is not a valid URL")),
            UrlProblem::NotHttp => Error::InvalidUrl(format!("{what} must be an http(s) URL")),
            UrlProblem::Credentials => Error::InvalidUrl(format!(
                "{what} must not embed credentials: use client_id/client_secret"
            )),
            UrlProblem::Insecure(origin) => insecure(&origin),
        })?;
    }
    Ok(())
}

/// The tokens the client starts with, and the revision of a shared store they correspond to.
/// `given` (the builder's tokens) are written to the store (under its lock if it is shared);
/// without them, the store's tokens are read (a shared store's current record and its
/// revision, from `poll(None)`).
fn initial_tokens(
    store: &dyn TokenStore,
    mode: StoreMode,
    given: Option<Tokens>,
    clock: &dyn Clock,
    skew: Duration,
) -> Result<(Option<Current>, Option<Revision>), Error> {
    let store_err = |e| Error::Store(Arc::new(e));
    let stamp = |t| Current::new(t, clock.now(), skew).map_err(Error::InvalidToken);
    let loaded = match mode {
        StoreMode::Shared => store.poll(None).map_err(store_err)?,
        StoreMode::Private => None,
    };
    let mut revision = loaded.as_ref().map(|s| s.revision());
    let tokens = match given {
        Some(t) => {
            // Given to the builder: a login, with a new lineage.
            let c = stamp(t.new_lineage())?;
            match mode.lock(store).map_err(store_err)? {
                Some(mut lock) => revision = Some(lock.write(Some(&c.tokens)).map_err(store_err)?),
                None => store.save(&c.tokens).map_err(store_err)?,
            }
            Some(c)
        }
        None => {
            let tokens = match loaded {
                Some(stored) => stored.into_tokens(),
                None => store.load().map_err(store_err)?,
            };
            tokens.map(stamp).transpose()?
        }
    };
    Ok((tokens, revision))
}

impl fmt::Debug for AuthClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClientBuilder")
            .field("base_url", &strip_userinfo(&self.base_url))
            .field("has_refresher", &self.refresher.is_some())
            .field("tokens", &self.tokens)
            .field("refresh_skew", &self.settings.skew)
            .field("refresh_timeout", &self.settings.refresh_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread waiting for another thread's refresh never gives up while the leader is
    /// still inside its own bounds, and a process waiting for the store's lock outlasts the
    /// longest refresh another process makes while holding it.
    #[test]
    fn default_waits_outlast_the_longest_refresh() {
        let c = AuthClient::builder("https://api.example.com/")
            .build()
            .unwrap();
        let i = *c.config().limits();
        assert_eq!(i.token_call, Duration::from_secs(30));
        // 4 token calls of 30 s, 3 backoffs of at most 10 s, 2 s to save.
        assert_eq!(i.flight, Duration::from_secs(152));
        assert_eq!(i.refresh_timeout, i.flight);

        let dir = std::env::temp_dir().join(format!("tokengate-unit-{}", std::process::id()));
        let store = crate::FileStore::new(dir.join("tokens.json")).unwrap();
        let c = AuthClient::builder("https://api.example.com/")
            .store(store)
            .build()
            .unwrap();
        let f = *c.config().limits();
        // A flight holds the lock for its calls (each after a check of the lock), backoffs
        // and save: less than another process waits for it.
        assert_eq!(f.hold, Duration::from_secs(4 * (30 + 2) + 3 * 10 + 2));
        assert!(
            crate::FileStore::DEFAULT_LOCK_TIMEOUT > f.hold,
            "another process's refresh holds the lock at most {:?}",
            f.hold
        );
        assert_eq!(
            f.refresh_timeout,
            crate::FileStore::DEFAULT_LOCK_TIMEOUT + f.hold
        );
        assert_eq!(f.flight, f.refresh_timeout);
        // A user-set token timeout moves every bound with it.
        let c = AuthClient::builder("https://api.example.com/")
            .token_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(
            c.config().limits().flight,
            Duration::from_secs(4 * 5 + 3 * 10 + 2)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
