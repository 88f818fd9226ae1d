//! Discovery (RFC 8414, OpenID Connect Discovery 1.0): the happy paths, the fallback, and
//! every kind of bad document, each a distinct typed error.

use crate::harness::fixtures::{no_proxy_agent, refused_addr};
use crate::harness::observe::test_name;
use crate::harness::servers::raw::Action;
use crate::harness::servers::tls::TlsServer;
use crate::harness::servers::TokenServer;
use httpmock::{Mock, MockServer};
use tokengate::login::{Discovery, DiscoveryError, ServerMetadata};
use tokengate::testing::PUBLIC_CLIENT_ID;
use tokengate::{AuthClient, AuthServer, Error};

/// Metadata documents on loopback (httpmock), good or bad, for issuers under its root.
struct Documents(MockServer);

impl Documents {
    fn start() -> Documents {
        Documents(MockServer::start())
    }

    /// The server's root (an issuer's path goes after it).
    fn issuer(&self) -> String {
        self.0.base_url()
    }

    /// The token endpoint good documents name.
    fn token_url(&self) -> String {
        self.0.url("/oauth/token")
    }

    /// A good metadata document for `issuer`, naming endpoints on this server.
    fn document(&self, issuer: &str) -> serde_json::Value {
        serde_json::json!({
            "issuer": issuer,
            "token_endpoint": self.token_url(),
            "device_authorization_endpoint": self.0.url("/oauth/device"),
            "revocation_endpoint": self.0.url("/oauth/revoke"),
            "grant_types_supported": ["refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
        })
    }

    /// Serves `body` with `status` to GET `path`.
    fn serve(&self, path: &str, status: u16, body: impl Into<String>) -> Mock<'_> {
        let body = body.into();
        self.0.mock(|when, then| {
            when.method(httpmock::Method::GET).path(path);
            then.status(status)
                .header("content-type", "application/json")
                .body(body);
        })
    }
}

fn discover(issuer: &str) -> Result<ServerMetadata, Error> {
    Discovery::new(issuer).agent(no_proxy_agent()).fetch()
}

fn discovery_error(issuer: &str) -> DiscoveryError {
    match discover(issuer) {
        Err(Error::Discovery(e)) => e,
        other => panic!("expected a discovery error, got {other:?}"),
    }
}

/// The one-call helper (`AuthServer::discover`) fetches with the default agent, which takes
/// its proxy from the environment: the test runs it in a child process of its own binary with
/// every proxy variable removed, so that no environment can send it off loopback. Every flow
/// built from the discovered server (refresh grant, client credentials, device flow) uses
/// the discovered endpoints.
#[test]
fn the_one_call_helper_discovers_the_endpoints_of_every_flow() {
    const ROLE: &str = "TOKENGATE_TEST_ROLE";
    if std::env::var_os(ROLE).is_some() {
        let srv = TokenServer::start();
        let server = AuthServer::discover(srv.issuer()).unwrap();
        let client = AuthClient::builder(srv.api_url())
            .proxy(None)
            .refresher(server.clone().client_id(PUBLIC_CLIENT_ID).refresh_grant())
            .tokens(srv.login_as(PUBLIC_CLIENT_ID, None))
            .build()
            .unwrap();
        srv.revoke_access_tokens();
        assert_eq!(client.get("me").call().unwrap().status(), 200);
        assert_eq!(srv.refreshes(), 1, "one refresh, at /oauth/token");
        // The discovered revocation endpoint is the one logout uses.
        client.logout().unwrap();
        assert_eq!(srv.revocations(), 1);

        let cc = server
            .clone()
            .client_id("svc")
            .client_secret("s3cret")
            .client_credentials();
        assert!(format!("{cc:?}").contains(&srv.token_url()));
        let flow = server.device_flow().unwrap();
        assert!(format!("{flow:?}").contains(&srv.device_authorization_url()));
        assert!(matches!(
            AuthServer::discover(format!("http://{}/", refused_addr())),
            Err(Error::Discovery(_))
        ));
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            test_name!(the_one_call_helper_discovers_the_endpoints_of_every_flow).as_str(),
            "--exact",
        ])
        .env(ROLE, "child");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        child.env_remove(var);
    }
    let out = child.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child ran the test (a filter that matched nothing would pass too).
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

