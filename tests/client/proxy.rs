//! Issue 25, item 8: which proxy a request goes through. An environment proxy is never used for
//! a loopback destination (Go's `http.ProxyFromEnvironment` rule), for API calls, refreshes,
//! discovery, the device flow and revocation alike; a proxy set explicitly is used for every
//! destination, loopback included. (`NO_PROXY` and non-loopback destinations: the unit tests
//! of `src/proxy.rs`, since no test may leave loopback.)
//!
//! The environment test runs in a child process of this binary: the parent sets the proxy
//! variables in the child's environment only.

use std::time::Duration;

use crate::harness::fixtures::{refused_addr, TestTime};
use crate::harness::observe::{child_test, test_name, ROLE};
use crate::harness::servers::raw::{recording, Action, Log};
use crate::harness::servers::TokenServer;
use tokengate::testing::{Grant, PUBLIC_CLIENT_ID};
use tokengate::ureq::{self, Agent, Proxy};
use tokengate::{AuthClient, AuthServer, Tokens};

/// The variable the parent names the dead proxy in.
const DEAD_PROXY: &str = "TOKENGATE_TEST_DEAD_PROXY";

/// With `HTTP_PROXY` naming a port nobody listens on, every request tokengate sends to
/// loopback servers still works: discovery, the device flow, an API request and a refresh on
/// the default agents and on agents of the user's own with ureq's defaults, and revocation.
/// Before, each failed with "connection refused" from the proxy.
#[test]
fn an_environment_proxy_is_not_used_for_loopback_destinations() {
    if std::env::var_os(ROLE).is_some() {
        return every_flow_to_loopback_with_a_dead_environment_proxy();
    }
    let dead = format!("http://{}", refused_addr());
    let mut child = child_test(
        &test_name!(an_environment_proxy_is_not_used_for_loopback_destinations),
        "dead proxy",
    );
    for var in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"] {
        child.env_remove(var).env_remove(var.to_ascii_lowercase());
    }
    let out = child
        .env("HTTP_PROXY", &dead)
        .env(DEAD_PROXY, &dead)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}"
    );
}

/// The child of [`an_environment_proxy_is_not_used_for_loopback_destinations`].
fn every_flow_to_loopback_with_a_dead_environment_proxy() {
    let srv = TokenServer::start();
    // The environment reached ureq, and its proxy is dead: ureq alone cannot reach the server.
    let plain = Agent::new_with_defaults();
    let proxy = plain.config().proxy().expect("HTTP_PROXY read by ureq");
    assert!(proxy.is_from_env());
    assert_eq!(
        format!("http://{}:{}", proxy.host(), proxy.port()),
        std::env::var(DEAD_PROXY).unwrap()
    );
    let refused = plain.get(srv.issuer()).call().unwrap_err();
    assert!(
        matches!(&refused, ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );

    // Discovery and the device flow, on their default agent.
    let server = AuthServer::discover(srv.issuer())
        .unwrap()
        .client_id(PUBLIC_CLIENT_ID);
    let time = TestTime::new();
    let pending = server
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone())
        .start()
        .unwrap();
    srv.approve(pending.user_code()).unwrap();
    let tokens = pending.wait().unwrap();
    let polls = srv.token_calls();
    assert_eq!(polls.len(), 1);
    assert_eq!(polls[0].grant, Grant::DeviceCode);

    // An API request and a refresh, on the client's default agents.
    let client = AuthClient::builder(srv.api_url())
        .refresher(server.clone().refresh_grant())
        .tokens(tokens)
        .build()
        .unwrap();
    request_then_refresh(&client, &srv, 1);

    // The same on agents of the user's own, with ureq's defaults (the environment's proxy).
    let own = AuthClient::builder(srv.api_url())
        .api_agent(Agent::new_with_defaults())
        .token_agent(Agent::new_with_defaults())
        .refresher(server.refresh_grant())
        .tokens(srv.login_as(PUBLIC_CLIENT_ID, None))
        .build()
        .unwrap();
    request_then_refresh(&own, &srv, 2);

    // Revocation (a whole-call timeout of its own) on the default agent.
    own.logout().unwrap();
    assert_eq!(srv.revocations(), 1);
}

/// One request with the current token, then one that the API rejects: one refresh (the
/// `n`-th of the server), and the replay.
fn request_then_refresh(client: &AuthClient, srv: &TokenServer, n: u64) {
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    srv.revoke_access_tokens();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.refreshes(), n);
}

/// A proxy given to `AuthClientBuilder::proxy` takes loopback destinations too (explicit is
/// explicit; only the environment's proxy is skipped for loopback): the API and the token
/// endpoint are at a loopback address nobody listens on, and only a proxy that answers in
/// their place (after the `CONNECT` ureq sends it) makes the call succeed. The proxy sees one
/// `CONNECT` per agent and both requests.
#[test]
fn an_explicit_proxy_is_used_for_loopback_destinations_too() {
    let dead = refused_addr();
    let log = Log::default();
    let proxy = recording(&log, |req| match (req.method.as_str(), req.path.as_str()) {
        ("CONNECT", _) => Action::Respond(200, vec![], vec![]),
        ("POST", "/token") => Action::Respond(
            200,
            vec![b"content-type: application/json".to_vec()],
            br#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600}"#.to_vec(),
        ),
        ("GET", "/api/items") if req.header("authorization") == Some("Bearer at-2") => {
            Action::Respond(200, vec![], b"ok".to_vec())
        }
        _ => Action::Respond(400, vec![], vec![]),
    });
    let client = AuthClient::builder(format!("http://{dead}/api/"))
        .proxy(Some(
            Proxy::new(&format!("http://127.0.0.1:{}", proxy.port)).unwrap(),
        ))
        .refresher(
            AuthServer::new(format!("http://{dead}/token"))
                .client_id("my-cli")
                .refresh_grant(),
        )
        .tokens(
            Tokens::new("at-1")
                .with_refresh_token("rt-1")
                .with_expires_in(Duration::ZERO),
        )
        .build()
        .unwrap();
    assert_eq!(client.get("items").call().unwrap().status(), 200);
    let seen: Vec<String> = log
        .lock()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        seen,
        [
            format!("CONNECT {dead}"),
            "POST /token".to_owned(),
            format!("CONNECT {dead}"),
            "GET /api/items".to_owned(),
        ]
    );
}
