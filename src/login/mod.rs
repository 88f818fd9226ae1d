//! Logging in and out at an OAuth2 authorization server.
//!
//! [`AuthServer`] is the one place where the client's identity (id, secret, authentication
//! method) and the server's endpoints are set; every flow is built from it:
//!
//! | flow | built with | what it does |
//! |---|---|---|
//! | [`OAuth2Refresh`] | [`AuthServer::refresh_grant`] | the refresh_token grant (RFC 6749 §6) an [`AuthClient`](crate::AuthClient) refreshes with, and revocation (RFC 7009) on [`AuthClient::logout`](crate::AuthClient::logout) |
//! | [`ClientCredentials`] | [`AuthServer::client_credentials`] | the client_credentials grant (RFC 6749 §4.4), for machine clients |
//! | [`DeviceFlow`] | [`AuthServer::device_flow`] | a login from a terminal (RFC 8628) |
//! | [`InteractiveLogin`] | [`AuthServer::interactive_login`] | a tool's login in one call: the browser, the device flow or a paste, picked from where it runs |
//! | [`BrowserFlow`] | [`AuthServer::browser_flow`] | a login through the browser: authorization code + PKCE over a loopback listener, with a paste fallback (RFC 6749 §4.1, RFC 7636, RFC 8252) |
//!
//! [`Discovery`] finds the endpoints (RFC 8414, OpenID Connect Discovery 1.0);
//! [`AuthServer::discover`] does it in one call.

mod browser;
mod device;
mod device_wait;
mod discovery;
pub(crate) mod error;
mod interactive;

use std::fmt;

use ureq::Agent;

pub use crate::refresh::REVOCATION_TIMEOUT;
#[cfg(feature = "testing")]
pub(crate) use browser::challenge_s256;
pub use browser::{BrowserAuthorization, BrowserFlow, DEFAULT_BROWSER_TIMEOUT};
pub use device::{DeviceAuthorization, DeviceFlow};
pub use device_wait::{DeviceCancel, DeviceProgress};
pub use discovery::{Discovery, ServerMetadata};
pub use error::{BrowserError, DeviceError, DiscoveryError, RevocationError};
pub use interactive::{InteractiveLogin, LoginMethod};

use crate::error::Error;
use crate::refresh::{Client, ClientAuth, ClientCredentials, OAuth2Refresh, Params};
use crate::tokens::ClientSecret;
use crate::url::GivenUrl;

/// [`AuthServer::device_flow`]'s error without a device authorization endpoint.
pub(crate) const NO_DEVICE_ENDPOINT: &str =
    "the authorization server has no device authorization endpoint: \
     set AuthServer::device_authorization_url, or discover an issuer that publishes one";

/// [`AuthServer::browser_flow`]'s error without an authorization endpoint.
pub(crate) const NO_AUTHORIZATION_ENDPOINT: &str =
    "the authorization server has no (usable) authorization endpoint: set \
     AuthServer::authorization_url, or discover an issuer that publishes one (discovery leaves \
     out one that is not a usable https URL)";

/// An OAuth2 authorization server as this client knows it: the client's identity and
/// authentication, and the server's endpoints. Set once, then build the flows from it
/// (as oauth2-rs does with its `Client`):
///
/// ```no_run
/// use tokengate::{AuthClient, AuthServer, ClientAuth};
///
/// # fn main() -> Result<(), tokengate::Error> {
/// let server = AuthServer::new("https://auth.example.com/oauth/token")
///     .client_id("my-app")
///     .client_secret("s3cret")                 // HTTP Basic by default once a secret is set
///     .auth_method(ClientAuth::Post)           // … or in the form body
///     .revocation_url("https://auth.example.com/oauth/revoke");
/// // Or everything the issuer publishes: AuthServer::discover("https://auth.example.com")?
///
/// let client = AuthClient::builder("https://api.example.com/v1/")
///     .refresher(server.refresh_grant())       // refreshes, and revokes on logout
///     .build()?;
/// let machine = server.client_credentials().scope("reports:read");
/// # let _ = (client, machine); Ok(()) }
/// ```
///
/// Endpoint URLs are checked where they are used: the token and revocation endpoints of the
/// grants by [`AuthClientBuilder::build`](crate::AuthClientBuilder::build), the device flow's
/// by [`DeviceFlow::start`]. `Debug` hides the client secret.
#[derive(Clone)]
pub struct AuthServer {
    token_url: GivenUrl,
    authorization_url: Option<GivenUrl>,
    device_authorization_url: Option<GivenUrl>,
    revocation_url: Option<GivenUrl>,
    client: Client,
    /// Added to every token and device authorization request.
    params: Params,
    /// For the flows run outside an `AuthClient` (the device flow); `None`: `login_agent()`.
    agent: Option<Agent>,
    allow_insecure_http: bool,
}

