//! The device authorization grant (RFC 8628) against the stateful server: polling at the
//! server's interval, +5 s on slow_down, distinct errors for denied and expired codes. Time is
//! a `ManualClock` that sleeping advances: no real waits, exact sleeps.

use std::sync::Arc;
use std::time::Duration;

use crate::harness::fixtures::{no_proxy_agent, refused_addr, TestTime};
use crate::harness::servers::login::{Answer, LoginServer, USER_CODE};
use tokengate::login::{DeviceError, DeviceFlow, Discovery};
use tokengate::{AuthClient, AuthServer, ClientAuth, Error};

const S: fn(u64) -> Duration = Duration::from_secs;

/// The login server's device and token endpoints, for the public client `my-cli`.
fn server(srv: &LoginServer) -> AuthServer {
    AuthServer::new(srv.token_url())
        .device_authorization_url(srv.device_url())
        .client_id("my-cli")
        .agent(no_proxy_agent())
}

fn flow_of(server: AuthServer, time: &Arc<TestTime>) -> DeviceFlow {
    server
        .device_flow()
        .unwrap()
        .scope("openid offline_access api")
        .clock(time.clone())
        .sleeper(time.clone())
}

fn flow(srv: &LoginServer, time: &Arc<TestTime>) -> DeviceFlow {
    flow_of(server(srv), time)
}

fn device_error(result: Result<tokengate::Tokens, Error>) -> DeviceError {
    match result {
        Err(Error::Device(e)) => e,
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[test]
fn pending_then_slow_down_then_approved() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Pending, Answer::SlowDown, Answer::Approve]);
    let time = TestTime::new();
    let pending = flow(&srv, &time).start().unwrap();
    assert_eq!(pending.user_code(), USER_CODE);
    assert_eq!(
        pending.verification_uri(),
        format!("{}/activate", srv.issuer())
    );
    assert_eq!(
        pending.verification_uri_complete(),
        Some(format!("{}/activate?user_code={USER_CODE}", srv.issuer()).as_str())
    );
    assert_eq!(pending.interval(), S(5));
    assert_eq!(pending.expires_in(), S(600));
    let shown = format!("{pending:?}");
    assert!(!shown.contains("dc-secret"), "{shown}");

    let tokens = pending.wait().unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-1");
    assert_eq!(tokens.scope(), Some("openid offline_access api"));
    // 5 s, poll (pending); 5 s, poll (slow_down); 5 + 5 s, poll (approved).
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(10)]);
    assert_eq!(srv.polls(), 3);

    let l = srv.login.lock();
    assert_eq!(l.device_forms.len(), 1);
    let device = &l.device_forms[0];
    assert_eq!(device["client_id"], "my-cli");
    assert_eq!(device["scope"], "openid offline_access api");
    for poll in &l.poll_forms {
        assert_eq!(
            poll["grant_type"],
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert_eq!(poll["device_code"], "dc-secret-1");
        assert_eq!(poll["client_id"], "my-cli");
    }
    assert!(l.auth_headers.iter().all(|h| h == "-"), "a public client");
}

#[test]
fn the_tokens_work_with_a_client_and_refresh_at_the_same_server() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Approve]);
    let time = TestTime::new();
    let tokens = flow(&srv, &time).start().unwrap().wait().unwrap();
    let client = AuthClient::builder(srv.ts.api_url())
        .proxy(None)
        .refresher(
            AuthServer::new(srv.token_url())
                .client_id("my-cli")
                .refresh_grant(),
        )
        .build()
        .unwrap();
    client.set_tokens(tokens).unwrap();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    srv.ts.expire_access_tokens();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.ts.refresh_calls(), 1);
    assert_eq!(time.sleeps(), vec![S(5)]);
}

#[test]
fn access_denied_stops_with_its_own_error() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Pending, Answer::Deny]);
    let time = TestTime::new();
    let e = device_error(flow(&srv, &time).start().unwrap().wait());
    assert!(matches!(e, DeviceError::AccessDenied), "{e:?}");
    assert!(!e.is_expired() && !e.is_transient());
    assert_eq!(time.sleeps(), vec![S(5), S(5)]);
    assert_eq!(srv.polls(), 2);
    assert_eq!(srv.ts.state.lock().next_id, 0, "no tokens minted");
}

#[test]
fn expired_token_from_the_server_stops_with_its_own_error() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Pending, Answer::Pending, Answer::Expire]);
    let time = TestTime::new();
    let e = device_error(flow(&srv, &time).start().unwrap().wait());
    assert!(matches!(e, DeviceError::ExpiredToken), "{e:?}");
    assert!(e.is_expired());
    assert_eq!(srv.polls(), 3);
}

#[test]
fn the_code_running_out_locally_stops_without_sleeping_past_it() {
    let srv = LoginServer::start();
    srv.login.lock().expires_in = 12; // and the server never answers anything but pending
    let time = TestTime::new();
    let e = device_error(flow(&srv, &time).start().unwrap().wait());
    assert!(matches!(e, DeviceError::CodeExpired), "{e:?}");
    assert!(e.is_expired());
    // Polls at 5 s and 10 s; the last wait is cut to the 2 s left, and no poll follows.
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(2)]);
    assert_eq!(srv.polls(), 2);
}

#[test]
fn no_interval_means_five_seconds() {
    let srv = LoginServer::start();
    srv.login.lock().interval = None;
    srv.script(&[Answer::Pending, Answer::Approve]);
    let time = TestTime::new();
    let pending = flow(&srv, &time).start().unwrap();
    assert_eq!(pending.interval(), S(5));
    pending.wait().unwrap();
    assert_eq!(time.sleeps(), vec![S(5), S(5)]);
}

