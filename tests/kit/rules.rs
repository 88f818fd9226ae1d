//! The rules of a real authorization server: client authentication (RFC 6749 §2.3), rotation
//! with reuse detection, clients and scopes bound to their tokens, whole-second `expires_in`,
//! client credentials, device logins (RFC 8628), browser logins with PKCE (RFC 7636),
//! revocation (RFC 7009) and the protected API's answers (RFC 6750).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use tokengate::login::DeviceError;
use tokengate::testing::{
    TestClient, TestServer, TestServerError, CLIENT_ID, CLIENT_SECRET, PUBLIC_CLIENT_ID,
};
use tokengate::{AuthClient, AuthServer, Error};

use crate::harness::fixtures::TestTime;
use crate::harness::servers::raw;
use crate::{agent, post, post_basic, refresh};

const CC: [(&str, &str); 1] = [("grant_type", "client_credentials")];

#[test]
fn clients_authenticate_as_rfc6749_says() {
    let server = TestServer::start();
    let url = server.token_url();
    let (ok, _, body) = post_basic(&url, CLIENT_ID, CLIENT_SECRET, &CC);
    assert_eq!((ok, body["token_type"].as_str()), (200, Some("Bearer")));
    let form = [
        CC[0],
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
    ];
    assert_eq!(post(&url, &form).0, 200, "client_secret_post");

    let (status, headers, body) = post_basic(&url, CLIENT_ID, "wrong", &CC);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let challenge = headers.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(challenge.starts_with("Basic "), "{challenge}");
    let wrong = [CC[0], ("client_id", CLIENT_ID), ("client_secret", "wrong")];
    let (status, headers, _) = post(&url, &wrong);
    assert_eq!(status, 401);
    assert!(
        headers.get("www-authenticate").is_none(),
        "no challenge without Basic"
    );
    assert_eq!(post(&url, &[CC[0], ("client_id", "stranger")]).0, 401);
    assert_eq!(post(&url, &CC).0, 401, "no client at all");
    let twice = [CC[0], ("client_secret", CLIENT_SECRET)];
    assert_eq!(
        post_basic(&url, CLIENT_ID, CLIENT_SECRET, &twice).0,
        400,
        "two methods"
    );
    let with_secret = [
        CC[0],
        ("client_id", PUBLIC_CLIENT_ID),
        ("client_secret", "x"),
    ];
    assert_eq!(
        post(&url, &with_secret).0,
        401,
        "a public client has no secret"
    );
    let (status, _, body) = post(&url, &[CC[0], ("client_id", PUBLIC_CLIENT_ID)]);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
}

#[test]
fn client_credentials_issue_no_refresh_token() {
    let server = TestServer::start();
    let (status, _, body) = post_basic(&server.token_url(), CLIENT_ID, CLIENT_SECRET, &CC);
    assert_eq!(status, 200);
    assert_eq!(body["access_token"], "at-1");
    assert!(body.get("refresh_token").is_none());
    assert_eq!(
        body["expires_in"].as_u64(),
        Some(3600),
        "whole seconds, as an integer"
    );
}

#[test]
fn sub_second_lifetimes_are_announced_as_fractions() {
    let server = TestServer::builder()
        .access_token_lifetime(Duration::from_millis(1500))
        .start()
        .unwrap();
    let (_, _, body) = post_basic(&server.token_url(), CLIENT_ID, CLIENT_SECRET, &CC);
    assert_eq!(body["expires_in"].as_f64(), Some(1.5));
}

#[test]
fn sixty_four_threads_one_expiry_one_refresh() {
    let server = TestServer::start();
    let client = crate::logged_in(&server);
    server.revoke_access_tokens();
    let barrier = Arc::new(Barrier::new(64));
    std::thread::scope(|s| {
        for _ in 0..64 {
            let (client, barrier) = (client.clone(), barrier.clone());
            s.spawn(move || {
                barrier.wait();
                assert_eq!(client.get("items").call().unwrap().status(), 200);
            });
        }
    });
    assert_eq!(server.refreshes(), 1);
    let calls = server.token_calls();
    assert_eq!(calls[0].presented, Some(1));
    assert_eq!((server.reuse_detected(), server.presented_twice()), (0, 0));
    assert!(server.api_401s() >= 1 && server.api_401s() <= 64);
}

