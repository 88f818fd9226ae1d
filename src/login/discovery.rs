//! Authorization server metadata (RFC 8414, OpenID Connect Discovery 1.0): where the token,
//! device authorization and revocation endpoints of an issuer are.
//!
//! One fetch and one validation; [`AuthServer::from_metadata`](super::AuthServer::from_metadata)
//! takes the endpoints from the result, [`AuthServer::discover`](super::AuthServer::discover)
//! does both in one call.

use std::fmt;

use ureq::http::{self, Request};
use ureq::Agent;

use super::error::DiscoveryError;
use crate::config::DEFAULT_TOKEN_TIMEOUT;
use crate::error::Error;
use crate::refresh::json_object;
use crate::transport::{self, TimeoutKind};
use crate::url::{EndpointUrl, UrlProblem};

/// Largest metadata document read, in bytes. Real ones are a few KiB.
pub(crate) const METADATA_LIMIT: u64 = 64 * 1024;

/// Longest `issuer` value quoted back in [`DiscoveryError::IssuerMismatch`].
const QUOTED_ISSUER_LIMIT: usize = 256;

/// What an authorization server says about itself: the parts tokengate uses.
///
/// Obtained with [`Discovery::fetch`]; every URL in it was checked (absolute http(s), no
/// credentials, `https` unless loopback or opted in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

impl ServerMetadata {
    /// The issuer, exactly as asked for (and as the document said).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `token_endpoint` (RFC 6749 §3.2).
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// `device_authorization_endpoint` (RFC 8628 §4), if the server has one.
    pub fn device_authorization_endpoint(&self) -> Option<&str> {
        self.device_authorization_endpoint.as_deref()
    }

    /// `revocation_endpoint` (RFC 7009, RFC 8414 §2), if the server has one.
    pub fn revocation_endpoint(&self) -> Option<&str> {
        self.revocation_endpoint.as_deref()
    }
}

/// Fetches an issuer's metadata: `{issuer}/.well-known/openid-configuration` (OpenID Connect
/// Discovery), and if that does not answer 2xx, the RFC 8414 location
/// `https://host/.well-known/oauth-authorization-server{path of the issuer}`.
///
/// The document's `issuer` must be exactly the issuer asked for (character for character: a
/// trailing `/` matters), and must name a `token_endpoint`. Redirects are not followed.
///
/// ```no_run
/// use tokengate::login::Discovery;
/// use tokengate::AuthServer;
/// # fn main() -> Result<(), tokengate::Error> {
/// let meta = Discovery::new("https://auth.example.com").fetch()?;
/// let server = AuthServer::from_metadata(&meta).client_id("my-cli");
/// let refresher = server.refresh_grant();
/// let login = server.device_flow()?;
/// # let _ = (refresher, login); Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "call fetch() to get the metadata"]
pub struct Discovery {
    issuer: String,
    agent: Option<Agent>,
    allow_insecure_http: bool,
}

impl Discovery {
    /// Discovery for `issuer` (e.g. `https://auth.example.com` or
    /// `https://login.example.com/realms/main`).
    pub fn new(issuer: impl Into<String>) -> Self {
        Discovery {
            issuer: issuer.into(),
            agent: None,
            allow_insecure_http: false,
        }
    }

    /// The agent that fetches the document. Defaults to one like the client's default token
    /// agent: 30 s for the whole call, 10 s to connect, proxy from the environment
    /// (`HTTPS_PROXY`, …, as ureq reads it). Redirects are never followed, whatever the agent says.
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Accepts plain `http://` to hosts other than loopback for the issuer and the endpoints.
    /// Defaults to false.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Fetches and checks the document.
    ///
    /// # Errors
    /// [`Error::Discovery`], with a [`DiscoveryError`] saying what was wrong.
    pub fn fetch(&self) -> Result<ServerMetadata, Error> {
        self.fetch_inner().map_err(Error::Discovery)
    }

