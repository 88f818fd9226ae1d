//! Behaviour 6: a dead refresh token ends the session (once, even under concurrency, and never
//! a newer one); a failing token endpoint does not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness::fixtures::{refused_addr, ClientSlot, Silent, TempDir};
use crate::harness::observe::{body_json, release_together, Recorder, HANG_GUARD};
use crate::harness::servers::{Api, TokenServer};
use tokengate::ureq::Agent;
use tokengate::{
    AuthClient, AuthServer, Error, Event, FileStore, JsonRefresh, MemoryStore, Refresh,
    RefreshError, TokenStore, Tokens,
};

fn stored_refresh_token(store: &MemoryStore) -> Option<String> {
    store
        .load()
        .unwrap()
        .map(|t| t.refresh_token().unwrap().secret().to_owned())
}

#[test]
fn invalid_grant_ends_the_session_once_for_sixteen_threads() {
    const N: usize = 16;
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::new());
    let expired = Arc::new(AtomicUsize::new(0));
    let events = Recorder::new();
    let e = expired.clone();
    let client = srv
        .client_builder()
        .store(store.clone())
        .tokens(srv.login())
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .on_event(events.listener())
        .build()
        .unwrap();
    assert_eq!(stored_refresh_token(&store).as_deref(), Some("rt-1"));
    srv.revoke_all();

    let handles = release_together(N, &client, move |_, c| {
        c.get("me").call().map(|r| r.status())
    });
    for h in handles {
        let err = h.join().unwrap().unwrap_err();
        assert!(err.is_session_expired(), "{err:?}");
    }
    assert_eq!(expired.load(Ordering::SeqCst), 1);
    assert_eq!(events.count(|e| *e == Event::SessionExpired), 1);
    assert_eq!(srv.refreshes(), 1);
    assert!(client.tokens().is_none());
    assert!(store.load().unwrap().is_none());

    // Later calls fail at once: no API request, no token-endpoint call, no second listener call.
    let api_calls = srv.api_requests();
    for _ in 0..3 {
        assert!(matches!(
            client.get("me").call(),
            Err(Error::SessionExpired)
        ));
    }
    assert_eq!(srv.api_requests(), api_calls);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(expired.load(Ordering::SeqCst), 1);

    // A new login restores service.
    client.set_tokens(srv.login()).unwrap();
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(stored_refresh_token(&store).as_deref(), Some("rt-2"));
    assert_eq!(expired.load(Ordering::SeqCst), 1);
}

