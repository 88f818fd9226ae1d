//! Behaviour 7: tokens are loaded from the store when none are given, and every change
//! (refresh, background refresh, login, logout) is written through.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::harness::observe::{body_json, is_refreshed, Recorder};
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::{Error, MemoryStore, TokenStore, Tokens};

fn pair(t: &Tokens) -> (String, String) {
    (
        t.access_token().secret().to_owned(),
        t.refresh_token().unwrap().secret().to_owned(),
    )
}

fn stored(store: &MemoryStore) -> Option<(String, String)> {
    store.load().unwrap().as_ref().map(pair)
}

#[test]
fn build_loads_tokens_from_the_store_when_none_are_given() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::with_tokens(srv.login()));
    let client = srv.client_builder().store(store.clone()).build().unwrap();
    assert_eq!(
        pair(&client.tokens().unwrap()),
        ("at-1".into(), "rt-1".into())
    );
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-1");
    assert_eq!(srv.refreshes(), 0);
}

#[test]
fn given_tokens_win_over_stored_ones_and_are_saved() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::with_tokens(
        Tokens::new("stale").with_refresh_token("stale-rt"),
    ));
    let client = srv
        .client_builder()
        .store(store.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    assert_eq!(stored(&store), Some(("at-1".into(), "rt-1".into())));
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-1");
}

#[test]
fn every_refresh_is_saved() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::with_tokens(srv.login()));
    let client = srv.client_builder().store(store.clone()).build().unwrap();
    for round in 2..=4 {
        srv.revoke_access_tokens();
        client.get("me").call().unwrap();
        assert_eq!(
            stored(&store),
            Some((format!("at-{round}"), format!("rt-{round}")))
        );
        assert_eq!(stored(&store), Some(pair(&client.tokens().unwrap())));
    }
    assert_eq!(srv.reuse_detected(), 0);

    // A new client on the same store (a restart) continues the session without a refresh.
    let again = srv.client_builder().store(store.clone()).build().unwrap();
    let mut r = again.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-4");
    assert_eq!(srv.refreshes(), 3);
}

#[test]
fn a_background_refresh_is_saved() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let client = srv
        .client_builder()
        .store(store.clone())
        .clock(clock.clone())
        .on_event(events.listener())
        .tokens(srv.login())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3590));
    client.get("me").call().unwrap();
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(stored(&store), Some(("at-2".into(), "rt-2".into())));
}

#[test]
fn set_tokens_and_clear_tokens_write_through() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::new());
    let client = srv.client_builder().store(store.clone()).build().unwrap();
    assert!(client.tokens().is_none());
    assert!(matches!(client.get("me").call(), Err(Error::NoTokens)));

    client.set_tokens(srv.login()).unwrap();
    assert_eq!(stored(&store), Some(("at-1".into(), "rt-1".into())));
    client.get("me").call().unwrap();

    client.clear_tokens().unwrap();
    assert!(store.load().unwrap().is_none());
    assert!(client.tokens().is_none());
    assert!(matches!(client.get("me").call(), Err(Error::NoTokens)));
    assert_eq!(srv.refreshes(), 0);
}

/// A store whose writes fail.
struct BrokenStore;

impl TokenStore for BrokenStore {
    fn load(&self) -> io::Result<Option<Tokens>> {
        Ok(None)
    }
    fn save(&self, _: &Tokens) -> io::Result<()> {
        Err(io::Error::other("disk full"))
    }
    fn clear(&self) -> io::Result<()> {
        Err(io::Error::other("disk full"))
    }
}

#[test]
fn a_failing_store_is_reported_but_memory_keeps_the_change() {
    let srv = TokenServer::start();
    let client = srv.client_builder().store(BrokenStore).build().unwrap();
    let err = client.set_tokens(srv.login()).unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert_eq!(
        pair(&client.tokens().unwrap()),
        ("at-1".into(), "rt-1".into())
    );

    // A refresh whose result cannot be saved still uses the new tokens in memory: the
    // request succeeds, and the failed save is reported as an event and by close().
    srv.revoke_access_tokens();
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(
        pair(&client.tokens().unwrap()),
        ("at-2".into(), "rt-2".into())
    );
    let mut r = client.get("me").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    let err = client.close().unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");

    // build() with tokens reports the failed save.
    let err = srv
        .client_builder()
        .store(BrokenStore)
        .tokens(srv.login())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
}
