//! Behaviour 9: credentials never travel over plain http to another machine without opt-in,
//! and a user's own `ureq::Agent` (default config: statuses as errors, redirects on) works.

use crate::harness::observe::body_json;
use crate::harness::servers::{Api, TokenServer};
use std::time::Duration;
use tokengate::ureq::Agent;

use tokengate::{AuthClient, AuthServer, Error, JsonRefresh, RefreshError, Tokens};

#[test]
fn plain_http_to_a_non_loopback_host_is_refused_at_build() {
    let insecure_api = || AuthClient::builder("http://api.example.com/v1/").proxy(None);
    let err = insecure_api().build().unwrap_err();
    assert!(matches!(err, Error::InsecureUrl(_)), "{err:?}");
    assert!(insecure_api().allow_insecure_http(true).build().is_ok());

    for token_url in [
        "http://auth.example.com/token",
        "http://10.0.0.1/token",
        "http://[2001:db8::1]/token",
    ] {
        let err = AuthClient::builder("https://api.example.com/")
            .proxy(None)
            .refresher(AuthServer::new(token_url).refresh_grant())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InsecureUrl(_)), "{token_url}: {err:?}");
        let err = AuthClient::builder("https://api.example.com/")
            .proxy(None)
            .refresher(JsonRefresh::new(token_url))
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InsecureUrl(_)), "{token_url}: {err:?}");
        assert!(AuthClient::builder("https://api.example.com/")
            .proxy(None)
            .refresher(AuthServer::new(token_url).refresh_grant())
            .allow_insecure_http(true)
            .build()
            .is_ok());
    }

    // https anywhere, and plain http to loopback, are fine.
    for (base, token) in [
        ("https://api.example.com/", "https://auth.example.com/token"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:9090/token"),
        ("http://localhost/", "http://localhost:1/token"),
        ("http://[::1]:8080/", "http://[::1]:9090/token"),
    ] {
        let built = AuthClient::builder(base)
            .proxy(None)
            .refresher(AuthServer::new(token).refresh_grant())
            .build();
        assert!(built.is_ok(), "{base} {token}: {built:?}");
    }

    // Not a usable URL at all.
    for bad in [
        "api.example.com",
        "ftp://api.example.com/",
        "https://x/?q=1",
    ] {
        let err = AuthClient::builder(bad).proxy(None).build().unwrap_err();
        assert!(matches!(err, Error::InvalidUrl(_)), "{bad}: {err:?}");
    }
    let err = AuthClient::builder("https://api.example.com/")
        .proxy(None)
        .refresher(AuthServer::new("not a url").refresh_grant())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl(_)), "{err:?}");
}

/// An agent as a user would build it: ureq's defaults (http_status_as_error on, redirects
/// followed), only without environment proxies.
fn user_agent() -> Agent {
    let agent: Agent = Agent::config_builder().proxy(None).build().into();
    assert!(agent.config().http_status_as_error());
    assert!(agent.config().max_redirects() > 0);
    agent
}

#[test]
fn a_user_agent_with_default_config_still_refreshes_and_retries() {
    let srv = TokenServer::start();
    let client = AuthClient::builder(srv.api_url())
        .api_agent(user_agent())
        .token_agent(user_agent())
        .refresher(
            AuthServer::new(srv.token_url())
                .client_id("test-app")
                .client_secret("test-secret")
                .refresh_grant(),
        )
        .tokens(srv.login())
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(srv.api_401s(), 1);
    assert_eq!(srv.refreshes(), 1);

    // The token endpoint's invalid_grant (a 400) is read as an OAuth answer, not as a
    // transport error from the agent.
    srv.revoke_all();
    let err = client.get("me").call().unwrap_err();
    assert!(err.is_session_expired(), "{err:?}");
}

#[test]
fn a_user_agent_with_default_config_reports_statuses_our_way() {
    let api = Api::start(&["acc"]);
    let strict = AuthClient::builder(api.url())
        .api_agent(user_agent())
        .tokens(Tokens::new("acc"))
        .build()
        .unwrap();
    let err = strict.get("status/404").call().unwrap_err();
    assert!(matches!(err, Error::StatusCode(404)), "{err:?}");

    let lenient = AuthClient::builder(api.url())
        .api_agent(user_agent())
        .tokens(Tokens::new("acc"))
        .http_status_as_error(false)
        .build()
        .unwrap();
    assert_eq!(lenient.get("status/404").call().unwrap().status(), 404);
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_transport_error_through_a_proxy_names_the_proxy_without_its_credentials() {
    let srv = TokenServer::start();
    let port = closed_port();
    let proxy = tokengate::ureq::Proxy::new(&format!("http://proxyuser:pr0xy-pw@127.0.0.1:{port}"))
        .unwrap();
    let named = format!("(through the proxy http://127.0.0.1:{port})");
    let client = AuthClient::builder(srv.api_url())
        .proxy(Some(proxy))
        .refresher(srv.refresher())
        .tokens(srv.login().with_expires_in(Duration::ZERO))
        .build()
        .unwrap();
    // The expired token is refreshed first: the token agent goes through the proxy too.
    let err = client.get("me").call().unwrap_err();
    let text = format!("{err} / {err:?}");
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(&**e, RefreshError::Transport(t) if t.proxy().is_some())),
        "{text}"
    );
    assert!(err.to_string().contains(&named), "{err}");
    assert!(
        !text.contains("pr0xy-pw") && !text.contains("proxyuser"),
        "{text}"
    );

    let client = AuthClient::builder(srv.api_url())
        .proxy(Some(
            tokengate::ureq::Proxy::new(&format!("http://127.0.0.1:{port}")).unwrap(),
        ))
        .build()
        .unwrap();
    client.set_tokens(srv.login()).unwrap();
    let err = client.get("me").call().unwrap_err();
    assert!(
        matches!(&err, Error::Http(t) if t.proxy() == Some(&*format!("http://127.0.0.1:{port}"))),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("http transport error: "),
        "{err}"
    );
    assert!(err.to_string().ends_with(&named), "{err}");

    // Without a proxy, none is named.
    let client = AuthClient::builder(format!("http://127.0.0.1:{port}/"))
        .proxy(None)
        .build()
        .unwrap();
    client.set_tokens(srv.login()).unwrap();
    let err = client.get("me").call().unwrap_err();
    assert!(
        matches!(&err, Error::Http(t) if t.proxy().is_none()),
        "{err:?}"
    );
    assert!(!err.to_string().contains("proxy"), "{err}");
}