#[test]
fn a_late_invalid_grant_does_not_log_out_a_newer_login() {
    let api = Api::start(&["login-2"]);
    let token_calls = api.endpoint("/token", |_| (400, r#"{"error":"invalid_grant"}"#.into()));
    let oauth = AuthServer::new(api.server.url("/token")).refresh_grant();
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let store = Arc::new(MemoryStore::new());
    let expired = Arc::new(AtomicUsize::new(0));
    let events = Recorder::new();
    let e = expired.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .store(store.clone())
        .refresher(move |agent: &Agent, current: &Tokens| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            oauth.refresh(agent, current) // answers invalid_grant for the old session
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .on_event(events.listener())
        .build()
        .unwrap();

    let c = client.clone();
    let leader = thread::spawn(move || c.get("x").call().map(|mut r| body_json(&mut r)));
    started.recv_timeout(HANG_GUARD).unwrap();
    // The user logs in again while the old session's refresh is in flight.
    client
        .set_tokens(Tokens::new("login-2").with_refresh_token("rt-2"))
        .unwrap();
    release.send(()).unwrap();

    // The stale invalid_grant is ignored: the request is retried with the new login.
    assert_eq!(leader.join().unwrap().unwrap()["token"], "login-2");
    assert_eq!(token_calls.lock().unwrap().len(), 1);
    assert_eq!(expired.load(Ordering::SeqCst), 0);
    assert_eq!(events.count(|e| *e == Event::SessionExpired), 0);
    assert_eq!(client.tokens().unwrap().access_token().secret(), "login-2");
    assert_eq!(stored_refresh_token(&store).as_deref(), Some("rt-2"));
    assert_eq!(client.get("y").call().unwrap().status(), 200);
}

#[test]
fn json_refresh_400_401_403_end_the_session() {
    let api = Api::start(&[]);
    for status in [400u16, 401, 403] {
        let path = format!("/refresh/{status}");
        let log = api.endpoint(&path, move |_| (status, r#"{"message":"no"}"#.into()));
        let store = Arc::new(MemoryStore::new());
        let expired = Arc::new(AtomicUsize::new(0));
        let e = expired.clone();
        let client = AuthClient::builder(api.url())
            .proxy(None)
            .store(store.clone())
            .refresher(JsonRefresh::new(api.server.url(&path)))
            .tokens(Tokens::new("old").with_refresh_token("rt-old"))
            .on_session_expired(move || {
                e.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let err = client.get("x").call().unwrap_err();
        assert!(err.is_session_expired(), "{status}: {err:?}");
        assert!(!err.is_transient());
        assert_eq!(log.lock().unwrap().len(), 1);
        assert_eq!(expired.load(Ordering::SeqCst), 1, "{status}");
        assert!(client.tokens().is_none());
        assert!(store.load().unwrap().is_none());
        assert!(matches!(client.get("x").call(), Err(Error::SessionExpired)));
        assert_eq!(log.lock().unwrap().len(), 1);
    }
}

/// Runs one request through a client whose refresh fails through `refresher`, and checks
/// that the failure is transient and that both memory and the store still hold the session.
fn assert_transient_failure(
    api: &Api,
    refresher: impl Refresh,
    timeout: Option<Duration>,
) -> Arc<RefreshError> {
    let store = Arc::new(MemoryStore::new());
    let expired = Arc::new(AtomicUsize::new(0));
    let e = expired.clone();
    let mut b = AuthClient::builder(api.url())
        .proxy(None)
        // Retry backoff advances a fake clock instead of sleeping.
        .sleeper(tokengate::time::ManualClock::new())
        .store(store.clone())
        .refresher(refresher)
        .tokens(Tokens::new("old").with_refresh_token("rt-keep"))
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
    if let Some(t) = timeout {
        b = b.token_timeout(t);
    }
    let client = b.build().unwrap();
    let err = client.get("x").call().unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.is_session_expired());
    let Error::Refresh(cause) = err else {
        panic!("expected Error::Refresh, got {err:?}")
    };
    assert!(!cause.is_terminal());
    let t = client.tokens().expect("tokens kept");
    assert_eq!(t.access_token().secret(), "old");
    assert_eq!(t.refresh_token().unwrap().secret(), "rt-keep");
    assert_eq!(stored_refresh_token(&store).as_deref(), Some("rt-keep"));
    assert_eq!(expired.load(Ordering::SeqCst), 0);
    cause
}

#[test]
fn token_endpoint_failures_keep_the_session() {
    let api = Api::start(&[]);
    let s503 = api.endpoint("/t503", |_| (503, "{}".into()));
    let cause = assert_transient_failure(
        &api,
        AuthServer::new(api.server.url("/t503")).refresh_grant(),
        None,
    );
    assert_eq!(cause.status(), Some(503));
    // One flight: the first call plus the default policy's 3 retries (a 503 means the
    // server did not use the refresh token, so retrying it is safe).
    assert_eq!(s503.lock().unwrap().len(), 1 + 3);

    api.server.mock(|when, then| {
        when.path("/t429");
        then.status(429)
            .header("retry-after", "7")
            .body(r#"{"error":"slow_down"}"#);
    });
    let cause = assert_transient_failure(
        &api,
        AuthServer::new(api.server.url("/t429")).refresh_grant(),
        None,
    );
    assert!(
        matches!(
            *cause,
            RefreshError::Status { status: 429, retry_after: Some(d) } if d == Duration::from_secs(7)
        ),
        "{cause:?}"
    );

    // A JSON endpoint's 5xx is transient too.
    api.endpoint("/j500", |_| (500, "{}".into()));
    let cause = assert_transient_failure(&api, JsonRefresh::new(api.server.url("/j500")), None);
    assert_eq!(cause.status(), Some(500));

    // invalid_client is a configuration problem, not a dead session.
    api.endpoint("/client", |_| (401, r#"{"error":"invalid_client"}"#.into()));
    let cause = assert_transient_failure(
        &api,
        AuthServer::new(api.server.url("/client")).refresh_grant(),
        None,
    );
    assert!(
        matches!(&*cause, RefreshError::OAuth { status: 401, error, .. } if error == "invalid_client"),
        "{cause:?}"
    );
}

#[test]
fn an_unreachable_or_silent_token_endpoint_keeps_the_session() {
    let api = Api::start(&[]);
    let refused = format!("http://{}/token", refused_addr());
    let cause = assert_transient_failure(&api, AuthServer::new(refused).refresh_grant(), None);
    assert!(matches!(*cause, RefreshError::Transport(_)), "{cause:?}");

    let silent = Silent::start();
    let cause = assert_transient_failure(
        &api,
        AuthServer::new(format!("http://{}/token", silent.addr)).refresh_grant(),
        Some(Duration::from_millis(200)),
    );
    assert!(
        matches!(
            &*cause,
            RefreshError::Transport(t) if matches!(t.ureq_error(), tokengate::ureq::Error::Timeout(_))
        ),
        "{cause:?}"
    );
}

/// The session ends while every thread is known to be inside the one refresh: the refresher
/// is held until the other N-1 threads wait on it, then the server answers `invalid_grant`.
/// Tokens live in a `FileStore`; a second client on the same file stands in for another
/// process (separate `FileStore`s coordinate exactly as processes do).
#[test]
fn a_session_ending_under_forced_overlap_ends_once_and_everywhere() {
    const N: usize = 8;
    let srv = TokenServer::start();
    let dir = TempDir::new("session-end-overlap");
    let path = dir.path("tokens.json");
    let slot = ClientSlot::default();
    let s = slot.clone();
    let oauth = AuthServer::new(srv.token_url())
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant();
    let expired = Arc::new(AtomicUsize::new(0));
    let e = expired.clone();
    let events = Recorder::new();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |agent: &Agent, current: &Tokens| {
            s.wait_for_waiters(N - 1);
            oauth.refresh(agent, current)
        })
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .on_session_expired(move || {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .on_event(events.listener())
        .build()
        .unwrap();
    slot.set(&client);
    // The other process: loads the login from the file and uses it.
    let other = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    assert_eq!(other.get("me").call().unwrap().status(), 200);
    srv.revoke_all();

    let handles = release_together(N, &client, |_, c| c.get("me").call().map(|r| r.status()));
    for h in handles {
        let err = h.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::SessionExpired), "{err:?}");
    }
    slot.clear();
    assert_eq!(srv.refreshes(), 1, "one token call");
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(expired.load(Ordering::SeqCst), 1, "the listener ran once");
    assert_eq!(events.count(|e| *e == Event::SessionExpired), 1);
    assert_eq!(events.count(|e| matches!(e, Event::Waited { .. })), N - 1);
    assert!(client.tokens().is_none());
    assert!(!path.exists(), "the token file is cleared");
    assert!(FileStore::new(&path).unwrap().load().unwrap().is_none());

    // The other process sees the logout on its next request, without calling the token
    // endpoint or the API.
    let api_calls = srv.api_requests();
    let err = other.get("me").call().unwrap_err();
    assert!(
        matches!(err, Error::NoTokens | Error::SessionExpired),
        "{err:?}"
    );
    assert!(other.tokens().is_none());
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.api_requests(), api_calls);
    assert!(!path.exists());

    // A new login in either process restores service for both.
    other.set_tokens(srv.login()).unwrap();
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(expired.load(Ordering::SeqCst), 1);
}