#[test]
fn openid_configuration_names_the_endpoints() {
    let srv = TokenServer::start();
    let meta = discover(srv.issuer()).unwrap();
    assert_eq!(meta.issuer(), srv.issuer());
    assert_eq!(meta.token_endpoint(), srv.token_url());
    assert_eq!(
        meta.device_authorization_endpoint(),
        Some(srv.device_authorization_url().as_str())
    );
    assert_eq!(
        meta.revocation_endpoint(),
        Some(srv.revocation_url().as_str())
    );
}

#[test]
fn a_discovered_refresher_refreshes_at_the_discovered_token_endpoint() {
    let srv = TokenServer::start();
    let meta = discover(srv.issuer()).unwrap();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(
            AuthServer::from_metadata(&meta)
                .client_id(PUBLIC_CLIENT_ID)
                .refresh_grant(),
        )
        .tokens(srv.login_as(PUBLIC_CLIENT_ID, None))
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.refreshes(), 1, "one refresh, at /oauth/token");
    assert_eq!(
        client.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt-2"
    );

    let cc = AuthServer::from_metadata(&meta)
        .client_id("svc")
        .client_secret("s3cret")
        .client_credentials();
    assert!(format!("{cc:?}").contains(&srv.token_url()));
    let flow = AuthServer::from_metadata(&meta).device_flow().unwrap();
    assert!(format!("{flow:?}").contains(&srv.device_authorization_url()));
}

#[test]
fn falls_back_to_the_rfc8414_location_with_the_issuer_path_after_it() {
    let srv = Documents::start();
    let issuer = format!("{}/tenant/a", srv.issuer());
    let doc = srv.serve(
        "/.well-known/oauth-authorization-server/tenant/a",
        200,
        srv.document(&issuer).to_string(),
    );
    let meta = discover(&issuer).unwrap();
    assert_eq!(meta.issuer(), issuer);
    assert_eq!(meta.token_endpoint(), srv.token_url());
    doc.assert_calls(1);
}

#[test]
fn the_openid_document_is_used_when_there_is_one() {
    let srv = Documents::start();
    let issuer = format!("{}/realm", srv.issuer());
    let oidc = srv.serve(
        "/realm/.well-known/openid-configuration",
        200,
        srv.document(&issuer).to_string(),
    );
    let fallback = srv.serve(
        "/.well-known/oauth-authorization-server/realm",
        200,
        srv.document(&issuer).to_string(),
    );
    discover(&issuer).unwrap();
    oidc.assert_calls(1);
    fallback.assert_calls(0);
}

#[test]
fn no_document_at_either_location_is_the_status() {
    let srv = Documents::start();
    let e = discovery_error(&format!("{}/nowhere", srv.issuer()));
    assert!(matches!(e, DiscoveryError::Status(404)), "{e:?}");
    let err = Error::Discovery(e);
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_transient());
}

#[test]
fn redirects_are_not_followed() {
    let srv = Documents::start();
    let issuer = format!("{}/moved", srv.issuer());
    let target = srv.serve("/elsewhere", 200, srv.document(&issuer).to_string());
    srv.0.mock(|when, then| {
        when.path("/moved/.well-known/openid-configuration");
        then.status(302).header("location", "/elsewhere");
    });
    let e = discovery_error(&issuer);
    assert!(matches!(e, DiscoveryError::Status(404)), "{e:?}");
    target.assert_calls(0);
}

#[test]
fn a_body_that_is_not_json_is_not_json() {
    let srv = Documents::start();
    for (name, body) in [("html", "<html>login</html>"), ("array", "[]")] {
        let issuer = format!("{}/{name}", srv.issuer());
        srv.serve(
            &format!("/{name}/.well-known/openid-configuration"),
            200,
            body,
        );
        let e = discovery_error(&issuer);
        assert!(matches!(e, DiscoveryError::NotJson), "{name}: {e:?}");
        assert!(!Error::Discovery(e).to_string().contains("login"));
    }
}

