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
use crate::transport_error::TransportError;
use crate::url::{EndpointUrl, UrlProblem};

/// Largest metadata document read, in bytes. Real ones are a few KiB.
pub(crate) const METADATA_LIMIT: u64 = 64 * 1024;

/// Longest `issuer` value quoted back in [`DiscoveryError::IssuerMismatch`].
const QUOTED_ISSUER_LIMIT: usize = 256;

/// The hosts of Microsoft Entra ID whose multi-tenant issuers publish a templated `issuer`:
/// the global cloud, Azure Government, and Azure operated by 21Vianet (Microsoft's "National
/// clouds" page, <https://learn.microsoft.com/en-us/entra/identity-platform/authentication-national-cloud>).
const ENTRA_HOSTS: [&str; 3] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
];

/// The multi-tenant names of an Entra issuer's tenant segment.
const ENTRA_MULTI_TENANT: [&str; 3] = ["common", "organizations", "consumers"];

/// The tenant of personal Microsoft accounts, which the `consumers` document names as its
/// issuer's tenant.
const ENTRA_CONSUMERS_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// What an authorization server says about itself: the parts tokengate uses.
///
/// Obtained with [`Discovery::fetch`]; every URL in it was checked (absolute http(s), no
/// credentials, `https` unless loopback or opted in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    authorization_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

impl ServerMetadata {
    /// The issuer, exactly as asked for, which is what the document said, except for
    /// Microsoft Entra's multi-tenant issuers (see [`Discovery`]): for
    /// `https://login.microsoftonline.com/common/v2.0` this is that URL, not the document's
    /// template `https://login.microsoftonline.com/{tenantid}/v2.0` (which is no server's
    /// address; each user's tokens name their own tenant).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `token_endpoint` (RFC 6749 §3.2).
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// `authorization_endpoint` (RFC 6749 §3.1, RFC 8414 §2), where the browser login sends
    /// the user, if the server has one.
    pub fn authorization_endpoint(&self) -> Option<&str> {
        self.authorization_endpoint.as_deref()
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
/// trailing `/` matters; RFC 8414 §3.3, against mix-ups), and must name a `token_endpoint`.
/// Redirects are not followed.
///
/// One exception, accepted by default: Microsoft Entra ID's multi-tenant issuers. The
/// documents of `https://login.microsoftonline.com/common/v2.0` and `…/organizations/v2.0`
/// say their issuer is the template `https://login.microsoftonline.com/{tenantid}/v2.0`, and
/// that of `…/consumers/v2.0` names the personal accounts' tenant,
/// `https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0`, so no
/// exact match can succeed
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc>). Such a
/// document is accepted only when the issuer asked for is exactly
/// `https://{host}/{common|organizations|consumers}/v2.0`, `{host}` one of Entra's
/// `login.microsoftonline.com`, `login.microsoftonline.us` (Azure Government) and
/// `login.partner.microsoftonline.cn` (Azure operated by 21Vianet), and the document's
/// issuer is `https://{the same host}/{tenantid}/v2.0` (for `consumers`, also with the
/// tenant above in place of `{tenantid}`). Every other issuer is compared exactly, and a
/// template is accepted for no other issuer or host. Not an opt-in, because it opens no
/// mix-up: the document was fetched over https from the Entra host that the issuer asked for
/// names, and it names that same host; an option would only make every Entra user meet the
/// error first. [`ServerMetadata::issuer`] is then the issuer asked for.
///
/// This is the only `issuer` check tokengate makes: it does not validate id_tokens, or the
/// `iss` claim of any token (tokens are opaque to it). An application that validates Entra
/// id_tokens from a multi-tenant issuer must check `iss` itself, against the template with
/// the token's `tid` claim in place of `{tenantid}`.
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
    /// (`HTTPS_PROXY`, …, as ureq reads it; never for a loopback issuer nor for what `NO_PROXY`
    /// names, as for the client's agents). Redirects are never followed, whatever the agent says.
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
        // Not sent: no proxy to name.
        .map_err(|e| DiscoveryError::Transport(TransportError::new(ureq::Error::Http(e), None)))?;
    let mut resp = transport::run(agent, transport::agent_fits(agent), req)
        .map_err(|e| transport_error(agent, url, e))?;
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
        Err(e) => Err(transport_error(agent, url, e)),
    }
}

fn transport_error(agent: &Agent, url: &str, e: ureq::Error) -> DiscoveryError {
    DiscoveryError::Transport(transport::failure(agent, url, e))
}

