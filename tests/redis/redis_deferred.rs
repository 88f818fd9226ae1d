//! Issue 23 against a real `redis-server`: writes that are deferred, unanswered or racing a
//! lapsed lease never cost the session.
//!
//! - A logout deferred (the lock could not be had) is dropped, not written, once another
//!   machine made a newer login: the record's lineage says it replaced that session.
//! - A login whose COMMIT was applied but never answered, with Redis out of reach for the
//!   re-send and the read-back, is resolved from the record later: another machine's refresh
//!   of it is adopted, never overwritten with the spent refresh token.
//! - An ACQUIRE whose answer was lost leaves no lease orphaned for a whole lease: the store
//!   takes it back by its owner.
//! - A holder whose lease lapses while its token call is on the wire (Redis frozen, or
//!   restarted) declared its intent in the record: the next holder waits for its answer
//!   instead of presenting the same refresh token.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use crate::harness::fixtures::FailingWrites;
use crate::harness::observe::{token_of, until_holding, wait_until, Recorder};
use crate::harness::servers::redis::{RedisServer, ReplyLosingProxy};
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::{Error, Event, RedisStore, RefreshError, TokenStore};

/// A client of `srv` on the session `session` in the Redis at `url`, with a manual clock
/// (so a retry of a failed write is due only when the test says).
fn machine(
    srv: &TokenServer,
    url: &str,
    session: &str,
    clock: &Arc<ManualClock>,
    events: &Recorder,
) -> tokengate::AuthClientBuilder {
    srv.client_builder()
        .store(
            RedisStore::open(url, session)
                .unwrap()
                .lock_timeout(Duration::from_millis(300))
                .lease(Duration::from_millis(500))
                .poll_interval(Duration::from_millis(20)),
        )
        .clock(clock.clone())
        .on_event(events.listener())
}

fn superseded(events: &Recorder) -> usize {
    events.count(|e| matches!(e, Event::Superseded { .. }))
}

/// Issue 23, item 1: machine A's logout cannot take the lock (another holder has it) and
/// stays pending; machine B then logs a new session in. A's retry must not write its logout
/// over B's login: the record's lineage is B's new login, not the session A logged out, so
/// A drops its logout (an `Event::Superseded`) and adopts B's login. Caught the retry
/// emptying the record ("last write wins"), which logged B out.
#[test]
fn a_deferred_logout_never_overwrites_a_newer_login_made_elsewhere() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "deferred-logout";
    let (clock, events) = (Arc::new(ManualClock::new()), Recorder::new());
    let a = machine(&srv, &redis.url(), session, &clock, &events)
        .tokens(srv.login())
        .build()
        .unwrap();
    let b_events = Recorder::new();
    let b = machine(
        &srv,
        &redis.url(),
        session,
        &Arc::new(ManualClock::new()),
        &b_events,
    )
    .build()
    .unwrap();
    assert_eq!(token_of(&b), "at-1");

    let mut conn = redis.conn();
    conn.cmd(&[
        "SET",
        "{deferred-logout}:lock",
        "someone-else",
        "PX",
        "60000",
    ]);
    let e = a.clear_tokens().unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    assert!(a.tokens().is_none(), "the logout holds in memory");
    conn.cmd(&["DEL", "{deferred-logout}:lock"]);

    b.set_tokens(srv.login()).unwrap(); // another user's login: at-2 / rt-2
    assert_eq!(conn.access_token(session).as_deref(), Some("at-2"));

    clock.advance(Duration::from_secs(2)); // A's retry is due
    until_holding(&a, "at-2");
    assert_eq!(conn.access_token(session).as_deref(), Some("at-2"));
    assert_eq!(token_of(&b), "at-2", "B keeps its login");
    assert_eq!(token_of(&a), "at-2");
    assert_eq!(superseded(&events), 1);
    assert_eq!(superseded(&b_events), 0);
    a.close().unwrap();
}