#[test]
fn a_server_interval_is_honoured_and_slow_down_adds_five_seconds_each_time() {
    let srv = LoginServer::start();
    srv.login.lock().interval = Some(2);
    srv.script(&[
        Answer::SlowDown,
        Answer::Pending,
        Answer::SlowDown,
        Answer::Approve,
    ]);
    let time = TestTime::new();
    flow(&srv, &time).start().unwrap().wait().unwrap();
    assert_eq!(time.sleeps(), vec![S(2), S(7), S(7), S(12)]);
}

#[test]
fn an_unavailable_token_endpoint_doubles_the_interval_and_three_in_a_row_end_the_wait() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Unavailable, Answer::Pending, Answer::Approve]);
    let time = TestTime::new();
    flow(&srv, &time).start().unwrap().wait().unwrap();
    assert_eq!(time.sleeps(), vec![S(5), S(10), S(10)]);

    let srv = LoginServer::start();
    srv.script(&[
        Answer::Unavailable,
        Answer::Unavailable,
        Answer::Unavailable,
        Answer::Approve,
    ]);
    let time = TestTime::new();
    let e = device_error(flow(&srv, &time).start().unwrap().wait());
    assert!(matches!(e, DeviceError::Status(503)), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(time.sleeps(), vec![S(5), S(10), S(20)]);
    assert_eq!(srv.polls(), 3);
}

#[test]
fn a_confidential_client_authenticates_both_requests_like_its_refreshes() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Approve]);
    let time = TestTime::new();
    flow_of(server(&srv).client_secret("cli-secret"), &time)
        .start()
        .unwrap()
        .wait()
        .unwrap();
    let shown = format!(
        "{:?}",
        flow_of(server(&srv).client_secret("cli-secret"), &time)
    );
    assert!(!shown.contains("cli-secret"), "{shown}");
    let l = srv.login.lock();
    assert_eq!(l.auth_headers.len(), 2);
    assert!(
        l.auth_headers.iter().all(|h| h.starts_with("Basic ")),
        "{:?}",
        l.auth_headers
    );
    assert!(!l.device_forms[0].contains_key("client_secret"));
    drop(l);

    let srv = LoginServer::start();
    srv.script(&[Answer::Approve]);
    flow_of(
        server(&srv)
            .client_secret("cli-secret")
            .auth_method(ClientAuth::Post),
        &time,
    )
    .start()
    .unwrap()
    .wait()
    .unwrap();
    let l = srv.login.lock();
    assert_eq!(l.device_forms[0]["client_secret"], "cli-secret");
    assert_eq!(l.poll_forms[0]["client_secret"], "cli-secret");
}

#[test]
fn a_refusing_device_endpoint_is_an_oauth_error_without_secrets() {
    let srv = LoginServer::start();
    srv.ts.server.mock(|when, then| {
        when.path("/refusing/device");
        then.status(401)
            .header("content-type", "application/json")
            .body(r#"{"error":"invalid_client cli-secret-0123456789"}"#);
    });
    let time = TestTime::new();
    let err = AuthServer::new(srv.token_url())
        .device_authorization_url(srv.ts.server.url("/refusing/device"))
        .client_id("my-cli")
        .client_secret("cli-secret-0123456789")
        .agent(no_proxy_agent())
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone())
        .start()
        .unwrap_err();
    match &err {
        Error::Device(DeviceError::OAuth {
            status: 401, error, ..
        }) => {
            assert_eq!(error, "[redacted]")
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{err:?} {err}");
    assert!(!shown.contains("cli-secret"), "{shown}");
}

#[test]
fn an_unusable_device_response_is_invalid() {
    let srv = LoginServer::start();
    srv.ts.server.mock(|when, then| {
        when.path("/html/device");
        then.status(200).body("<html>sign in</html>");
    });
    let err = AuthServer::new(srv.token_url())
        .device_authorization_url(srv.ts.server.url("/html/device"))
        .agent(no_proxy_agent())
        .device_flow()
        .unwrap()
        .start()
        .unwrap_err();
    assert!(
        matches!(err, Error::Device(DeviceError::InvalidResponse(_))),
        "{err:?}"
    );
}

#[test]
fn endpoint_urls_are_checked_before_anything_is_sent() {
    let err = AuthServer::new("https://auth.example.com/token")
        .device_authorization_url("http://auth.example.com/device")
        .device_flow()
        .unwrap()
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::InsecureUrl(_)), "{err:?}");
    let err = AuthServer::new("token")
        .device_authorization_url("https://auth.example.com/device")
        .device_flow()
        .unwrap()
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl(_)), "{err:?}");
}

#[test]
fn an_unreachable_device_endpoint_is_a_transient_transport_error() {
    let addr = refused_addr();
    let err = AuthServer::new(format!("http://{addr}/token"))
        .device_authorization_url(format!("http://{addr}/device"))
        .agent(no_proxy_agent())
        .device_flow()
        .unwrap()
        .start()
        .unwrap_err();
    assert!(
        matches!(err, Error::Device(DeviceError::Transport(_))),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[test]
fn discovered_flow_logs_in() {
    let srv = LoginServer::start();
    srv.script(&[Answer::Approve]);
    let time = TestTime::new();
    let meta = Discovery::new(srv.issuer())
        .agent(no_proxy_agent())
        .fetch()
        .unwrap();
    let tokens = AuthServer::from_metadata(&meta)
        .client_id("my-cli")
        .agent(no_proxy_agent())
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone())
        .start()
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-1");
}