#[test]
fn a_rotated_refresh_token_revokes_its_whole_login() {
    let server = TestServer::start();
    let mine = server.login();
    let other = server.login();
    assert_eq!(
        refresh(&server.token_url(), "rt-1").2["refresh_token"],
        "rt-3"
    );
    let (status, _, body) = refresh(&server.token_url(), "rt-1");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!((server.reuse_detected(), server.presented_twice()), (1, 1));
    for gone in ["rt-3", "at-3", mine.access_token().secret()] {
        assert!(!server.is_active(gone), "{gone} is revoked with its login");
    }
    assert!(
        server.is_active(other.access_token().secret()),
        "another login lives on"
    );
    assert_eq!(refresh(&server.token_url(), "rt-3").0, 400);
    assert_eq!(refresh(&server.token_url(), "rt-2").0, 200);
}

#[test]
fn refresh_tokens_keep_their_client_and_scope() {
    let server = TestServer::start();
    server.login_as(PUBLIC_CLIENT_ID, Some("read write"));
    let (status, _, body) = refresh(&server.token_url(), "rt-1");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "another client"
    );
    let public = |scope: &str| {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-1"),
            ("client_id", PUBLIC_CLIENT_ID),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        post(&server.token_url(), &form)
    };
    assert_eq!(public("read admin").2["error"], "invalid_scope");
    let (status, _, body) = public("read");
    assert_eq!(
        (status, body["scope"].as_str()),
        (200, Some("read")),
        "narrowed (RFC 6749 §6)"
    );
    // `TestServer::refresh` presents a token as the client it was issued to; the login kept
    // its whole scope.
    let behind = server.refresh("rt-2").unwrap();
    assert_eq!(behind.refresh_token().unwrap().secret(), "rt-3");
    assert_eq!(behind.scope(), Some("read write"));
    let calls = server.token_calls();
    assert_eq!(
        calls.last().unwrap().client_id.as_deref(),
        Some(PUBLIC_CLIENT_ID)
    );
}

fn device_flow(server: &TestServer, time: &Arc<TestTime>) -> tokengate::login::DeviceFlow {
    AuthServer::new(server.token_url())
        .device_authorization_url(server.device_authorization_url())
        .client_id(PUBLIC_CLIENT_ID)
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone())
}

#[test]
fn device_logins_wait_for_the_user() {
    let server = TestServer::start();
    let time = TestTime::new();
    let pending = device_flow(&server, &time).start().unwrap();
    assert_eq!(pending.interval(), Duration::from_secs(5));
    assert_eq!(pending.expires_in(), Duration::from_secs(600));
    let user_code = pending.user_code().to_owned();
    assert_eq!(user_code.len(), 9);
    // The first poll is pending: the user answers while the client sleeps.
    let (s, code) = (&server, user_code.clone());
    let tokens = std::thread::scope(|scope| {
        let waiter = scope.spawn(move || pending.wait());
        crate::harness::observe::wait_until("a pending poll", || s.token_requests() >= 1);
        s.approve(&code).unwrap();
        waiter.join().unwrap()
    })
    .unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-1");
    let answered = server.approve(&user_code).unwrap_err();
    assert!(matches!(answered, TestServerError::UnknownUserCode));
    assert!(matches!(
        server.deny("BCDF-GHJK"),
        Err(TestServerError::UnknownUserCode)
    ));

    let denied = device_flow(&server, &time).start().unwrap();
    server.deny(denied.user_code()).unwrap();
    assert!(matches!(
        denied.wait(),
        Err(Error::Device(DeviceError::AccessDenied))
    ));
    let expired = device_flow(&server, &time).start().unwrap();
    server.expire(expired.user_code()).unwrap();
    assert!(matches!(
        expired.wait(),
        Err(Error::Device(DeviceError::ExpiredToken))
    ));
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// BASE64URL(SHA256(VERIFIER)), RFC 7636 Appendix B.
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn authorize_url(server: &TestServer, client: &str, redirect: &str, extra: &str) -> String {
    format!(
        "{}?response_type=code&client_id={client}&redirect_uri={redirect}&state=xyz{extra}",
        server.authorization_url()
    )
}

fn with_pkce() -> String {
    format!("&code_challenge={CHALLENGE}&code_challenge_method=S256")
}

/// The `code` of a redirect URL.
fn code_of(redirect: &str) -> String {
    let query = redirect.split_once('?').unwrap().1;
    let code = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap();
    code.to_owned()
}

fn exchange(server: &TestServer, code: &str, verifier: &str) -> (u16, serde_json::Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", "http://127.0.0.1:9/cb"),
        ("code_verifier", verifier),
        ("client_id", PUBLIC_CLIENT_ID),
    ];
    let (status, _, body) = post(&server.token_url(), &form);
    (status, body)
}

