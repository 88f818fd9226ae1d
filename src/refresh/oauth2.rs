//! RFC 6749 grants: refresh_token (§6) and client_credentials (§4.4), built by
//! [`AuthServer`](crate::AuthServer) and posted through its [`Client`].

use ureq::Agent;

use super::client::{parse, redact_echo, revoke, Client, Params};
use super::Refresh;
use crate::error::RefreshError;
use crate::login::error::RevocationError;
use crate::tokens::Tokens;
use crate::transport::TokenResponse;
use crate::url::GivenUrl;

/// The RFC 6749 §6 `refresh_token` grant, built by
/// [`AuthServer::refresh_grant`](crate::AuthServer::refresh_grant) with the server's client
/// identity, token endpoint and revocation endpoint (if any).
///
/// ```
/// use tokengate::{AuthServer, ClientAuth};
/// let r = AuthServer::new("https://auth.example.com/oauth/token")
///     .client_id("my-app")
///     .client_secret("s3cret")          // HTTP Basic by default once a secret is set
///     .auth_method(ClientAuth::Post)    // … or in the form body
///     .refresh_grant()
///     .scope("read write");
/// assert!(!format!("{r:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug)]
pub struct OAuth2Refresh {
    endpoint: TokenEndpoint,
    revocation_url: Option<GivenUrl>,
}

/// What every grant here posts to: the token endpoint, with the client's identity, the
/// scope asked for and the extra parameters.
#[derive(Clone, Debug)]
struct TokenEndpoint {
    url: GivenUrl,
    client: Client,
    scope: Option<String>,
    params: Params,
}

impl TokenEndpoint {
    fn new(url: GivenUrl, client: Client, params: Params) -> Self {
        TokenEndpoint {
            url,
            client,
            scope: None,
            params,
        }
    }

    /// Posts the grant's `form`, with the scope if one is set and the extra parameters.
    fn post<'a>(
        &'a self,
        agent: &Agent,
        mut form: Vec<(&'a str, &'a str)>,
    ) -> Result<TokenResponse, RefreshError> {
        form.extend(self.scope.as_deref().map(|s| ("scope", s)));
        self.params.add_to(&mut form);
        Ok(self
            .client
            .post_form(agent, self.url.as_str(), form, None)?)
    }
}

impl OAuth2Refresh {
    /// For [`AuthServer::refresh_grant`](crate::AuthServer::refresh_grant).
    pub(crate) fn from_server(
        url: GivenUrl,
        revocation_url: Option<GivenUrl>,
        client: Client,
        params: Params,
    ) -> Self {
        OAuth2Refresh {
            endpoint: TokenEndpoint::new(url, client, params),
            revocation_url,
        }
    }

    /// Requests this scope on refresh. Defaults to none (the server keeps the original scope).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.endpoint.scope = Some(scope.into());
        self
    }

    /// Adds a parameter to every refresh request, after the server's
    /// ([`AuthServer::extra_param`](crate::AuthServer::extra_param), which says which names are
    /// refused). Repeatable, also with the same name.
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.endpoint.params.push(name.into(), value.into());
        self
    }
}

impl Refresh for OAuth2Refresh {
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError> {
        let rt = current
            .refresh_token()
            .ok_or(RefreshError::NoRefreshToken)?;
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.secret()),
        ];
        let resp = self.endpoint.post(agent, form)?;
        let secrets = [
            rt.secret(),
            current.access_token().secret(),
            self.endpoint.client.secret_str(),
        ];
        parse(&resp, current).map_err(|e| redact_echo(e, &secrets))
    }

    fn can_refresh(&self, current: &Tokens) -> bool {
        current.refresh_token().is_some()
    }

    fn config_problem(&self) -> Option<&'static str> {
        self.endpoint.params.problem()
    }

    fn endpoint(&self) -> Option<&str> {
        Some(self.endpoint.url.as_str())
    }

    fn revoke(&self, agent: &Agent, tokens: &Tokens) -> Option<Result<(), RevocationError>> {
        let url = self.revocation_url.as_ref()?;
        let (token, hint) = match tokens.refresh_token() {
            Some(rt) => (rt.secret(), "refresh_token"),
            None => (tokens.access_token().secret(), "access_token"),
        };
        Some(revoke(
            agent,
            url.as_str(),
            &self.endpoint.client,
            token,
            hint,
        ))
    }

    fn revocation_endpoint(&self) -> Option<&str> {
        self.revocation_url.as_ref().map(|u| u.as_str())
    }
}

/// The RFC 6749 §4.4 `client_credentials` grant, for machine clients with no refresh token:
/// a token is acquired on the first request and re-acquired when it expires or draws a 401.
/// Built by [`AuthServer::client_credentials`](crate::AuthServer::client_credentials) with the
/// server's client identity and token endpoint.
///
/// ```
/// use tokengate::AuthServer;
/// let cc = AuthServer::new("https://auth.example.com/oauth/token")
///     .client_id("svc")
///     .client_secret("s3cret")          // HTTP Basic by default
///     .client_credentials()
///     .scope("reports:read");
/// # let _ = cc;
/// ```
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    endpoint: TokenEndpoint,
}

impl ClientCredentials {
    /// For [`AuthServer::client_credentials`](crate::AuthServer::client_credentials).
    pub(crate) fn from_server(url: GivenUrl, client: Client, params: Params) -> Self {
        ClientCredentials {
            endpoint: TokenEndpoint::new(url, client, params),
        }
    }

    /// Requests this scope. Defaults to none.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.endpoint.scope = Some(scope.into());
        self
    }

    /// Adds a parameter to every token request (`audience` for Auth0, `resource` for
    /// Microsoft Entra v1 or RFC 8707), after the server's
    /// ([`AuthServer::extra_param`](crate::AuthServer::extra_param), which says which names are
    /// refused). Repeatable, also with the same name.
    #[must_use]
    pub fn extra_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.endpoint.params.push(name.into(), value.into());
        self
    }
}

impl Refresh for ClientCredentials {
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError> {
        let resp = self
            .endpoint
            .post(agent, vec![("grant_type", "client_credentials")])?;
        // §4.4.3: a refresh token SHOULD NOT be included; one that is, is dropped (this grant
        // re-acquires instead of refreshing, and nothing would ever send it).
        let secret = self.endpoint.client.secret_str();
        let tokens = parse(&resp, &Tokens::new("-")).map_err(|e| redact_echo(e, &[secret]))?;
        let _ = current;
        Ok(tokens.without_refresh_token())
    }

    fn acquires_without_tokens(&self) -> bool {
        true
    }

    fn config_problem(&self) -> Option<&'static str> {
        self.endpoint.params.problem()
    }

    fn endpoint(&self) -> Option<&str> {
        Some(self.endpoint.url.as_str())
    }
}
