//! [`TestServer`], its builder and its clients: the kit's public front.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clients::{TestClient, CLIENT_ID, CLIENT_SECRET, PUBLIC_CLIENT_ID};
use super::endpoints;
use super::error::TestServerError;
use super::faults::{Fault, Queue};
use super::journal::{
    ApiCall, Counters, DeviceAuthorizationCall, Journal, RevocationCall, TokenCall,
};
use super::rules::{DeviceState, Rules};
use super::shared::{Config, Shared, State};
use crate::http_server::Listener;
use crate::login::AuthServer;
use crate::tokens::Tokens;

/// Builds a [`TestServer`]; every setting has a default.
#[derive(Debug)]
#[must_use]
pub struct TestServerBuilder {
    lifetime: Duration,
    device_lifetime: Duration,
    config: Config,
}

impl TestServerBuilder {
    /// Sets how long access tokens live, enforced by the API and announced as `expires_in`.
    /// Defaults to one hour. A whole number of seconds is announced as an integer, as servers
    /// do; a lifetime with a fraction of a second is announced as a JSON fraction
    /// (`"expires_in": 0.4`), which tokengate reads but RFC 6749 does not define.
    pub fn access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets how long the token endpoint takes to answer each call, *after* it applied the
    /// grant: a refresh rotates when the call arrives and is answered `delay` later, as on a
    /// slow real server (a client that stops listening meanwhile has lost the new tokens).
    /// Defaults to none.
    pub fn token_delay(mut self, delay: Duration) -> Self {
        self.config.token_delay = delay;
        self
    }

    /// Adds a client the server knows. Defaults to [`CLIENT_ID`] (confidential, secret
    /// [`CLIENT_SECRET`]) and [`PUBLIC_CLIENT_ID`] (public); naming any client replaces both.
    pub fn client(mut self, client: TestClient) -> Self {
        self.config.clients.push(client);
        self
    }

    /// Sets the `interval` (seconds) of device authorization answers; `None` leaves it out
    /// (clients then wait 5 s, RFC 8628 §3.2). Defaults to `Some(5)`. The server does not
    /// answer `slow_down` to fast polls by itself: script it with [`Fault::SlowDown`].
    pub fn device_interval(mut self, interval: Option<u64>) -> Self {
        self.config.device_interval = interval;
        self
    }

    /// Sets how long device codes live (`expires_in` of the device authorization answer).
    /// Defaults to 10 minutes; [`TestServer::expire`] ends one at once.
    pub fn device_code_lifetime(mut self, lifetime: Duration) -> Self {
        self.device_lifetime = lifetime;
        self
    }

    /// Makes every API path under `path_prefix` (`/api/admin` covers itself and
    /// `/api/admin/…`, not `/api/administrator`) need `scope`: a live token without it is
    /// answered 403 `insufficient_scope` (RFC 6750 §3.1). A path under several prefixes needs
    /// every one's scope. Defaults to none.
    pub fn require_scope(
        mut self,
        path_prefix: impl Into<String>,
        scope: impl Into<String>,
    ) -> Self {
        self.config.scopes.push((path_prefix.into(), scope.into()));
        self
    }

    /// Starts the server on 127.0.0.1, on a port the OS picks.
    ///
    /// # Errors
    /// The `io::Error` of binding the port or spawning the accept thread.
    pub fn start(mut self) -> std::io::Result<TestServer> {
        if self.config.clients.is_empty() {
            self.config.clients = vec![
                TestClient::confidential(CLIENT_ID, CLIENT_SECRET),
                TestClient::public(PUBLIC_CLIENT_ID),
            ];
        }
        let state = State {
            rules: Rules::new(self.lifetime, self.device_lifetime),
            journal: Journal::default(),
            token_faults: Queue::default(),
            revocation_faults: Queue::default(),
            api_faults: Queue::default(),
            denials: 0,
        };
        let (shared, listener) = endpoints::serve(self.config, state)?;
        Ok(TestServer {
            shared,
            _listener: listener,
        })
    }
}

/// A runtime-free OAuth2 authorization server and protected API on loopback, for tests.
///
/// See the [module documentation](super) for the endpoints, the rules it follows and an
/// example. Cloning is not offered: share it by reference (it is `Sync`) or in an `Arc`.
/// Stops when dropped: its threads are joined and its port is closed before `drop` returns
/// (see "Stopping" in the module documentation for the one exception).
pub struct TestServer {
    shared: Arc<Shared>,
    /// Never read: dropping it stops the server (threads joined, port closed).
    _listener: Listener,
}

