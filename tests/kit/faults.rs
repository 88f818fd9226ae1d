//! Every scripted fault is played as documented: the answer it replaces (status, error,
//! `Retry-After`), what it leaves untouched (a fault before the grant never rotates), what a
//! fault after the grant does (a rotation the client never hears about), in queue order, on
//! the token endpoint, the revocation endpoint and the API.

use std::time::Duration;

use tokengate::testing::{Fault, Outcome, TestServer};
use tokengate::Error;

use crate::{agent, refresh};

#[test]
fn status_faults_answer_as_documented_and_rotate_nothing() {
    let server = TestServer::start();
    server.login();
    let cases = [
        (
            Fault::Unavailable {
                retry_after: Some(7),
            },
            503,
            "temporarily_unavailable",
            Some("7"),
        ),
        (
            Fault::Unavailable { retry_after: None },
            503,
            "temporarily_unavailable",
            None,
        ),
        (
            Fault::TooManyRequests {
                retry_after: Some(2),
            },
            429,
            "too_many_requests",
            Some("2"),
        ),
        (Fault::ServerError, 500, "server_error", None),
        (Fault::InvalidGrant, 400, "invalid_grant", None),
        (Fault::SlowDown, 400, "slow_down", None),
        (
            Fault::AuthorizationPending,
            400,
            "authorization_pending",
            None,
        ),
        (Fault::ExpiredToken, 400, "expired_token", None),
        (
            Fault::ErrorAt200("bad_refresh_token".into()),
            200,
            "bad_refresh_token",
            None,
        ),
    ];
    for (fault, status, error, retry_after) in &cases {
        server.fault_next_token_calls(1, fault.clone());
        let (got, headers, body) = refresh(&server.token_url(), "rt-1");
        assert_eq!(
            (got, body["error"].as_str()),
            (*status, Some(*error)),
            "{fault:?}"
        );
        let header = headers.get("retry-after").map(|v| v.to_str().unwrap());
        assert_eq!(header, *retry_after, "{fault:?}");
        assert!(server.is_active("rt-1"), "{fault:?} rotated nothing");
    }
    server.fault_next_token_calls(1, Fault::MalformedBody);
    let mut resp = agent()
        .post(&server.token_url())
        .send_form([("grant_type", "refresh_token")])
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );
    let calls = server.token_calls();
    assert_eq!(calls.len(), cases.len() + 1);
    for (call, (fault, ..)) in calls.iter().zip(&cases) {
        assert_eq!(call.outcome, Outcome::Faulted(fault.clone()));
    }
    assert_eq!(
        refresh(&server.token_url(), "rt-1").0,
        200,
        "rt-1 still works"
    );
}

#[test]
fn faults_are_played_in_queue_order_one_per_call() {
    let server = TestServer::start();
    server.login();
    server.fault_next_token_calls(2, Fault::Unavailable { retry_after: None });
    server.fault_next_token_calls(1, Fault::ServerError);
    let statuses: Vec<u16> = (0..4)
        .map(|_| refresh(&server.token_url(), "rt-1").0)
        .collect();
    assert_eq!(statuses, [503, 503, 500, 200]);
    server.fault_next_token_calls(3, Fault::ServerError);
    server.clear_faults();
    assert_eq!(refresh(&server.token_url(), "rt-2").0, 200);
}

#[test]
fn a_dropped_connection_before_the_grant_keeps_the_token() {
    let server = TestServer::start();
    server.login();
    server.fault_next_token_calls(1, Fault::Drop);
    let url = server.token_url();
    assert!(agent()
        .post(&url)
        .send_form([("refresh_token", "rt-1")])
        .is_err());
    assert!(server.is_active("rt-1"));
    assert_eq!(
        server.token_calls()[0].outcome,
        Outcome::Faulted(Fault::Drop)
    );
}

#[test]
fn a_dropped_answer_after_the_grant_is_a_rotation_never_heard_of() {
    let server = TestServer::start();
    let client = crate::logged_in(&server);
    server.revoke_access_tokens();
    server.fault_next_token_calls(1, Fault::DropAfterGrant);
    // The client never hears of rt-2: its next refresh presents rt-1, which is reuse.
    let first = client.get("x").call();
    assert!(first.is_err(), "{first:?}");
    assert_eq!(
        server.refreshes(),
        1,
        "a transport failure is not retried with rt-1"
    );
    assert!(server.is_active("rt-2"));
    let call = &server.token_calls()[0];
    assert_eq!(
        (call.outcome.clone(), call.fault.clone()),
        (Outcome::Issued(2), Some(Fault::DropAfterGrant))
    );
    let second = client.get("x").call();
    assert!(matches!(second, Err(Error::SessionExpired)), "{second:?}");
    assert_eq!(server.reuse_detected(), 1);
    assert!(!server.is_active("rt-2"), "the reuse revoked the login");
}