#[test]
fn browser_logins_check_pkce_and_use_a_code_once() {
    let server = TestServer::start();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT_ID,
        "http://127.0.0.1:9/cb",
        &with_pkce(),
    );
    let redirect = server.authorize(&url).unwrap();
    assert!(
        redirect.starts_with("http://127.0.0.1:9/cb?code="),
        "{redirect}"
    );
    assert!(redirect.ends_with("&state=xyz"), "{redirect}");
    let code = code_of(&redirect);
    let (status, body) = exchange(
        &server,
        &code,
        "not-the-verifier-not-the-verifier-0123456789",
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, tokens) = exchange(&server, &code, VERIFIER);
    assert_eq!(status, 200);
    let access = tokens["access_token"].as_str().unwrap();
    assert!(server.is_active(access));
    assert_eq!(
        exchange(&server, &code, VERIFIER).0,
        400,
        "a code works once"
    );
    assert!(
        !server.is_active(access),
        "and its replay revokes what it issued"
    );
}

#[test]
fn authorization_requests_are_checked() {
    let server = TestServer::start();
    let bad = |url: String| match server.authorize(&url) {
        Err(TestServerError::BadAuthorizationRequest(why)) => why,
        other => panic!("expected a bad request, got {other:?}"),
    };
    let pkce = with_pkce();
    bad(authorize_url(
        &server,
        "stranger",
        "http://127.0.0.1:9/cb",
        &pkce,
    ));
    bad(authorize_url(
        &server,
        PUBLIC_CLIENT_ID,
        "http://example.com/cb",
        &pkce,
    ));
    bad(format!(
        "http://127.0.0.1:1/oauth/authorize?client_id={PUBLIC_CLIENT_ID}"
    ));
    for (extra, why) in [
        (String::new(), "code_challenge"),
        (
            format!("&code_challenge={CHALLENGE}&code_challenge_method=plain"),
            "S256",
        ),
    ] {
        let url = authorize_url(&server, PUBLIC_CLIENT_ID, "http://localhost:9/cb", &extra);
        let redirect = server.authorize(&url).unwrap();
        assert!(redirect.contains("error=invalid_request"), "{redirect}");
        assert!(
            redirect.contains(why) && redirect.ends_with("state=xyz"),
            "{redirect}"
        );
    }
    server.deny_next_authorizations(1);
    let url = authorize_url(&server, PUBLIC_CLIENT_ID, "https://app.example/cb", &pkce);
    assert!(server
        .authorize(&url)
        .unwrap()
        .contains("error=access_denied"));
    assert!(
        server.authorize(&url).unwrap().contains("code="),
        "one denial"
    );
}

#[test]
fn the_authorization_endpoint_redirects_a_browser() {
    let server = TestServer::start();
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT_ID,
        "http://127.0.0.1:9/cb",
        &with_pkce(),
    );
    let resp = agent().get(&url).call().unwrap();
    assert_eq!(resp.status(), 302);
    let location = resp.headers().get("location").unwrap().to_str().unwrap();
    assert_eq!(exchange(&server, &code_of(location), VERIFIER).0, 200);
}

#[test]
fn open_in_browser_delivers_the_redirect() {
    let log = raw::Log::default();
    let listener = raw::recording(&log, |_| {
        raw::Action::Respond(200, vec![], b"done".to_vec())
    });
    let server = TestServer::start();
    let redirect = listener.url("/callback");
    let url = authorize_url(&server, PUBLIC_CLIENT_ID, &redirect, &with_pkce());
    assert_eq!(server.open_in_browser(&url).unwrap(), 200);
    let seen = log.lock().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert!(
        seen[0].path.starts_with("/callback?code=code-1&state=xyz"),
        "{}",
        seen[0].path
    );
}