/// Issue 23, item 2: A's login reaches Redis and is applied, but its answer is lost and Redis
/// is out of reach for the re-send and the read-back: `set_tokens` reports the write failed
/// and the login is pending. B adopts the login (it is in Redis) and refreshes it (rt-2 ->
/// rt-3). When A can reach Redis again its retry finds its own login's lineage in the record
/// and adopts B's refresh: nothing is written back. Caught A writing at-2/rt-2 back over
/// rt-3, after which B presented the spent rt-2 and the server revoked the session.
#[test]
fn a_login_applied_but_unanswered_is_resolved_from_the_record_never_written_again() {
    let redis = RedisServer::start();
    let proxy = ReplyLosingProxy::start(redis.port());
    let srv = TokenServer::start();
    let session = "unanswered-login";
    let (clock, events) = (Arc::new(ManualClock::new()), Recorder::new());
    let a = machine(&srv, &proxy.url(), session, &clock, &events)
        .tokens(srv.login())
        .build()
        .unwrap();
    let b = machine(
        &srv,
        &redis.url(),
        session,
        &Arc::new(ManualClock::new()),
        &Recorder::new(),
    )
    .build()
    .unwrap();

    let login = srv.login(); // at-2 / rt-2
    proxy.lose_reply_and_cut("at-2");
    let e = a.set_tokens(login).unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    assert_eq!(proxy.replies_lost(), 1);
    assert_eq!(a.tokens().unwrap().access_token().secret(), "at-2");
    let mut conn = redis.conn();
    assert_eq!(
        conn.access_token(session).as_deref(),
        Some("at-2"),
        "applied"
    );

    // B adopts the login and refreshes it, once the lease A could not release ran out.
    wait_until("B adopts the login", || token_of(&b) == "at-2");
    wait_until("A's unreleased lease runs out", || {
        redis.conn().lock_holder(session).is_none()
    });
    b.force_refresh().unwrap();
    assert_eq!(conn.access_token(session).as_deref(), Some("at-3"));

    proxy.heal();
    clock.advance(Duration::from_secs(2)); // A's retry is due
    until_holding(&a, "at-3");
    assert_eq!(
        conn.access_token(session).as_deref(),
        Some("at-3"),
        "not written back"
    );
    // B refreshes again from the record: rt-3, never the spent rt-2.
    b.force_refresh().unwrap();
    assert_eq!(srv.presented(), [Some(2), Some(3)]);
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(superseded(&events), 0, "its own login: nothing dropped");
    wait_until("A adopts B's second refresh", || token_of(&a) == "at-4");
    a.close().unwrap();
}

/// Issue 23, item 2, the lease: an ACQUIRE applied by Redis whose answer is lost, with Redis
/// out of reach for the re-send and the release, would hold the lock for a whole lease
/// (60 s here) with nobody to release it. The store remembers the owner it sent and takes
/// the lease back at its next acquire. Caught the next refresh timing out on its own
/// orphaned lease.
#[test]
fn an_acquire_whose_answer_was_lost_leaves_no_orphaned_lease() {
    let redis = RedisServer::start();
    let proxy = ReplyLosingProxy::start(redis.port());
    let srv = TokenServer::start();
    let session = "lost-acquire";
    let a = srv
        .client_builder()
        .store(
            RedisStore::open(proxy.url(), session)
                .unwrap()
                .lease(Duration::from_secs(60))
                .lock_timeout(Duration::from_millis(500)),
        )
        .tokens(srv.login())
        .build()
        .unwrap();

    proxy.lose_reply_and_cut("{lost-acquire}:lock");
    let e = a.force_refresh().unwrap_err();
    match &e {
        Error::Refresh(r) => assert!(matches!(**r, RefreshError::Store(_)), "{r:?}"),
        other => panic!("expected a refresh error, got {other:?}"),
    }
    let mut conn = redis.conn();
    assert!(
        conn.lock_holder(session).is_some(),
        "the lease was taken, its answer lost"
    );
    assert_eq!(srv.refreshes(), 0);

    proxy.heal();
    a.force_refresh().unwrap();
    assert_eq!(srv.presented(), [Some(1)]);
    assert_eq!(conn.access_token(session).as_deref(), Some("at-2"));
    assert_eq!(
        conn.lock_holder(session),
        None,
        "released after the refresh"
    );
    assert_eq!(srv.reuse_detected(), 0);
}

/// How the next holder comes to find the lease lapsed while the first holder's token call
/// is on the wire.
#[derive(Clone, Copy)]
enum Fault {
    /// Redis frozen (SIGSTOP) for longer than the lease, then resumed.
    Freeze,
    /// Redis shut down (saving) and started again, on the same port, with its data.
    Restart,
}

/// Issue 23, item 4: A holds a 300 ms lease and presents rt-1; the token endpoint rotates at
/// once and answers 3 s later. Meanwhile Redis is frozen (or restarted) long enough for the
/// lease to lapse, and B takes the lock. A declared its call in the record (which refresh
/// token, until when), so B waits for A's answer instead of presenting rt-1 again; A's
/// answer is written (its intent is live) and B adopts it. Caught B presenting the spent
/// rt-1: the server detected reuse and revoked the session for both.
fn a_lapsed_holders_call_in_flight_is_waited_for(fault: Fault) {
    let redis = match fault {
        Fault::Freeze => RedisServer::start(),
        Fault::Restart => {
            RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
        }
    };
    let mut redis = redis;
    let srv =
        TokenServer::with_lifetime_and_delay(Duration::from_secs(3600), Duration::from_secs(3));
    let session = "intent";
    let open = |redis: &RedisServer| {
        RedisStore::open(redis.url(), session)
            .unwrap()
            .lease(Duration::from_millis(300))
            .io_timeout(Duration::from_millis(500))
    };
    let a = srv
        .client_builder()
        .store(open(&redis))
        .token_timeout(Duration::from_secs(10))
        .tokens(srv.login())
        .build()
        .unwrap();
    let b = srv
        .client_builder()
        .store(open(&redis))
        .token_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(token_of(&b), "at-1");

    srv.revoke_access_tokens();
    let a_thread = {
        let a = a.clone();
        std::thread::spawn(move || a.get("items").call().map(drop))
    };
    wait_until("A's token call arrived", || srv.refreshes() == 1);
    match fault {
        Fault::Freeze => {
            redis.freeze();
            std::thread::sleep(Duration::from_millis(800)); // the lease (300 ms) lapses
            redis.thaw();
        }
        Fault::Restart => {
            redis.shut_down_saving();
            std::thread::sleep(Duration::from_millis(400)); // the lease (300 ms) lapses
            redis.start_again();
        }
    }
    // B's token expired too: it takes the lock, finds A's call declared, and waits for it.
    let b_result = b.get("items").call().map(drop);
    a_thread.join().unwrap().unwrap();
    b_result.unwrap();

    assert_eq!(srv.presented(), [Some(1)], "rt-1 presented once, by A");
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(token_of(&a), "at-2");
    assert_eq!(token_of(&b), "at-2");
    assert_eq!(redis.conn().access_token(session).as_deref(), Some("at-2"));
}

