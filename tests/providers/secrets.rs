//! A provider that echoes what it was sent inside `error_description` ("refresh token
//! rt-… is unknown", "client secret … is wrong", "device code … not found"): tokengate keeps
//! descriptions (issue 25), so it must show `[redacted]` in their place, in `Display` and
//! `Debug` of every error that carries one, and never the secret.

use httpmock::prelude::*;
use serde_json::json;

use crate::harness::fixtures::{no_proxy_agent, TestTime};
use crate::harness::servers::Api;
use crate::{device_error, endpoint};
use tokengate::login::DeviceError;
use tokengate::{AuthClient, AuthServer, ClientAuth, Error, Refresh, RefreshError, Tokens};

const REFRESH_TOKEN: &str = "rt-9f8e7d6c5b4a39281706";
const CLIENT_SECRET: &str = "cs-0a1b2c3d4e5f60718293";
const DEVICE_CODE: &str = "dc-5566778899aabbccddee";

fn assert_hidden(shown: &str, secret: &str) {
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(!shown.contains(&secret[..12]), "{shown}");
}

#[test]
fn an_echoed_client_secret_is_redacted_in_a_refresh_error() {
    let api = Api::start(&[]);
    let token = endpoint(
        &api.server,
        "/token",
        |w| w,
        vec![(
            401,
            json!({
                "error": "invalid_client",
                "error_description": format!("client secret {CLIENT_SECRET} does not match")
            }),
        )],
    );
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(
            AuthServer::new(api.server.url("/token"))
                .client_id("app")
                .client_secret(CLIENT_SECRET)
                .auth_method(ClientAuth::Post)
                .refresh_grant(),
        )
        .tokens(Tokens::new("at-1").with_refresh_token(REFRESH_TOKEN))
        .build()
        .unwrap();
    let err = client.get("me").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(&**e, RefreshError::OAuth { status: 401, .. })),
        "{err:?}"
    );
    assert_hidden(&err.to_string(), CLIENT_SECRET);
    assert_hidden(&format!("{err:?}"), CLIENT_SECRET);
    assert_eq!(token.hits(), 1);
}

#[test]
fn an_echoed_refresh_token_is_redacted_in_an_invalid_grant() {
    let srv = MockServer::start();
    let token = endpoint(
        &srv,
        "/token",
        |w| w,
        vec![(
            400,
            json!({
                "error": "invalid_grant",
                "error_description": format!("Unknown or invalid refresh token {REFRESH_TOKEN}.")
            }),
        )],
    );
    let grant = AuthServer::new(srv.url("/token"))
        .client_id("app")
        .refresh_grant();
    let err = grant
        .refresh(
            &no_proxy_agent(),
            &Tokens::new("at-1").with_refresh_token(REFRESH_TOKEN),
        )
        .unwrap_err();
    assert!(
        matches!(&err, RefreshError::InvalidGrant { description: Some(d), .. } if d == "[redacted]"),
        "{err:?}"
    );
    assert!(err.is_terminal());
    assert_hidden(&err.to_string(), REFRESH_TOKEN);
    assert_hidden(&format!("{err:?}"), REFRESH_TOKEN);
    assert_eq!(token.hits(), 1);
}

#[test]
fn an_echoed_device_code_is_redacted_in_a_device_error() {
    let srv = MockServer::start();
    let _device = endpoint(
        &srv,
        "/device",
        |w| w,
        vec![(
            200,
            json!({
                "device_code": DEVICE_CODE,
                "user_code": "ABCD-EFGH",
                "verification_uri": "https://example.com/device",
                "expires_in": 900,
                "interval": 5
            }),
        )],
    );
    let token = endpoint(
        &srv,
        "/token",
        |w| w,
        vec![(
            200,
            json!({
                "error": "incorrect_device_code",
                "error_description": format!("device code {DEVICE_CODE} is not valid")
            }),
        )],
    );
    let time = TestTime::new();
    let result = AuthServer::new(srv.url("/token"))
        .device_authorization_url(srv.url("/device"))
        .client_id("app")
        .agent(no_proxy_agent())
        .device_flow()
        .unwrap()
        .clock(time.clone())
        .sleeper(time.clone())
        .start()
        .unwrap()
        .wait();
    let err = device_error(result);
    assert!(
        matches!(&err, DeviceError::OAuth { description: Some(d), .. } if d == "[redacted]"),
        "{err:?}"
    );
    assert_hidden(&err.to_string(), DEVICE_CODE);
    assert_hidden(&format!("{err:?}"), DEVICE_CODE);
    assert_eq!(token.hits(), 1);
}