/// Checks a metadata document against the issuer asked for.
fn parse_metadata(
    body: &[u8],
    issuer: &str,
    allow_insecure_http: bool,
) -> Result<ServerMetadata, DiscoveryError> {
    let map = json_object(body).map_err(|_| DiscoveryError::NotJson)?;
    match map.get("issuer").and_then(|v| v.as_str()) {
        Some(found) if issuer_matches(issuer, found) => {}
        found => {
            return Err(DiscoveryError::IssuerMismatch {
                found: found.map(quoted_issuer),
                expected: quoted_issuer(issuer),
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
        // Only the browser login uses it: an unusable one is absent (that login then says
        // so), rather than a failed discovery for the refresh and device flows.
        authorization_endpoint: endpoint("authorization_endpoint").unwrap_or_else(|e| {
            log::debug!(target: "tokengate", "discovery: ignoring the document's authorization_endpoint: {e}");
            None
        }),
        device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
        revocation_endpoint: endpoint("revocation_endpoint")?,
    })
}

/// True if a document whose `issuer` is `found` is the document of the issuer `asked`:
/// `found == asked`, or Entra's multi-tenant exception (see [`Discovery`]).
fn issuer_matches(asked: &str, found: &str) -> bool {
    found == asked || entra_multi_tenant_matches(asked, found)
}

/// True if `asked` is exactly `https://{host}/{tenant}/v2.0` for an Entra host and a
/// multi-tenant name, and `found` is `https://{host}/{tenantid}/v2.0` (for `consumers`, also
/// with the personal accounts' tenant in place of `{tenantid}`).
fn entra_multi_tenant_matches(asked: &str, found: &str) -> bool {
    let Some((host, tenant)) = asked
        .strip_prefix("https://")
        .and_then(|rest| rest.strip_suffix("/v2.0"))
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    if !ENTRA_HOSTS.contains(&host) || !ENTRA_MULTI_TENANT.contains(&tenant) {
        return false;
    }
    let Some(found_tenant) = found
        .strip_prefix("https://")
        .and_then(|rest| rest.strip_prefix(host))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_suffix("/v2.0"))
    else {
        return false;
    };
    found_tenant == "{tenantid}"
        || (tenant == "consumers" && found_tenant == ENTRA_CONSUMERS_TENANT)
}

/// An issuer as quoted in [`DiscoveryError::IssuerMismatch`]: control characters dropped,
/// at most [`QUOTED_ISSUER_LIMIT`] characters.
fn quoted_issuer(issuer: &str) -> String {
    issuer
        .chars()
        .filter(|c| !c.is_control())
        .take(QUOTED_ISSUER_LIMIT)
        .collect()
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

    const ENTRA_TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
    const ENTRA_CONSUMERS: &str =
        "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0";

    /// (issuer asked for, document's issuer) that match.
    const ENTRA_ACCEPTED: &[(&str, &str)] = &[
        (
            "https://login.microsoftonline.com/common/v2.0",
            ENTRA_TEMPLATE,
        ),
        (
            "https://login.microsoftonline.com/organizations/v2.0",
            ENTRA_TEMPLATE,
        ),
        (
            "https://login.microsoftonline.com/consumers/v2.0",
            ENTRA_TEMPLATE,
        ),
        (
            "https://login.microsoftonline.com/consumers/v2.0",
            ENTRA_CONSUMERS,
        ),
        (
            "https://login.microsoftonline.us/common/v2.0",
            "https://login.microsoftonline.us/{tenantid}/v2.0",
        ),
        (
            "https://login.partner.microsoftonline.cn/organizations/v2.0",
            "https://login.partner.microsoftonline.cn/{tenantid}/v2.0",
        ),
        // The exact rule, as before.
        ("https://auth.example.com", "https://auth.example.com"),
        (ENTRA_TEMPLATE, ENTRA_TEMPLATE),
    ];

    /// (issuer asked for, document's issuer) that do not.
    const ENTRA_REFUSED: &[(&str, &str)] = &[
        // A single tenant, by name or id, is compared exactly.
        (
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0",
            ENTRA_TEMPLATE,
        ),
        (
            "https://login.microsoftonline.com/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/v2.0",
            ENTRA_TEMPLATE,
        ),
        // The personal accounts' tenant only for `consumers`.
        (
            "https://login.microsoftonline.com/common/v2.0",
            ENTRA_CONSUMERS,
        ),
        (
            "https://login.microsoftonline.com/organizations/v2.0",
            ENTRA_CONSUMERS,
        ),
        // The same host, and https, on both sides.
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.us/{tenantid}/v2.0",
        ),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://evil.example/{tenantid}/v2.0",
        ),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "http://login.microsoftonline.com/{tenantid}/v2.0",
        ),
        (
            "http://login.microsoftonline.com/common/v2.0",
            "http://login.microsoftonline.com/{tenantid}/v2.0",
        ),
        (
            "http://login.microsoftonline.com/common/v2.0",
            ENTRA_TEMPLATE,
        ),
        // Other hosts: a look-alike, a subdomain, a port, another spelling.
        (
            "https://login.example.com/common/v2.0",
            "https://login.example.com/{tenantid}/v2.0",
        ),
        (
            "https://evil.login.microsoftonline.com/common/v2.0",
            "https://evil.login.microsoftonline.com/{tenantid}/v2.0",
        ),
        (
            "https://login.microsoftonline.com:8443/common/v2.0",
            "https://login.microsoftonline.com:8443/{tenantid}/v2.0",
        ),
        (
            "https://LOGIN.microsoftonline.com/common/v2.0",
            "https://LOGIN.microsoftonline.com/{tenantid}/v2.0",
        ),
        (
            "https://127.0.0.1:8080/common/v2.0",
            "https://127.0.0.1:8080/{tenantid}/v2.0",
        ),
        // Other paths: v1, a trailing slash, a longer path, another ENTRA_TEMPLATE.
        (
            "https://login.microsoftonline.com/common",
            "https://login.microsoftonline.com/{tenantid}",
        ),
        (
            "https://login.microsoftonline.com/common/v2.0/",
            ENTRA_TEMPLATE,
        ),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/{tenantid}/v2.0/",
        ),
        (
            "https://login.microsoftonline.com/x/common/v2.0",
            "https://login.microsoftonline.com/x/{tenantid}/v2.0",
        ),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/{tenant}/v2.0",
        ),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/common/{tenantid}/v2.0",
        ),
        (
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com//v2.0",
        ),
    ];

    /// The Entra exception: the multi-tenant issuers asked for, on Entra's hosts, accept their
    /// own host's template; nothing else does (the exact rule is unchanged).
    #[test]
    fn entra_multi_tenant_issuers_accept_their_hosts_template_only() {
        for (asked, found) in ENTRA_ACCEPTED {
            assert!(issuer_matches(asked, found), "{asked} / {found}");
        }
        for (asked, found) in ENTRA_REFUSED {
            assert!(!issuer_matches(asked, found), "{asked} / {found}");
        }
    }

    #[test]
    fn a_mismatch_quotes_both_issuers_sanitized() {
        let e = parse_metadata(
            br#"{"issuer":"https://x","token_endpoint":"https://x/t"}"#,
            "https://y",
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the metadata document's issuer "https://x" is not the issuer asked for ("https://y")"#
        );
        let e =
            parse_metadata(br#"{"token_endpoint":"https://x/t"}"#, "https://y", false).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the metadata document has no issuer (asked for "https://y")"#
        );
        // Control characters dropped, both cut at 256 characters.
        let body = serde_json::json!({
            "issuer": format!("https://y/\u{1b}[2J{}", "a".repeat(300)),
            "token_endpoint": "https://x/t",
        })
        .to_string();
        let asked = format!("https://y/\u{1b}[2J\n{}", "b".repeat(300));
        let Err(DiscoveryError::IssuerMismatch {
            found: Some(found),
            expected,
        }) = parse_metadata(body.as_bytes(), &asked, false)
        else {
            panic!("expected a mismatch");
        };
        assert_eq!(found, format!("https://y/[2J{}", "a".repeat(243)));
        assert_eq!(expected, format!("https://y/[2J{}", "b".repeat(243)));
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
            DiscoveryError::IssuerMismatch { found: Some(f), expected } if f == "https://auth.example.com/" && expected == iss
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

    #[test]
    fn an_unusable_authorization_endpoint_is_left_out() {
        let iss = "https://auth.example.com";
        // Only the browser login uses it: unusable, it is absent rather than a failed discovery.
        for bad in [
            r#""http://a/authorize""#,
            "7",
            r#""https://u:p@a/authorize""#,
        ] {
            let doc = format!(
                r#"{{"issuer":"https://auth.example.com","token_endpoint":"https://a/t","authorization_endpoint":{bad}}}"#
            );
            let meta = parse_metadata(doc.as_bytes(), iss, false).unwrap();
            assert_eq!(meta.authorization_endpoint(), None, "{bad}");
        }
        let meta = parse_metadata(
            br#"{"issuer":"https://auth.example.com","token_endpoint":"https://a/t","authorization_endpoint":"https://a/authorize"}"#,
            iss,
            false,
        )
        .unwrap();
        assert_eq!(meta.authorization_endpoint(), Some("https://a/authorize"));
    }
}
