//! [`Config`]: a client's settings, fixed by `build()` and read through getters, and the
//! defaults of every setting, in one place.

use std::fmt;
use std::time::Duration;

use ureq::http::HeaderName;
use ureq::Agent;

use crate::clock::{Clock, SystemClock};
use crate::retry::{Backoff, RetryPolicy};
use crate::url::BaseUrl;

/// Default for [`AuthClientBuilder::refresh_skew`](crate::AuthClientBuilder::refresh_skew).
pub(crate) const DEFAULT_REFRESH_SKEW: Duration = Duration::from_secs(30);
/// Default for [`AuthClientBuilder::max_redirects`](crate::AuthClientBuilder::max_redirects).
pub(crate) const DEFAULT_MAX_REDIRECTS: u32 = 5;
/// Default connect timeout of both agents.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout of API requests (each phase).
pub(crate) const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(60);
/// Default whole-call timeout of token-endpoint requests.
pub(crate) const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// What writing the result of a token call may take beyond the call (an `fsync`, a round
/// trip): part of every bound that waits for a refresh.
pub(crate) const SAVE_ALLOWANCE: Duration = Duration::from_secs(2);
/// What confirming a shared store's lock before a token call may take: one round trip
/// (`RedisStore`'s I/O timeout is 2 s by default; a `FileStore` lock cannot lapse).
pub(crate) const LOCK_CHECK_ALLOWANCE: Duration = Duration::from_secs(2);

/// The bounds of a refresh, all derived from the token agent's timeout, the retry policy and
/// the store's lock wait (see [`Limits::new`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How long a thread waits for another thread's refresh.
    pub(crate) refresh_timeout: Duration,
    /// The longest one token call can take (the token agent's timeout).
    pub(crate) token_call: Duration,
    /// The longest a whole refresh can take: the store's lock wait, then `hold`.
    pub(crate) flight: Duration,
    /// The longest a refresh may hold a shared store's lock: its token calls (each after a
    /// check of the lock), the backoffs between them and the save. Counted from when it got
    /// the lock; a flight that holds it longer (a hung custom refresher) has it taken away.
    /// With default settings 160 s, below the 180 s another process waits for the lock.
    pub(crate) hold: Duration,
}

impl Limits {
    /// The bounds for token calls of at most `token_call`, retried per `retry`, on a store
    /// whose lock wait is `lock_wait` (`shared`: each token call is preceded by a check of
    /// the store's lock). `refresh_timeout` defaults to the whole flight, so a waiter never
    /// gives up on a leader still inside its own bounds.
    pub(crate) fn new(
        token_call: Duration,
        retry: &RetryPolicy,
        lock_wait: Duration,
        shared: bool,
        refresh_timeout: Option<Duration>,
    ) -> Limits {
        let retries = retry.retries();
        let per_call = if shared {
            token_call.saturating_add(LOCK_CHECK_ALLOWANCE)
        } else {
            token_call
        };
        let hold = per_call
            .saturating_mul(retries + 1)
            .saturating_add(retry.max_delay_value().saturating_mul(retries))
            .saturating_add(SAVE_ALLOWANCE);
        let flight = lock_wait.saturating_add(hold);
        Limits {
            refresh_timeout: refresh_timeout.unwrap_or(flight),
            token_call,
            flight,
            hold,
        }
    }

    /// How long the last handle's drop (or `close()`) waits for a refresh on the wire: one
    /// token call and the save. A flight still checking its store's lock when the client
    /// closes makes no call after the check (it re-checks `closing`), so the wait never
    /// covers a call that starts after it; should the check itself outlast this bound (a
    /// `RedisStore` on an unreachable Redis), `close()` returns at the bound all the same and
    /// takes the lock from that flight.
    pub(crate) fn closing(&self) -> Duration {
        self.token_call.saturating_add(SAVE_ALLOWANCE)
    }
}

