//! Behaviour 3: the refresh gate. One refresh per expiry however many threads see it; stale
//! generations retry without refreshing; a panicking or failing refresh is shared by its
//! waiters (no hang, no retry storm); waits are bounded by `refresh_timeout`.
//!
//! Interleavings are forced, not hoped for: a leader's refresher is held until the other
//! threads are known to be where the test needs them, through `Event::Unauthorized` (emitted
//! before a thread enters the gate) or `AuthClient::refresh_waiters` (threads blocked on the
//! running refresh, which therefore share its outcome).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness::fixtures::{minting_refresher, ClientSlot, TempDir};
use crate::harness::observe::{
    body_json, is_refresh_started, is_refreshed, is_unauthorized, release_together, wait_until,
    Recorder, HANG_GUARD,
};
use crate::harness::servers::{Api, TokenServer};
use tokengate::ureq::Agent;
use tokengate::{
    AuthClient, AuthServer, Error, Event, FileStore, Refresh, RefreshError, TokenStore, Tokens,
};

#[test]
fn sixty_four_threads_hitting_401_at_once_cause_exactly_one_refresh() {
    const N: usize = 64;
    let srv = TokenServer::start();
    let events = Recorder::new();
    let oauth = AuthServer::new(srv.token_url())
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant();
    // The first refresher call is held until all N threads have seen their 401, so all of
    // them are at (or in) the gate with generation 0 while the refresh runs.
    let ev = events.clone();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |agent: &Agent, current: &Tokens| {
            ev.wait_for("401s of every thread", N, is_unauthorized);
            oauth.refresh(agent, current)
        })
        .tokens(srv.login())
        .on_event(events.listener())
        .build()
        .unwrap();
    srv.revoke_access_tokens();

    let handles = release_together(N, &client, move |i, c| {
        c.get(&format!("items/{i}"))
            .call()
            .map(|mut r| body_json(&mut r))
    });
    for h in handles {
        let body = h.join().unwrap().expect("every thread succeeds");
        assert_eq!(body["token"], "at-2");
    }
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(srv.api_401s(), N as u64);
    assert_eq!(srv.api_requests(), 2 * N as u64);
    assert_eq!(
        events.count(|e| *e == Event::Unauthorized { generation: 0 }),
        N
    );
    assert_eq!(events.count(is_refresh_started), 1);
    assert_eq!(events.count(is_refreshed), 1);
}

#[test]
fn a_stale_generation_retries_without_refreshing() {
    let api = Api::start(&[]);
    let refreshes = Arc::new(AtomicUsize::new(0));
    let events = Recorder::new();
    // Thread "late" is held right after its 401 (in its Unauthorized event, before it
    // reaches the gate) while the main thread refreshes.
    let (at_gate_tx, at_gate) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (at_gate_tx, release_rx) = (Mutex::new(at_gate_tx), Mutex::new(release_rx));
    let ev = events.clone();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(minting_refresher(&api, refreshes.clone()))
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .on_event(move |e: &Event| {
            ev.push(*e);
            if is_unauthorized(e) && thread::current().name() == Some("late") {
                at_gate_tx.lock().unwrap().send(()).unwrap();
                release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            }
        })
        .build()
        .unwrap();

    let c = client.clone();
    let late = thread::Builder::new()
        .name("late".into())
        .spawn(move || c.get("late").call().map(|mut r| body_json(&mut r)))
        .unwrap();
    at_gate.recv_timeout(HANG_GUARD).unwrap();

    // Meanwhile this thread also gets a 401 for generation 0, and refreshes.
    let mut r = client.get("main").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "new-1");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);

    release.send(()).unwrap();
    let body = late.join().unwrap().unwrap();
    assert_eq!(body["token"], "new-1");
    assert_eq!(
        refreshes.load(Ordering::SeqCst),
        1,
        "the stale thread refreshed"
    );
    // The late thread neither refreshed nor waited: it saw the newer generation at once.
    assert_eq!(
        events.on_thread("late"),
        vec![Event::Unauthorized { generation: 0 }]
    );
    assert_eq!(
        api.tokens_seen(),
        ["old", "old", "new-1", "new-1"].map(|t| Some(t.to_owned()))
    );
}