#[test]
fn logout_revokes_the_login_at_the_server() {
    let server = TestServer::start();
    let client = crate::logged_in(&server);
    client.logout().unwrap();
    let calls = server.revocation_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].generation, calls[0].refresh_token),
        (Some(1), true)
    );
    assert_eq!(calls[0].hint.as_deref(), Some("refresh_token"));
    assert_eq!(
        calls[0].client_auth,
        tokengate::testing::ClientAuthUsed::Basic
    );
    assert_eq!(calls[0].status, 200);
    assert!(!server.is_active("rt-1") && !server.is_active("at-1"));
}

#[test]
fn the_api_answers_as_rfc6750_says() {
    let server = TestServer::builder()
        .require_scope("/api/admin", "admin")
        .start()
        .unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut req = agent().get(&format!("{}{path}", server.api_url()));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        crate::answer(req.call())
    };
    let challenge = |h: &tokengate::ureq::http::HeaderMap| {
        h.get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let (status, h, _) = get("a", None);
    assert_eq!(
        (status, challenge(&h).as_str()),
        (401, r#"Bearer realm="tokengate-testing""#)
    );
    let (status, h, _) = get("a", Some("at-99"));
    assert_eq!(status, 401);
    assert!(
        challenge(&h).contains(r#"error="invalid_token""#),
        "{}",
        challenge(&h)
    );
    let plain = server.login();
    let (status, _, body) = get("a", Some(plain.access_token().secret()));
    assert_eq!((status, body["path"].as_str()), (200, Some("/api/a")));
    let (status, h, _) = get("admin/users", Some(plain.access_token().secret()));
    assert_eq!(status, 403);
    assert!(challenge(&h).contains(r#"error="insufficient_scope", scope="admin""#));
    let admin = server.login_as(CLIENT_ID, Some("read admin"));
    assert_eq!(
        get("admin/users", Some(admin.access_token().secret())).0,
        200
    );
    assert_eq!(
        get("status/503", Some(plain.access_token().secret())).0,
        503
    );
    assert_eq!(
        get("a", Some("at-01")).0,
        401,
        "only tokens exactly as issued"
    );
    assert_eq!((server.api_401s(), server.api_403s()), (3, 1));
}

#[test]
fn a_client_revokes_only_its_own_tokens() {
    let server = TestServer::start();
    let public = server.login_as(PUBLIC_CLIENT_ID, None);
    let rt = public.refresh_token().unwrap().secret().to_owned();
    let (status, _, body) = post_basic(
        &server.revocation_url(),
        CLIENT_ID,
        CLIENT_SECRET,
        &[("token", &rt)],
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    assert!(server.is_active(&rt), "nothing revoked");
    let form = [("token", rt.as_str()), ("client_id", PUBLIC_CLIENT_ID)];
    assert_eq!(post(&server.revocation_url(), &form).0, 200);
    assert!(!server.is_active(&rt));
    let unknown = [("token", "rt-99"), ("client_id", PUBLIC_CLIENT_ID)];
    assert_eq!(
        post(&server.revocation_url(), &unknown).0,
        200,
        "RFC 7009 §2.2"
    );
    let statuses: Vec<u16> = server.revocation_calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [400, 200, 200]);
}

#[test]
fn scopes_are_required_by_every_matching_prefix_at_segment_boundaries() {
    let server = TestServer::builder()
        .require_scope("/api/admin", "admin")
        .require_scope("/api/admin/users", "users")
        .start()
        .unwrap();
    let status = |token: &tokengate::Tokens, path: &str| {
        let url = format!("{}{path}", server.api_url());
        let bearer = format!("Bearer {}", token.access_token().secret());
        agent()
            .get(&url)
            .header("authorization", bearer)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    let admin = server.login_as(CLIENT_ID, Some("admin"));
    let both = server.login_as(CLIENT_ID, Some("admin users"));
    assert_eq!(status(&admin, "admin"), 200);
    assert_eq!(status(&admin, "admin/users/7"), 403, "users is needed too");
    assert_eq!(status(&both, "admin/users/7"), 200);
    let none = server.login();
    assert_eq!(status(&none, "administrator"), 200, "not under /api/admin");
    assert_eq!(status(&none, "admin/x"), 403);
}

#[test]
fn an_expired_device_code_cannot_be_approved() {
    let server = TestServer::builder()
        .device_code_lifetime(Duration::from_millis(1500))
        .start()
        .unwrap();
    let (_, _, started) = post(
        &server.device_authorization_url(),
        &[("client_id", PUBLIC_CLIENT_ID)],
    );
    assert_eq!(started["expires_in"], 2, "whole seconds, rounded up");
    let code = started["device_code"].as_str().unwrap().to_owned();
    let user_code = started["user_code"].as_str().unwrap().to_owned();
    server.approve(&user_code).unwrap();
    // Past the code's lifetime (a wait the test must make: the kit's clock is real).
    crate::harness::observe::wait_until("the device code expired", || {
        std::thread::sleep(Duration::from_millis(100));
        server.device_authorizations()[0].arrived.elapsed() > Duration::from_millis(2500)
    });
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", code.as_str()),
        ("client_id", PUBLIC_CLIENT_ID),
    ];
    let (status, _, body) = post(&server.token_url(), &poll);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("expired_token")),
        "approved too late"
    );
    let (_, _, again) = post(
        &server.device_authorization_url(),
        &[("client_id", PUBLIC_CLIENT_ID)],
    );
    let late = again["user_code"].as_str().unwrap().to_owned();
    crate::harness::observe::wait_until("the second code expired", || {
        std::thread::sleep(Duration::from_millis(100));
        server.device_authorizations()[1].arrived.elapsed() > Duration::from_millis(2500)
    });
    assert!(matches!(
        server.approve(&late),
        Err(TestServerError::UnknownUserCode)
    ));
}

#[test]
fn pkce_values_must_have_their_shape() {
    let server = TestServer::start();
    let (longer, dotted) = (format!("{CHALLENGE}A"), format!("{}.", &CHALLENGE[..42]));
    for challenge in ["abc", &longer, &dotted] {
        let bad = format!("&code_challenge={challenge}&code_challenge_method=S256");
        let url = authorize_url(&server, PUBLIC_CLIENT_ID, "http://127.0.0.1:9/cb", &bad);
        let redirect = server.authorize(&url).unwrap();
        assert!(
            redirect.contains("error=invalid_request"),
            "{challenge}: {redirect}"
        );
    }
    let url = authorize_url(
        &server,
        PUBLIC_CLIENT_ID,
        "http://127.0.0.1:9/cb",
        &with_pkce(),
    );
    let code = code_of(&server.authorize(&url).unwrap());
    let (status, body) = exchange(&server, &code, "x");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("43 to 128"));
    assert_eq!(
        exchange(&server, &code, VERIFIER).0,
        200,
        "the code is still good"
    );
    let url = format!(
        "{}?client_id={PUBLIC_CLIENT_ID}&redirect_uri=http://127.0.0.1:9/cb&response_type=token",
        server.authorization_url()
    );
    assert!(server
        .authorize(&url)
        .unwrap()
        .contains("error=unsupported_response_type"));
}

#[test]
fn lifetimes_past_the_end_of_time_never_expire() {
    let server = TestServer::builder()
        .access_token_lifetime(Duration::MAX)
        .device_code_lifetime(Duration::MAX)
        .start()
        .unwrap();
    let tokens = server.login();
    assert!(server.is_active(tokens.access_token().secret()));
    let client = AuthClient::builder(server.api_url())
        .tokens(tokens)
        .refresher(server.auth_server().refresh_grant())
        .build()
        .unwrap();
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    let (status, _, _) = post(
        &server.device_authorization_url(),
        &[("client_id", PUBLIC_CLIENT_ID)],
    );
    assert_eq!(status, 200);
    // Announced as 10 years, which clients accept: a refresh and a device login over HTTP.
    server.revoke_access_tokens();
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    assert_eq!(server.refreshes(), 1);
    let time = TestTime::new();
    let pending = device_flow(&server, &time).start().unwrap();
    assert_eq!(
        pending.expires_in(),
        Duration::from_secs(10 * 365 * 24 * 3600)
    );
    server.approve(pending.user_code()).unwrap();
    let tokens = pending.wait().unwrap();
    assert!(server.is_active(tokens.access_token().secret()));
}

#[test]
fn basic_credentials_are_form_decoded_halves() {
    let server = TestServer::builder()
        .client(TestClient::confidential("my app", "a&b=c%"))
        .start()
        .unwrap();
    // Encoded as RFC 6749 §2.3.1 says, and as some clients send them (raw).
    for (user, password) in [("my+app", "a%26b%3Dc%25"), ("my app", "a&b=c%")] {
        let (status, _, _) = post_basic(&server.token_url(), user, password, &CC);
        assert_eq!(status, 200, "{user:?}:{password:?}");
    }
}