impl AuthServer {
    /// The authorization server whose token endpoint is `token_url`, with no other endpoint
    /// and no client identity yet.
    pub fn new(token_url: impl Into<String>) -> Self {
        AuthServer {
            token_url: GivenUrl::new(token_url),
            authorization_url: None,
            device_authorization_url: None,
            revocation_url: None,
            client: Client::default(),
            params: Params::default(),
            agent: None,
            allow_insecure_http: false,
        }
    }

    /// The authorization server `metadata` describes: its token endpoint, and its
    /// authorization, device authorization and revocation endpoints if it has them.
    pub fn from_metadata(metadata: &ServerMetadata) -> Self {
        let endpoint = |url: Option<&str>| url.map(GivenUrl::new);
        AuthServer {
            authorization_url: endpoint(metadata.authorization_endpoint()),
            device_authorization_url: endpoint(metadata.device_authorization_endpoint()),
            revocation_url: endpoint(metadata.revocation_endpoint()),
            ..AuthServer::new(metadata.token_endpoint())
        }
    }

    /// The authorization server `issuer` publishes, in one call: [`Discovery::fetch`] with its
    /// defaults, then [`AuthServer::from_metadata`]. Use [`Discovery`] for another agent, or
    /// for plain `http://` to a host other than loopback (loopback is allowed here).
    ///
    /// # Errors
    /// [`Error::Discovery`].
    pub fn discover(issuer: impl Into<String>) -> Result<Self, Error> {
        Ok(Self::from_metadata(&Discovery::new(issuer).fetch()?))
    }