impl TestServer {
    /// Starts a server with every default: tokens live an hour, clients [`CLIENT_ID`] and
    /// [`PUBLIC_CLIENT_ID`], no delay, no fault.
    ///
    /// # Panics
    /// If no port on 127.0.0.1 can be bound or no thread spawned (as test kits do; use
    /// [`TestServer::builder`] and its `start` for the `io::Error`).
    pub fn start() -> TestServer {
        match TestServer::builder().start() {
            Ok(server) => server,
            Err(e) => panic!("tokengate::testing: cannot start a server on 127.0.0.1: {e}"),
        }
    }

    /// A builder with every default.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            lifetime: Duration::from_secs(3600),
            device_lifetime: Duration::from_secs(600),
            config: Config {
                token_delay: Duration::ZERO,
                clients: Vec::new(),
                device_interval: Some(5),
                scopes: Vec::new(),
            },
        }
    }

    /// `http://127.0.0.1:PORT`: the issuer, and the root of every endpoint below.
    pub fn base_url(&self) -> &str {
        &self.shared.base
    }

    /// The issuer (RFC 8414): the same as [`base_url`](Self::base_url). Ready for
    /// [`AuthServer::discover`] and [`Discovery`](crate::login::Discovery).
    pub fn issuer(&self) -> &str {
        &self.shared.base
    }

    /// The OpenID Connect discovery document's URL (`/.well-known/openid-configuration`);
    /// the RFC 8414 one (`/.well-known/oauth-authorization-server`) is served too.
    pub fn discovery_url(&self) -> String {
        self.url("/.well-known/openid-configuration")
    }

    /// The token endpoint: `/oauth/token`.
    pub fn token_url(&self) -> String {
        self.url("/oauth/token")
    }

    /// The device authorization endpoint (RFC 8628): `/oauth/device`.
    pub fn device_authorization_url(&self) -> String {
        self.url("/oauth/device")
    }

    /// The revocation endpoint (RFC 7009): `/oauth/revoke`.
    pub fn revocation_url(&self) -> String {
        self.url("/oauth/revoke")
    }

    /// The authorization endpoint (RFC 6749 §4.1, PKCE S256 required): `/oauth/authorize`.
    pub fn authorization_url(&self) -> String {
        self.url("/oauth/authorize")
    }

    /// The protected API's root: `/api/`. Every path under it answers a live access token.
    pub fn api_url(&self) -> String {
        self.url("/api/")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.base)
    }

    /// This server as the confidential client [`CLIENT_ID`] sees it: token, authorization,
    /// device authorization and revocation endpoints, client id and secret (sent by HTTP Basic).
    /// `auth_server().refresh_grant()` is the refresher of a client of this server.
    pub fn auth_server(&self) -> AuthServer {
        AuthServer::new(self.token_url())
            .authorization_url(self.authorization_url())
            .device_authorization_url(self.device_authorization_url())
            .revocation_url(self.revocation_url())
            .client_id(CLIENT_ID)
            .client_secret(CLIENT_SECRET)
    }

    /// A user logs in as [`CLIENT_ID`]: a new login (its own refresh-token family) with an
    /// access token `at-N`, a refresh token `rt-N` and `expires_in` set, as the tokens a
    /// login flow would have returned. Journaled as no call.
    pub fn login(&self) -> Tokens {
        self.login_as(CLIENT_ID, None)
    }

    /// [`login`](Self::login) for `client_id` (any id: the server does not check it here),
    /// with `scope` granted (space-separated) if given.
    pub fn login_as(&self, client_id: &str, scope: Option<&str>) -> Tokens {
        let mut s = self.shared.state.lock();
        let issued = s.rules.login(client_id, scope.map(str::to_owned));
        endpoints::tokens_of(&issued, s.rules.lifetime())
    }

    /// Presents `refresh_token` as the client it was issued to would, without HTTP: the same
    /// rotation and reuse detection as the token endpoint, journaled as a call. For a test's
    /// "another process refreshed meanwhile" (the client's refresh token is then rotated out).
    ///
    /// # Errors
    /// [`TestServerError::Refused`] with the OAuth error the endpoint would have answered.
    pub fn refresh(&self, refresh_token: &str) -> Result<Tokens, TestServerError> {
        endpoints::refresh_directly(&self.shared, refresh_token)
    }

    /// The user approves the device login showing `user_code`: the next poll gets tokens.
    ///
    /// # Errors
    /// [`TestServerError::UnknownUserCode`] if no pending device login shows it.
    pub fn approve(&self, user_code: &str) -> Result<(), TestServerError> {
        self.decide(user_code, DeviceState::Approved)
    }

    /// The user denies the device login showing `user_code`: the next poll gets
    /// `access_denied`.
    ///
    /// # Errors
    /// [`TestServerError::UnknownUserCode`] if no pending device login shows it.
    pub fn deny(&self, user_code: &str) -> Result<(), TestServerError> {
        self.decide(user_code, DeviceState::Denied)
    }

    /// The device login showing `user_code` expires now: the next poll gets `expired_token`.
    ///
    /// # Errors
    /// [`TestServerError::UnknownUserCode`] if no pending device login shows it.
    pub fn expire(&self, user_code: &str) -> Result<(), TestServerError> {
        self.decide(user_code, DeviceState::Expired)
    }

    fn decide(&self, user_code: &str, to: DeviceState) -> Result<(), TestServerError> {
        if self.shared.state.lock().rules.decide(user_code, to) {
            Ok(())
        } else {
            Err(TestServerError::UnknownUserCode)
        }
    }

    /// The browser's step of an authorization-code login, in one call: the user, shown
    /// `authorize_url` (this server's [`authorization_url`](Self::authorization_url) with the
    /// client's query), approves; returns the URL the browser is redirected to
    /// (`redirect_uri?code=…&state=…`, or `?error=access_denied` after
    /// [`deny_next_authorizations`](Self::deny_next_authorizations)). Nothing is sent to the
    /// redirect URI: see [`open_in_browser`](Self::open_in_browser).
    ///
    /// The request must name a known client, a loopback `http` (RFC 8252 §7.3) or an `https`
    /// redirect URI, `response_type=code` and a PKCE S256 `code_challenge`. An unknown client,
    /// a bad redirect URI or a parameter sent twice is an error (RFC 6749 §4.1.2.1: never
    /// redirected); another `response_type` is redirected as `?error=unsupported_response_type`,
    /// a missing or malformed challenge as `?error=invalid_request`.
    ///
    /// # Errors
    /// [`TestServerError::BadAuthorizationRequest`].
    pub fn authorize(&self, authorize_url: &str) -> Result<String, TestServerError> {
        endpoints::authorize(&self.shared, authorize_url)
    }

    /// [`authorize`](Self::authorize), then follows the redirect as a browser does: a GET of
    /// the redirect URL (the client's loopback listener), with no proxy. Returns its status.
    ///
    /// # Errors
    /// [`TestServerError::BadAuthorizationRequest`], or [`TestServerError::Redirect`] if the
    /// redirect URI did not answer.
    pub fn open_in_browser(&self, authorize_url: &str) -> Result<u16, TestServerError> {
        let redirect = self.authorize(authorize_url)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        match agent.get(&redirect).call() {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(TestServerError::Redirect(e.to_string())),
        }
    }

    /// The user denies the next `n` authorizations (browser logins).
    pub fn deny_next_authorizations(&self, n: usize) {
        self.shared.state.lock().denials += n;
    }

    /// The next `n` calls of the token endpoint (any grant, device polls included) get
    /// `fault`, after any already queued.
    pub fn fault_next_token_calls(&self, n: usize, fault: Fault) {
        self.shared.state.lock().token_faults.push(n, &fault);
    }

    /// The next `n` calls of the revocation endpoint get `fault`, after any already queued.
    pub fn fault_next_revocations(&self, n: usize, fault: Fault) {
        self.shared.state.lock().revocation_faults.push(n, &fault);
    }

    /// The next `n` calls of the API get `fault`, after any already queued
    /// (`Fault::InvalidGrant` and the device faults make no sense there: they answer 400).
    pub fn fault_next_api_calls(&self, n: usize, fault: Fault) {
        self.shared.state.lock().api_faults.push(n, &fault);
    }

    /// Forgets every queued fault and denial.
    pub fn clear_faults(&self) {
        let mut s = self.shared.state.lock();
        s.token_faults.clear();
        s.revocation_faults.clear();
        s.api_faults.clear();
        s.denials = 0;
    }

    /// Revokes every live access token, server-side: the next API call with any of them is
    /// answered 401 `invalid_token`. Refresh tokens keep working.
    pub fn revoke_access_tokens(&self) {
        self.shared.state.lock().rules.revoke_access_tokens();
    }

    /// Revokes `token` as the revocation endpoint would (RFC 7009): a refresh token (current
    /// or rotated) ends its whole login, an access token itself. Returns whether the server
    /// knew it. Journaled as no call.
    pub fn revoke(&self, token: &str) -> bool {
        self.shared.state.lock().rules.revoke(token)
    }

    /// Ends every login: no token this server issued works any more.
    pub fn revoke_all(&self) {
        self.shared.state.lock().rules.revoke_all();
    }

    /// Whether `token` works now (as RFC 7662 introspection's `active`): a live access token
    /// (issued, not expired, not revoked), or the current refresh token of a login that was
    /// not revoked (not rotated out).
    pub fn is_active(&self, token: &str) -> bool {
        self.shared
            .state
            .lock()
            .rules
            .is_active(token, Instant::now())
    }

    /// Every call of the token endpoint so far, in arrival order (and those of
    /// [`refresh`](Self::refresh)).
    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.shared.state.lock().journal.token_calls.clone()
    }

    /// Every call of the API so far, in arrival order.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.shared.state.lock().journal.api_calls.clone()
    }

    /// Every call of the revocation endpoint so far, in arrival order.
    pub fn revocation_calls(&self) -> Vec<RevocationCall> {
        self.shared.state.lock().journal.revocations.clone()
    }

    /// Every counter at once, taken under one lock. Also served as JSON at
    /// [`counters_url`](Self::counters_url).
    pub fn counters(&self) -> Counters {
        let s = self.shared.state.lock();
        s.journal.counters(s.rules.generations())
    }

    /// `GET` this for [`counters`](Self::counters) as JSON (`/testing/counters`), from a
    /// process that cannot call the server's methods (a test's child process).
    pub fn counters_url(&self) -> String {
        self.url("/testing/counters")
    }

    /// Every call of the device authorization endpoint so far, in arrival order.
    pub fn device_authorizations(&self) -> Vec<DeviceAuthorizationCall> {
        self.shared
            .state
            .lock()
            .journal
            .device_authorizations
            .clone()
    }

    /// Calls of the refresh_token grant so far, whatever their outcome (faulted ones too).
    pub fn refreshes(&self) -> u64 {
        self.counters().refreshes
    }

    /// Refresh calls that presented a rotated refresh token (each revoked its login).
    pub fn reuse_detected(&self) -> u64 {
        self.counters().reuse_detected
    }

    /// Refresh calls that presented a refresh token an earlier call had presented (only calls
    /// the grant looked at: see [`TokenCall::presented_twice`]).
    pub fn presented_twice(&self) -> u64 {
        self.counters().presented_twice
    }

    /// Calls of the token endpoint so far (every grant and outcome), and of
    /// [`refresh`](Self::refresh).
    pub fn token_requests(&self) -> u64 {
        self.counters().token_requests
    }

    /// Calls of the API so far.
    pub fn api_requests(&self) -> u64 {
        self.counters().api_requests
    }

    /// API calls answered 401.
    pub fn api_401s(&self) -> u64 {
        self.counters().api_401s
    }

    /// API calls answered 403 (`insufficient_scope`, or asked for at `/api/status/403`).
    pub fn api_403s(&self) -> u64 {
        self.counters().api_403s
    }

    /// Calls of the revocation endpoint so far.
    pub fn revocations(&self) -> u64 {
        self.counters().revocations
    }

    /// Generations issued so far: the N of the last `at-N` (0 before the first).
    pub fn issued(&self) -> u64 {
        self.counters().issued
    }

    /// When generation N (`at-N`) was issued, on this process's monotonic clock.
    pub fn issued_at(&self, generation: u64) -> Option<Instant> {
        self.shared.state.lock().rules.issued_at(generation)
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.state.lock();
        f.debug_struct("TestServer")
            .field("base_url", &self.shared.base)
            .field("issued", &s.rules.generations())
            .field("token_calls", &s.journal.token_calls.len())
            .field("api_calls", &s.journal.api_calls.len())
            .finish_non_exhaustive()
    }
}