#[test]
fn a_holder_whose_lease_lapsed_in_a_frozen_redis_mid_call_is_waited_for() {
    a_lapsed_holders_call_in_flight_is_waited_for(Fault::Freeze);
}

#[test]
fn a_holder_whose_lease_lapsed_in_a_restarted_redis_mid_call_is_waited_for() {
    a_lapsed_holders_call_in_flight_is_waited_for(Fault::Restart);
}

/// Issue 23, item 3, on Redis: A refreshes (the server rotates rt-1 to rt-2) but Redis does
/// not take the write. A keeps the lease, renewed past its length (300 ms), so B, whose
/// token expired too, cannot take the lock: its refresh fails transiently at its lock timeout
/// and presents nothing. Once writes go through, A's retry thread writes the refresh and
/// releases the lease, and B adopts it. Caught the lease being released right after the
/// failed write: B read the old record and presented the spent rt-1, and the server revoked
/// the session.
#[test]
fn a_refresh_redis_did_not_take_keeps_the_lease_until_it_is_written() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "kept-lease";
    let (store, fail) = FailingWrites::new(
        RedisStore::open(redis.url(), session)
            .unwrap()
            .lease(Duration::from_millis(300)),
    );
    let a = srv
        .client_builder()
        .store(store)
        .tokens(srv.login())
        .build()
        .unwrap();
    let b = srv
        .client_builder()
        .store(
            RedisStore::open(redis.url(), session)
                .unwrap()
                .lock_timeout(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    assert_eq!(token_of(&b), "at-1");

    srv.revoke_access_tokens(); // at-1: B's next request gets a 401
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    a.force_refresh().unwrap(); // rt-1 -> rt-2 at the server; the write fails
    assert_eq!(token_of(&a), "at-2");
    let mut conn = redis.conn();
    // Three lease lengths later the lease is still A's: kept, and renewed.
    std::thread::sleep(Duration::from_millis(900));
    assert!(conn.lock_holder(session).is_some(), "the lease is kept");
    let e = b.get("items").call().unwrap_err();
    assert!(
        matches!(&e, Error::Refresh(r) if matches!(**r, RefreshError::Store(_))),
        "B must wait for the kept lease, got {e:?} (reuse detected {} time(s))",
        srv.reuse_detected()
    );
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);

    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_until("the kept refresh written", || {
        redis.conn().access_token(session).as_deref() == Some("at-2")
    });
    wait_until("the lease released", || {
        redis.conn().lock_holder(session).is_none()
    });
    assert_eq!(token_of(&b), "at-2");
    assert_eq!(srv.presented(), [Some(1)]);
    assert_eq!(srv.reuse_detected(), 0);
    a.close().unwrap();
}

/// A record whose `tokens` field is not even text (bytes that are not UTF-8, as a stray
/// writer might leave) is unreadable, never a logout: `load` fails with the reason, and a
/// running client keeps its session instead of adopting "no tokens". Caught the field being
/// read as absent, i.e. as a logout, which dropped every machine's session (found by a
/// review of issue 23).
#[test]
fn a_record_whose_tokens_are_not_text_is_unreadable_not_a_logout() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "not-text";
    let client = srv
        .client_builder()
        .store(
            RedisStore::open(redis.url(), session)
                .unwrap()
                .poll_interval(Duration::from_millis(1)),
        )
        .tokens(srv.login())
        .build()
        .unwrap();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("HSET")
        .arg("{not-text}:tokens")
        .arg("tokens")
        .arg(&b"{\"version\":1,\xff\xfe"[..])
        .arg("generation")
        .arg("99999999999999")
        .query(&mut conn)
        .unwrap();
    let loaded = RedisStore::open(redis.url(), session).unwrap().load();
    assert!(
        matches!(&loaded, Err(e) if e.kind() == std::io::ErrorKind::InvalidData),
        "{loaded:?}"
    );
    // Requests go on (the poll reports the bad record; the session is kept).
    for _ in 0..20 {
        let _ = client.get("items").call();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        client
            .tokens()
            .map(|t| t.access_token().secret().to_owned()),
        Some("at-1".to_owned()),
        "the running client kept its session"
    );
}
