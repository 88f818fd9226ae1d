//! The device authorization grant (RFC 8628) against the test kit's server: polling at the
//! server's interval, +5 s on slow_down, distinct errors for denied and expired codes. Time is
//! a `ManualClock` that sleeping advances: no real waits, exact sleeps.
//!
//! The kit's server decides as its user does (`approve`, `deny`, `expire`); the answers of
//! single polls are scripted as faults (`authorization_pending`, `slow_down`, 503), which
//! are played before the call is looked at.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::fixtures::{no_proxy_agent, refused_addr, TestTime};
use crate::harness::servers::form;
use crate::harness::servers::raw::{forwarding, Log, RawRequest, RawServer};
use tokengate::login::{DeviceAuthorization, DeviceError, DeviceFlow, Discovery};
use tokengate::testing::{Fault, Grant, TestClient, TestServer, TestServerBuilder};
use tokengate::{AuthClient, AuthServer, ClientAuth, Error};

pub(crate) const S: fn(u64) -> Duration = Duration::from_secs;

/// The client the tests log in as.
pub(crate) const CLI: &str = "my-cli";

/// The kit's server, with `my-cli` as its one client, behind a front that records every
/// request whole: the kit's journal keeps only what it understood, and some tests check the
/// forms themselves.
pub(crate) struct Login {
    pub(crate) kit: TestServer,
    front: RawServer,
    seen: Log,
}

impl Login {
    /// `my-cli` a public client; every other setting the kit's default (interval 5 s, codes
    /// live 10 minutes).
    pub(crate) fn start() -> Login {
        Login::of(TestServer::builder().client(TestClient::public(CLI)))
    }

    pub(crate) fn of(builder: TestServerBuilder) -> Login {
        Login::watched(builder, |_| {})
    }

    /// As [`Login::of`], calling `watch` with each request as it arrives, before the kit
    /// sees it (while the client waits for the answer).
    pub(crate) fn watched(
        builder: TestServerBuilder,
        watch: impl Fn(&RawRequest) + Send + Sync + 'static,
    ) -> Login {
        let kit = builder.start().unwrap();
        let seen = Log::default();
        let log = seen.clone();
        let front = forwarding(kit.base_url(), move |req| {
            log.lock().push(req.clone());
            watch(req);
        });
        Login { kit, front, seen }
    }

    /// The forms of the requests to `path` (through the front), with their `Authorization`
    /// headers (`-` when none).
    fn requests(&self, path: &str) -> Vec<(HashMap<String, String>, String)> {
        let seen = self.seen.lock();
        seen.iter()
            .filter(|r| r.path == path)
            .map(|r| {
                let auth = r.header("authorization").unwrap_or("-").to_owned();
                (form(&r.body), auth)
            })
            .collect()
    }

    /// Calls of the token endpoint: the polls.
    pub(crate) fn polls(&self) -> usize {
        self.kit.token_calls().len()
    }

    /// The next polls are answered with `faults`, one each, in order.
    pub(crate) fn script(&self, faults: &[Fault]) {
        for fault in faults {
            self.kit.fault_next_token_calls(1, fault.clone());
        }
    }
}

/// The device and token endpoints (through the front), for the client `my-cli`.
pub(crate) fn server(srv: &Login) -> AuthServer {
    AuthServer::new(srv.front.url("/oauth/token"))
        .device_authorization_url(srv.front.url("/oauth/device"))
        .client_id(CLI)
        .agent(no_proxy_agent())
}

pub(crate) fn flow_of(server: AuthServer, time: &Arc<TestTime>) -> DeviceFlow {
    server
        .device_flow()
        .unwrap()
        .scope("openid offline_access api")
        .clock(time.clone())
        .sleeper(time.clone())
}

pub(crate) fn flow(srv: &Login, time: &Arc<TestTime>) -> DeviceFlow {
    flow_of(server(srv), time)
}

/// The user approves the device login `flow` started: its polls get tokens once the
/// scripted answers are used up.
pub(crate) fn approved(srv: &Login, flow: DeviceFlow) -> DeviceAuthorization {
    let pending = flow.start().unwrap();
    srv.kit.approve(pending.user_code()).unwrap();
    pending
}