#[test]
fn a_delayed_answer_after_the_grant_rotates_first() {
    let server = TestServer::start();
    server.login();
    server.fault_next_token_calls(1, Fault::DelayAfter(Duration::from_secs(3600)));
    let impatient: tokengate::ureq::Agent = tokengate::ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_millis(300)))
        .build()
        .into();
    let gave_up = impatient.post(&server.token_url()).send_form([
        ("grant_type", "refresh_token"),
        ("refresh_token", "rt-1"),
        ("client_id", tokengate::testing::CLIENT_ID),
        ("client_secret", tokengate::testing::CLIENT_SECRET),
    ]);
    assert!(gave_up.is_err(), "the client timed out");
    assert!(!server.is_active("rt-1") && server.is_active("rt-2"));
}

#[test]
fn a_delay_before_the_grant_then_handles_it() {
    let server = TestServer::start();
    server.login();
    server.fault_next_token_calls(1, Fault::DelayBefore(Duration::from_millis(20)));
    assert_eq!(refresh(&server.token_url(), "rt-1").0, 200);
    let call = &server.token_calls()[0];
    assert_eq!(call.outcome, Outcome::Issued(2));
    assert_eq!(
        call.fault,
        Some(Fault::DelayBefore(Duration::from_millis(20)))
    );
}

#[test]
fn api_and_revocation_faults() {
    let server = TestServer::start();
    let client = crate::logged_in(&server);
    server.fault_next_api_calls(
        1,
        Fault::Unavailable {
            retry_after: Some(1),
        },
    );
    let resp = agent()
        .get(&format!("{}x", server.api_url()))
        .header("authorization", "Bearer at-1")
        .call()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    server.fault_next_revocations(1, Fault::ServerError);
    let logout = client.logout(); // the local logout happens; the revocation failed
    assert!(
        matches!(logout, Err(Error::RevocationFailed(_))),
        "{logout:?}"
    );
    assert!(matches!(client.get("x").call(), Err(Error::NoTokens)));
    let calls = server.revocation_calls();
    assert_eq!((calls.len(), calls[0].status), (1, 500));
    assert!(
        server.is_active("rt-1"),
        "a faulted revocation revoked nothing"
    );
    assert_eq!(
        server
            .api_calls()
            .iter()
            .map(|c| c.status)
            .collect::<Vec<_>>(),
        [503, 200]
    );
    // A dropped answer is journaled as none (status 0), though the call was handled.
    server.fault_next_api_calls(1, Fault::DropAfterGrant);
    let dropped = agent()
        .get(&format!("{}x", server.api_url()))
        .header("authorization", "Bearer at-1")
        .call();
    assert!(dropped.is_err());
    assert_eq!(server.api_calls().last().unwrap().status, 0);
}

#[test]
fn a_server_side_revocation_costs_one_401_and_one_refresh() {
    let server = TestServer::start();
    let client = crate::logged_in(&server);
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    server.revoke_access_tokens();
    assert_eq!(client.get("x").call().unwrap().status(), 200);
    assert_eq!(
        (server.api_401s(), server.refreshes(), server.api_requests()),
        (1, 1, 3)
    );
    let generations: Vec<_> = server.api_calls().iter().map(|c| c.generation).collect();
    assert_eq!(generations, [Some(1), Some(1), Some(2)]);
}

#[test]
fn a_refresh_behind_the_clients_back_ends_its_session() {
    let server = TestServer::start();
    let client = crate::logged_in(&server);
    let elsewhere = server.refresh("rt-1").unwrap(); // another process rotated
    assert_eq!(elsewhere.refresh_token().unwrap().secret(), "rt-2");
    server.revoke_access_tokens();
    assert!(matches!(client.get("x").call(), Err(Error::SessionExpired)));
    assert_eq!((server.reuse_detected(), server.refreshes()), (1, 2));
    let refused = server.refresh("rt-2").unwrap_err();
    assert!(matches!(
        refused,
        tokengate::testing::TestServerError::Refused {
            status: 400,
            error: "invalid_grant"
        }
    ));
}
