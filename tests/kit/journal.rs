//! The journal: what each call asked and got, counters that say it in one line, and no
//! secret in any `Debug` or log line.

use tokengate::testing::{
    ClientAuthUsed, Fault, Grant, Outcome, TestClient, TestServer, TestServerError, CLIENT_ID,
    CLIENT_SECRET,
};

use crate::{post, post_basic, refresh};

#[test]
fn every_call_is_recorded_with_grant_client_and_outcome() {
    let server = TestServer::start();
    server.login();
    refresh(&server.token_url(), "rt-1");
    post_basic(
        &server.token_url(),
        CLIENT_ID,
        CLIENT_SECRET,
        &[("grant_type", "client_credentials"), ("scope", "read")],
    );
    post(
        &server.token_url(),
        &[("grant_type", "password"), ("client_id", "public-app")],
    );
    refresh(&server.token_url(), "rt-1");
    let calls = server.token_calls();
    let seen: Vec<_> = calls
        .iter()
        .map(|c| {
            (
                c.grant.clone(),
                c.client_id.clone(),
                c.client_auth,
                c.presented,
                c.outcome.clone(),
            )
        })
        .collect();
    let refused = |status, error: &str| Outcome::Refused {
        status,
        error: error.into(),
    };
    let id = Some(CLIENT_ID.to_owned());
    assert_eq!(
        seen,
        [
            (
                Grant::RefreshToken,
                id.clone(),
                ClientAuthUsed::Post,
                Some(1),
                Outcome::Issued(2)
            ),
            (
                Grant::ClientCredentials,
                id.clone(),
                ClientAuthUsed::Basic,
                None,
                Outcome::Issued(3)
            ),
            (
                Grant::Other(Some("password".into())),
                Some("public-app".into()),
                ClientAuthUsed::None,
                None,
                refused(400, "unsupported_grant_type")
            ),
            (
                Grant::RefreshToken,
                id,
                ClientAuthUsed::Post,
                Some(1),
                refused(400, "invalid_grant")
            ),
        ]
    );
    assert_eq!(calls[1].scope.as_deref(), Some("read"));
    assert!(calls[3].reuse && calls[3].presented_twice);
    assert_eq!(
        (server.refreshes(), server.token_requests(), server.issued()),
        (2, 4, 3)
    );
    assert_eq!((server.reuse_detected(), server.presented_twice()), (1, 1));
}

