//! `LoginServer`: login endpoints in front of a [`TokenServer`], for `examples/device_login.rs`
//! only, until that example moves to `tokengate::testing` (whose `TestServer` has discovery,
//! device authorization and revocation of its own, which the tests use). Delete it then.
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | the document for the issuer `issuer()` |
//! | `POST /login/device` | device authorization: `dc-secret-<n>`, user code `WDJB-MJHT` |
//! | `POST /login/token` | device_code grant: pending until `approve_after` passed, then a new kit login; refresh_token grant through [`TestServer::refresh`](tokengate::testing::TestServer::refresh) |
//! | `POST /login/revoke` | revokes at the kit (a refresh token ends its login) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use httpmock::prelude::*;
use httpmock::{HttpMockRequest, HttpMockResponse};
use parking_lot::Mutex;
use tokengate::testing::TestServerError;

use super::{form, json, TokenServer};

pub const USER_CODE: &str = "WDJB-MJHT";

/// What the example sets. Guarded by `LoginServer::login`.
pub struct LoginState {
    /// `interval` in the device authorization response (omitted if `None`).
    pub interval: Option<u64>,
    /// The user approves this long after the device code was issued (never if `None`).
    pub approve_after: Option<Duration>,
    approve_at: Option<Instant>,
    device_codes: u64,
    device_code: Option<String>,
    revocations: Vec<HashMap<String, String>>,
}

pub struct LoginServer {
    pub ts: Arc<TokenServer>,
    pub login: Arc<Mutex<LoginState>>,
    front: MockServer,
}

impl LoginServer {
    pub fn start() -> Self {
        let ts = Arc::new(TokenServer::start());
        let login = Arc::new(Mutex::new(LoginState {
            interval: Some(5),
            approve_after: None,
            approve_at: None,
            device_codes: 0,
            device_code: None,
            revocations: Vec::new(),
        }));
        let front = MockServer::start();
        let base = front.base_url();
        let doc = serde_json::json!({
            "issuer": base,
            "token_endpoint": format!("{base}/login/token"),
            "device_authorization_endpoint": format!("{base}/login/device"),
            "revocation_endpoint": format!("{base}/login/revoke"),
        })
        .to_string();
        front.mock(move |when, then| {
            when.method(GET).path("/.well-known/openid-configuration");
            then.status(200)
                .header("content-type", "application/json")
                .body(doc);
        });
        let l = login.clone();
        front.mock(move |when, then| {
            when.method(POST).path("/login/device");
            then.respond_with(move |_| device_authorization(&l, &base));
        });
        let (l, t) = (login.clone(), ts.clone());
        front.mock(move |when, then| {
            when.method(POST).path("/login/token");
            then.respond_with(move |req| token(&l, &t, req));
        });
        let (l, t) = (login.clone(), ts.clone());
        front.mock(move |when, then| {
            when.method(POST).path("/login/revoke");
            then.respond_with(move |req| {
                let f = form(req.body_ref());
                t.revoke(f.get("token").map_or("", String::as_str));
                l.lock().revocations.push(f);
                HttpMockResponse::builder().status(200).build()
            });
        });
        LoginServer { ts, login, front }
    }

    /// The issuer whose document is at the front server's root.
    pub fn issuer(&self) -> String {
        self.front.base_url()
    }

    /// The forms the revocation endpoint received.
    pub fn revocations(&self) -> Vec<HashMap<String, String>> {
        self.login.lock().revocations.clone()
    }

    /// Presents `refresh_token` to the kit: the status and the `error` code, if any.
    pub fn try_refresh(&self, refresh_token: &str) -> (u16, Option<String>) {
        match self.ts.refresh(refresh_token) {
            Ok(_) => (200, None),
            Err(TestServerError::Refused { status, error }) => (status, Some(error.to_owned())),
            Err(e) => panic!("{e}"),
        }
    }
}

fn device_authorization(login: &Mutex<LoginState>, base: &str) -> HttpMockResponse {
    let mut l = login.lock();
    l.device_codes += 1;
    let code = format!("dc-secret-{}", l.device_codes);
    l.device_code = Some(code.clone());
    l.approve_at = l.approve_after.map(|d| Instant::now() + d);
    let mut body = serde_json::json!({
        "device_code": code,
        "user_code": USER_CODE,
        "verification_uri": format!("{base}/activate"),
        "verification_uri_complete": format!("{base}/activate?user_code={USER_CODE}"),
        "expires_in": 600,
    });
    if let Some(i) = l.interval {
        body["interval"] = i.into();
    }
    json(200, body)
}

fn token(login: &Mutex<LoginState>, ts: &TokenServer, req: &HttpMockRequest) -> HttpMockResponse {
    let f = form(req.body_ref());
    let error = |status: u16, code: &str| json(status, serde_json::json!({"error": code}));
    let tokens = match f.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            match ts.refresh(f.get("refresh_token").map_or("", String::as_str)) {
                Ok(tokens) => tokens,
                Err(TestServerError::Refused { status, error: e }) => return error(status, e),
                Err(_) => return error(500, "server_error"),
            }
        }
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            let mut l = login.lock();
            if !f.contains_key("device_code") || f.get("device_code") != l.device_code.as_ref() {
                return error(400, "invalid_grant");
            }
            if l.approve_at.is_none_or(|at| Instant::now() < at) {
                return error(400, "authorization_pending");
            }
            l.device_code = None; // a device code is used once
            ts.login()
        }
        _ => return error(400, "unsupported_grant_type"),
    };
    json(
        200,
        serde_json::json!({
            "access_token": tokens.access_token().secret(),
            "token_type": "Bearer",
            "expires_in": tokens.expires_in().map_or(3600, |d| d.as_secs()),
            "refresh_token": tokens.refresh_token().map(|r| r.secret()),
        }),
    )
}
