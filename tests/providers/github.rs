//! GitHub, as documented:
//! - the device flow, https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps#device-flow
//!   and its "Error codes for the device flow": every error comes with HTTP 200 and a JSON
//!   `error`, `error_description` and `error_uri` (`slow_down` also with the new `interval`);
//!   GitHub's own codes `incorrect_device_code`, `incorrect_client_credentials`,
//!   `device_flow_disabled`;
//! - a GitHub App's expiring user tokens, https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens:
//!   `token_type` "bearer", `scope` "", `expires_in` 28800, `refresh_token_expires_in`; the
//!   refresh sends `client_id` and `client_secret` in the form, and a bad refresh token is
//!   HTTP 200 with `{"error":"bad_refresh_token"}`.
//!
//! GitHub answers JSON only to `Accept: application/json` (form-encoded otherwise), so every
//! mock here requires that header.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use httpmock::prelude::*;
use serde_json::{json, Value};

use crate::harness::fixtures::{no_proxy_agent, TestTime};
use crate::harness::observe::release_together;
use crate::harness::servers::Api;
use crate::{device_error, endpoint, unexpected, Endpoint};
use tokengate::login::DeviceError;
use tokengate::{AuthClient, AuthServer, ClientAuth, Error};

const S: fn(u64) -> Duration = Duration::from_secs;
const CLIENT_ID: &str = "Iv1.8a61f9b3a7aba766";
const CLIENT_SECRET: &str = "gh-client-secret-0123456789";
const DEVICE_CODE: &str = "3584d83530557fdd1f46af8289938c8ef79f9dc5";
const TOKEN_PATH: &str = "/login/oauth/access_token";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn github(srv: &MockServer) -> AuthServer {
    AuthServer::new(srv.url(TOKEN_PATH))
        .device_authorization_url(srv.url("/login/device/code"))
        .client_id(CLIENT_ID)
        .agent(no_proxy_agent())
}

/// `POST /login/device/code`: GitHub's answer.
fn device_code(srv: &MockServer) -> Endpoint<'_> {
    endpoint(
        srv,
        "/login/device/code",
        |w| {
            w.header("accept", "application/json")
                .form_urlencoded_tuple("client_id", CLIENT_ID)
        },
        vec![(
            200,
            json!({
                "device_code": DEVICE_CODE,
                "user_code": "WDJB-MJHT",
                "verification_uri": "https://github.com/login/device",
                "expires_in": 900,
                "interval": 5
            }),
        )],
    )
}

/// The device-code polls, answered with `answers`.
fn polls(srv: &MockServer, answers: Vec<(u16, Value)>) -> Endpoint<'_> {
    endpoint(
        srv,
        TOKEN_PATH,
        |w| {
            w.header("accept", "application/json")
                .form_urlencoded_tuple("grant_type", DEVICE_GRANT)
                .form_urlencoded_tuple("device_code", DEVICE_CODE)
                .form_urlencoded_tuple("client_id", CLIENT_ID)
        },
        answers,
    )
}

/// A device-flow error as GitHub sends it: HTTP 200.
fn error_200(code: &str, description: &str) -> (u16, Value) {
    (
        200,
        json!({
            "error": code,
            "error_description": description,
            "error_uri": "https://docs.github.com/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow"
        }),
    )
}

fn pending() -> (u16, Value) {
    error_200(
        "authorization_pending",
        "The authorization request is still pending.",
    )
}

#[test]
fn device_flow_with_200_pending_and_slow_down_ends_with_a_github_app_user_token() {
    let srv = MockServer::start();
    let device = device_code(&srv);
    let mut slow_down = error_200(
        "slow_down",
        "Too many requests have been made in the same timeframe.",
    );
    slow_down.1["interval"] = json!(10);
    let token = polls(
        &srv,
        vec![
            pending(),
            slow_down,
            (
                200,
                json!({
                    "access_token": "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
                    "expires_in": 28800,
                    "refresh_token": "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498",
                    "refresh_token_expires_in": 15811200,
                    "scope": "",
                    "token_type": "bearer"
                }),
            ),
        ],
    );
    let other = unexpected(&srv);
    let time = TestTime::new();

    let pending = github(&srv)
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone())
        .start()
        .unwrap();
    assert_eq!(pending.user_code(), "WDJB-MJHT");
    assert_eq!(
        pending.verification_uri(),
        "https://github.com/login/device"
    );
    assert_eq!(pending.interval(), S(5));
    let tokens = pending.wait().unwrap();

    assert_eq!(
        tokens.access_token().secret(),
        "ghu_16C7e42F292c6912E7710c838347Ae178B4a"
    );
    assert!(tokens.refresh_token().unwrap().secret().starts_with("ghr_"));
    assert_eq!(tokens.expires_in(), Some(S(28800)));
    assert_eq!(tokens.token_type(), "Bearer");
    // 5 s, poll (pending); 5 s, poll (slow_down: 5 s more); 10 s, poll (the token).
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(10)]);
    assert_eq!((device.hits(), token.hits(), other.calls()), (1, 3, 0));
}

