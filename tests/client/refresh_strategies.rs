//! Behaviour 5: what each built-in strategy puts on the wire and how it reads the answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::fixtures::base64;
use crate::harness::observe::{body_json, release_together, Seen};
use crate::harness::servers::{form, Api, TokenServer};
use tokengate::testing::{ClientAuthUsed, CLIENT_ID};
use tokengate::time::ManualClock;
use tokengate::{AuthClient, AuthServer, ClientAuth, JsonRefresh, Refresh, Tokens};

const FORM: &str = "application/x-www-form-urlencoded";

fn client(api: &Api, refresher: impl Refresh, refresh_token: &str) -> AuthClient {
    AuthClient::builder(api.url())
        .proxy(None)
        .refresher(refresher)
        .tokens(Tokens::new("old").with_refresh_token(refresh_token))
        .build()
        .unwrap()
}

fn only(log: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1, "token endpoint calls");
    log[0].clone()
}

fn form_of(s: &Seen) -> HashMap<String, String> {
    form(&s.body)
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn oauth2_refresh_sends_the_rfc6749_form_with_client_secret_basic() {
    let api = Api::start(&[]);
    let log = api.minting_endpoint("/token", "acc-");
    let refresher = AuthServer::new(api.server.url("/token"))
        .client_id("my app:1")
        .client_secret("s3c:r et/+")
        .refresh_grant();
    let client = client(&api, refresher, "rt/+=~");
    assert_eq!(client.get("x").call().unwrap().status(), 200);

    let req = only(&log);
    assert_eq!(req.method, "POST");
    assert_eq!(
        String::from_utf8(req.body.clone()).unwrap(),
        "grant_type=refresh_token&refresh_token=rt%2F%2B%3D%7E"
    );
    assert_eq!(req.header("content-type"), Some(FORM));
    assert_eq!(req.header("accept"), Some("application/json"));
    // RFC 6749 §2.3.1: Basic base64(urlencode(id) ":" urlencode(secret)).
    let expected = format!("Basic {}", base64(b"my+app%3A1:s3c%3Ar+et%2F%2B"));
    assert_eq!(expected, "Basic bXkrYXBwJTNBMTpzM2MlM0FyK2V0JTJGJTJC");
    assert_eq!(req.header_values("authorization"), vec![expected.as_str()]);

    let t = client.tokens().unwrap();
    assert_eq!(t.access_token().secret(), "acc-1");
    assert_eq!(t.refresh_token().unwrap().secret(), "rt-acc-1");
    assert_eq!(
        api.tokens_seen(),
        [Some("old".into()), Some("acc-1".into())]
    );
}

#[test]
fn oauth2_refresh_with_client_auth_post_puts_the_credentials_in_the_form() {
    let api = Api::start(&[]);
    let log = api.minting_endpoint("/token", "acc-");
    let refresher = AuthServer::new(api.server.url("/token"))
        .client_id("my app")
        .client_secret("s3c:r et")
        .auth_method(ClientAuth::Post)
        .refresh_grant()
        .scope("read write");
    let client = client(&api, refresher, "rt-1");
    assert_eq!(client.get("x").call().unwrap().status(), 200);

    let req = only(&log);
    assert_eq!(
        form_of(&req),
        map(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-1"),
            ("scope", "read write"),
            ("client_id", "my app"),
            ("client_secret", "s3c:r et"),
        ])
    );
    assert!(String::from_utf8_lossy(&req.body).contains("scope=read+write"));
    assert!(req.header_values("authorization").is_empty());
}

#[test]
fn oauth2_refresh_with_client_auth_none_sends_only_the_client_id() {
    let api = Api::start(&[]);
    let log = api.minting_endpoint("/token", "acc-");
    // A secret is configured but must not be sent anywhere with ClientAuth::None.
    let refresher = AuthServer::new(api.server.url("/token"))
        .client_id("public-app")
        .client_secret("never-sent")
        .auth_method(ClientAuth::None)
        .refresh_grant();
    let client = client(&api, refresher, "rt-1");
    assert_eq!(client.get("x").call().unwrap().status(), 200);

    let req = only(&log);
    assert_eq!(
        form_of(&req),
        map(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-1"),
            ("client_id", "public-app"),
        ])
    );
    assert!(req.header_values("authorization").is_empty());
    let wire = format!("{:?} {}", req.headers, String::from_utf8_lossy(&req.body));
    assert!(!wire.contains("never-sent"), "{wire}");

    // Without a secret, None is the default.
    let api = Api::start(&[]);
    let log = api.minting_endpoint("/token", "acc-");
    let client = self::client(
        &api,
        AuthServer::new(api.server.url("/token"))
            .client_id("public-app")
            .refresh_grant(),
        "rt-1",
    );
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    let req = only(&log);
    assert_eq!(form_of(&req).get("client_id").unwrap(), "public-app");
    assert!(!form_of(&req).contains_key("client_secret"));
    assert!(req.header_values("authorization").is_empty());
}

