//! Microsoft Entra ID (the v2.0 endpoints), as documented:
//! - the device flow, https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-device-code:
//!   `/devicecode` answers `verification_uri`, `interval`, `message` (no
//!   `verification_uri_complete`); polls are refused with 400 and `authorization_pending`,
//!   `authorization_declined` (the user said no: not RFC 8628's `access_denied`),
//!   `bad_verification_code`, `expired_token`; `offline_access` in the scope brings a refresh
//!   token;
//! - refreshing, https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token;
//! - errors, https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes:
//!   a body with `error`, an `error_description` that starts with the AADSTS code and carries
//!   `\r\n`-separated trace and correlation ids, `error_codes`, `timestamp`, `trace_id`,
//!   `correlation_id`, `error_uri`; `invalid_grant` (AADSTS70008, AADSTS700082: the refresh
//!   token expired), `interaction_required` (AADSTS50076: MFA now required), `invalid_client`
//!   (AADSTS7000215: a wrong client secret, with 401).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use httpmock::prelude::*;
use serde_json::{json, Value};

use crate::harness::fixtures::{no_proxy_agent, TestTime};
use crate::harness::servers::Api;
use crate::{device_error, endpoint, unexpected, Endpoint};
use tokengate::login::DeviceError;
use tokengate::{AuthClient, AuthServer, Error, RefreshError, Tokens};

const S: fn(u64) -> Duration = Duration::from_secs;
const TENANT: &str = "/common/oauth2/v2.0";
const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
const DEVICE_CODE: &str = "GMMhmHCXhWEzkobqIHGG_EnNYYsAkukHspeYUk9E8";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const SCOPE: &str = "offline_access openid User.Read";

fn entra(srv: &MockServer) -> AuthServer {
    AuthServer::new(srv.url(format!("{TENANT}/token")))
        .device_authorization_url(srv.url(format!("{TENANT}/devicecode")))
        .client_id(CLIENT_ID)
        .agent(no_proxy_agent())
}

/// An error as Entra sends it.
fn aadsts(status: u16, error: &str, code: u32, message: &str) -> (u16, Value) {
    let trace = "0000aaaa-11bb-cccc-dd22-eeeeee333333";
    let correlation = "aaaa0000-bb11-2222-33cc-444444dddddd";
    let timestamp = "2025-01-15 10:12:04Z";
    (
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}")
        }),
    )
}

fn pending() -> (u16, Value) {
    aadsts(
        400,
        "authorization_pending",
        70016,
        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
    )
}

fn device_code(srv: &MockServer) -> Endpoint<'_> {
    endpoint(
        srv,
        &format!("{TENANT}/devicecode"),
        |w| {
            w.form_urlencoded_tuple("client_id", CLIENT_ID)
                .form_urlencoded_tuple("scope", SCOPE)
        },
        vec![(
            200,
            json!({
                "user_code": "FJ3K9LQ2P",
                "device_code": DEVICE_CODE,
                "verification_uri": "https://microsoft.com/devicelogin",
                "expires_in": 900,
                "interval": 5,
                "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code FJ3K9LQ2P to authenticate."
            }),
        )],
    )
}

fn polls(srv: &MockServer, answers: Vec<(u16, Value)>) -> Endpoint<'_> {
    endpoint(
        srv,
        &format!("{TENANT}/token"),
        |w| {
            w.form_urlencoded_tuple("grant_type", DEVICE_GRANT)
                .form_urlencoded_tuple("device_code", DEVICE_CODE)
                .form_urlencoded_tuple("client_id", CLIENT_ID)
        },
        answers,
    )
}

fn flow(srv: &MockServer, time: &Arc<TestTime>) -> tokengate::login::DeviceFlow {
    entra(srv)
        .device_flow()
        .unwrap()
        .scope(SCOPE)
        .clock(time.clone())
        .sleeper(time.clone())
}

#[test]
fn device_flow_with_offline_access_polls_through_400_authorization_pending() {
    let srv = MockServer::start();
    let device = device_code(&srv);
    let token = polls(
        &srv,
        vec![
            pending(),
            pending(),
            (
                200,
                json!({
                    "token_type": "Bearer",
                    "scope": "User.Read profile openid email",
                    "expires_in": 3599,
                    "ext_expires_in": 3599,
                    "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.entra-at",
                    "refresh_token": "0.AXoAentra-rt",
                    "id_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.e30."
                }),
            ),
        ],
    );
    let other = unexpected(&srv);
    let time = TestTime::new();
    let pending = flow(&srv, &time).start().unwrap();
    assert_eq!(
        pending.verification_uri(),
        "https://microsoft.com/devicelogin"
    );
    assert_eq!(pending.verification_uri_complete(), None);
    assert_eq!(pending.user_code(), "FJ3K9LQ2P");
    let tokens = pending.wait().unwrap();
    assert_eq!(tokens.refresh_token().unwrap().secret(), "0.AXoAentra-rt");
    assert_eq!(tokens.expires_in(), Some(S(3599)));
    assert_eq!(tokens.scope(), Some("User.Read profile openid email"));
    assert_eq!(time.sleeps(), vec![S(5), S(5), S(5)]);
    assert_eq!((device.hits(), token.hits(), other.calls()), (1, 3, 0));
}