    /// Sets the client id. Defaults to none. Sent in the form unless the client
    /// authenticates with [`ClientAuth::Basic`].
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client.id = Some(id.into());
        self
    }

    /// Sets the client secret. Defaults to none (a public client, as CLI tools usually are);
    /// with one, authentication defaults to [`ClientAuth::Basic`]. Kept as a [`ClientSecret`]:
    /// never printed.
    #[must_use]
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client.secret = Some(ClientSecret::new(secret));
        self
    }

    /// Sets how the client authenticates to every endpoint (RFC 6749 §2.3). Defaults to
    /// [`ClientAuth::Basic`] with a client secret, [`ClientAuth::None`] without.
    #[must_use]
    pub fn auth_method(mut self, method: ClientAuth) -> Self {
        self.client.method = Some(method);
        self
    }

    /// Adds a parameter to every request to the token endpoint (both grants, the device
    /// flow's polls) and to the device authorization request: `audience` for Auth0,
    /// `resource` for Microsoft Entra v1 or RFC 8707 resource indicators (repeat it for
    /// several), any other name a server wants. Repeatable, also with the same name; the
    /// flows can add their own (`extra_param` on each). Defaults to none. Not sent to the
    /// revocation endpoint. `Debug` shows the names only.
    ///
    /// A name that tokengate sends itself, in any case (`grant_type`, `refresh_token`,
    /// `device_code`, `code`, `code_verifier`, `redirect_uri`, `client_id`, `client_secret`,
    /// `client_assertion`, `client_assertion_type`, `scope`: set the scope on the flow;
    /// the browser login's `response_type`, `state`, `code_challenge`,
    /// `code_challenge_method`), an
    /// empty one, or one with a space or control character, is refused with
    /// [`Error::Config`] by [`AuthClientBuilder::build`](crate::AuthClientBuilder::build) and
    /// [`DeviceFlow::start`].
    ///
    /// The values are parameters, not credentials: they are sent as given, and a server's
    /// error may quote them (a client secret belongs in [`AuthServer::client_secret`], which
    /// is never printed).
    ///
    /// ```
    /// use tokengate::AuthServer;
    /// let auth0 = AuthServer::new("https://tenant.eu.auth0.com/oauth/token")
    ///     .client_id("my-cli")
    ///     .extra_param("audience", "https://api.example.com/");
    /// let rfc8707 = AuthServer::new("https://as.example.com/token")
    ///     .extra_param("resource", "https://api.example.com/")
    ///     .extra_param("resource", "https://files.example.com/");
    /// # let _ = (auth0, rfc8707);
    /// ```
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push(name.into(), value.into());
        self
    }

    /// Sets the authorization endpoint (RFC 6749 §3.1), where
    /// [`AuthServer::browser_flow`] sends the user's browser. Defaults to none, or the one in
    /// the metadata ([`AuthServer::from_metadata`], [`AuthServer::discover`]).
    #[must_use]
    pub fn authorization_url(mut self, url: impl Into<String>) -> Self {
        self.authorization_url = Some(GivenUrl::new(url));
        self
    }

    /// Sets the device authorization endpoint (RFC 8628 §3.1), which
    /// [`AuthServer::device_flow`] needs. Defaults to none, or the one in the metadata
    /// ([`AuthServer::from_metadata`], [`AuthServer::discover`]).
    #[must_use]
    pub fn device_authorization_url(mut self, url: impl Into<String>) -> Self {
        self.device_authorization_url = Some(GivenUrl::new(url));
        self
    }

    /// Sets the revocation endpoint (RFC 7009) where
    /// [`AuthClient::logout`](crate::AuthClient::logout) revokes the refresh token, with a
    /// [refresh grant](AuthServer::refresh_grant). Defaults to none (logout is then local
    /// only), or the one in the metadata ([`AuthServer::from_metadata`],
    /// [`AuthServer::discover`]).
    #[must_use]
    pub fn revocation_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_url = Some(GivenUrl::new(url));
        self
    }

    /// Sets the agent for the flows that run outside an [`AuthClient`](crate::AuthClient):
    /// the device flow's two endpoints. Defaults to one like the client's default token
    /// agent: 30 s for each whole call, 10 s to connect, proxy from the environment. (The
    /// grants run on the client's token agent; discovery on [`Discovery::agent`].)
    #[must_use]
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Allows plain `http://` to hosts other than loopback for the device flow's endpoints.
    /// Defaults to false. (The grants' endpoints follow
    /// [`AuthClientBuilder::allow_insecure_http`](crate::AuthClientBuilder::allow_insecure_http),
    /// discovery [`Discovery::allow_insecure_http`].)
    #[must_use]
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The refresh_token grant (RFC 6749 §6) at the token endpoint, for
    /// [`AuthClientBuilder::refresher`](crate::AuthClientBuilder::refresher). With a
    /// revocation endpoint, [`AuthClient::logout`](crate::AuthClient::logout) revokes the
    /// refresh token there.
    pub fn refresh_grant(&self) -> OAuth2Refresh {
        OAuth2Refresh::from_server(
            self.token_url.clone(),
            self.revocation_url.clone(),
            self.client.clone(),
            self.params.clone(),
        )
    }

    /// The client_credentials grant (RFC 6749 §4.4) at the token endpoint, for machine
    /// clients: set a [client id](AuthServer::client_id) and
    /// [secret](AuthServer::client_secret).
    pub fn client_credentials(&self) -> ClientCredentials {
        ClientCredentials::from_server(
            self.token_url.clone(),
            self.client.clone(),
            self.params.clone(),
        )
    }

    /// The device authorization grant (RFC 8628): a login from a terminal, on the device
    /// authorization and token endpoints, with this server's [agent](AuthServer::agent).
    ///
    /// # Errors
    /// [`Error::Config`] when the server has no device authorization endpoint (none set with
    /// [`AuthServer::device_authorization_url`], none in the metadata it was built from):
    /// "the authorization server has no device authorization endpoint: set
    /// AuthServer::device_authorization_url, or discover an issuer that publishes one".
    /// The URL itself is checked by [`DeviceFlow::start`].
    pub fn device_flow(&self) -> Result<DeviceFlow, Error> {
        let device_url = self
            .device_authorization_url
            .clone()
            .ok_or(Error::Config(NO_DEVICE_ENDPOINT))?;
        Ok(DeviceFlow::from_server(device_url, self))
    }

    /// The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636) through the user's
    /// browser and a loopback listener (RFC 8252): a login for tools on a machine with a
    /// browser, with a paste fallback for the others. See [`BrowserFlow`].
    ///
    /// # Errors
    /// [`Error::Config`] when the server has no authorization endpoint (none set with
    /// [`AuthServer::authorization_url`], none in the metadata it was built from). The URL
    /// itself is checked by [`BrowserFlow::start`].
    pub fn browser_flow(&self) -> Result<BrowserFlow, Error> {
        let url = self
            .authorization_url
            .clone()
            .ok_or(Error::Config(NO_AUTHORIZATION_ENDPOINT))?;
        Ok(BrowserFlow::from_server(url, self))
    }

    /// A tool's interactive login in one call that picks the way: the browser where one can
    /// be opened, the device flow on a headless machine (over SSH, no display) when the
    /// server offers it, a pasted redirect otherwise; or the [`LoginMethod`] forced. See
    /// [`InteractiveLogin`].
    pub fn interactive_login(&self) -> InteractiveLogin {
        InteractiveLogin::new(self)
    }
}

impl fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthServer")
            .field("token_url", &self.token_url)
            .field("authorization_url", &self.authorization_url)
            .field("device_authorization_url", &self.device_authorization_url)
            .field("revocation_url", &self.revocation_url)
            .field("client", &self.client)
            .field("extra_params", &self.params)
            .field("custom_agent", &self.agent.is_some())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}