#[test]
fn access_denied_and_expired_token_with_200_are_their_typed_errors() {
    for (answer, polls_made) in [
        (
            error_200("access_denied", "The authorization request was denied."),
            2,
        ),
        (
            error_200("expired_token", "This 'device_code' has expired."),
            2,
        ),
    ] {
        let srv = MockServer::start();
        let code = answer.1["error"].as_str().unwrap().to_owned();
        let device = device_code(&srv);
        let token = polls(&srv, vec![pending(), answer]);
        let time = TestTime::new();
        let flow = github(&srv)
            .device_flow()
            .unwrap()
            .clock(time.clone())
            .sleeper(time.clone());
        let e = device_error(flow.start().unwrap().wait());
        match code.as_str() {
            "access_denied" => assert!(matches!(e, DeviceError::AccessDenied), "{e:?}"),
            _ => assert!(matches!(e, DeviceError::ExpiredToken), "{e:?}"),
        }
        assert!(!e.is_transient(), "{e:?}");
        assert_eq!((device.hits(), token.hits()), (1, polls_made), "{code}");
        assert_eq!(time.sleeps(), vec![S(5), S(5)], "{code}");
    }
}

#[test]
fn githubs_own_device_flow_codes_stop_at_once_with_their_description() {
    for (code, description) in [
        (
            "incorrect_device_code",
            "The device_code provided is not valid.",
        ),
        (
            "device_flow_disabled",
            "Device Flow must be explicitly enabled for this App",
        ),
        (
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        ),
    ] {
        let srv = MockServer::start();
        let device = device_code(&srv);
        let token = polls(&srv, vec![error_200(code, description)]);
        let time = TestTime::new();
        let flow = github(&srv)
            .device_flow()
            .unwrap()
            .clock(time.clone())
            .sleeper(time.clone());
        let err = flow.start().unwrap().wait().unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(&err, Error::Device(DeviceError::OAuth { status: 200, error, description: Some(d) })
                if error == code && d == description),
            "{err:?}"
        );
        assert!(
            shown.contains(code) && shown.contains(description),
            "{shown}"
        );
        assert!(!shown.contains(DEVICE_CODE), "{shown}");
        assert_eq!((device.hits(), token.hits()), (1, 1), "{code}");
        assert_eq!(time.sleeps(), vec![S(5)], "{code}");
    }
}

#[test]
fn a_bad_refresh_token_with_200_ends_the_session_once_for_sixteen_threads() {
    const N: usize = 16;
    let api = Api::start(&[]);
    let refresh = endpoint(
        &api.server,
        TOKEN_PATH,
        |w| {
            w.header("accept", "application/json")
                .form_urlencoded_tuple("grant_type", "refresh_token")
                .form_urlencoded_tuple("refresh_token", "ghr_dead")
                .form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("client_secret", CLIENT_SECRET)
        },
        vec![(
            200,
            json!({
                "error": "bad_refresh_token",
                "error_description": "The refresh token passed is incorrect or expired.",
                "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-refresh-token"
            }),
        )],
    );
    let expired = Arc::new(AtomicUsize::new(0));
    let e = expired.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(
            AuthServer::new(api.server.url(TOKEN_PATH))
                .client_id(CLIENT_ID)
                .client_secret(CLIENT_SECRET)
                .auth_method(ClientAuth::Post)
                .refresh_grant(),
        )
        .tokens(
            tokengate::Tokens::new("ghu_expired")
                .with_refresh_token("ghr_dead")
                .with_expires_in(S(0)),
        )
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();

    for h in release_together(N, &client, |_, c| c.get("user").call().map(|_| ())) {
        let err = h.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::SessionExpired), "{err:?}");
    }
    assert_eq!(refresh.hits(), 1, "one refresh through the gate");
    assert_eq!(expired.load(Ordering::SeqCst), 1);
    assert!(client.tokens().is_none());

    // Later calls fail at once: no token call, no API call, no second listener call.
    let err = client.get("user").call().unwrap_err();
    assert!(matches!(err, Error::SessionExpired), "{err:?}");
    assert_eq!(refresh.hits(), 1);
    assert_eq!(
        api.calls(),
        0,
        "an expired token is refreshed before the request"
    );
    assert_eq!(expired.load(Ordering::SeqCst), 1);
}
