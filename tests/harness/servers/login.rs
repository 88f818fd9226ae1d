//! Login endpoints for the stateful [`TokenServer`]: discovery documents, a device
//! authorization endpoint (RFC 8628) whose token endpoint answers from a script, and a
//! revocation endpoint (RFC 7009) that ends the session of the refresh token it is given.
//!
//! | path | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | a good document for the issuer `base_url()` |
//! | `POST /login/device` | device authorization: `dc-<n>`, user code `WDJB-MJHT` |
//! | `POST /login/token` | device_code grant from the script; refresh_token grant as `/oauth/token` |
//! | `POST /login/revoke` | revokes: a refresh token (current or rotated) ends the session |
//!
//! Anything else can be served with [`LoginServer::serve`] (bad documents, other issuers).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use httpmock::prelude::*;
use httpmock::{HttpMockRequest, HttpMockResponse, Mock};
use parking_lot::Mutex;

use super::json;
use super::token::{form, oauth_token, State, TokenServer};
use crate::harness::fixtures::no_proxy_agent;

pub const USER_CODE: &str = "WDJB-MJHT";

/// What the token endpoint answers to one device_code poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Pending,
    SlowDown,
    Approve,
    Deny,
    Expire,
    /// 503, before looking at the request.
    Unavailable,
}

/// The login endpoints' state. Guarded by `LoginServer::login`.
pub struct LoginState {
    /// Answers to the next polls; when empty: `Approve` once `approve_at` has passed, else `Pending`.
    pub script: VecDeque<Answer>,
    /// Approve automatically this long after the device code was issued (for the example).
    pub approve_after: Option<Duration>,
    approve_at: Option<Instant>,
    /// `interval` in the device authorization response (omitted if `None`).
    pub interval: Option<u64>,
    pub expires_in: u64,
    /// The device code last issued.
    pub device_code: Option<String>,
    /// Forms received by the device authorization endpoint.
    pub device_forms: Vec<HashMap<String, String>>,
    /// Forms of the device_code polls.
    pub poll_forms: Vec<HashMap<String, String>>,
    /// `Authorization` headers of device and poll requests (`-` when none).
    pub auth_headers: Vec<String>,
    /// Forms received by the revocation endpoint, and their `Authorization` headers.
    pub revocations: Vec<HashMap<String, String>>,
    pub revocation_auth: Vec<String>,
    /// When set, the revocation endpoint answers this status and revokes nothing.
    pub revocation_status: Option<u16>,
    /// Runs inside the revocation endpoint's handler, before it answers.
    pub on_revoke: Option<Box<dyn Fn() + Send + Sync>>,
}

pub struct LoginServer {
    pub ts: TokenServer,
    pub login: Arc<Mutex<LoginState>>,
}

impl LoginServer {
    pub fn start() -> Self {
        let ts = TokenServer::start();
        let login = Arc::new(Mutex::new(LoginState {
            script: VecDeque::new(),
            approve_after: None,
            approve_at: None,
            interval: Some(5),
            expires_in: 600,
            device_code: None,
            device_forms: Vec::new(),
            poll_forms: Vec::new(),
            auth_headers: Vec::new(),
            revocations: Vec::new(),
            revocation_auth: Vec::new(),
            revocation_status: None,
            on_revoke: None,
        }));
        let doc = good_document(&ts.server.base_url(), &ts.server.base_url()).to_string();
        ts.server.mock(move |when, then| {
            when.method(GET).path("/.well-known/openid-configuration");
            then.status(200)
                .header("content-type", "application/json")
                .body(doc);
        });
        let (l, base) = (login.clone(), ts.server.base_url());
        ts.server.mock(move |when, then| {
            when.method(POST).path("/login/device");
            then.respond_with(move |req| device_authorization(&l, &base, req));
        });
        let (l, s) = (login.clone(), ts.state.clone());
        ts.server.mock(move |when, then| {
            when.method(POST).path("/login/token");
            then.respond_with(move |req| token(&l, &s, req));
        });
        let (l, s) = (login.clone(), ts.state.clone());
        ts.server.mock(move |when, then| {
            when.method(POST).path("/login/revoke");
            then.respond_with(move |req| revoke(&l, &s, req));
        });
        LoginServer { ts, login }
    }

    /// The issuer whose document is at the server's root.
    pub fn issuer(&self) -> String {
        self.ts.server.base_url()
    }

    pub fn device_url(&self) -> String {
        self.ts.server.url("/login/device")
    }

    pub fn token_url(&self) -> String {
        self.ts.server.url("/login/token")
    }

    pub fn revoke_url(&self) -> String {
        self.ts.server.url("/login/revoke")
    }

    /// A good metadata document for `issuer`, pointing at this server's login endpoints.
    pub fn document(&self, issuer: &str) -> serde_json::Value {
        good_document(issuer, &self.ts.server.base_url())
    }