pub(crate) fn device_error(result: Result<tokengate::Tokens, Error>) -> DeviceError {
    match result {
        Err(Error::Device(e)) => e,
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[test]
fn pending_then_slow_down_then_approved() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = flow(&srv, &time).start().unwrap();
    let code = pending.user_code().to_owned();
    assert_eq!(
        pending.verification_uri(),
        format!("{}/device", srv.kit.base_url())
    );
    assert_eq!(
        pending.verification_uri_complete(),
        Some(format!("{}/device?user_code={code}", srv.kit.base_url()).as_str())
    );
    assert_eq!(pending.interval(), S(5));
    assert_eq!(pending.expires_in(), S(600));
    let shown = format!("{pending:?}");
    assert!(!shown.contains("dc-1"), "{shown}");

    srv.kit.approve(&code).unwrap();
    srv.script(&[Fault::AuthorizationPending, Fault::SlowDown]);
    let tokens = pending.wait().unwrap();
    assert_eq!(tokens.access_token().secret(), "at-1");
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-1");
    assert_eq!(tokens.scope(), Some("openid offline_access api"));
    // 5 s, poll (pending); 5 s, poll (slow_down); 5 + 5 s, poll (approved).
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(10)]);
    assert_eq!(srv.polls(), 3);

    let device = srv.requests("/oauth/device");
    assert_eq!(device.len(), 1);
    assert_eq!(device[0].0["client_id"], CLI);
    assert_eq!(device[0].0["scope"], "openid offline_access api");
    let polls = srv.requests("/oauth/token");
    assert_eq!(polls.len(), 3);
    for (poll, _) in &polls {
        assert_eq!(
            poll["grant_type"],
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert_eq!(poll["device_code"], "dc-1");
        assert_eq!(poll["client_id"], CLI);
    }
    let auth = device.iter().chain(&polls).map(|(_, auth)| auth);
    assert!(auth.clone().all(|h| h == "-"), "a public client");
}

#[test]
fn the_tokens_work_with_a_client_and_refresh_at_the_same_server() {
    let srv = Login::start();
    let time = TestTime::new();
    let tokens = approved(&srv, flow(&srv, &time)).wait().unwrap();
    let client = AuthClient::builder(srv.kit.api_url())
        .proxy(None)
        .refresher(
            AuthServer::new(srv.kit.token_url())
                .client_id(CLI)
                .refresh_grant(),
        )
        .build()
        .unwrap();
    client.set_tokens(tokens).unwrap();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    srv.kit.revoke_access_tokens();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.kit.refreshes(), 1);
    assert_eq!(time.sleeps(), vec![S(5)]);
}

#[test]
fn access_denied_stops_with_its_own_error() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = flow(&srv, &time).start().unwrap();
    srv.kit.deny(pending.user_code()).unwrap();
    srv.script(&[Fault::AuthorizationPending]);
    let e = device_error(pending.wait());
    assert!(matches!(e, DeviceError::AccessDenied), "{e:?}");
    assert!(!e.is_expired() && !e.is_transient());
    assert_eq!(time.sleeps(), vec![S(5), S(5)]);
    assert_eq!(srv.polls(), 2);
    assert_eq!(srv.kit.issued(), 0, "no tokens minted");
}

#[test]
fn expired_token_from_the_server_stops_with_its_own_error() {
    let srv = Login::start();
    let time = TestTime::new();
    let pending = flow(&srv, &time).start().unwrap();
    srv.kit.expire(pending.user_code()).unwrap();
    srv.script(&[Fault::AuthorizationPending, Fault::AuthorizationPending]);
    let e = device_error(pending.wait());
    assert!(matches!(e, DeviceError::ExpiredToken), "{e:?}");
    assert!(e.is_expired());
    assert_eq!(srv.polls(), 3);
}

#[test]
fn the_code_running_out_locally_stops_without_sleeping_past_it() {
    // Codes live 12 s, and the user never answers: every poll is pending.
    let srv = Login::of(
        TestServer::builder()
            .client(TestClient::public(CLI))
            .device_code_lifetime(S(12)),
    );
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
    let srv = Login::of(
        TestServer::builder()
            .client(TestClient::public(CLI))
            .device_interval(None),
    );
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[Fault::AuthorizationPending]);
    assert_eq!(pending.interval(), S(5));
    pending.wait().unwrap();
    assert_eq!(time.sleeps(), vec![S(5), S(5)]);
}

