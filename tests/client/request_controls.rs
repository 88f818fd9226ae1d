//! Issue 13: request-level controls, scope errors, `force_refresh` and counters.
//! - `without_auth()`: no token, no refresh, no 401 handling; works without tokens;
//! - `Error::InsufficientScope` for a 401/403 whose Bearer challenge says so, no refresh;
//! - per-request `http_status_as_error`;
//! - `force_refresh()`: one refresh through the gate for all callers at once;
//! - `stats()`: exact counts after a scripted sequence;
//! - a caller's own `Authorization` header is marked sensitive.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use crate::harness::fixtures::{minting_refresher, RecordingSleeper};
use crate::harness::observe::{body_json, release_together, wait_until};
use crate::harness::servers::{Api, TokenServer};
use tokengate::ureq::http::{Request, Response};
use tokengate::ureq::middleware::MiddlewareNext;
use tokengate::ureq::{Agent, Body, SendBody};
use tokengate::{AuthClient, AuthServer, Error, Refresh, RefreshError, Stats, Tokens};

fn client_for(api: &Api, calls: &Arc<AtomicUsize>) -> tokengate::AuthClientBuilder {
    AuthClient::builder(api.url())
        .proxy(None)
        .refresher(minting_refresher(api, calls.clone()))
}

#[test]
fn without_auth_sends_no_token_makes_no_refresh_and_needs_no_tokens() {
    let api = Api::start(&["acc-1"]);
    let calls = Arc::new(AtomicUsize::new(0));
    // No tokens at all.
    let client = client_for(&api, &calls).build().unwrap();
    assert!(matches!(client.get("x").call(), Err(Error::NoTokens)));
    // A 401 to a request without the token is a plain status: no refresh.
    let err = client.get("health").without_auth().call().unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    let resp = client
        .get("health")
        .without_auth()
        .http_status_as_error(false)
        .call()
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Also for an absolute URL of the API's origin, and with a header of the caller's own.
    client
        .get(&api.server.url("/api/public"))
        .without_auth()
        .header("Authorization", "Basic cHVibGlj")
        .http_status_as_error(false)
        .call()
        .unwrap();
    let seen = api.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[1].header("authorization"), None);
    assert_eq!(seen[2].header("authorization"), Some("Basic cHVibGlj"));
    assert_eq!(calls.load(SeqCst), 0);

    // With tokens, the same request still goes without them…
    client.set_tokens(Tokens::new("acc-1")).unwrap();
    client
        .get("public")
        .without_auth()
        .http_status_as_error(false)
        .call()
        .unwrap();
    assert_eq!(api.seen()[3].header("authorization"), None);
    // …and after the session ended too.
    let srv = TokenServer::start();
    let ended = srv.client_builder().tokens(srv.login()).build().unwrap();
    srv.revoke_all();
    assert!(matches!(ended.get("me").call(), Err(Error::SessionExpired)));
    let err = ended.get("me").without_auth().call().unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    assert_eq!(srv.refreshes(), 1, "the one refresh that ended the session");
}

