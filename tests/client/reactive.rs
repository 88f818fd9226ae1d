//! Behaviour 2: a 401 triggers one refresh and ONE retry of the very same request (method,
//! target, headers and body bytes); a second 401 is `Error::Unauthorized`, never a loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::harness::fixtures::minting_refresher;
use crate::harness::observe::{body_json, Seen};
use crate::harness::servers::{Api, TokenServer};
use tokengate::ureq::http::{Response, StatusCode};
use tokengate::ureq::Body;
use tokengate::{AuthClient, Error, Tokens};

/// A client whose token `old` the API rejects; the refresher mints accepted `new-N` tokens.
fn stale_client(api: &Api, refreshes: &Arc<AtomicUsize>) -> AuthClient {
    AuthClient::builder(api.url())
        .proxy(None)
        .refresher(minting_refresher(api, refreshes.clone()))
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap()
}

/// Checks that `api` saw exactly one 401'd attempt and one retry that are the same request
/// byte for byte, except for the token.
fn assert_identical_retry(api: &Api, expected_body: &[u8]) -> (Seen, Seen) {
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "one attempt and one retry");
    let (first, retry) = (seen[0].clone(), seen[1].clone());
    assert_eq!(first.bearer(), Some("old"));
    assert_eq!(retry.bearer(), Some("new-1"));
    assert_eq!(first.method, retry.method);
    assert_eq!(first.target, retry.target);
    assert_eq!(first.body, expected_body);
    assert_eq!(retry.body, expected_body, "retry body differs");
    assert_eq!(first.headers_without_auth(), retry.headers_without_auth());
    assert_eq!(retry.header_values("authorization").len(), 1);
    (first, retry)
}

fn ok(resp: Result<Response<Body>, Error>) {
    assert_eq!(resp.unwrap().status(), StatusCode::OK);
}

#[test]
fn send_retries_the_same_raw_bytes_after_refresh() {
    let api = Api::start(&[]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = stale_client(&api, &refreshes);
    // Every byte value, including NUL, CR, LF and invalid UTF-8.
    let body: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    ok(client
        .put("blobs/7")
        .query("v", "1 2")
        .header("Content-Type", "application/octet-stream")
        .header("X-Request-Id", "req-42")
        .header("X-Multi", "a")
        .header("X-Multi", "b")
        .send(&body));
    let (first, _) = assert_identical_retry(&api, &body);
    assert_eq!(first.method, "PUT");
    assert_eq!(first.target, "/api/blobs/7?v=1%202");
    assert_eq!(first.header_values("x-multi"), vec!["a", "b"]);
    assert_eq!(first.header("x-request-id"), Some("req-42"));
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}

#[test]
fn send_json_retries_the_same_bytes_after_refresh() {
    let api = Api::start(&[]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = stale_client(&api, &refreshes);
    let value = serde_json::json!({"sku": 1, "name": "caf\u{e9} \"x\"", "tags": [1, 2, null]});
    ok(client
        .post("orders")
        .header("Idempotency-Key", "k-1")
        .send_json(&value));
    let (first, _) = assert_identical_retry(&api, &serde_json::to_vec(&value).unwrap());
    assert_eq!(first.method, "POST");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("idempotency-key"), Some("k-1"));
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}

#[test]
fn send_form_retries_the_same_bytes_after_refresh() {
    let api = Api::start(&[]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = stale_client(&api, &refreshes);
    ok(client
        .patch("profile")
        .send_form([("a b", "c&d"), ("x", "y=z"), ("e", "\u{e9}")]));
    let (first, _) = assert_identical_retry(&api, b"a+b=c%26d&x=y%3Dz&e=%C3%A9");
    assert_eq!(first.method, "PATCH");
    assert_eq!(
        first.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}

#[test]
fn call_without_body_retries_without_body() {
    let api = Api::start(&[]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = stale_client(&api, &refreshes);
    ok(client.delete("items/3").call());
    let (first, retry) = assert_identical_retry(&api, b"");
    assert_eq!(first.method, "DELETE");
    // No body means no content-length/transfer-encoding on either attempt.
    for s in [&first, &retry] {
        assert_eq!(s.header("transfer-encoding"), None);
        assert!(matches!(s.header("content-length"), None | Some("0")));
    }
}

#[test]
fn a_second_401_is_unauthorized_not_a_loop() {
    let api = Api::start(&[]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    // The API accepts no token at all, not even freshly refreshed ones.
    let r = refreshes.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(move |_: &tokengate::ureq::Agent, _: &Tokens| {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Tokens::new(format!("never-accepted-{n}")).with_refresh_token("rt"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();

    let err = client.post("orders").send("x").unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    assert_eq!(err.status(), Some(401));
    assert_eq!(api.calls(), 2, "one attempt, one retry");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);

    let err = client.get("orders").call().unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    assert_eq!(api.calls(), 4);
    assert_eq!(refreshes.load(Ordering::SeqCst), 2);
    assert_eq!(
        api.tokens_seen(),
        [
            "old",
            "never-accepted-1",
            "never-accepted-1",
            "never-accepted-2"
        ]
        .map(|t| Some(t.to_owned()))
    );
}

#[test]
fn a_401_without_a_refresher_is_final() {
    let api = Api::start(&[]);
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .tokens(Tokens::new("old"))
        .build()
        .unwrap();
    let err = client.get("x").call().unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    assert_eq!(api.calls(), 1);
}

#[test]
fn a_401_for_insufficient_scope_does_not_refresh() {
    // RFC 6750 §3.1: a new token would not help, so no refresh and no retry.
    let api = Api::start(&["old"]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = stale_client(&api, &refreshes);
    let err = client.get("scope").call().unwrap_err();
    assert!(
        matches!(&err, Error::InsufficientScope { status: 401, scope } if scope.as_deref() == Some("admin")),
        "{err:?}"
    );
    assert_eq!(api.calls(), 1);
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
}

#[test]
fn revoked_access_token_is_refreshed_once_against_the_token_server() {
    let srv = TokenServer::start();
    let client = srv.client_builder().tokens(srv.login()).build().unwrap();
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-1");

    srv.revoke_access_tokens();
    let mut r = client
        .post("orders")
        .send_json(&serde_json::json!({"n": 1}))
        .unwrap();
    let body = body_json(&mut r);
    assert_eq!(body["token"], "at-2");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body_len"], 7);
    assert_eq!(srv.api_requests(), 3);
    assert_eq!(srv.api_401s(), 1);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(
        client.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt-2"
    );
}

#[test]
fn a_403_or_a_401_for_a_malformed_request_is_a_status_not_a_refresh() {
    // Only a 401 says the token is bad: a 403 is about the request's rights, and a 401 whose
    // challenge says `invalid_request` is about the request itself. Neither refreshes.
    let api = Api::start(&["acc"]);
    api.server.mock(|when, then| {
        when.path("/malformed");
        then.status(401)
            .header("www-authenticate", r#"Bearer error="invalid_request""#);
    });
    let refreshes = Arc::new(AtomicUsize::new(0));
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(minting_refresher(&api, refreshes.clone()))
        .tokens(Tokens::new("acc").with_refresh_token("rt"))
        .build()
        .unwrap();

    let e = client.get("status/403").call().unwrap_err();
    assert!(matches!(e, Error::StatusCode(403)), "{e:?}");
    let e = client.get("/malformed").call().unwrap_err();
    assert!(matches!(e, Error::Unauthorized), "{e:?}");
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    assert_eq!(client.stats().requests, 2, "no replay");
    assert_eq!(client.tokens().unwrap().access_token().secret(), "acc");
}