#[test]
fn no_secret_in_any_debug() {
    let server = TestServer::builder()
        .client(TestClient::confidential("app", "s3cr3t-value"))
        .start()
        .unwrap();
    let tokens = server.login_as("app", None);
    refresh(
        &server.token_url(),
        tokens.refresh_token().unwrap().secret(),
    );
    server.fault_next_token_calls(1, Fault::ServerError);
    post_basic(
        &server.token_url(),
        "app",
        "s3cr3t-value",
        &[("grant_type", "refresh_token"), ("refresh_token", "rt-1")],
    );
    let shown = format!(
        "{server:?} {:?} {:?} {:?} {:?} {:?}",
        server.token_calls(),
        server.api_calls(),
        server.revocation_calls(),
        TestClient::confidential("app", "s3cr3t-value"),
        TestServerError::UnknownUserCode,
    );
    for secret in ["s3cr3t-value", "rt-1", "at-1", "rt-2", "at-2"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(
        shown.contains("TestServer") && shown.contains("[redacted]"),
        "{shown}"
    );
}

#[test]
fn counters_agree_and_are_served_as_json() {
    let server = TestServer::start();
    server.login();
    server.fault_next_token_calls(1, Fault::ServerError);
    refresh(&server.token_url(), "rt-1");
    refresh(&server.token_url(), "rt-1");
    let device = [
        ("client_id", tokengate::testing::PUBLIC_CLIENT_ID),
        ("scope", "api"),
    ];
    post(&server.device_authorization_url(), &device);
    post(
        &server.device_authorization_url(),
        &[("client_id", "stranger")],
    );
    let counters = server.counters();
    assert_eq!(
        (
            counters.token_requests,
            counters.refreshes,
            counters.presented_twice,
            counters.issued
        ),
        (2, 2, 0, 2),
        "a call a fault answered was never looked at: rt-1 counts as presented once"
    );
    assert_eq!(
        (counters.device_authorizations, counters.reuse_detected),
        (2, 0)
    );
    let calls = server.token_calls();
    assert_eq!(
        calls[0].presented,
        Some(1),
        "a faulted call names what it presented"
    );
    assert_eq!(calls[0].outcome, Outcome::Faulted(Fault::ServerError));
    let devices = server.device_authorizations();
    let seen: Vec<_> = devices
        .iter()
        .map(|d| (d.status, d.scope.as_deref(), d.user_code.is_some()))
        .collect();
    assert_eq!(seen, [(200, Some("api"), true), (401, None, false)]);
    let text = crate::agent()
        .get(&server.counters_url())
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let served: tokengate::testing::Counters = serde_json::from_str(&text).unwrap();
    assert_eq!(served, counters);
}

#[test]
fn calls_are_journaled_on_arrival_in_arrival_order() {
    let server = TestServer::start();
    server.login();
    server.login();
    server.fault_next_token_calls(1, Fault::DelayBefore(std::time::Duration::from_secs(3600)));
    let url = server.token_url();
    let held = std::thread::spawn(move || refresh(&url, "rt-1").0);
    crate::harness::observe::wait_until("the first call arrived", || server.token_requests() == 1);
    assert_eq!(server.token_calls()[0].outcome, Outcome::InFlight);
    assert_eq!(server.refreshes(), 1, "counted on arrival");
    assert_eq!(refresh(&server.token_url(), "rt-2").0, 200);
    let calls = server.token_calls();
    let seen: Vec<_> = calls
        .iter()
        .map(|c| (c.presented, c.outcome.clone()))
        .collect();
    assert_eq!(
        seen,
        [(Some(1), Outcome::InFlight), (Some(2), Outcome::Issued(3))]
    );
    assert!(calls[0].arrived <= calls[1].arrived);
    drop(server); // cuts the hour short: the held call's connection is closed
    let _ = held.join();
}

#[test]
fn refusals_are_journaled_as_answered() {
    let server = TestServer::start();
    server.login();
    let basic_and_form = [
        ("grant_type", "client_credentials"),
        ("client_secret", CLIENT_SECRET),
    ];
    post_basic(
        &server.token_url(),
        CLIENT_ID,
        CLIENT_SECRET,
        &basic_and_form,
    );
    let twice = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "rt-1"),
        ("refresh_token", "rt-1"),
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
    ];
    let (status, _, _) = post(&server.token_url(), &twice);
    assert_eq!(status, 400);
    let garbage = crate::agent()
        .post(&server.token_url())
        .header("authorization", "Basic !!!")
        .send_form([("grant_type", "client_credentials")]);
    assert_eq!(crate::answer(garbage).0, 401);
    let calls = server.token_calls();
    let refused = |status, error: &str| Outcome::Refused {
        status,
        error: error.into(),
    };
    let seen: Vec<_> = calls
        .iter()
        .map(|c| (c.client_auth, c.outcome.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (ClientAuthUsed::Basic, refused(400, "invalid_request")),
            (ClientAuthUsed::Post, refused(400, "invalid_request")),
            (ClientAuthUsed::Basic, refused(401, "invalid_client")),
        ]
    );
    assert!(server.is_active("rt-1"), "a refused call rotated nothing");

    // A bearer token sent to the token endpoint is refused, and seen.
    let bearer = crate::agent()
        .post(&server.token_url())
        .header("authorization", "Bearer at-1")
        .send_form([
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
        ]);
    assert_eq!(crate::answer(bearer).0, 401);
    let last = server.token_calls().pop().unwrap();
    assert_eq!(last.client_auth, ClientAuthUsed::OtherScheme);
    // Calls that present no refresh token never count as presenting one twice.
    for _ in 0..2 {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ];
        assert_eq!(post(&server.token_url(), &form).0, 400);
    }
    assert_eq!(server.presented_twice(), 0);
}
