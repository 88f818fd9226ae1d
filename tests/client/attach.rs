//! Behaviour 1: the access token goes to the base URL's origin (scheme, host, port) and
//! nowhere else; paths that would leave that origin are rejected before anything is sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::harness::fixtures::minting_refresher;
use crate::harness::servers::Api;
use tokengate::ureq::http::Method;
use tokengate::{AuthClient, Error, Tokens};

fn client_for(base: &str, api: &Api, refreshes: Arc<AtomicUsize>) -> AuthClient {
    AuthClient::builder(base)
        .proxy(None)
        .allow_other_origins(true)
        .refresher(minting_refresher(api, refreshes))
        .tokens(Tokens::new("acc-1").with_refresh_token("ref-1"))
        .build()
        .unwrap()
}

#[test]
fn every_request_to_the_base_origin_carries_exactly_one_bearer_header() {
    let api = Api::start(&["acc-1"]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = client_for(&api.url(), &api, refreshes.clone());
    let port = api.server.port();

    let methods = [
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::OPTIONS,
    ];
    for m in &methods {
        let resp = client.request(m.clone(), "items/1").call().unwrap();
        assert_eq!(resp.status(), 200, "{m}");
    }
    // Relative with query, rooted, and absolute URLs of the same origin (an upper-case
    // scheme still names the same origin).
    let same_origin = [
        "items?x=1".to_owned(),
        "/api/rooted".to_owned(),
        format!("http://127.0.0.1:{port}/api/absolute"),
        format!("HTTP://127.0.0.1:{port}/api/upper"),
    ];
    for path in &same_origin {
        let resp = client.get(path).query("q", "a b").call().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // A user-supplied Authorization header on our origin is replaced, not duplicated.
    client
        .get("own-header")
        .header("Authorization", "Bearer user-supplied")
        .call()
        .unwrap();

    let seen = api.seen();
    assert_eq!(seen.len(), methods.len() + same_origin.len() + 1);
    for s in &seen {
        assert_eq!(
            s.header_values("authorization"),
            vec!["Bearer acc-1"],
            "{} {}",
            s.method,
            s.target
        );
    }
    assert_eq!(seen[methods.len()].target, "/api/items?x=1&q=a%20b");
    assert_eq!(seen[methods.len() + 1].target, "/api/rooted?q=a%20b");
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
}

#[test]
fn other_origins_never_see_the_token() {
    let api = Api::start(&["acc-1"]);
    let other = Api::start(&[]); // same host, other port
    let refreshes = Arc::new(AtomicUsize::new(0));
    let port = api.server.port();

    // Same host, different port.
    let client = client_for(&api.url(), &api, refreshes.clone());
    let err = client.get(&other.server.url("/api/x")).call().unwrap_err();
    // The foreign 401 is just a status: no refresh, no retry.
    assert!(matches!(err, Error::Unauthorized), "{err:?}");

    // Different scheme, same host and port: base https, request http.
    let https_client = AuthClient::builder(format!("https://127.0.0.1:{port}/api/"))
        .proxy(None)
        .tokens(Tokens::new("acc-1"))
        .allow_other_origins(true)
        .http_status_as_error(false)
        .build()
        .unwrap();
    let resp = https_client
        .get(&format!("http://127.0.0.1:{port}/api/scheme"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Different host name for the same address: base localhost, request 127.0.0.1.
    let host_client = AuthClient::builder(format!("http://localhost:{port}/api/"))
        .proxy(None)
        .tokens(Tokens::new("acc-1"))
        .allow_other_origins(true)
        .http_status_as_error(false)
        .build()
        .unwrap();
    let resp = host_client
        .get(&format!("http://127.0.0.1:{port}/api/host"))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 401);

    assert_eq!(other.seen().len(), 1);
    assert_eq!(other.seen()[0].header("authorization"), None);
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.header("authorization"), None, "{}", s.target);
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
}

#[test]
fn a_user_authorization_header_goes_to_the_origin_it_was_set_for_and_nowhere_else() {
    // A caller's own credential for another origin (with allow_other_origins) is sent there,
    // as set, once; the client's token is not. A redirect to a third origin drops it (see
    // tests/client/redirect.rs).
    let api = Api::start(&["acc-1"]);
    let other = Api::start(&["user-token"]);
    let client = client_for(&api.url(), &api, Arc::new(AtomicUsize::new(0)));
    let resp = client
        .get(&other.server.url("/api/x"))
        .header("Authorization", "Bearer user-token")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(other.seen().len(), 1);
    assert_eq!(
        other.seen()[0].header_values("authorization"),
        ["Bearer user-token"]
    );
    assert_eq!(api.calls(), 0);
}

#[test]
fn paths_that_would_leave_the_origin_are_rejected_before_sending() {
    let api = Api::start(&["acc-1"]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = client_for(&api.url(), &api, refreshes.clone());
    let bad = [
        "//evil.example/x",
        "///evil.example/x",
        "\\\\evil.example\\x",
        "/\\evil.example/x",
        "javascript:x",
        "javascript:alert(1)",
        "JavaScript:x",
        "mailto:a@evil.example",
        "data:text/plain,x",
        "file:///etc/passwd",
        "ftp://evil.example/x",
        "http:evil.example",
        "https:/evil.example",
        "evil.example:443/x",
        " //evil.example/x",
        "items\r\nX-Injected: 1",
    ];
    for path in bad {
        for m in [Method::GET, Method::POST] {
            match client.request(m, path).send("body") {
                Err(Error::InvalidUrl(_)) => {}
                other => panic!("{path:?}: expected InvalidUrl, got {other:?}"),
            }
        }
    }
    assert_eq!(api.calls(), 0);
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
}