/// Every setting the builder's methods set, each with its default (see [`Settings::default`]).
/// The builder holds the one copy while the client is built; `build()` checks it and moves it
/// whole into the [`Config`].
pub(crate) struct Settings {
    /// Whether a 4xx/5xx final response is an error.
    pub(crate) status_as_error: bool,
    /// The retry policy and what sleeps between retries.
    pub(crate) backoff: Backoff,
    /// The most redirects followed in one call.
    pub(crate) max_redirects: u32,
    /// Headers dropped (besides Authorization, Cookie, Proxy-Authorization) whenever a
    /// redirect changes origin.
    pub(crate) sensitive_headers: Vec<HeaderName>,
    /// Whether paths may resolve to another origin.
    pub(crate) allow_other_origins: bool,
    /// Plain http allowed to non-loopback hosts (checked by `build()`).
    pub(crate) allow_insecure_http: bool,
    /// The clock tokens expire by.
    pub(crate) clock: Box<dyn Clock>,
    /// How long before expiry tokens are refreshed (clamped per token, see `Current::new`).
    pub(crate) skew: Duration,
    /// How long a thread waits for another's refresh; `None`: the whole flight (see
    /// [`Limits::new`]).
    pub(crate) refresh_timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            status_as_error: true,
            backoff: Backoff::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            sensitive_headers: Vec::new(),
            allow_other_origins: false,
            allow_insecure_http: false,
            clock: Box::new(SystemClock),
            skew: DEFAULT_REFRESH_SKEW,
            refresh_timeout: None,
        }
    }
}

/// A client's settings as `build()` checked them, with what it derived from them (the base
/// URL, the API agent, the bounds of a refresh). Immutable; shared (through an `Arc`) by the
/// handles and the session. Read through its getters.
pub(crate) struct Config {
    settings: Settings,
    base: BaseUrl,
    api: Agent,
    /// `api` already has the settings tokengate needs (no per-request override).
    api_configured: bool,
    limits: Limits,
}

impl Config {
    /// The settings, completed by what `build()` derived from them: the base URL, the API
    /// agent (`api_configured`: it needs no per-request override) and the bounds of a refresh.
    pub(crate) fn new(
        settings: Settings,
        base: BaseUrl,
        (api, api_configured): (Agent, bool),
        limits: Limits,
    ) -> Config {
        Config {
            settings,
            base,
            api,
            api_configured,
            limits,
        }
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &BaseUrl {
        &self.base
    }

    /// The API agent, and whether it already has the settings tokengate needs.
    pub(crate) fn api(&self) -> (&Agent, bool) {
        (&self.api, self.api_configured)
    }

    /// Whether a 4xx/5xx final response is an error. Defaults to true.
    pub(crate) fn status_as_error(&self) -> bool {
        self.settings.status_as_error
    }

    /// The retry policy (API requests and token calls). Defaults to [`RetryPolicy::default`].
    pub(crate) fn retry(&self) -> &RetryPolicy {
        self.settings.backoff.policy()
    }

    /// The waits between retries (see [`Backoff::wait`]).
    pub(crate) fn backoff(&self) -> &Backoff {
        &self.settings.backoff
    }

    /// The most redirects followed. Defaults to [`DEFAULT_MAX_REDIRECTS`].
    pub(crate) fn max_redirects(&self) -> u32 {
        self.settings.max_redirects
    }

    /// Headers dropped with the credentials when a redirect changes origin. Defaults to none.
    pub(crate) fn sensitive_headers(&self) -> &[HeaderName] {
        &self.settings.sensitive_headers
    }

    /// Whether paths may resolve to another origin. Defaults to false.
    pub(crate) fn allow_other_origins(&self) -> bool {
        self.settings.allow_other_origins
    }

    /// The clock. Defaults to the system clock.
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.settings.clock
    }

    /// How long before expiry tokens are refreshed. Defaults to [`DEFAULT_REFRESH_SKEW`].
    pub(crate) fn skew(&self) -> Duration {
        self.settings.skew
    }

    /// The bounds of a refresh.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("Config")
            .field("base_url", &self.base.as_str())
            .field("status_as_error", &s.status_as_error)
            .field("retry", s.backoff.policy())
            .field("max_redirects", &s.max_redirects)
            .field("allow_other_origins", &s.allow_other_origins)
            .field("allow_insecure_http", &s.allow_insecure_http)
            .field("skew", &s.skew)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
