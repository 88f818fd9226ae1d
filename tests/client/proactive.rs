//! Behaviour 4: proactive refresh, driven by a `ManualClock`.
//!
//! The token server's own expiry is an hour of real time, so every 401 in these tests would
//! mean the client sent a token it should already have replaced.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use crate::harness::fixtures::{jwt, unix_secs};
use crate::harness::observe::{
    body_json, is_refresh_started, is_refreshed, must_not_block, Recorder, HANG_GUARD,
};
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::ureq::Agent;
use tokengate::{
    AuthClient, AuthClientBuilder, Error, Event, Refresh, RefreshError, RefreshReason, Tokens,
};

fn builder(srv: &TokenServer, clock: &Arc<ManualClock>, events: &Recorder) -> AuthClientBuilder {
    AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(srv.refresher())
        .clock(clock.clone())
        .on_event(events.listener())
}

fn token_of(client: &AuthClient, path: &str) -> String {
    let mut r = client.get(path).call().unwrap();
    body_json(&mut r)["token"].as_str().unwrap().to_owned()
}

fn started(events: &Recorder) -> Vec<RefreshReason> {
    events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Event::RefreshStarted { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// Login tokens with a client-side lifetime of `life`.
fn login_living(srv: &TokenServer, life: Duration) -> Tokens {
    let t = srv.login();
    Tokens::new(t.access_token().secret())
        .with_refresh_token(t.refresh_token().unwrap().secret())
        .with_expires_in(life)
}

#[test]
fn a_token_inside_the_refresh_window_is_refreshed_in_the_background() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let client = builder(&srv, &clock, &events)
        .tokens(srv.login()) // expires_in 3600 s; default skew 30 s, plus 1 s for whole seconds
        .build()
        .unwrap();

    clock.advance(Duration::from_secs(3600 - 32));
    assert_eq!(token_of(&client, "a"), "at-1");
    assert!(started(&events).is_empty(), "refreshed outside the window");

    clock.advance(Duration::from_secs(2)); // 30 s before expiry
    assert_eq!(
        token_of(&client, "b"),
        "at-1",
        "the valid token is used meanwhile"
    );
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(token_of(&client, "c"), "at-2");
    assert_eq!(started(&events), vec![RefreshReason::Proactive]);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.api_401s(), 0);
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn requests_do_not_wait_for_a_proactive_refresh_while_the_token_is_valid() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let inner = srv.refresher();
    let client = builder(&srv, &clock, &events)
        .refresher(move |agent: &Agent, current: &Tokens| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            inner.refresh(agent, current)
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600 - 10));

    let c = client.clone();
    assert_eq!(
        must_not_block("first request", move || token_of(&c, "a")),
        "at-1"
    );
    started_rx.recv_timeout(HANG_GUARD).unwrap();
    // The refresher is now blocked; requests keep going with the still-valid token.
    let c = client.clone();
    let tokens = must_not_block("requests during the refresh", move || {
        (0..3)
            .map(|i| token_of(&c, &format!("b{i}")))
            .collect::<Vec<_>>()
    });
    assert_eq!(tokens, vec!["at-1"; 3]);
    assert_eq!(events.count(is_refreshed), 0);
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-1");

    release.send(()).unwrap();
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(token_of(&client, "c"), "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(events.count(is_refresh_started), 1);
    assert_eq!(srv.api_401s(), 0);
}

#[test]
fn an_expired_token_is_refreshed_before_the_request_is_sent() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let client = builder(&srv, &clock, &events)
        .tokens(srv.login())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3601));

    assert_eq!(token_of(&client, "a"), "at-2");
    assert_eq!(srv.api_requests(), 1, "the expired token was never sent");
    assert_eq!(srv.api_401s(), 0);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(started(&events), vec![RefreshReason::Expired]);
    // It ran on the calling thread, not in the background.
    let me = std::thread::current().name().unwrap().to_owned();
    assert!(events.on_thread(&me).iter().any(is_refreshed));
}

#[test]
fn a_short_lived_token_is_not_refreshed_on_every_request() {
    // Lifetime 2 s, skew 30 s: 1 s is kept for servers counting whole seconds and the skew is
    // clamped to a quarter of the remaining second, so before 0.75 s nothing happens.
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let client = builder(&srv, &clock, &events)
        .refresh_skew(Duration::from_secs(30))
        .tokens(login_living(&srv, Duration::from_secs(2)))
        .build()
        .unwrap();

    assert_eq!(token_of(&client, "t0"), "at-1");
    clock.advance(Duration::from_millis(740));
    for i in 0..3 {
        assert_eq!(token_of(&client, &format!("t0.74-{i}")), "at-1");
    }
    // Had any of those requests started a (background) refresh, the next refresh would be
    // that one, or would find its tokens. Past expiry, the one refresh is this thread's own.
    clock.advance(Duration::from_millis(1760));
    assert_eq!(token_of(&client, "t2.5"), "at-2");
    assert_eq!(started(&events), vec![RefreshReason::Expired]);
    assert_eq!(srv.refreshes(), 1);
}