#[test]
fn another_issuers_document_is_a_mix_up() {
    let srv = Documents::start();
    let issuer = format!("{}/mixup", srv.issuer());
    srv.serve(
        "/mixup/.well-known/openid-configuration",
        200,
        srv.document("https://evil.example").to_string(),
    );
    let e = discovery_error(&issuer);
    assert!(
        matches!(&e, DiscoveryError::IssuerMismatch { found: Some(f), .. } if f == "https://evil.example"),
        "{e:?}"
    );

    // A trailing slash is a different issuer (compared character for character).
    let issuer = format!("{}/slash", srv.issuer());
    srv.serve(
        "/slash/.well-known/openid-configuration",
        200,
        srv.document(&format!("{issuer}/")).to_string(),
    );
    assert!(matches!(
        discovery_error(&issuer),
        DiscoveryError::IssuerMismatch { .. }
    ));

    // No issuer at all.
    let issuer = format!("{}/noissuer", srv.issuer());
    let mut doc = srv.document(&issuer);
    doc.as_object_mut().unwrap().remove("issuer");
    srv.serve(
        "/noissuer/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    assert!(matches!(
        discovery_error(&issuer),
        DiscoveryError::IssuerMismatch { found: None, .. }
    ));
}

/// The message names the document's issuer and the one asked for (or says there is none).
#[test]
fn an_issuer_mismatch_names_both_issuers() {
    let srv = Documents::start();
    let issuer = format!("{}/named", srv.issuer());
    srv.serve(
        "/named/.well-known/openid-configuration",
        200,
        srv.document("https://evil.example").to_string(),
    );
    assert_eq!(
        discovery_error(&issuer).to_string(),
        format!(
            r#"the metadata document's issuer "https://evil.example" is not the issuer asked for ("{issuer}")"#
        )
    );

    let issuer = format!("{}/unnamed", srv.issuer());
    let mut doc = srv.document(&issuer);
    doc.as_object_mut().unwrap().remove("issuer");
    srv.serve(
        "/unnamed/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    assert_eq!(
        discovery_error(&issuer).to_string(),
        format!(r#"the metadata document has no issuer (asked for "{issuer}")"#)
    );
}

/// A Microsoft Entra ID multi-tenant document, shaped like the one
/// `https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration` serves
/// (Microsoft's "OpenID Connect on the Microsoft identity platform",
/// https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc): the issuer
/// `iss` as given (the template `https://login.microsoftonline.com/{tenantid}/v2.0` for
/// `common` and `organizations`), the endpoints under `tenant` on `endpoints` (the loopback
/// server in place of `https://login.microsoftonline.com`). Entra publishes no
/// `revocation_endpoint`.
fn entra_document(iss: &str, endpoints: &str, tenant: &str) -> serde_json::Value {
    let e = format!("{endpoints}/{tenant}");
    serde_json::json!({
        "token_endpoint": format!("{e}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{e}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": iss,
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{e}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{e}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{e}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "ver"],
        "kerberos_endpoint": format!("{e}/kerberos"),
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

/// A loopback https server that answers GET `path` with `body` for each of `documents`, and
/// 404 to anything else. Reached for any host name with [`TlsServer::any_host_agent`].
fn document_server(documents: Vec<(String, String)>) -> TlsServer {
    TlsServer::start(move |https, req| {
        let found = documents.iter().find(|(path, _)| *path == req.path);
        match found {
            Some((_, body)) if https && req.method == "GET" => Action::Respond(
                200,
                vec![b"content-type: application/json".to_vec()],
                body.clone().into_bytes(),
            ),
            _ => Action::Respond(404, Vec::new(), Vec::new()),
        }
    })
}

/// The real Entra issuer is `https` on Microsoft's host: the test serves it on loopback, with
/// an agent whose resolver sends every host name to the loopback server (and which does not
/// verify its certificate). Nothing leaves the machine.
#[test]
fn entra_multi_tenant_documents_with_a_templated_issuer_are_accepted() {
    let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
    let consumers = "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0";
    // The documents' endpoints are on the loopback server itself, whose port is known only
    // once it runs: the handler builds each document with the port set just after the start.
    let cases = [
        ("common", template),
        ("organizations", template),
        ("consumers", consumers),
    ];
    let port = std::sync::Arc::new(std::sync::OnceLock::<u16>::new());
    let p = port.clone();
    let srv = TlsServer::start(move |https, req| {
        let endpoints = format!("https://127.0.0.1:{}", p.get().unwrap());
        let doc = cases.iter().find(|(tenant, _)| {
            req.path == format!("/{tenant}/v2.0/.well-known/openid-configuration")
        });
        match doc {
            Some((tenant, iss)) if https => Action::Respond(
                200,
                vec![b"content-type: application/json".to_vec()],
                entra_document(iss, &endpoints, tenant)
                    .to_string()
                    .into_bytes(),
            ),
            _ => Action::Respond(404, Vec::new(), Vec::new()),
        }
    });
    port.set(srv.port).unwrap();
    let endpoints = format!("https://127.0.0.1:{}", srv.port);
    for (tenant, _) in cases {
        let issuer = format!("https://login.microsoftonline.com/{tenant}/v2.0");
        let meta = Discovery::new(&issuer)
            .agent(srv.any_host_agent())
            .fetch()
            .unwrap_or_else(|e| panic!("{tenant}: {e:?}"));
        // The issuer asked for, not the template.
        assert_eq!(meta.issuer(), issuer);
        assert_eq!(
            meta.token_endpoint(),
            format!("{endpoints}/{tenant}/oauth2/v2.0/token")
        );
        let device = format!("{endpoints}/{tenant}/oauth2/v2.0/devicecode");
        assert_eq!(meta.device_authorization_endpoint(), Some(device.as_str()));
        assert_eq!(meta.revocation_endpoint(), None);
        let flow = AuthServer::from_metadata(&meta).device_flow().unwrap();
        assert!(format!("{flow:?}").contains(&device), "{flow:?}");
    }
    // One document fetched for each, at the OpenID Connect location.
    assert_eq!(srv.requests(), 3);
}

/// The Entra exception is for Entra's multi-tenant issuers only: the same templated document
/// for any other issuer asked for, or a template on another host, is still a mix-up.
#[test]
fn an_entra_template_for_any_other_issuer_is_still_a_mix_up() {
    let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
    // A loopback issuer (the exact rule; no agent trick).
    let login = Documents::start();
    let issuer = format!("{}/common/v2.0", login.issuer());
    login.serve(
        "/common/v2.0/.well-known/openid-configuration",
        200,
        entra_document(template, &login.issuer(), "common").to_string(),
    );
    let e = discovery_error(&issuer);
    assert!(
        matches!(&e, DiscoveryError::IssuerMismatch { found: Some(f), .. } if f == template),
        "{e:?}"
    );

    // On Entra's host: a single tenant; a path under a multi-tenant name; and on other
    // hosts, their own template or Entra's.
    let cases = [
        (
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0",
            template,
        ),
        ("https://login.microsoftonline.com/common/v2.0/", template),
        (
            "https://login.example.com/common/v2.0",
            "https://login.example.com/{tenantid}/v2.0",
        ),
        ("https://login.example.com/common/v2.0", template),
        (
            "https://login.microsoftonline.com/organizations/v2.0",
            "https://login.example.com/{tenantid}/v2.0",
        ),
    ];
    let documents = cases
        .iter()
        .map(|(asked, iss)| {
            let path = asked.split_once(".com").unwrap().1.trim_end_matches('/');
            (
                format!("{path}/.well-known/openid-configuration"),
                entra_document(iss, "https://127.0.0.1:1", "common").to_string(),
            )
        })
        .collect::<Vec<_>>();
    // Two cases ask for the same path on different hosts: serve each case alone.
    for ((asked, iss), doc) in cases.iter().zip(documents) {
        let srv = document_server(vec![doc]);
        let e = match Discovery::new(*asked).agent(srv.any_host_agent()).fetch() {
            Err(Error::Discovery(e)) => e,
            other => panic!("{asked}: expected a discovery error, got {other:?}"),
        };
        assert!(
            matches!(&e, DiscoveryError::IssuerMismatch { found: Some(f), .. } if f == iss),
            "{asked}: {e:?}"
        );
        assert_eq!(srv.requests(), 1, "{asked}");
    }
}

/// Keycloak: the issuer is `{base}/realms/{realm}`, its endpoints under
/// `{issuer}/protocol/openid-connect/` (https://www.keycloak.org/docs/latest/securing_apps/#endpoints).
#[test]
fn a_keycloak_realm_issuer_discovers_its_endpoints() {
    let srv = Documents::start();
    let issuer = format!("{}/realms/acme", srv.issuer());
    let oidc = format!("{issuer}/protocol/openid-connect");
    let doc = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "jwks_uri": format!("{oidc}/certs"),
        "device_authorization_endpoint": format!("{oidc}/auth/device"),
        "revocation_endpoint": format!("{oidc}/revoke"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
            "private_key_jwt", "client_secret_jwt", "tls_client_auth"],
    });
    let served = srv.serve(
        "/realms/acme/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    let meta = discover(&issuer).unwrap();
    assert_eq!(meta.issuer(), issuer);
    assert_eq!(meta.token_endpoint(), format!("{oidc}/token"));
    assert_eq!(
        meta.device_authorization_endpoint(),
        Some(format!("{oidc}/auth/device").as_str())
    );
    assert_eq!(
        meta.revocation_endpoint(),
        Some(format!("{oidc}/revoke").as_str())
    );
    served.assert_calls(1);
}

/// Okta: a custom authorization server's issuer is `https://{yourOktaDomain}/oauth2/default`,
/// its endpoints under `{issuer}/v1/`, and it serves its metadata both at
/// `{issuer}/.well-known/openid-configuration` and `{issuer}/.well-known/oauth-authorization-server`
/// (https://developer.okta.com/docs/reference/api/oidc/#well-known-openid-configuration). The
/// OpenID Connect one is read, once.
#[test]
fn an_okta_custom_authorization_server_discovers_its_endpoints() {
    let srv = Documents::start();
    let issuer = format!("{}/oauth2/default", srv.issuer());
    let v1 = format!("{issuer}/v1");
    let doc = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{v1}/authorize"),
        "token_endpoint": format!("{v1}/token"),
        "userinfo_endpoint": format!("{v1}/userinfo"),
        "registration_endpoint": format!("{}/oauth2/v1/clients", srv.issuer()),
        "jwks_uri": format!("{v1}/keys"),
        "introspection_endpoint": format!("{v1}/introspect"),
        "revocation_endpoint": format!("{v1}/revoke"),
        "end_session_endpoint": format!("{v1}/logout"),
        "device_authorization_endpoint": format!("{v1}/device/authorize"),
        "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password",
            "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
            "client_secret_jwt", "private_key_jwt", "none"],
    });
    let oidc = srv.serve(
        "/oauth2/default/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    let oauth = srv.serve(
        "/oauth2/default/.well-known/oauth-authorization-server",
        200,
        doc.to_string(),
    );
    let meta = discover(&issuer).unwrap();
    assert_eq!(meta.issuer(), issuer);
    assert_eq!(meta.token_endpoint(), format!("{v1}/token"));
    assert_eq!(
        meta.device_authorization_endpoint(),
        Some(format!("{v1}/device/authorize").as_str())
    );
    assert_eq!(
        meta.revocation_endpoint(),
        Some(format!("{v1}/revoke").as_str())
    );
    oidc.assert_calls(1);
    oauth.assert_calls(0);
}

