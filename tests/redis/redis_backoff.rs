//! A refresh waiting out a token-endpoint backoff while it holds a `RedisStore` lease: once the
//! lease's renewal thread finds the lease gone (it ran out and another process took the
//! lock), the backoff stops at once instead of being slept out, and no further token call is
//! made.
//!
//! The lease "running out" is made exact the way `redis_store.rs` does it: another connection
//! gives the lock key to another owner, so the next renewal finds it gone.
#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::harness::observe::Recorder;
use crate::harness::servers::raw::{Action, RawServer};
use crate::harness::servers::redis::RedisServer;
use tokengate::{
    AuthClient, AuthServer, Error, Event, RedisStore, RefreshError, RetryPolicy, TokenStore, Tokens,
};

/// What the token endpoint asks the client to wait before trying again: far longer than the
/// bound this test gives the refresh, so only a backoff that stops early lets it return.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long the refresh may take here: a third of `RETRY_AFTER`, yet generous for a refresh
/// that stops within one lease renewal (100 ms) and one backoff slice (20 ms) of the lease's
/// loss, on a loaded machine. Never a claim about speed.
const RETURN_GUARD: Duration = Duration::from_secs(20);

/// Runs `f` on another thread and returns its result; panics if it has not returned within
/// [`RETURN_GUARD`].
fn returns_within_guard<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(RETURN_GUARD)
        .unwrap_or_else(|_| panic!("{what} did not return within {RETURN_GUARD:?}"))
}

/// A refresh whose token call got a 503 with `Retry-After: 60` waits out the backoff holding
/// the session's `RedisStore` lease (300 ms, renewed every 100 ms). Meanwhile the lease "runs
/// out" and another process takes the lock (the lock key is given to another owner): the
/// renewal thread records the lease lost, and the refresh returns an error at once (well
/// within 20 s, a third of the Retry-After), with exactly one token call made and the other
/// owner's lock left alone.
///
/// Catches the backoff sleeping its whole delay although the lease was found lost (before
/// issue 23 item 5 the flight only looked at its lock after the backoff, and `lost()` did not
/// see a lease the renewal thread found gone): the refresh blocked for the full 60 s.
#[test]
fn a_backoff_stops_as_soon_as_the_lease_renewal_finds_the_lease_lost() {
    let redis = RedisServer::start();
    let session = "backoff:lost-lease";
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let token = RawServer::start(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Action::Respond(
            503,
            vec![
                format!("retry-after: {}", RETRY_AFTER.as_secs()).into_bytes(),
                b"content-type: application/json".to_vec(),
            ],
            br#"{"error":"temporarily_unavailable"}"#.to_vec(),
        )
    });
    let store = || {
        RedisStore::open(redis.url(), session)
            .unwrap()
            .lease(Duration::from_millis(300))
    };
    store()
        .save(
            &Tokens::new("at-0")
                .with_refresh_token("rt-0")
                .with_expires_in(Duration::from_secs(3600)),
        )
        .unwrap();
    let events = Recorder::new();
    let client = AuthClient::builder("http://127.0.0.1:9/api/")
        .proxy(None)
        .refresher(
            AuthServer::new(token.url("/token"))
                .client_id("test-app")
                .client_secret("test-secret")
                .refresh_grant(),
        )
        // One retry, and a cap above the Retry-After: the backoff is the full 60 s. The
        // default sleeper (none set here) is the one that can stop early.
        .retry(RetryPolicy::new().max_retries(1).max_delay(RETRY_AFTER * 2))
        .store(store())
        .on_event(events.listener())
        .build()
        .unwrap();

    let refreshing = client.clone();
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(refreshing.force_refresh());
    });
    events.wait_for(
        "the backoff after the 503",
        1,
        |e| matches!(e, Event::Retrying { delay, .. } if *delay == RETRY_AFTER),
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The lease ran out and another process took the lock: the next renewal finds it gone.
    let mut conn = redis.conn();
    let lock_key = format!("{{{session}}}:lock");
    assert!(conn.get(&lock_key).is_some(), "the refresh holds the lease");
    conn.cmd(&["SET", &lock_key, "another-process", "PX", "60000"]);

    let result = returns_within_guard(
        "the refresh waiting out a backoff with its lease lost",
        move || done.recv().expect("force_refresh returned"),
    );
    let err = result.expect_err("the refresh lost its lease");
    // Stopped by the lost lease: the check before the next token call found it lapsed.
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(&**e, RefreshError::Store(io)
            if io.to_string().contains("lapsed"))),
        "{err:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a token call was made after the lease was lost"
    );
    assert_eq!(
        conn.get(&lock_key).as_deref(),
        Some("another-process"),
        "the other owner's lock is kept"
    );
    assert_eq!(conn.tokens(session).unwrap()["refresh_token"], "rt-0");
    drop(client);
}