#[test]
fn a_two_second_token_is_refreshed_ahead_of_a_server_that_counts_whole_seconds() {
    // `expires_in: 2` may mean 1.01 s at the server: the background refresh starts at 0.75 s,
    // and from 1 s on the token counts as expired.
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let client = builder(&srv, &clock, &events)
        .refresh_skew(Duration::from_secs(30))
        .tokens(login_living(&srv, Duration::from_secs(2)))
        .build()
        .unwrap();

    clock.advance(Duration::from_millis(800));
    assert_eq!(token_of(&client, "a"), "at-1");
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(token_of(&client, "b"), "at-2");
    assert_eq!(token_of(&client, "c"), "at-2");
    assert_eq!(started(&events), vec![RefreshReason::Proactive]);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.api_401s(), 0);
}

#[test]
fn a_jwt_exp_claim_is_the_expiry_when_none_is_given() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let now = unix_secs(tokengate::time::Clock::now(&*clock));
    let exp = now + 100;
    // The API does not know this JWT: sending it would draw a 401.
    let access = jwt(&serde_json::json!({"sub": "u1", "iat": now, "exp": exp}));
    let login = srv.login();
    let client = builder(&srv, &clock, &events)
        .tokens(Tokens::new(access).with_refresh_token(login.refresh_token().unwrap().secret()))
        .build()
        .unwrap();
    assert_eq!(
        client.tokens().unwrap().expires_at(),
        Some(UNIX_EPOCH + Duration::from_secs(exp))
    );

    clock.advance(Duration::from_secs(101));
    assert_eq!(token_of(&client, "a"), "at-2");
    assert_eq!(srv.api_401s(), 0, "the expired JWT was sent");
    assert_eq!(started(&events), vec![RefreshReason::Expired]);
    // The refreshed tokens carry the server's expires_in instead.
    let after = client.tokens().unwrap().expires_at().unwrap();
    assert_eq!(
        after,
        tokengate::time::Clock::now(&*clock) + Duration::from_secs(3600)
    );
}

/// Signals when dropped: a panic payload that tells the test the panicking thread finished
/// unwinding (the flight it led has ended by then).
struct Unwound(Mutex<mpsc::Sender<()>>);

impl Drop for Unwound {
    fn drop(&mut self) {
        let _ = self.0.lock().unwrap().send(());
    }
}

#[test]
fn a_panicking_background_refresher_runs_once_per_generation() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (unwound_tx, unwound) = mpsc::channel::<()>();
    let unwound_tx = Mutex::new(unwound_tx);
    let inner = srv.refresher();
    let c = calls.clone();
    let client = builder(&srv, &clock, &events)
        .refresher(move |agent: &Agent, current: &Tokens| {
            if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let tx = unwound_tx.lock().unwrap().clone();
                std::panic::panic_any(Unwound(Mutex::new(tx)));
            }
            inner.refresh(agent, current)
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600 - 20)); // inside the refresh window

    assert_eq!(token_of(&client, "first"), "at-1");
    unwound.recv_timeout(HANG_GUARD).unwrap();
    // The background flight panicked and is over. Ten more requests in the window: none
    // starts another background refresh of the same tokens.
    for i in 0..10 {
        assert_eq!(token_of(&client, &format!("r{i}")), "at-1");
    }
    // At expiry the refresh is made (on the caller's thread); any background refresh still
    // running would be waited for first, so the count below is final.
    clock.advance(Duration::from_secs(20));
    assert_eq!(token_of(&client, "expired"), "at-2");
    assert_eq!(
        started(&events),
        vec![RefreshReason::Proactive, RefreshReason::Expired]
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(srv.refreshes(), 1);
}

#[test]
fn a_failed_forced_refresh_does_not_stop_the_background_refresh() {
    // Only a failed *background* refresh stops background attempts for the same tokens. A
    // forced refresh inside the window that fails is a blocking flight: the next request in
    // the window still starts the background refresh.
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = srv.refresher();
    let c = calls.clone();
    let client = builder(&srv, &clock, &events)
        .refresher(move |agent: &Agent, current: &Tokens| {
            if c.fetch_add(1, SeqCst) == 0 {
                return Err(RefreshError::transient("the token endpoint is down"));
            }
            inner.refresh(agent, current)
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600 - 20)); // inside the refresh window

    assert!(matches!(client.force_refresh(), Err(Error::Refresh(_))));
    assert_eq!(
        token_of(&client, "a"),
        "at-1",
        "the valid token is used meanwhile"
    );
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(token_of(&client, "b"), "at-2");
    assert_eq!(
        started(&events),
        vec![RefreshReason::Forced, RefreshReason::Proactive]
    );
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(srv.refreshes(), 1);
}