#[test]
fn a_document_without_token_endpoint_is_refused() {
    let srv = Documents::start();
    let issuer = format!("{}/notoken", srv.issuer());
    let mut doc = srv.document(&issuer);
    doc.as_object_mut().unwrap().remove("token_endpoint");
    srv.serve(
        "/notoken/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    assert!(matches!(
        discovery_error(&issuer),
        DiscoveryError::MissingTokenEndpoint
    ));
}

#[test]
fn an_endpoint_on_plain_http_elsewhere_than_loopback_is_refused_unless_opted_in() {
    let srv = Documents::start();
    for field in [
        "token_endpoint",
        "revocation_endpoint",
        "device_authorization_endpoint",
    ] {
        let issuer = format!("{}/insecure-{field}", srv.issuer());
        let mut doc = srv.document(&issuer);
        doc[field] = "http://auth.example.com/endpoint".into();
        srv.serve(
            &format!("/insecure-{field}/.well-known/openid-configuration"),
            200,
            doc.to_string(),
        );
        let e = discovery_error(&issuer);
        assert!(
            matches!(e, DiscoveryError::InsecureEndpoint(f) if f == field),
            "{field}: {e:?}"
        );
        let meta = Discovery::new(&issuer)
            .agent(no_proxy_agent())
            .allow_insecure_http(true)
            .fetch()
            .unwrap();
        assert!(format!("{meta:?}").contains("http://auth.example.com/endpoint"));
    }
}

