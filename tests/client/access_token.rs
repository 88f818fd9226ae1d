//! `AuthClient::access_token`: a token valid now, for use outside the client (like `gcloud
//! auth print-access-token`), refreshed first through the gate only when needed.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::fixtures::TempDir;
use crate::harness::observe::release_together;
use crate::harness::servers::TokenServer;
use tokengate::testing::Fault;
use tokengate::time::ManualClock;
use tokengate::{AuthClient, AuthClientBuilder, Error, FileStore, RetryPolicy};

fn builder(srv: &TokenServer, clock: &Arc<ManualClock>) -> AuthClientBuilder {
    AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(srv.refresher())
        .clock(clock.clone())
}

/// Seconds before the token server's 3600 s expiry where the default refresh window (30 s
/// skew, plus 1 s for whole seconds) has not begun, and where it has.
const OUTSIDE_WINDOW: Duration = Duration::from_secs(3600 - 32);
const INSIDE_WINDOW: Duration = Duration::from_secs(3600 - 20);

#[test]
fn a_valid_token_outside_its_window_is_returned_without_a_call() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let client = builder(&srv, &clock).tokens(srv.login()).build().unwrap();
    clock.advance(OUTSIDE_WINDOW);
    assert_eq!(client.access_token().unwrap().secret(), "at-1");
    assert_eq!(srv.refreshes(), 0);
    assert_eq!(client.stats().refreshes, 0);
}

#[test]
fn a_token_inside_its_window_is_refreshed_first_and_waited_for() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let client = builder(&srv, &clock).tokens(srv.login()).build().unwrap();
    clock.advance(INSIDE_WINDOW);
    // A request would get at-1 at once and refresh in the background; a token handed out
    // gets the fresh one.
    assert_eq!(client.access_token().unwrap().secret(), "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(client.access_token().unwrap().secret(), "at-2");
    assert_eq!(srv.refreshes(), 1, "the fresh token needs no second call");
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn sixteen_threads_with_an_expired_token_share_exactly_one_refresh() {
    const N: usize = 16;
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let client = builder(&srv, &clock).tokens(srv.login()).build().unwrap();
    clock.advance(Duration::from_secs(3600));
    let handles = release_together(N, &client, |_, c| {
        c.access_token().map(|t| t.secret().to_owned())
    });
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), "at-2");
    }
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn a_failed_refresh_inside_the_window_returns_the_still_valid_token_and_is_not_repeated() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let client = builder(&srv, &clock)
        .retry(RetryPolicy::none())
        .tokens(srv.login())
        .build()
        .unwrap();
    clock.advance(INSIDE_WINDOW);
    srv.fault_next_token_calls(1, Fault::Unavailable { retry_after: None });
    assert_eq!(client.access_token().unwrap().secret(), "at-1");
    assert_eq!(srv.refreshes(), 1);
    // The refresh-ahead of these tokens failed: not tried again until they expire.
    assert_eq!(client.access_token().unwrap().secret(), "at-1");
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.refreshes(), 1);

    // Once expired, the same failure is the caller's error: no token is valid.
    clock.advance(Duration::from_secs(60));
    srv.fault_next_token_calls(1, Fault::Unavailable { retry_after: None });
    let err = client.access_token().unwrap_err();
    assert!(
        matches!(err, Error::Refresh(_)) && err.is_transient(),
        "{err:?}"
    );
    assert_eq!(srv.refreshes(), 2);
    assert_eq!(client.access_token().unwrap().secret(), "at-2");
    assert_eq!(srv.refreshes(), 3);
}

#[test]
fn a_dead_refresh_token_ends_the_session_once() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let ended = Arc::new(AtomicUsize::new(0));
    let e = ended.clone();
    let client = builder(&srv, &clock)
        .tokens(srv.login())
        .on_session_expired(move || {
            e.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();
    srv.revoke_all();
    clock.advance(Duration::from_secs(3600));
    assert!(client.access_token().unwrap_err().is_session_expired());
    assert!(client.access_token().unwrap_err().is_session_expired());
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(ended.load(SeqCst), 1);
}

#[test]
fn without_tokens_it_is_no_tokens_and_nothing_is_sent() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let client = builder(&srv, &clock).build().unwrap();
    assert!(matches!(client.access_token(), Err(Error::NoTokens)));
    assert_eq!(srv.refreshes(), 0);
}

#[test]
fn tokens_another_process_stored_are_adopted_not_refreshed_again() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let dir = TempDir::new("access-token-shared");
    let path = dir.path("tokens.json");
    let first = builder(&srv, &clock)
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    let second = builder(&srv, &clock)
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(first.access_token().unwrap().secret(), "at-2");
    assert_eq!(second.access_token().unwrap().secret(), "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
}
