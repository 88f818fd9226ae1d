//! A scripted API on httpmock that records every request byte for byte.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use httpmock::prelude::*;
use httpmock::HttpMockResponse;

use super::json;
use crate::harness::observe::Seen;

/// A scripted API on its own httpmock server.
///
/// Everything under `/api/` answers 200 (JSON `{"token": …}`) to a bearer token in the
/// `accepted` set and 401 (`WWW-Authenticate: Bearer error="invalid_token"`) otherwise.
/// `/api/status/NNN` answers NNN to an accepted token; `/api/scope` always answers 401 with
/// `error="insufficient_scope"`. Every request is recorded.
pub struct Api {
    pub server: MockServer,
    pub accepted: Arc<Mutex<HashSet<String>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Api {
    pub fn start(accepted: &[&str]) -> Api {
        let server = MockServer::start();
        let accepted = Arc::new(Mutex::new(
            accepted
                .iter()
                .map(|s| s.to_string())
                .collect::<HashSet<_>>(),
        ));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (acc, log) = (accepted.clone(), seen.clone());
        server.mock(move |when, then| {
            when.path_prefix("/api/");
            then.respond_with(move |req| {
                let s = Seen::of(req);
                log.lock().unwrap().push(s.clone());
                let path = req.uri().path().to_owned();
                if path == "/api/scope" {
                    return HttpMockResponse::builder()
                        .status(401)
                        .header(
                            "www-authenticate",
                            r#"Bearer error="insufficient_scope", scope="admin""#,
                        )
                        .build();
                }
                let ok = s.bearer().is_some_and(|t| acc.lock().unwrap().contains(t));
                if !ok {
                    return HttpMockResponse::builder()
                        .status(401)
                        .header("www-authenticate", r#"Bearer error="invalid_token""#)
                        .body("{\"error\":\"invalid_token\"}")
                        .build();
                }
                let status = path
                    .strip_prefix("/api/status/")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(200);
                json(
                    status,
                    serde_json::json!({"token": s.bearer(), "path": path}),
                )
            });
        });
        Api {
            server,
            accepted,
            seen,
        }
    }

    /// The base URL: `http://127.0.0.1:PORT/api/`.
    pub fn url(&self) -> String {
        self.server.url("/api/")
    }

    pub fn accept(&self, token: &str) {
        self.accepted.lock().unwrap().insert(token.to_owned());
    }

    pub fn reject(&self, token: &str) {
        self.accepted.lock().unwrap().remove(token);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Bearer tokens of the recorded API requests, in order.
    pub fn tokens_seen(&self) -> Vec<Option<String>> {
        self.seen()
            .iter()
            .map(|s| s.bearer().map(str::to_owned))
            .collect()
    }

    /// Adds a POST endpoint at `path` on the same server that records each request and
    /// answers `(status, json body)` computed by `respond`. Returns the log.
    pub fn endpoint(
        &self,
        path: &str,
        respond: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    ) -> Arc<Mutex<Vec<Seen>>> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        self.server.mock(move |when, then| {
            when.method(POST).path(path);
            then.respond_with(move |req| {
                let s = Seen::of(req);
                let (status, body) = respond(&s);
                l.lock().unwrap().push(s);
                json(status, body)
            });
        });
        log
    }

    /// A token endpoint at `path` answering an RFC 6749 success with a new access token
    /// `{prefix}{n}` (which the API then accepts) and refresh token `rt-{prefix}{n}`.
    pub fn minting_endpoint(&self, path: &str, prefix: &str) -> Arc<Mutex<Vec<Seen>>> {
        let acc = self.accepted.clone();
        let n = AtomicUsize::new(0);
        let prefix = prefix.to_owned();
        self.endpoint(path, move |_| {
            let k = n.fetch_add(1, Ordering::SeqCst) + 1;
            let access = format!("{prefix}{k}");
            acc.lock().unwrap().insert(access.clone());
            (
                200,
                serde_json::json!({
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "refresh_token": format!("rt-{prefix}{k}"),
                })
                .to_string(),
            )
        })
    }
}