    /// Serves `body` with `status` to GET `path`.
    pub fn serve(&self, path: &str, status: u16, body: impl Into<String>) -> Mock<'_> {
        let body = body.into();
        self.ts.server.mock(|when, then| {
            when.method(GET).path(path);
            then.status(status)
                .header("content-type", "application/json")
                .body(body);
        })
    }

    /// Sets the answers to the next polls.
    pub fn script(&self, answers: &[Answer]) {
        self.login.lock().script = answers.iter().copied().collect();
    }

    pub fn polls(&self) -> usize {
        self.login.lock().poll_forms.len()
    }

    pub fn revocations(&self) -> Vec<HashMap<String, String>> {
        self.login.lock().revocations.clone()
    }

    /// Presents `refresh_token` to the token endpoint: the status and the `error` code, if any.
    pub fn try_refresh(&self, refresh_token: &str) -> (u16, Option<String>) {
        let mut resp = no_proxy_agent()
            .post(&self.token_url())
            .config()
            .http_status_as_error(false)
            .build()
            .send_form([
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap_or_default();
        let error = body["error"].as_str().map(str::to_owned);
        (resp.status().as_u16(), error)
    }
}

pub fn good_document(issuer: &str, base: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/login/token"),
        "device_authorization_endpoint": format!("{base}/login/device"),
        "revocation_endpoint": format!("{base}/login/revoke"),
        "grant_types_supported": ["refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
    })
}

fn auth_header(req: &HttpMockRequest) -> String {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

fn device_authorization(
    login: &Mutex<LoginState>,
    base: &str,
    req: &HttpMockRequest,
) -> HttpMockResponse {
    let mut l = login.lock();
    l.device_forms.push(form(req.body_ref()));
    l.auth_headers.push(auth_header(req));
    let code = format!("dc-secret-{}", l.device_forms.len());
    l.device_code = Some(code.clone());
    l.approve_at = l.approve_after.map(|d| Instant::now() + d);
    let mut body = serde_json::json!({
        "device_code": code,
        "user_code": USER_CODE,
        "verification_uri": format!("{base}/activate"),
        "verification_uri_complete": format!("{base}/activate?user_code={USER_CODE}"),
        "expires_in": l.expires_in,
    });
    if let Some(i) = l.interval {
        body["interval"] = i.into();
    }
    json(200, body)
}

fn token(
    login: &Mutex<LoginState>,
    state: &Mutex<State>,
    req: &HttpMockRequest,
) -> HttpMockResponse {
    let f = form(req.body_ref());
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:device_code")
    {
        return oauth_token(state, req);
    }
    let answer = {
        let mut l = login.lock();
        l.auth_headers.push(auth_header(req));
        let known = f.contains_key("device_code") && f.get("device_code") == l.device_code.as_ref();
        l.poll_forms.push(f);
        if !known {
            return json(400, serde_json::json!({"error": "invalid_grant"}));
        }
        let due = l.approve_at.is_some_and(|at| Instant::now() >= at);
        l.script.pop_front().unwrap_or(if due {
            Answer::Approve
        } else {
            Answer::Pending
        })
    };
    let error = |code: &str| json(400, serde_json::json!({"error": code}));
    match answer {
        Answer::Pending => error("authorization_pending"),
        Answer::SlowDown => error("slow_down"),
        Answer::Deny => error("access_denied"),
        Answer::Expire => error("expired_token"),
        Answer::Unavailable => HttpMockResponse::builder().status(503).build(),
        Answer::Approve => {
            login.lock().device_code = None; // a device code is used once
            let mut s = state.lock();
            s.revoked = false;
            let (access, refresh) = s.mint();
            json(
                200,
                serde_json::json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": s.lifetime.as_secs_f64(),
                    "refresh_token": refresh,
                    "scope": "openid offline_access api",
                }),
            )
        }
    }
}

fn revoke(
    login: &Mutex<LoginState>,
    state: &Mutex<State>,
    req: &HttpMockRequest,
) -> HttpMockResponse {
    let f = form(req.body_ref());
    let status = {
        let mut l = login.lock();
        l.revocation_auth.push(auth_header(req));
        l.revocations.push(f.clone());
        if let Some(hook) = &l.on_revoke {
            hook();
        }
        l.revocation_status
    };
    if let Some(status) = status {
        return json(
            status,
            serde_json::json!({"error": "temporarily_unavailable"}),
        );
    }
    let token = f.get("token").cloned().unwrap_or_default();
    let mut s = state.lock();
    if s.refresh.as_deref() == Some(token.as_str()) || s.rotated.contains(&token) {
        // The whole grant: its refresh token stops working, its access tokens too.
        s.revoked = true;
        s.access.clear();
    } else {
        s.access.remove(&token);
    }
    // RFC 7009 §2.2: 200 with an empty body, also for an unknown token.
    HttpMockResponse::builder().status(200).build()
}
