//! Google, as documented:
//! - the device flow ("OAuth 2.0 for TV and Limited-Input Device Applications"),
//!   https://developers.google.com/identity/protocols/oauth2/limited-input-device: the device
//!   code answer names the page `verification_url` (not RFC 8628's `verification_uri`); the
//!   client sends its `client_secret` in the form; a poll before the user answered is HTTP 428
//!   with `authorization_pending`, polling too fast is 403 with `slow_down`, a refusal is 403
//!   with `access_denied`;
//! - refreshing, https://developers.google.com/identity/protocols/oauth2/native-app#exchange-authorization-code
//!   (and "Refreshing an access token"): a revoked or expired refresh token is 400
//!   `invalid_grant` "Token has been expired or revoked.".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use httpmock::prelude::*;
use serde_json::{json, Value};

use crate::harness::fixtures::{no_proxy_agent, TestTime};
use crate::harness::servers::Api;
use crate::{device_error, endpoint, unexpected, Endpoint};
use tokengate::login::DeviceError;
use tokengate::{AuthClient, AuthServer, ClientAuth, Error, Tokens};

const S: fn(u64) -> Duration = Duration::from_secs;
const CLIENT_ID: &str = "407408718192-tv.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-google-tv-secret";
const DEVICE_CODE: &str = "4/4-GMMhmHCXhWEzkobqIHGG_EnNYYsAkukHspeYUk9E8";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn google(srv: &MockServer) -> AuthServer {
    AuthServer::new(srv.url("/token"))
        .device_authorization_url(srv.url("/device/code"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .auth_method(ClientAuth::Post)
        .agent(no_proxy_agent())
}

fn device_code(srv: &MockServer) -> Endpoint<'_> {
    endpoint(
        srv,
        "/device/code",
        |w| {
            w.form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("scope", "email profile")
        },
        vec![(
            200,
            json!({
                "device_code": DEVICE_CODE,
                "user_code": "GQVQ-JKEC",
                "verification_url": "https://www.google.com/device",
                "expires_in": 1800,
                "interval": 5
            }),
        )],
    )
}

fn polls(srv: &MockServer, answers: Vec<(u16, Value)>) -> Endpoint<'_> {
    endpoint(
        srv,
        "/token",
        |w| {
            w.form_urlencoded_tuple("grant_type", DEVICE_GRANT)
                .form_urlencoded_tuple("device_code", DEVICE_CODE)
                .form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("client_secret", CLIENT_SECRET)
        },
        answers,
    )
}

fn error(status: u16, code: &str, description: &str) -> (u16, Value) {
    (
        status,
        json!({"error": code, "error_description": description}),
    )
}

fn start(srv: &MockServer, time: &Arc<TestTime>) -> tokengate::login::DeviceAuthorization {
    google(srv)
        .device_flow()
        .unwrap()
        .scope("email profile")
        .clock(time.clone())
        .sleeper(time.clone())
        .start()
        .unwrap()
}

#[test]
fn device_flow_keeps_polling_through_428_authorization_pending_and_403_slow_down() {
    let srv = MockServer::start();
    let device = device_code(&srv);
    let token = polls(
        &srv,
        vec![
            error(428, "authorization_pending", "Precondition Required"),
            error(403, "slow_down", "Forbidden"),
            error(428, "authorization_pending", "Precondition Required"),
            (
                200,
                json!({
                    "access_token": "ya29.a0AfH6SMBx-google-at",
                    "expires_in": 3599,
                    "scope": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile",
                    "token_type": "Bearer",
                    "refresh_token": "1//0gdWgoogle-rt",
                    "id_token": "eyJhbGciOiJSUzI1NiJ9.e30.sig"
                }),
            ),
        ],
    );
    let other = unexpected(&srv);
    let time = TestTime::new();
    let pending = start(&srv, &time);
    assert_eq!(pending.verification_uri(), "https://www.google.com/device");
    assert_eq!(pending.user_code(), "GQVQ-JKEC");
    assert_eq!(pending.expires_in(), S(1800));
    let tokens = pending.wait().unwrap();
    assert_eq!(tokens.access_token().secret(), "ya29.a0AfH6SMBx-google-at");
    assert_eq!(tokens.refresh_token().unwrap().secret(), "1//0gdWgoogle-rt");
    // 5 s, 428; 5 s, 403 slow_down (+5 s); 10 s, 428; 10 s, the tokens.
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(10), S(10)]);
    assert_eq!((device.hits(), token.hits(), other.calls()), (1, 4, 0));
}

#[test]
fn access_denied_with_403_stops_with_access_denied() {
    let srv = MockServer::start();
    let device = device_code(&srv);
    let token = polls(
        &srv,
        vec![
            error(428, "authorization_pending", "Precondition Required"),
            error(403, "access_denied", "Forbidden"),
        ],
    );
    let time = TestTime::new();
    let e = device_error(start(&srv, &time).wait());
    assert!(matches!(e, DeviceError::AccessDenied), "{e:?}");
    assert_eq!(time.sleeps(), vec![S(5), S(5)]);
    assert_eq!((device.hits(), token.hits()), (1, 2));
}

#[test]
fn token_has_been_expired_or_revoked_ends_the_session() {
    let api = Api::start(&[]);
    let refresh = endpoint(
        &api.server,
        "/token",
        |w| {
            w.form_urlencoded_tuple("grant_type", "refresh_token")
                .form_urlencoded_tuple("refresh_token", "1//0gdWgoogle-rt")
                .form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("client_secret", CLIENT_SECRET)
        },
        vec![error(
            400,
            "invalid_grant",
            "Token has been expired or revoked.",
        )],
    );
    let ended = Arc::new(AtomicUsize::new(0));
    let e = ended.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(google(&api.server).refresh_grant())
        .tokens(
            Tokens::new("ya29.old")
                .with_refresh_token("1//0gdWgoogle-rt")
                .with_expires_in(S(3599)),
        )
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    // The API rejects the token (revoked at Google); the refresh says the session is over.
    for _ in 0..2 {
        let err = client.get("drive/v3/files").call().unwrap_err();
        assert!(matches!(err, Error::SessionExpired), "{err:?}");
    }
    assert_eq!(refresh.hits(), 1);
    assert_eq!(api.calls(), 1, "one API call drew the 401");
    assert_eq!(ended.load(Ordering::SeqCst), 1);
}