#[test]
fn a_panicking_refresher_releases_every_waiter_and_the_next_call_refreshes_again() {
    const N: usize = 8;
    let api = Api::start(&[]);
    let calls = Arc::new(AtomicUsize::new(0));
    let slot = ClientSlot::default();
    let (s, c, acc) = (slot.clone(), calls.clone(), api.accepted.clone());
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(move |_: &Agent, _: &Tokens| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                wait_until("every other thread waiting", || s.waiters() == N - 1);
                panic!("refresher bug (expected by the test)");
            }
            acc.lock().unwrap().insert("new".into());
            Ok(Tokens::new("new").with_refresh_token("rt-new"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();
    slot.set(&client);

    let handles = release_together(N, &client, move |_, c| {
        c.get("x").call().map(|r| r.status())
    });
    let (mut panicked, mut released) = (0, 0);
    for h in handles {
        match h.join() {
            Err(_) => panicked += 1,
            Ok(Err(Error::RefresherPanicked)) => released += 1,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((panicked, released), (1, N - 1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.refresh_waiters(), 0);
    assert_eq!(client.tokens().unwrap().access_token().secret(), "old");
    // The panic is counted as the one failed refresh (its thread never returned to report it).
    let stats = client.stats();
    assert_eq!((stats.refresh_failures, stats.refreshes), (1, 0));
    assert_eq!(stats.waited, N as u64 - 1);

    // The gate is usable again: exactly one more refresh.
    assert_eq!(client.get("again").call().unwrap().status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(client.get("again").call().unwrap().status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    slot.clear();
}

#[test]
fn a_failing_refresh_is_shared_by_all_waiters_with_one_token_call() {
    // No retries inside the flight, so "one attempt" is exactly one token call.
    failing_refresh_storm(tokengate::RetryPolicy::none(), 1);
}

#[test]
fn a_failing_refresh_with_retries_is_still_one_flight_for_all_waiters() {
    // The default policy retries a 503 three times inside the one flight: 4 token calls in
    // all, never 4 per thread.
    failing_refresh_storm(tokengate::RetryPolicy::default(), 1 + 3);
}

fn failing_refresh_storm(policy: tokengate::RetryPolicy, calls_per_flight: usize) {
    const N: usize = 8;
    let api = Api::start(&[]);
    let token_calls = api.endpoint("/token", |_| (503, r#"{"error":"unavailable"}"#.into()));
    let slot = ClientSlot::default();
    let oauth = AuthServer::new(api.server.url("/token"))
        .client_id("app")
        .refresh_grant();
    let (s, first) = (slot.clone(), Arc::new(AtomicUsize::new(0)));
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .retry(policy)
        .sleeper(tokengate::time::ManualClock::new())
        .refresher(move |agent: &Agent, current: &Tokens| {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                wait_until("every other thread waiting", || s.waiters() == N - 1);
            }
            oauth.refresh(agent, current)
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();
    slot.set(&client);

    let handles = release_together(N, &client, move |_, c| {
        c.get("x").call().map(|r| r.status())
    });
    let errors: Vec<Arc<RefreshError>> = handles
        .into_iter()
        .map(|h| match h.join().unwrap() {
            Err(Error::Refresh(e)) => e,
            other => panic!("expected Error::Refresh, got {other:?}"),
        })
        .collect();
    assert_eq!(
        token_calls.lock().unwrap().len(),
        calls_per_flight,
        "retry storm"
    );
    // The very same error object, not N look-alikes.
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert_eq!(errors[0].status(), Some(503));
    assert!(Error::Refresh(errors[0].clone()).is_transient());
    let kept = client.tokens().unwrap();
    assert_eq!(kept.refresh_token().unwrap().secret(), "rt-old");
    assert_eq!(
        api.calls(),
        N,
        "nobody retried the API after a failed refresh"
    );

    // The failure is not sticky: the next call tries the endpoint exactly once more.
    assert!(matches!(client.get("x").call(), Err(Error::Refresh(_))));
    assert_eq!(token_calls.lock().unwrap().len(), 2 * calls_per_flight);
    slot.clear();
}

#[test]
fn a_waiter_gives_up_after_refresh_timeout() {
    let api = Api::start(&[]);
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, acc) = (calls.clone(), api.accepted.clone());
    let timeout = Duration::from_millis(50);
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresh_timeout(timeout)
        .refresher(move |_: &Agent, _: &Tokens| {
            c.fetch_add(1, Ordering::SeqCst);
            started_tx.lock().unwrap().send(()).unwrap();
            // Held until the waiter below has given up.
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            acc.lock().unwrap().insert("new".into());
            Ok(Tokens::new("new").with_refresh_token("rt-new"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();

    let c = client.clone();
    let leader = thread::spawn(move || c.get("leader").call().map(|r| r.status()));
    started.recv_timeout(HANG_GUARD).unwrap();

    let err = client.get("waiter").call().unwrap_err();
    assert!(
        matches!(err, Error::RefreshTimeout(t) if t == timeout),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(client.refresh_waiters(), 0);

    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The timed-out thread's next call uses the leader's tokens without refreshing.
    assert_eq!(client.get("waiter").call().unwrap().status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn clear_tokens_wakes_waiters_who_get_no_tokens_not_session_expired() {
    // A logout while a refresh is in flight: the waiter and the leader both end with the
    // logout's state, which is "no tokens" (log in again), not "the session expired".
    let api = Api::start(&[]);
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let slot = ClientSlot::default();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(move |_: &Agent, _: &Tokens| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            Ok(Tokens::new("refreshed-too-late").with_refresh_token("rt-x"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();
    slot.set(&client);

    let c = client.clone();
    let leader = thread::spawn(move || c.get("leader").call().map(|r| r.status()));
    started.recv_timeout(HANG_GUARD).unwrap();
    let c = client.clone();
    let waiter = thread::spawn(move || c.get("waiter").call().map(|r| r.status()));
    wait_until("the waiter waiting", || slot.waiters() == 1);

    client.clear_tokens().unwrap();
    let err = waiter.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::NoTokens), "{err:?}");
    release.send(()).unwrap();
    let err = leader.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::NoTokens), "{err:?}");
    assert!(
        client.tokens().is_none(),
        "the refresh did not undo the logout"
    );
    slot.clear();
}

#[test]
fn a_refresh_timeout_beyond_the_clock_waits_without_limit() {
    // `Duration::MAX` cannot be added to an `Instant`: the wait is then bounded by a deadline
    // far in the future, never one in the past.
    let api = Api::start(&[]);
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, acc) = (calls.clone(), api.accepted.clone());
    let slot = ClientSlot::default();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresh_timeout(Duration::MAX)
        .refresher(move |_: &Agent, _: &Tokens| {
            c.fetch_add(1, Ordering::SeqCst);
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            acc.lock().unwrap().insert("new".into());
            Ok(Tokens::new("new").with_refresh_token("rt-new"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();
    slot.set(&client);

    let c = client.clone();
    let leader = thread::spawn(move || c.get("leader").call().map(|mut r| body_json(&mut r)));
    started.recv_timeout(HANG_GUARD).unwrap();
    let c = client.clone();
    let waiter = thread::spawn(move || c.get("waiter").call().map(|mut r| body_json(&mut r)));
    wait_until("the waiter waiting", || slot.waiters() == 1);

    release.send(()).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap()["token"], "new");
    assert_eq!(leader.join().unwrap().unwrap()["token"], "new");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    slot.clear();
}

#[test]
fn a_waiter_giving_up_leaves_the_store_lock_to_the_refresh_in_flight() {
    // With a shared store, the leader holds the store's lock while its refresher runs. A
    // waiter that gives up after `refresh_timeout` takes that lock away only from a flight
    // that outlived its own bound; this one is well inside it, so its result is saved.
    let api = Api::start(&[]);
    let dir = TempDir::new("gate-lock-kept");
    let path = dir.path("tokens.json");
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let acc = api.accepted.clone();
    let events = Recorder::new();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresh_timeout(Duration::from_millis(50))
        .store(FileStore::new(&path).unwrap())
        .on_event(events.listener())
        .refresher(move |_: &Agent, _: &Tokens| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            acc.lock().unwrap().insert("new".into());
            Ok(Tokens::new("new").with_refresh_token("rt-new"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();

    let c = client.clone();
    let leader = thread::spawn(move || c.get("leader").call().map(|r| r.status()));
    started.recv_timeout(HANG_GUARD).unwrap();
    let err = client.get("waiter").call().unwrap_err();
    assert!(matches!(err, Error::RefreshTimeout(_)), "{err:?}");

    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap(), 200);
    let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "new");
    assert_eq!(events.count(|e| matches!(e, Event::StoreFailed { .. })), 0);
}

#[test]
fn set_tokens_wakes_waiters_who_retry_with_the_new_login() {
    let api = Api::start(&["login-2"]);
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let slot = ClientSlot::default();
    let client = AuthClient::builder(api.url())
        .proxy(None)
        .refresher(move |_: &Agent, _: &Tokens| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            Ok(Tokens::new("refreshed-too-late").with_refresh_token("rt-x"))
        })
        .tokens(Tokens::new("old").with_refresh_token("rt-old"))
        .build()
        .unwrap();
    slot.set(&client);

    let c = client.clone();
    let leader = thread::spawn(move || c.get("leader").call().map(|mut r| body_json(&mut r)));
    started.recv_timeout(HANG_GUARD).unwrap();
    let c = client.clone();
    let waiter = thread::spawn(move || c.get("waiter").call().map(|mut r| body_json(&mut r)));
    wait_until("the waiter waiting", || slot.waiters() == 1);

    // A new login while the refresh is in flight: the waiter retries with it at once.
    client
        .set_tokens(Tokens::new("login-2").with_refresh_token("rt-2"))
        .unwrap();
    assert_eq!(waiter.join().unwrap().unwrap()["token"], "login-2");

    // The refresh finishing later does not overwrite the newer login.
    release.send(()).unwrap();
    assert_eq!(leader.join().unwrap().unwrap()["token"], "login-2");
    assert_eq!(client.tokens().unwrap().access_token().secret(), "login-2");
    // The discarded refresh is not counted as one.
    let stats = client.stats();
    assert_eq!((stats.refreshes, stats.refresh_failures), (0, 0));
    slot.clear();
}
