//! Auth0, as documented:
//! - the device flow, https://auth0.com/docs/get-started/authentication-and-authorization-flow/device-authorization-flow/call-your-api-using-the-device-authorization-flow:
//!   the API is named by `audience` on the device code request; polls are refused with 403
//!   `authorization_pending`, 429 `slow_down`, 403 `expired_token` / `access_denied`, each
//!   with an `error_description`;
//! - refreshing, https://auth0.com/docs/secure/tokens/refresh-tokens/use-refresh-tokens: a
//!   revoked refresh token is 403 `invalid_grant` "Unknown or invalid refresh token.".
//!
//! `AuthServer::extra_param` carries `audience` (and RFC 8707's repeatable `resource`) to
//! every request but revocation; names tokengate sends itself are refused before anything is
//! sent.

use std::sync::Arc;
use std::time::Duration;

use httpmock::prelude::*;
use serde_json::{json, Value};

use crate::harness::fixtures::{no_proxy_agent, TestTime};
use crate::harness::servers::Api;
use crate::{endpoint, unexpected, Endpoint};
use tokengate::{AuthClient, AuthServer, Error, Tokens};

const S: fn(u64) -> Duration = Duration::from_secs;
const CLIENT_ID: &str = "Q4HgW2oAuth0cli";
const AUDIENCE: &str = "https://orders.example.com/";
const DEVICE_CODE: &str = "Ag_EE_auth0-device-code";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn auth0(srv: &MockServer) -> AuthServer {
    AuthServer::new(srv.url("/oauth/token"))
        .device_authorization_url(srv.url("/oauth/device/code"))
        .client_id(CLIENT_ID)
        .extra_param("audience", AUDIENCE)
        .agent(no_proxy_agent())
}

/// A device login at `server`, on `time` (nothing really sleeps).
fn login(server: &AuthServer, time: &Arc<TestTime>) -> Result<Tokens, Error> {
    server
        .device_flow()?
        .scope("openid offline_access")
        .clock(time.clone())
        .sleeper(time.clone())
        .start()?
        .wait()
}

fn error(status: u16, code: &str, description: &str) -> (u16, Value) {
    (
        status,
        json!({"error": code, "error_description": description}),
    )
}

/// The answers each endpoint gives, for requests that carry the audience exactly once.
fn device_code(srv: &MockServer) -> Endpoint<'_> {
    endpoint(
        srv,
        "/oauth/device/code",
        |w| {
            w.form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("scope", "openid offline_access")
                .form_urlencoded_tuple_count("^audience$", ".*", 1)
                .form_urlencoded_tuple("audience", AUDIENCE)
        },
        vec![(
            200,
            json!({
                "device_code": DEVICE_CODE,
                "user_code": "QTZL-MCBW",
                "verification_uri": "https://tenant.eu.auth0.com/activate",
                "verification_uri_complete": "https://tenant.eu.auth0.com/activate?user_code=QTZL-MCBW",
                "expires_in": 900,
                "interval": 5
            }),
        )],
    )
}

#[test]
fn the_audience_reaches_the_device_request_every_poll_and_every_refresh() {
    let srv = MockServer::start();
    let device = device_code(&srv);
    let polls = endpoint(
        &srv,
        "/oauth/token",
        |w| {
            w.form_urlencoded_tuple("grant_type", DEVICE_GRANT)
                .form_urlencoded_tuple("device_code", DEVICE_CODE)
                .form_urlencoded_tuple_count("^audience$", ".*", 1)
                .form_urlencoded_tuple("audience", AUDIENCE)
        },
        vec![
            error(
                403,
                "authorization_pending",
                "User has yet to authorize device code.",
            ),
            error(
                429,
                "slow_down",
                "You are polling faster than the specified interval of 5 seconds.",
            ),
            (
                200,
                json!({
                    "access_token": "eyJz93a-auth0-at-1",
                    "refresh_token": "v1.auth0-rt-1",
                    "id_token": "eyJ0eXAi.e30.sig",
                    "scope": "openid offline_access",
                    "expires_in": 86400,
                    "token_type": "Bearer"
                }),
            ),
        ],
    );
    let refreshes = endpoint(
        &srv,
        "/oauth/token",
        |w| {
            w.form_urlencoded_tuple("grant_type", "refresh_token")
                .form_urlencoded_tuple("refresh_token", "v1.auth0-rt-1")
                .form_urlencoded_tuple_count("^audience$", ".*", 1)
                .form_urlencoded_tuple("audience", AUDIENCE)
        },
        vec![(
            200,
            json!({"access_token": "eyJz93a-auth0-at-2", "expires_in": 86400, "token_type": "Bearer"}),
        )],
    );
    let other = unexpected(&srv);
    let time = TestTime::new();
    let server = auth0(&srv);

    let tokens = login(&server, &time).unwrap();
    // 5 s, 403 pending; 5 s, 429 slow_down (5 s more); 10 s.
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(10)]);
    assert_eq!((device.hits(), polls.hits()), (1, 3));

    let api = Api::start(&["eyJz93a-auth0-at-2"]);
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(server.refresh_grant())
        .tokens(tokens)
        .build()
        .unwrap();
    assert_eq!(client.get("orders").call().unwrap().status(), 200);
    assert_eq!(
        refreshes.hits(),
        1,
        "the API refused the first token: one refresh"
    );
    assert_eq!(
        other.calls(),
        0,
        "no request without the audience, none with it twice"
    );
}