#[test]
fn authorization_declined_is_access_denied_and_expired_token_is_expired() {
    for (answer, declined) in [
        (
            // The page names no AADSTS number for it; this is the reference's UserDeclinedConsent.
            aadsts(
                400,
                "authorization_declined",
                65004,
                "User declined to consent to access the app.",
            ),
            true,
        ),
        (
            aadsts(400, "expired_token", 70019, "Verification code expired."),
            false,
        ),
    ] {
        let srv = MockServer::start();
        let device = device_code(&srv);
        let token = polls(&srv, vec![pending(), answer]);
        let time = TestTime::new();
        let e = device_error(flow(&srv, &time).start().unwrap().wait());
        if declined {
            assert!(matches!(e, DeviceError::AccessDenied), "{e:?}");
        } else {
            assert!(matches!(e, DeviceError::ExpiredToken), "{e:?}");
        }
        assert_eq!((device.hits(), token.hits()), (1, 2));
        assert_eq!(time.sleeps(), vec![S(5), S(5)]);
    }
}

#[test]
fn bad_verification_code_stops_with_entras_description() {
    let srv = MockServer::start();
    let _device = device_code(&srv);
    let token = polls(
        &srv,
        vec![aadsts(
            400,
            "bad_verification_code",
            70018,
            "Invalid verification code due to User typing in wrong user code for device code flow.",
        )],
    );
    let time = TestTime::new();
    let err = flow(&srv, &time).start().unwrap().wait().unwrap_err();
    let shown = err.to_string();
    assert!(
        matches!(&err, Error::Device(DeviceError::OAuth { status: 400, error, .. }) if error == "bad_verification_code"),
        "{err:?}"
    );
    assert!(
        shown.contains("AADSTS70018: Invalid verification code"),
        "{shown}"
    );
    assert!(
        shown.contains("Trace ID: 0000aaaa") && !shown.contains('\r') && !shown.contains('\n'),
        "{shown:?}"
    );
    assert_eq!(token.hits(), 1);
}

/// A client whose access token has expired, refreshing at the tenant's token endpoint,
/// and how many times its session ended.
fn client(api: &Api, secret: Option<&str>) -> (AuthClient, Arc<AtomicUsize>) {
    let mut server =
        AuthServer::new(api.server.url(format!("{TENANT}/token"))).client_id(CLIENT_ID);
    if let Some(secret) = secret {
        server = server.client_secret(secret);
    }
    let ended = Arc::new(AtomicUsize::new(0));
    let e = ended.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(server.refresh_grant().scope(SCOPE))
        .tokens(
            Tokens::new("eyJ0eXAi.expired.at")
                .with_refresh_token("0.AXoA-old-rt")
                .with_expires_in(S(0)),
        )
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    (client, ended)
}

fn refreshes<'a>(api: &'a Api, answer: (u16, Value)) -> Endpoint<'a> {
    endpoint(
        &api.server,
        &format!("{TENANT}/token"),
        |w| {
            w.form_urlencoded_tuple("grant_type", "refresh_token")
                .form_urlencoded_tuple("refresh_token", "0.AXoA-old-rt")
                .form_urlencoded_tuple("scope", SCOPE)
        },
        vec![answer],
    )
}

#[test]
fn an_expired_refresh_token_or_newly_required_mfa_ends_the_session() {
    for answer in [
        aadsts(
            400,
            "invalid_grant",
            70008,
            "The refresh token has expired due to inactivity. The token was issued on 2024-10-01T08:00:00Z and was inactive for 90.00:00:00.",
        ),
        aadsts(
            400,
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. The token was issued on 2024-10-01T08:00:00Z and was inactive for 90.00:00:00.",
        ),
        aadsts(
            400,
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'api://orders'.",
        ),
    ] {
        let api = Api::start(&[]);
        let refresh = refreshes(&api, answer);
        let (client, ended) = client(&api, None);
        for _ in 0..2 {
            let err = client.get("me").call().unwrap_err();
            assert!(matches!(err, Error::SessionExpired), "{err:?}");
        }
        assert_eq!(refresh.hits(), 1);
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert_eq!(api.calls(), 0);
    }
}

#[test]
fn a_wrong_client_secret_keeps_the_session_and_shows_the_aadsts_code() {
    let api = Api::start(&[]);
    let refresh = refreshes(
        &api,
        aadsts(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '535fb089-9ff3-47b6-9bfb-4f1264799865'.",
        ),
    );
    let (client, ended) = client(&api, Some("wrong~secret~value~0123456789"));
    let err = client.get("me").call().unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with(
            "token refresh failed: the token endpoint answered 401 with error invalid_client: AADSTS7000215: Invalid client secret provided."
        ),
        "{shown}"
    );
    match &err {
        Error::Refresh(e) => match &**e {
            RefreshError::OAuth {
                status: 401,
                error,
                description: Some(d),
            } => {
                assert_eq!(error, "invalid_client");
                assert!(d.starts_with("AADSTS7000215: "), "{d}");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(
        err.is_transient(),
        "a configuration problem, not a dead session"
    );
    assert!(!shown.contains("wrong~secret") && !format!("{err:?}").contains("wrong~secret"));
    // The tokens are kept: the next call tries again.
    assert!(client.tokens().is_some());
    assert!(matches!(client.get("me").call(), Err(Error::Refresh(_))));
    assert_eq!(refresh.hits(), 2);
    assert_eq!(ended.load(Ordering::SeqCst), 0);
}