#[test]
fn a_response_without_refresh_token_keeps_the_old_one() {
    let api = Api::start(&[]);
    let acc = api.accepted.clone();
    let n = AtomicUsize::new(0);
    let log = api.endpoint("/token", move |_| {
        let k = n.fetch_add(1, Ordering::SeqCst) + 1;
        acc.lock().unwrap().insert(format!("a-{k}"));
        (
            200,
            format!(r#"{{"access_token":"a-{k}","token_type":"bearer","expires_in":60}}"#),
        )
    });
    let client = client(
        &api,
        AuthServer::new(api.server.url("/token")).refresh_grant(),
        "rt-orig",
    );
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    assert_eq!(
        client.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt-orig"
    );
    api.reject("a-1");
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(form(&log[1].body)["refresh_token"], "rt-orig");
    let t = client.tokens().unwrap();
    assert_eq!(t.access_token().secret(), "a-2");
    assert_eq!(t.refresh_token().unwrap().secret(), "rt-orig");
}

#[test]
fn rotated_refresh_tokens_replace_the_old_ones_and_are_never_reused() {
    let srv = TokenServer::start();
    let client = srv.client_builder().tokens(srv.login()).build().unwrap();
    for round in 2..=6 {
        srv.revoke_access_tokens();
        let mut r = client.get("me").call().unwrap();
        assert_eq!(body_json(&mut r)["token"], format!("at-{round}"));
        let held = client
            .tokens()
            .unwrap()
            .refresh_token()
            .unwrap()
            .secret()
            .to_owned();
        assert_eq!(held, format!("rt-{round}"));
        assert!(srv.is_active(&held), "the server's current refresh token");
    }
    assert_eq!(srv.refreshes(), 5);
    assert_eq!(srv.reuse_detected(), 0);
    // Each call authenticated as test-app by HTTP Basic (the kit checked the secret).
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 5);
    for call in &calls {
        assert_eq!(call.client_auth, ClientAuthUsed::Basic, "{call:?}");
        assert_eq!(call.client_id.as_deref(), Some(CLIENT_ID), "{call:?}");
    }
}

#[test]
fn json_refresh_posts_the_refresh_token_as_json() {
    let api = Api::start(&[]);
    let acc = api.accepted.clone();
    let log = api.endpoint("/auth/refresh", move |_| {
        acc.lock().unwrap().insert("acc-2".into());
        (
            200,
            r#"{"accessToken":"acc-2","refreshToken":"rt-2"}"#.into(),
        )
    });
    let client = client(
        &api,
        JsonRefresh::new(api.server.url("/auth/refresh")),
        "rt-1",
    );
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    let req = only(&log);
    assert_eq!(req.body, br#"{"refreshToken":"rt-1"}"#);
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert!(req.header_values("authorization").is_empty());
    let t = client.tokens().unwrap();
    assert_eq!(t.access_token().secret(), "acc-2");
    assert_eq!(t.refresh_token().unwrap().secret(), "rt-2");
}

#[test]
fn json_refresh_rotates_against_the_token_server() {
    let srv = TokenServer::start();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(JsonRefresh::new(srv.json_url()))
        .tokens(srv.login())
        .build()
        .unwrap();
    for round in 2..=4 {
        srv.revoke_access_tokens();
        let mut r = client.get("me").call().unwrap();
        assert_eq!(body_json(&mut r)["token"], format!("at-{round}"));
    }
    assert_eq!(srv.refreshes(), 3);
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(
        client.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt-4"
    );
}

#[test]
fn json_refresh_with_custom_field_names() {
    let api = Api::start(&[]);
    let acc = api.accepted.clone();
    let log = api.endpoint("/refresh", move |_| {
        acc.lock().unwrap().insert("acc-2".into());
        (
            200,
            r#"{"token":"acc-2","refresh":"rt-2","ttl":120}"#.into(),
        )
    });
    let clock = Arc::new(ManualClock::new());
    let refresher = JsonRefresh::new(api.server.url("/refresh"))
        .request_field("refresh_token")
        .access_token_field("token")
        .refresh_token_field("refresh")
        .expires_in_field("ttl");
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .clock(clock.clone())
        .refresher(refresher)
        .tokens(Tokens::new("old").with_refresh_token("rt-1"))
        .build()
        .unwrap();
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    assert_eq!(only(&log).body, br#"{"refresh_token":"rt-1"}"#);
    let t = client.tokens().unwrap();
    assert_eq!(t.access_token().secret(), "acc-2");
    assert_eq!(t.refresh_token().unwrap().secret(), "rt-2");
    assert_eq!(
        t.expires_at(),
        Some(tokengate::time::Clock::now(&*clock) + Duration::from_secs(120))
    );
}

#[test]
fn client_credentials_acquire_once_and_reacquire_on_401_and_expiry() {
    const N: usize = 16;
    let api = Api::start(&[]);
    let log = api.minting_endpoint("/token", "cc-");
    let clock = Arc::new(ManualClock::new());
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .clock(clock.clone())
        .refresher(
            AuthServer::new(api.server.url("/token"))
                .client_id("svc")
                .client_secret("svc-secret")
                .client_credentials()
                .scope("reports:read"),
        )
        .build()
        .unwrap();
    assert!(client.tokens().is_none());

    let handles = release_together(N, &client, move |_, c| {
        c.get("report").call().map(|mut r| body_json(&mut r))
    });
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap()["token"], "cc-1");
    }
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "one acquisition for {N} threads"
    );
    assert_eq!(api.calls(), N, "nobody sent a request without a token");
    let req = log.lock().unwrap()[0].clone();
    assert_eq!(
        form_of(&req),
        map(&[
            ("grant_type", "client_credentials"),
            ("scope", "reports:read"),
        ])
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Basic {}", base64(b"svc:svc-secret")).as_str())
    );
    // A refresh token in a client_credentials answer is not used for anything.
    assert!(!form_of(&req).contains_key("refresh_token"));

    // Re-acquired on 401 …
    api.reject("cc-1");
    let mut r = client.get("report").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "cc-2");
    assert_eq!(log.lock().unwrap().len(), 2);
    assert!(!form_of(&log.lock().unwrap()[1]).contains_key("refresh_token"));

    // … and on expiry (without a 401 first).
    let calls_before = api.calls();
    clock.advance(Duration::from_secs(3601));
    let mut r = client.get("report").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "cc-3");
    assert_eq!(log.lock().unwrap().len(), 3);
    assert_eq!(api.calls(), calls_before + 1);
}