#[test]
fn a_repeated_resource_arrives_as_often_as_it_was_given() {
    let srv = MockServer::start();
    let both = endpoint(
        &srv,
        "/oauth/token",
        |w| {
            w.form_urlencoded_tuple("grant_type", "refresh_token")
                .form_urlencoded_tuple_count("^resource$", ".*", 2)
                .form_urlencoded_tuple("resource", "https://orders.example.com/")
                .form_urlencoded_tuple("resource", "https://files.example.com/")
        },
        vec![(200, json!({"access_token": "at-2", "token_type": "Bearer"}))],
    );
    let other = unexpected(&srv);
    let api = Api::start(&["at-2"]);
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(
            AuthServer::new(srv.url("/oauth/token"))
                .client_id(CLIENT_ID)
                .extra_param("resource", "https://orders.example.com/")
                .refresh_grant()
                .extra_param("resource", "https://files.example.com/"),
        )
        .tokens(Tokens::new("at-1").with_refresh_token("rt-1"))
        .build()
        .unwrap();
    assert_eq!(client.get("orders").call().unwrap().status(), 200);
    assert_eq!((both.hits(), other.calls()), (1, 0));
    let body = &both.bodies()[0];
    assert_eq!(body.matches("resource=").count(), 2, "{body}");
    assert!(
        body.find("orders.example.com").unwrap() < body.find("files.example.com").unwrap(),
        "the server's first, then the grant's: {body}"
    );
}

#[test]
fn a_name_tokengate_sends_itself_is_refused_before_anything_is_sent() {
    let srv = MockServer::start();
    let anything = unexpected(&srv);
    let server = || {
        AuthServer::new(srv.url("/oauth/token"))
            .device_authorization_url(srv.url("/oauth/device/code"))
            .client_id(CLIENT_ID)
            .agent(no_proxy_agent())
    };
    let build = |refresher: tokengate::OAuth2Refresh| {
        AuthClient::builder("http://127.0.0.1:1/api/")
            .proxy(None)
            .refresher(refresher)
            .build()
            .map(|_| ())
    };
    for name in ["scope", "grant_type", "client_secret", "refresh_token", ""] {
        let err = build(server().extra_param(name, "x").refresh_grant()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name}: {err:?}");
        let err = build(server().refresh_grant().extra_param(name, "x")).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name}: {err:?}");
        let err = AuthClient::builder("http://127.0.0.1:1/api/")
            .refresher(server().extra_param(name, "x").client_credentials())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name}: {err:?}");
        let err = server()
            .extra_param(name, "x")
            .device_flow()
            .unwrap()
            .start()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name}: {err:?}");
        let err = server()
            .device_flow()
            .unwrap()
            .extra_param(name, "x")
            .start()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{name}: {err:?}");
    }
    assert_eq!(anything.calls(), 0);
}

#[test]
fn debug_shows_the_names_of_extra_params_never_their_values() {
    let server = AuthServer::new("https://tenant.eu.auth0.com/oauth/token")
        .device_authorization_url("https://tenant.eu.auth0.com/oauth/device/code")
        .client_id(CLIENT_ID)
        .extra_param("audience", "urn:value-of-the-audience")
        .extra_param("login_hint", "someone@example.com");
    let shown = [
        format!("{server:?}"),
        format!("{:?}", server.refresh_grant()),
        format!("{:?}", server.client_credentials()),
        format!("{:?}", server.device_flow().unwrap()),
    ];
    for shown in shown {
        assert!(
            shown.contains("audience") && shown.contains("login_hint"),
            "{shown}"
        );
        assert!(
            !shown.contains("urn:value") && !shown.contains("someone@"),
            "{shown}"
        );
    }
}

#[test]
fn slow_down_with_429_slows_the_polling_and_never_ends_the_login() {
    let srv = MockServer::start();
    let _device = device_code(&srv);
    let slow = || {
        error(
            429,
            "slow_down",
            "You are polling faster than the specified interval of 5 seconds.",
        )
    };
    let polls = endpoint(
        &srv,
        "/oauth/token",
        |w| w.form_urlencoded_tuple("grant_type", DEVICE_GRANT),
        vec![
            slow(),
            slow(),
            slow(),
            slow(),
            (
                200,
                json!({"access_token": "eyJz93a-auth0-at-1", "token_type": "Bearer"}),
            ),
        ],
    );
    let other = unexpected(&srv);
    let time = TestTime::new();
    let tokens = login(&auth0(&srv), &time).unwrap();
    // Four slow_downs in a row: 5 s more each time (as RFC 8628 §3.5 says), not three failed
    // polls that end the login with Status(429).
    assert_eq!(time.sleeps(), vec![S(5), S(10), S(15), S(20), S(25)]);
    assert_eq!(polls.hits(), 5);
    assert_eq!(tokens.access_token().secret(), "eyJz93a-auth0-at-1");
    assert_eq!(other.calls(), 0);
}