    fn fetch_inner(&self) -> Result<ServerMetadata, DiscoveryError> {
        let issuer = &self.issuer;
        let (oidc_url, rfc8414_url) = well_known_urls(issuer, self.allow_insecure_http)?;
        let default_agent;
        let agent = match &self.agent {
            Some(a) => a,
            None => {
                default_agent = login_agent();
                &default_agent
            }
        };
        let body = match get_document(agent, &oidc_url)? {
            Ok(body) => body,
            Err(_) => get_document(agent, &rfc8414_url)?.map_err(DiscoveryError::Status)?,
        };
        parse_metadata(&body, issuer, self.allow_insecure_http)
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .field("custom_agent", &self.agent.is_some())
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

/// Checks `issuer` (no query or fragment, and the URL rule of every endpoint) and gives its
/// OpenID Connect and RFC 8414 well-known URLs.
fn well_known_urls(
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<(String, String), DiscoveryError> {
    if issuer.contains(['?', '#']) {
        return Err(DiscoveryError::InvalidIssuer(
            "an issuer has no query or fragment",
        ));
    }
    let url = EndpointUrl::parse(issuer, allow_insecure_http).map_err(|p| match p {
        UrlProblem::Unparsable => DiscoveryError::InvalidIssuer("not a valid URL"),
        UrlProblem::NotHttp => DiscoveryError::InvalidIssuer("not an absolute http(s) URL"),
        UrlProblem::Credentials => DiscoveryError::InvalidIssuer("credentials in the URL"),
        UrlProblem::Insecure(_) => DiscoveryError::InsecureEndpoint("issuer"),
    })?;
    let path = url.path().trim_end_matches('/');
    let oidc = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let rfc8414 = format!(
        "{}/.well-known/oauth-authorization-server{path}",
        url.root()
    );
    Ok((oidc, rfc8414))
}

/// GETs `url`: `Ok(Ok(body))` for 2xx, `Ok(Err(status))` for any other status.
fn get_document(agent: &Agent, url: &str) -> Result<Result<Vec<u8>, u16>, DiscoveryError> {
    let req = Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(())
        .map_err(|e| DiscoveryError::Transport(Box::new(ureq::Error::Http(e))))?;
    let mut resp = transport::run(agent, transport::agent_fits(agent), req)
        .map_err(|e| DiscoveryError::Transport(Box::new(e)))?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        transport::drain(&mut resp);
        return Ok(Err(status));
    }
    match resp
        .body_mut()
        .with_config()
        .limit(METADATA_LIMIT)
        .read_to_vec()
    {
        Ok(body) => Ok(Ok(body)),
        Err(ureq::Error::BodyExceedsLimit(_)) => Err(DiscoveryError::TooLarge),
        Err(e) => Err(DiscoveryError::Transport(Box::new(e))),
    }
}

/// Checks a metadata document against the issuer asked for.
fn parse_metadata(
    body: &[u8],
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<ServerMetadata, DiscoveryError> {
    let map = json_object(body).map_err(|_| DiscoveryError::NotJson)?;
    match map.get("issuer").and_then(|v| v.as_str()) {
        Some(found) if found == issuer => {}
        found => {
            return Err(DiscoveryError::IssuerMismatch {
                found: found.map(|f| {
                    f.chars()
                        .filter(|c| !c.is_control())
                        .take(QUOTED_ISSUER_LIMIT)
                        .collect()
                }),
            })
        }
    }
    let endpoint = |field: &'static str| -> Result<Option<String>, DiscoveryError> {
        let url = match map.get(field) {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(DiscoveryError::InvalidEndpoint(field)),
        };
        match EndpointUrl::parse(url, allow_insecure_http) {
            Ok(_) => Ok(Some(url.clone())),
            Err(UrlProblem::Insecure(_)) => Err(DiscoveryError::InsecureEndpoint(field)),
            Err(_) => Err(DiscoveryError::InvalidEndpoint(field)),
        }
    };
    Ok(ServerMetadata {
        issuer: issuer.to_owned(),
        token_endpoint: endpoint("token_endpoint")?.ok_or(DiscoveryError::MissingTokenEndpoint)?,
        device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
    })
}

/// The agent discovery and the device flow build when none is given: like the client's
/// default token agent.
pub(super) fn login_agent() -> Agent {
    transport::default_agent(DEFAULT_TOKEN_TIMEOUT, TimeoutKind::WholeCall, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_follow_both_specs() {
        let (oidc, rfc) = well_known_urls("https://auth.example.com", false).unwrap();
        assert_eq!(
            oidc,
            "https://auth.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            rfc,
            "https://auth.example.com/.well-known/oauth-authorization-server"
        );
        let (oidc, rfc) = well_known_urls("https://h:8443/realms/main/", false).unwrap();
        assert_eq!(
            oidc,
            "https://h:8443/realms/main/.well-known/openid-configuration"
        );
        assert_eq!(
            rfc,
            "https://h:8443/.well-known/oauth-authorization-server/realms/main"
        );
        for bad in [
            "",
            "auth.example.com",
            "https://h/?a=b",
            "https://h/#x",
            "https://u:p@h/",
        ] {
            assert!(
                matches!(
                    well_known_urls(bad, false),
                    Err(DiscoveryError::InvalidIssuer(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn documents_are_checked() {
        let iss = "https://auth.example.com";
        let ok = parse_metadata(
            br#"{"issuer":"https://auth.example.com","token_endpoint":"https://auth.example.com/t",
                "revocation_endpoint":"https://auth.example.com/r"}"#,
            iss,
            false,
        )
        .unwrap();
        assert_eq!(ok.token_endpoint(), "https://auth.example.com/t");
        assert_eq!(ok.revocation_endpoint(), Some("https://auth.example.com/r"));
        assert_eq!(ok.device_authorization_endpoint(), None);
        let err = |body: &str| parse_metadata(body.as_bytes(), iss, false).unwrap_err();
        assert!(matches!(err("<html>"), DiscoveryError::NotJson));
        assert!(matches!(
            err(r#"{"issuer":"https://auth.example.com/","token_endpoint":"https://a/t"}"#),
            DiscoveryError::IssuerMismatch { found: Some(f) } if f == "https://auth.example.com/"
        ));
        assert!(matches!(
            err(r#"{"issuer":"https://auth.example.com"}"#),
            DiscoveryError::MissingTokenEndpoint
        ));
        assert!(matches!(
            err(r#"{"issuer":"https://auth.example.com","token_endpoint":"http://a/t"}"#),
            DiscoveryError::InsecureEndpoint("token_endpoint")
        ));
        assert!(matches!(
            err(
                r#"{"issuer":"https://auth.example.com","token_endpoint":"https://a/t","revocation_endpoint":7}"#
            ),
            DiscoveryError::InvalidEndpoint("revocation_endpoint")
        ));
        assert!(matches!(
            err(r#"{"issuer":"https://auth.example.com","token_endpoint":"https://u:p@a/t"}"#),
            DiscoveryError::InvalidEndpoint("token_endpoint")
        ));
        let allowed = parse_metadata(
            br#"{"issuer":"https://auth.example.com","token_endpoint":"http://a/t"}"#,
            iss,
            true,
        );
        assert!(allowed.is_ok());
    }
}