#[test]
fn an_endpoint_that_is_not_a_url_is_refused() {
    let srv = Documents::start();
    for (name, value) in [
        ("number", serde_json::json!(7)),
        ("relative", serde_json::json!("/login/token")),
        (
            "creds",
            serde_json::json!("https://id:pw@auth.example.com/t"),
        ),
    ] {
        let issuer = format!("{}/{name}", srv.issuer());
        let mut doc = srv.document(&issuer);
        doc["token_endpoint"] = value;
        srv.serve(
            &format!("/{name}/.well-known/openid-configuration"),
            200,
            doc.to_string(),
        );
        let e = discovery_error(&issuer);
        assert!(
            matches!(e, DiscoveryError::InvalidEndpoint("token_endpoint")),
            "{name}: {e:?}"
        );
        assert!(!format!("{e:?} {e}").contains("pw"));
    }
}

#[test]
fn a_body_over_64_kib_is_too_large() {
    let srv = Documents::start();
    let issuer = format!("{}/big", srv.issuer());
    let mut doc = srv.document(&issuer);
    doc["padding"] = "x".repeat(65 * 1024).into();
    srv.serve(
        "/big/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    assert!(matches!(discovery_error(&issuer), DiscoveryError::TooLarge));
}

#[test]
fn an_unreachable_server_is_a_transient_transport_error() {
    let issuer = format!("http://{}", refused_addr());
    let e = discovery_error(&issuer);
    assert!(matches!(e, DiscoveryError::Transport(_)), "{e:?}");
    assert!(Error::Discovery(e).is_transient());
}

#[test]
fn the_issuer_itself_is_checked_before_anything_is_sent() {
    for (issuer, expect) in [
        ("http://auth.example.com", "insecure"),
        ("auth.example.com", "invalid"),
        ("https://auth.example.com/?tenant=a", "invalid"),
        ("https://user:pw@auth.example.com", "invalid"),
    ] {
        let e = discovery_error(issuer);
        let ok = match expect {
            "insecure" => matches!(e, DiscoveryError::InsecureEndpoint("issuer")),
            _ => matches!(e, DiscoveryError::InvalidIssuer(_)),
        };
        assert!(ok, "{issuer}: {e:?}");
    }
}

#[test]
fn device_flow_discovery_needs_a_device_endpoint() {
    let srv = Documents::start();
    let issuer = format!("{}/nodevice", srv.issuer());
    let mut doc = srv.document(&issuer);
    doc.as_object_mut()
        .unwrap()
        .remove("device_authorization_endpoint");
    srv.serve(
        "/nodevice/.well-known/openid-configuration",
        200,
        doc.to_string(),
    );
    let meta = discover(&issuer).unwrap();
    let err = AuthServer::from_metadata(&meta).device_flow().unwrap_err();
    assert!(
        matches!(err, Error::Config(m) if m == NO_DEVICE_ENDPOINT),
        "{err:?}"
    );
}

const NO_DEVICE_ENDPOINT: &str = "the authorization server has no device authorization \
     endpoint: set AuthServer::device_authorization_url, or discover an issuer that publishes one";

/// No discovery ran: the error says what is missing and how to set it, not "discovery failed".
#[test]
fn device_flow_without_a_device_endpoint_is_a_config_error_naming_the_fix() {
    let err = AuthServer::new("https://auth.example.com/token")
        .client_id("cli")
        .device_flow()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config(m) if m == NO_DEVICE_ENDPOINT),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("invalid configuration: {NO_DEVICE_ENDPOINT}")
    );
    assert!(!err.is_transient());
}