#[test]
fn insufficient_scope_is_its_own_error_and_makes_no_refresh() {
    let api = Api::start(&["acc-1"]);
    let calls = Arc::new(AtomicUsize::new(0));
    let client = client_for(&api, &calls)
        .tokens(Tokens::new("acc-1"))
        .http_status_as_error(false)
        .build()
        .unwrap();
    // The test API answers /api/scope with 401 and `error="insufficient_scope", scope="admin"`.
    for _ in 0..2 {
        match client.get("scope").call() {
            Err(Error::InsufficientScope { status, scope }) => {
                assert_eq!(status, 401);
                assert_eq!(scope.as_deref(), Some("admin"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        calls.load(SeqCst),
        0,
        "a new token would have the same scopes"
    );
    assert_eq!(api.calls(), 2);
    assert_eq!(client.stats().unauthorized, 2);
    let e = Error::InsufficientScope {
        status: 403,
        scope: None,
    };
    assert_eq!(e.status(), Some(403));
}

#[test]
fn http_status_as_error_can_be_set_for_one_request() {
    let api = Api::start(&["acc-1"]);
    let calls = Arc::new(AtomicUsize::new(0));
    let strict = client_for(&api, &calls)
        .tokens(Tokens::new("acc-1"))
        .build()
        .unwrap();
    assert!(matches!(
        strict.get("status/404").call(),
        Err(Error::StatusCode(404))
    ));
    let mut resp = strict
        .get("status/404")
        .http_status_as_error(false)
        .call()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(body_json(&mut resp)["path"], "/api/status/404");

    let lenient = client_for(&api, &calls)
        .tokens(Tokens::new("acc-1"))
        .http_status_as_error(false)
        .build()
        .unwrap();
    assert_eq!(lenient.get("status/503").call().unwrap().status(), 503);
    assert!(matches!(
        lenient.get("status/500").http_status_as_error(true).call(),
        Err(Error::StatusCode(500))
    ));
}

#[test]
fn force_refresh_from_64_threads_at_once_makes_exactly_one_refresh() {
    const N: usize = 64;
    let srv = TokenServer::start();
    let slot: Arc<Mutex<Option<AuthClient>>> = Arc::default();
    let s = slot.clone();
    let oauth = AuthServer::new(srv.token_url())
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |agent: &Agent, current: &Tokens| {
            // The first refresh is held until every other caller waits on it.
            if let Some(c) = s.lock().unwrap().take() {
                wait_until("all callers waiting", || c.refresh_waiters() == N - 1);
            }
            oauth.refresh(agent, current)
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(client.clone());
    let results = release_together(N, &client, |_, c| c.force_refresh());
    for r in results {
        r.join().unwrap().unwrap();
    }
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-2");
    let s = client.stats();
    assert_eq!((s.refreshes, s.waited), (1, N as u64 - 1));
    // A call after that refresh makes a new one.
    client.force_refresh().unwrap();
    assert_eq!(srv.refreshes(), 2);
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn force_refresh_returns_the_refresh_error_and_keeps_the_session() {
    let api = Api::start(&["acc-1"]);
    let fail = |_: &Agent, _: &Tokens| -> Result<Tokens, RefreshError> {
        Err(RefreshError::transient("token endpoint down"))
    };
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .retry(tokengate::RetryPolicy::none())
        .refresher(fail)
        .tokens(Tokens::new("acc-1").with_refresh_token("r"))
        .build()
        .unwrap();
    let err = client.force_refresh().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if !e.is_terminal()),
        "{err:?}"
    );
    assert_eq!(client.tokens().unwrap().access_token().secret(), "acc-1");
    client.get("x").call().unwrap();

    // No refresh token: nothing is sent, and the still-valid session is not ended.
    let srv = TokenServer::start();
    let access_only = Tokens::new(srv.login().access_token().secret());
    let client = srv.client_builder().tokens(access_only).build().unwrap();
    let err = client.force_refresh().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(**e, RefreshError::NoRefreshToken)),
        "{err:?}"
    );
    assert_eq!(srv.refreshes(), 0);
    client.get("me").call().unwrap();

    // A refresh token the server rejects: the session is over.
    let client = srv.client_builder().tokens(srv.login()).build().unwrap();
    srv.revoke_all();
    assert!(matches!(client.force_refresh(), Err(Error::SessionExpired)));
    assert!(matches!(client.force_refresh(), Err(Error::SessionExpired)));

    // No tokens, no refresher.
    let none = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(AuthServer::new(srv.token_url()).refresh_grant())
        .build()
        .unwrap();
    assert!(matches!(none.force_refresh(), Err(Error::NoTokens)));
    let plain = AuthClient::builder(api.url())
        .proxy(None)
        .tokens(Tokens::new("acc-1"))
        .build()
        .unwrap();
    assert!(matches!(plain.force_refresh(), Err(Error::Config(_))));
}

#[test]
fn stats_count_a_scripted_sequence_exactly() {
    let srv = TokenServer::start();
    let client = srv
        .client_builder()
        .retry(tokengate::RetryPolicy::default().base_delay(std::time::Duration::ZERO))
        .sleeper(RecordingSleeper::default())
        .tokens(srv.login())
        .build()
        .unwrap();
    assert_eq!(client.stats(), Stats::default());

    client.get("a").call().unwrap(); // 1 request
    srv.revoke_access_tokens();
    client.get("b").call().unwrap(); // 401, refresh, replay: 2 requests
    client.force_refresh().unwrap(); // a refresh, no request
    srv.revoke_all();
    assert!(matches!(client.get("c").call(), Err(Error::SessionExpired))); // 401, ended
    assert!(matches!(client.get("d").call(), Err(Error::SessionExpired))); // nothing sent
    let s = client.stats();
    assert_eq!(s.requests, 4, "{s:?}");
    assert_eq!(s.unauthorized, 2, "{s:?}");
    assert_eq!(s.refreshes, 2, "{s:?}");
    assert_eq!(s.refresh_failures, 0, "{s:?}");
    assert_eq!(s.session_expiries, 1, "{s:?}");
    assert_eq!(s.waited, 0, "{s:?}");
    assert_eq!(s.retries, 0, "{s:?}");
    assert_eq!(s.adopted, 0, "{s:?}");
    assert_eq!(srv.refreshes(), 3);

    // Retries: a 503 twice, then 200 (3 requests, 2 retries); clones share the counters.
    let server = httpmock::MockServer::start();
    let n = AtomicUsize::new(0);
    server.mock(move |when, then| {
        when.path("/api/flaky");
        then.respond_with(move |_| {
            let status = if n.fetch_add(1, SeqCst) < 2 { 503 } else { 200 };
            httpmock::HttpMockResponse::builder().status(status).build()
        });
    });
    let c = AuthClient::builder(server.url("/api/"))
        .proxy(None)
        .sleeper(RecordingSleeper::default())
        .tokens(Tokens::new("acc-1"))
        .build()
        .unwrap();
    c.clone().get("flaky").call().unwrap();
    let s = c.stats();
    assert_eq!((s.requests, s.retries), (3, 2), "{s:?}");
}

#[test]
fn a_callers_authorization_header_is_marked_sensitive() {
    let api = Api::start(&["acc-1"]);
    let sensitive: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let log = sensitive.clone();
    let agent: Agent = Agent::config_builder()
        .proxy(None)
        .middleware(
            move |req: Request<SendBody>,
                  next: MiddlewareNext|
                  -> Result<Response<Body>, tokengate::ureq::Error> {
                for (name, value) in req.headers() {
                    if ["authorization", "x-api-key", "cookie"].contains(&name.as_str()) {
                        log.lock()
                            .unwrap()
                            .push((name.to_string(), value.is_sensitive()));
                    }
                }
                next.handle(req)
            },
        )
        .build()
        .into();
    let client = AuthClient::builder(api.url())
        .api_agent(agent)
        .sensitive_header("X-Api-Key")
        .allow_other_origins(true)
        .tokens(Tokens::new("acc-1"))
        .build()
        .unwrap();
    client.get("x").call().unwrap(); // the token
    client
        .get("public")
        .without_auth()
        .header("Authorization", "Basic dXNlcjpwdw==")
        .header("X-Api-Key", "k")
        .header("Cookie", "c=1")
        .http_status_as_error(false)
        .call()
        .unwrap();
    let log = sensitive.lock().unwrap();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log.iter().all(|(_, s)| *s), "{log:?}");
}
