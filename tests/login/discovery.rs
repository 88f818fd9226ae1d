//! Discovery (RFC 8414, OpenID Connect Discovery 1.0): the happy paths, the fallback, and
//! every kind of bad document, each a distinct typed error.

use crate::harness::fixtures::{no_proxy_agent, refused_addr};
use crate::harness::observe::test_name;
use crate::harness::servers::login::LoginServer;
use tokengate::login::{Discovery, DiscoveryError, ServerMetadata};
use tokengate::{AuthClient, AuthServer, Error};

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
        let srv = LoginServer::start();
        let server = AuthServer::discover(srv.issuer()).unwrap();
        let client = AuthClient::builder(srv.ts.api_url())
            .proxy(None)
            .refresher(server.clone().client_id("my-cli").refresh_grant())
            .tokens(srv.ts.login())
            .build()
            .unwrap();
        srv.ts.expire_access_tokens();
        assert_eq!(client.get("me").call().unwrap().status(), 200);
        assert_eq!(srv.ts.refresh_calls(), 1, "one refresh, at /login/token");
        // The discovered revocation endpoint is the one logout uses.
        client.logout().unwrap();
        assert_eq!(srv.revocations().len(), 1);

        let cc = server
            .clone()
            .client_id("svc")
            .client_secret("s3cret")
            .client_credentials();
        assert!(format!("{cc:?}").contains("/login/token"));
        let flow = server.device_flow().unwrap();
        assert!(format!("{flow:?}").contains("/login/device"));
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
    let srv = LoginServer::start();
    let meta = discover(&srv.issuer()).unwrap();
    assert_eq!(meta.issuer(), srv.issuer());
    assert_eq!(meta.token_endpoint(), srv.token_url());
    assert_eq!(
        meta.device_authorization_endpoint(),
        Some(srv.device_url().as_str())
    );
    assert_eq!(meta.revocation_endpoint(), Some(srv.revoke_url().as_str()));
}

#[test]
fn a_discovered_refresher_refreshes_at_the_discovered_token_endpoint() {
    let srv = LoginServer::start();
    let meta = discover(&srv.issuer()).unwrap();
    let client = AuthClient::builder(srv.ts.api_url())
        .proxy(None)
        .refresher(
            AuthServer::from_metadata(&meta)
                .client_id("my-cli")
                .refresh_grant(),
        )
        .tokens(srv.ts.login())
        .build()
        .unwrap();
    srv.ts.expire_access_tokens();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.ts.refresh_calls(), 1, "one refresh, at /login/token");
    assert_eq!(
        client.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt-2"
    );

    let cc = AuthServer::from_metadata(&meta)
        .client_id("svc")
        .client_secret("s3cret")
        .client_credentials();
    assert!(format!("{cc:?}").contains("/login/token"));
    let flow = AuthServer::from_metadata(&meta).device_flow().unwrap();
    assert!(format!("{flow:?}").contains("/login/device"));
}

#[test]
fn falls_back_to_the_rfc8414_location_with_the_issuer_path_after_it() {
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
    let e = discovery_error(&format!("{}/nowhere", srv.issuer()));
    assert!(matches!(e, DiscoveryError::Status(404)), "{e:?}");
    let err = Error::Discovery(e);
    assert_eq!(err.status(), Some(404));
    assert!(!err.is_transient());
}

#[test]
fn redirects_are_not_followed() {
    let srv = LoginServer::start();
    let issuer = format!("{}/moved", srv.issuer());
    let target = srv.serve("/elsewhere", 200, srv.document(&issuer).to_string());
    srv.ts.server.mock(|when, then| {
        when.path("/moved/.well-known/openid-configuration");
        then.status(302).header("location", "/elsewhere");
    });
    let e = discovery_error(&issuer);
    assert!(matches!(e, DiscoveryError::Status(404)), "{e:?}");
    target.assert_calls(0);
}

#[test]
fn a_body_that_is_not_json_is_not_json() {
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
    let issuer = format!("{}/mixup", srv.issuer());
    srv.serve(
        "/mixup/.well-known/openid-configuration",
        200,
        srv.document("https://evil.example").to_string(),
    );
    let e = discovery_error(&issuer);
    assert!(
        matches!(&e, DiscoveryError::IssuerMismatch { found: Some(f) } if f == "https://evil.example"),
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
        DiscoveryError::IssuerMismatch { found: None }
    ));
}

#[test]
fn a_document_without_token_endpoint_is_refused() {
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
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
    let srv = LoginServer::start();
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
        matches!(err, Error::Discovery(DiscoveryError::MissingDeviceEndpoint)),
        "{err:?}"
    );
}