#[test]
fn a_server_interval_is_honoured_and_slow_down_adds_five_seconds_each_time() {
    let srv = Login::of(
        TestServer::builder()
            .client(TestClient::public(CLI))
            .device_interval(Some(2)),
    );
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[
        Fault::SlowDown,
        Fault::AuthorizationPending,
        Fault::SlowDown,
    ]);
    pending.wait().unwrap();
    assert_eq!(time.sleeps(), vec![S(2), S(7), S(7), S(12)]);
}

#[test]
fn an_unavailable_token_endpoint_doubles_the_interval_and_three_in_a_row_end_the_wait() {
    let unavailable = Fault::Unavailable { retry_after: None };
    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[unavailable.clone(), Fault::AuthorizationPending]);
    pending.wait().unwrap();
    assert_eq!(time.sleeps(), vec![S(5), S(10), S(10)]);

    let srv = Login::start();
    let time = TestTime::new();
    let pending = approved(&srv, flow(&srv, &time));
    srv.script(&[unavailable.clone(), unavailable.clone(), unavailable]);
    let e = device_error(pending.wait());
    assert!(matches!(e, DeviceError::Status(503)), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(time.sleeps(), vec![S(5), S(10), S(20)]);
    assert_eq!(srv.polls(), 3);
}

#[test]
fn a_confidential_client_authenticates_both_requests_like_its_refreshes() {
    let confidential =
        || Login::of(TestServer::builder().client(TestClient::confidential(CLI, "cli-secret")));
    let srv = confidential();
    let time = TestTime::new();
    approved(
        &srv,
        flow_of(server(&srv).client_secret("cli-secret"), &time),
    )
    .wait()
    .unwrap();
    let shown = format!(
        "{:?}",
        flow_of(server(&srv).client_secret("cli-secret"), &time)
    );
    assert!(!shown.contains("cli-secret"), "{shown}");
    let (device, polls) = (srv.requests("/oauth/device"), srv.requests("/oauth/token"));
    assert_eq!(device.len() + polls.len(), 2);
    for (_, auth) in device.iter().chain(&polls) {
        assert!(auth.starts_with("Basic "), "{auth}");
    }
    assert!(!device[0].0.contains_key("client_secret"));

    let srv = confidential();
    approved(
        &srv,
        flow_of(
            server(&srv)
                .client_secret("cli-secret")
                .auth_method(ClientAuth::Post),
            &time,
        ),
    )
    .wait()
    .unwrap();
    assert_eq!(
        srv.requests("/oauth/device")[0].0["client_secret"],
        "cli-secret"
    );
    assert_eq!(
        srv.requests("/oauth/token")[0].0["client_secret"],
        "cli-secret"
    );
}

#[test]
fn a_refusing_device_endpoint_is_an_oauth_error_without_secrets() {
    let srv = httpmock::MockServer::start();
    srv.mock(|when, then| {
        when.path("/refusing/device");
        then.status(401)
            .header("content-type", "application/json")
            .body(r#"{"error":"invalid_client cli-secret-0123456789"}"#);
    });
    let time = TestTime::new();
    let err = AuthServer::new(srv.url("/token"))
        .device_authorization_url(srv.url("/refusing/device"))
        .client_id(CLI)
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
    let srv = httpmock::MockServer::start();
    srv.mock(|when, then| {
        when.path("/html/device");
        then.status(200).body("<html>sign in</html>");
    });
    let err = AuthServer::new(srv.url("/token"))
        .device_authorization_url(srv.url("/html/device"))
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
    let srv = Login::start();
    let time = TestTime::new();
    let meta = Discovery::new(srv.kit.issuer())
        .agent(no_proxy_agent())
        .fetch()
        .unwrap();
    let flow = AuthServer::from_metadata(&meta)
        .client_id(CLI)
        .agent(no_proxy_agent())
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone());
    let tokens = approved(&srv, flow).wait().unwrap();
    assert_eq!(tokens.refresh_token().unwrap().secret(), "rt-1");
    let polls = srv.kit.token_calls();
    assert_eq!(polls.len(), 1);
    assert_eq!(polls[0].grant, Grant::DeviceCode);
}
