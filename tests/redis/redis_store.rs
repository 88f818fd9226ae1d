//! `RedisStore` against a real `redis-server` that each test starts for itself (loopback, a
//! free port, a temp dir): the record's format, logins and logouts seen by other clients,
//! compare-and-set writes refused once the lease ran out, the `invalid_grant` re-read, the
//! poll rate limit, Redis down and up again, and secrets kept out of `Debug` and errors.
//!
//! A lease "running out" is made exact by deleting the lock key (what Redis does when the
//! lease expires); the real thing (a holder paused with SIGSTOP, or killed) is in
//! `tests/redis/redis_fleet.rs`.
#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::fixtures::{id_token_of, FailingWrites, Forwarding};
use crate::harness::observe::{body_json, token_of, wait_until, Recorder, HANG_GUARD};
use crate::harness::servers::redis::{RedisServer, ReplyLosingProxy, Resp};
use crate::harness::servers::TokenServer;
use tokengate::testing::{Fault, Outcome};
use tokengate::time::ManualClock;
use tokengate::{
    AuthClient, AuthClientBuilder, Error, Event, RedisStore, RefreshError, TokenStore, Tokens,
};

/// Makes requests until one is served with `token` (the client adopted it), bounded by the
/// hang guard. Returns how many requests that took.
fn until_served_with(client: &AuthClient, token: &str) -> usize {
    let deadline = Instant::now() + HANG_GUARD;
    for n in 1.. {
        if let Ok(mut r) = client.get("items").call() {
            if body_json(&mut r)["token"] == token {
                return n;
            }
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: never served with {token}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    unreachable!()
}

fn store(redis: &RedisServer, session: &str) -> RedisStore {
    RedisStore::open(redis.url(), session).unwrap()
}

fn client_on(srv: &TokenServer, store: RedisStore) -> AuthClientBuilder {
    srv.client_builder().store(store)
}

/// The whole chain of an error, as text (Display of each source and the Debug form).
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{e:?}");
    let mut source = Some(e);
    while let Some(s) = source {
        text.push_str(&format!(" / {s}"));
        source = s.source();
    }
    text
}

#[test]
fn a_login_is_stored_as_versioned_json_and_every_client_adopts_it() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "myapp:alice";
    let events_b = Recorder::new();
    let a = client_on(&srv, store(&redis, session)).build().unwrap();
    let b = client_on(
        &srv,
        store(&redis, session).poll_interval(Duration::from_millis(20)),
    )
    .on_event(events_b.listener())
    .build()
    .unwrap();
    assert!(a.tokens().is_none() && b.tokens().is_none());
    assert!(matches!(b.get("items").call(), Err(Error::NoTokens)));

    // A login on one machine.
    a.set_tokens(srv.login()).unwrap();
    let mut conn = redis.conn();
    let login_generation = conn.generation(session);
    assert!(login_generation > 0);
    let json = conn.tokens(session).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["access_token"], "at-1");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["refresh_token"], "rt-1");
    let expires = json["expires_at_unix_ms"].as_u64().unwrap();
    let issued = json["issued_at_unix_ms"].as_u64().unwrap();
    assert_eq!(
        expires - issued,
        3_600_000,
        "absolute expiry and issue time"
    );
    assert_eq!(conn.lock_holder(session), None, "the lock was released");

    // The other machine adopts it, without calling the token endpoint.
    until_served_with(&b, "at-1");
    assert!(events_b
        .all()
        .iter()
        .any(|e| matches!(e, Event::Adopted { .. })));

    // A logout is a tombstone: the key stays, with a higher generation and no tokens.
    a.clear_tokens().unwrap();
    assert!(conn.generation(session) > login_generation);
    assert_eq!(conn.tokens(session), None);
    let deadline = Instant::now() + HANG_GUARD;
    while !matches!(b.get("items").call(), Err(Error::NoTokens)) {
        assert!(
            Instant::now() < deadline,
            "hang guard: logout never adopted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // A new machine starts from what Redis holds.
    a.set_tokens(srv.login()).unwrap();
    let c = client_on(&srv, store(&redis, session)).build().unwrap();
    assert_eq!(c.tokens().unwrap().access_token().secret(), "at-2");
    assert_eq!(token_of(&c), "at-2");
    assert_eq!(srv.refreshes(), 0);
}

/// Issue 24: the token type is kept in the record. A record written before it was (format 1
/// without `token_type`, as that version wrote it) still loads, as Bearer, and its token is
/// presented as such; the next write adds the field, and it reads back the same.
#[test]
fn a_record_without_a_token_type_still_loads_and_the_type_round_trips() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "typed";
    let login = srv.login();
    let written_before = format!(
        "{{\n  \"version\": 1,\n  \"access_token\": \"{}\",\n  \"refresh_token\": \"{}\",\n  \"expires_at_unix_ms\": 4102444800000,\n  \"issued_at_unix_ms\": 4102441200000,\n  \"lineage\": \"3f6c0a9e41d27b58\"\n}}\n",
        login.access_token().secret(),
        login.refresh_token().unwrap().secret(),
    );
    let mut conn = redis.conn();
    conn.cmd(&[
        "HSET",
        "{typed}:tokens",
        "generation",
        "1700000000000",
        "tokens",
        &written_before,
    ]);
    let t = store(&redis, session).load().unwrap().unwrap();
    assert_eq!(t.token_type(), "Bearer");
    assert_eq!(t.lineage().unwrap().to_string(), "3f6c0a9e41d27b58");
    let client = client_on(&srv, store(&redis, session)).build().unwrap();
    // The test API takes only `Authorization: Bearer <token>`.
    assert_eq!(token_of(&client), "at-1");

    // Written again (a refresh), the record says its type, and reads back the same.
    srv.revoke_access_tokens();
    assert_eq!(token_of(&client), "at-2");
    let json = conn.tokens(session).unwrap();
    assert_eq!(json["token_type"], "Bearer", "{json}");
    assert_eq!(json["access_token"], "at-2");
    let t = store(&redis, session).load().unwrap().unwrap();
    assert_eq!(t.token_type(), "Bearer");
    assert_eq!(t.access_token().secret(), "at-2");
}

/// Issue 25: the OpenID Connect ID token is kept in the record. A record written before it
/// was (format 1 without `id_token`, byte for byte as that version wrote it) still loads, as
/// without one; a login's ID token (~4 KB) round-trips, is adopted by another machine with
/// the tokens, and survives a refresh whose response has none.
#[test]
fn a_record_without_an_id_token_still_loads_and_the_id_token_round_trips() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "oidc";
    let written_before = "{\n  \"version\": 1,\n  \"access_token\": \"at-old\",\n  \"token_type\": \"Bearer\",\n  \"refresh_token\": \"rt-old\",\n  \"expires_at_unix_ms\": 4102444800000,\n  \"issued_at_unix_ms\": 4102441200000,\n  \"scope\": \"openid email\",\n  \"lineage\": \"3f6c0a9e41d27b58\"\n}\n";
    let mut conn = redis.conn();
    conn.cmd(&[
        "HSET",
        "{oidc}:tokens",
        "generation",
        "1700000000000",
        "tokens",
        written_before,
    ]);
    let t = store(&redis, session).load().unwrap().unwrap();
    assert!(t.id_token().is_none());
    assert_eq!(t.access_token().secret(), "at-old");
    assert_eq!(t.scope(), Some("openid email"));
    assert_eq!(t.lineage().unwrap().to_string(), "3f6c0a9e41d27b58");
    // Tokens without an ID token are written exactly as before.
    store(&redis, session).save(&t).unwrap();
    assert_eq!(
        conn.hget("{oidc}:tokens", "tokens").as_deref(),
        Some(written_before)
    );

    // A login with an ID token on machine A: stored, and adopted by machine B.
    let id_token = id_token_of("alice@example.com");
    assert!(
        (3_500..6_000).contains(&id_token.len()),
        "{}",
        id_token.len()
    );
    let a = client_on(&srv, store(&redis, session)).build().unwrap();
    a.set_tokens(srv.login().with_id_token(id_token.clone()))
        .unwrap();
    assert_eq!(conn.tokens(session).unwrap()["id_token"], id_token.as_str());
    let b = client_on(&srv, store(&redis, session)).build().unwrap();
    let adopted = b.tokens().unwrap();
    assert_eq!(adopted.id_token().unwrap().secret(), id_token);
    let claims = adopted.id_token().unwrap().unverified_claims().unwrap();
    assert_eq!(claims.email(), Some("alice@example.com"));

    // A refresh (the test server's response has no id_token) keeps it, held and stored.
    srv.revoke_access_tokens();
    assert_eq!(token_of(&a), "at-2");
    assert_eq!(srv.refreshes(), 1);
    let json = conn.tokens(session).unwrap();
    assert_eq!(json["access_token"], "at-2");
    assert_eq!(json["id_token"], id_token.as_str());
    assert_eq!(a.tokens().unwrap().id_token().unwrap().secret(), id_token);
    let t = store(&redis, session).load().unwrap().unwrap();
    assert_eq!(t.id_token().unwrap().secret(), id_token);
}

#[test]
fn sessions_in_one_redis_are_independent() {
    let redis = RedisServer::start();
    let alice = store(&redis, "app:alice");
    let bob = store(&redis, "app:bob");
    assert_eq!(alice.record_key(), "{app:alice}:tokens");
    assert_eq!(alice.lock_key(), "{app:alice}:lock");
    alice.save(&Tokens::new("alice-at")).unwrap();
    assert!(bob.load().unwrap().is_none());
    bob.save(&Tokens::new("bob-at")).unwrap();
    bob.clear().unwrap();
    assert_eq!(
        alice.load().unwrap().unwrap().access_token().secret(),
        "alice-at"
    );
    assert!(bob.load().unwrap().is_none());
}

/// The compare-and-set: a holder whose lease ran out can never overwrite a newer record,
/// nor write while another process holds the lease; with nobody else in between, its write
/// goes through.
#[test]
fn a_write_is_refused_once_the_lease_ran_out_and_another_process_moved_on() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let session = "cas";
    let lock_key = "{cas}:lock";
    let paused = store(&redis, session);
    let other = store(&redis, session);
    paused.save(&Tokens::new("at-1")).unwrap();

    // 1. The lease runs out; another process takes the lock and writes.
    let mut held = paused.lock().unwrap().unwrap();
    let read = held.stored().unwrap().revision();
    assert!(conn.lock_holder(session).is_some());
    conn.cmd(&["DEL", lock_key]);
    let mut theirs = other.lock().unwrap().unwrap();
    assert_eq!(theirs.stored().unwrap().revision(), read);
    let written = theirs.write(Some(&Tokens::new("at-2"))).unwrap();
    assert!(written.get() > read.get());
    drop(theirs);
    assert_eq!(conn.lock_holder(session), None, "released by its owner");
    let refused = held.write(Some(&Tokens::new("at-paused"))).unwrap_err();
    assert!(refused.to_string().contains("write refused"), "{refused}");
    assert!(!refused.to_string().contains("at-paused"));
    // The paused holder's release does not touch a lease it no longer owns.
    let mut again = other.lock().unwrap().unwrap();
    drop(held);
    assert!(
        conn.lock_holder(session).is_some(),
        "another owner's lease kept"
    );
    // Reading again under the lock shows the newer record.
    assert_eq!(again.reread().unwrap().unwrap().revision(), written);
    drop(again);
    assert_eq!(conn.access_token(session).unwrap(), "at-2");
    assert_eq!(conn.generation(session), written.get());

    // 2. The lease runs out and another process holds it now (its refresh is running): no
    //    write, though the record did not move.
    let mut held = paused.lock().unwrap().unwrap();
    conn.cmd(&["DEL", lock_key]);
    let theirs = other.lock().unwrap().unwrap();
    let refused = held.write(Some(&Tokens::new("at-paused"))).unwrap_err();
    assert!(refused.to_string().contains("holds the lock"), "{refused}");
    drop(theirs);
    drop(held);
    assert_eq!(conn.access_token(session).unwrap(), "at-2");
    assert_eq!(conn.generation(session), written.get());

    // 3. The lease ran out and nobody took it or wrote: the write is safe and goes through.
    let mut held = paused.lock().unwrap().unwrap();
    conn.cmd(&["DEL", lock_key]);
    let last = held.write(Some(&Tokens::new("at-3"))).unwrap();
    assert!(last.get() > written.get());
    // A logout through the same lock is a compare-and-set too, and generations only grow.
    let out = held.write(None).unwrap();
    assert!(out.get() > last.get());
    drop(held);
    assert_eq!(conn.tokens(session), None);
    assert!(paused.load().unwrap().is_none());
}

#[test]
fn a_live_holder_keeps_its_lease_beyond_its_length() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    // Renewed every third of the lease: only a renewal thread starved for over 1.3 s
    // (not a loaded machine, a broken renewal) lets this lease lapse.
    let lease = Duration::from_secs(2);
    let holder = store(&redis, "renew").lease(lease);
    let waiter = store(&redis, "renew").lock_timeout(Duration::from_millis(50));
    let held = holder.lock().unwrap().unwrap();
    let owner = conn.lock_holder("renew").unwrap();
    // Two and a half lease lengths: without renewal it would be gone.
    std::thread::sleep(lease * 5 / 2);
    assert_eq!(conn.lock_holder("renew"), Some(owner));
    let e = waiter.lock().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    drop(held);
    assert_eq!(conn.lock_holder("renew"), None);
    assert!(waiter.lock().unwrap().is_some());
}

/// A terminal refresh error under a lease that ran out: the record is read again first, and
/// if another process wrote it meanwhile its tokens are adopted, not a logout.
#[test]
fn invalid_grant_after_another_process_refreshed_adopts_its_tokens() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "grant";
    let port = redis.port();
    let url = redis.url();
    let expired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&expired);
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |_: &tokengate::ureq::Agent, _: &Tokens| {
            // While this process "was paused": its lease ran out, another process took the
            // lock and stored the refresh it made; the server refuses our refresh token.
            let mut conn = Resp::connect(port);
            conn.cmd(&["DEL", "{grant}:lock"]);
            let other = RedisStore::open(&url, "grant").unwrap();
            other
                .save(&Tokens::new("at-other").with_refresh_token("rt-other"))
                .unwrap();
            Err(RefreshError::terminal("invalid_grant"))
        })
        .store(store(&redis, session))
        .tokens(Tokens::new("at-mine").with_refresh_token("rt-mine"))
        .on_session_expired(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    // The API knows neither token: the 401 starts the refresh; its replay (with the adopted
    // token) gets 401 too, which the caller sees. What matters is what the client holds.
    let _ = client.get("items").call();
    assert_eq!(expired.load(Ordering::SeqCst), 0, "the session did not end");
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-other");
    assert_eq!(redis.conn().access_token(session).unwrap(), "at-other");
}

/// Without another process in between, `invalid_grant` ends the session once, and the
/// logout is written to Redis for every machine.
#[test]
fn invalid_grant_with_nobody_in_between_ends_the_session_everywhere() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "ended";
    let expired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&expired);
    let client = client_on(&srv, store(&redis, session))
        .tokens(srv.login())
        .on_session_expired(move || {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let before = redis.conn().generation(session);
    srv.revoke_all();
    assert!(matches!(
        client.get("items").call(),
        Err(Error::SessionExpired)
    ));
    assert_eq!(expired.load(Ordering::SeqCst), 1);
    let mut conn = redis.conn();
    assert_eq!(conn.tokens(session), None);
    assert!(conn.generation(session) > before);
}

/// A paused holder's refresh is not written over the newer record, and the client then
/// adopts the newer record.
#[test]
fn a_refresh_whose_lease_ran_out_is_not_written_and_the_newer_record_wins() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "late";
    let port = redis.port();
    let url = redis.url();
    let other_tokens = srv.login(); // at-1: what the other process refreshed to
    let other_access = other_tokens.access_token().secret().to_owned();
    let other_tokens = Mutex::new(Some(other_tokens));
    let events = Recorder::new();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |_: &tokengate::ureq::Agent, _: &Tokens| {
            let mut conn = Resp::connect(port);
            conn.cmd(&["DEL", "{late}:lock"]);
            if let Some(t) = other_tokens.lock().unwrap().take() {
                RedisStore::open(&url, "late").unwrap().save(&t).unwrap();
            }
            Ok(Tokens::new("at-late").with_refresh_token("rt-late"))
        })
        .store(store(&redis, session).poll_interval(Duration::from_millis(10)))
        .tokens(Tokens::new("at-old").with_refresh_token("rt-old"))
        .on_event(events.listener())
        .build()
        .unwrap();
    let _ = client.get("items").call(); // at-old is unknown to the API: 401, refresh
    assert!(events
        .all()
        .iter()
        .any(|e| matches!(e, Event::StoreFailed { .. })));
    assert_eq!(redis.conn().access_token(session).unwrap(), other_access);
    until_served_with(&client, &other_access);
    assert_eq!(redis.conn().access_token(session).unwrap(), other_access);
}

/// Requests never touch Redis: with a long poll interval, 200 requests make no Redis
/// command at all after `build()`'s one read; a refresh still reads under the lock.
#[test]
fn requests_read_redis_at_most_once_per_poll_interval() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "quiet";
    let writer = client_on(&srv, store(&redis, session))
        .tokens(srv.login())
        .build()
        .unwrap();
    let mut conn = redis.conn();
    let before = conn.calls_of("hmget");
    let client = client_on(
        &srv,
        store(&redis, session).poll_interval(Duration::from_secs(3600)),
    )
    .build()
    .unwrap();
    let (reads, scripts) = (conn.calls_of("hmget"), conn.calls_of("evalsha"));
    assert_eq!(reads, before + 1, "build() read the record once");
    for _ in 0..200 {
        assert_eq!(token_of(&client), "at-1");
    }
    assert_eq!(conn.calls_of("hmget"), reads, "no read per request");
    assert_eq!(conn.calls_of("evalsha"), scripts, "no lock per request");

    // A login elsewhere is not seen before the interval ends...
    writer.set_tokens(srv.login()).unwrap();
    for _ in 0..20 {
        assert_eq!(token_of(&client), "at-1");
    }
    // ...but a refresh takes the lock and reads the record: the login is adopted, and the
    // token endpoint is not called.
    srv.revoke_access_tokens();
    writer.set_tokens(srv.login()).unwrap(); // at-3, live
    assert_eq!(token_of(&client), "at-3");
    assert_eq!(srv.refreshes(), 0);
}

/// Redis down: requests go on with the valid token; a login and a refresh that need Redis
/// fail clearly (the token endpoint is not called); nothing is cleared. Redis back up, and
/// empty: the next refresh writes the session back.
#[test]
fn redis_down_keeps_the_session_and_refreshes_fail_closed() {
    let mut redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "down";
    let expired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&expired);
    let client = client_on(
        &srv,
        store(&redis, session).poll_interval(Duration::from_millis(10)),
    )
    .tokens(srv.login())
    .on_session_expired(move || {
        count.fetch_add(1, Ordering::SeqCst);
    })
    .build()
    .unwrap();
    let before = redis.conn().generation(session);

    redis.kill();
    for _ in 0..50 {
        assert_eq!(token_of(&client), "at-1");
        std::thread::sleep(Duration::from_millis(1));
    }
    let e = client.set_tokens(Tokens::new("at-x")).unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    assert!(
        error_text(&e).contains("Redis at redis://127.0.0.1:"),
        "{}",
        error_text(&e)
    );
    srv.revoke_access_tokens();
    let e = client.get("items").call().unwrap_err();
    match &e {
        Error::Refresh(r) => assert!(matches!(**r, RefreshError::Store(_)), "{r:?}"),
        other => panic!("expected a refresh error, got {other:?}"),
    }
    assert!(e.is_transient());
    assert_eq!(srv.refreshes(), 0, "no refresh without the lock");
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-1");
    assert_eq!(expired.load(Ordering::SeqCst), 0);
    let e = client_on(&srv, store(&redis, session)).build().unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");

    // Back, without its data: the client keeps its session (an empty record is not a
    // logout), and its refresh stores the tokens again, at a higher generation.
    redis.start_again();
    assert_eq!(redis.conn().generation(session), 0);
    assert_eq!(token_of(&client), "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    let mut conn = redis.conn();
    assert_eq!(conn.access_token(session).unwrap(), "at-2");
    assert!(conn.generation(session) > before);
    let fresh = client_on(&srv, store(&redis, session)).build().unwrap();
    assert_eq!(token_of(&fresh), "at-2");
    assert_eq!(expired.load(Ordering::SeqCst), 0);
}

/// Redis losing its data is not a logout for the machines that hold the session, and a
/// login made afterwards is newer than everything they saw.
#[test]
fn a_record_lost_by_redis_is_not_a_logout_and_a_later_login_wins() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "lost";
    let client = client_on(
        &srv,
        store(&redis, session).poll_interval(Duration::from_millis(1)),
    )
    .tokens(srv.login())
    .build()
    .unwrap();
    let mut conn = redis.conn();
    conn.cmd(&["FLUSHALL"]);
    // Two background reads after the flush (they run one after the other, so the first one
    // has been seen by the store when the second starts).
    let reads = conn.calls_of("hmget");
    let deadline = Instant::now() + HANG_GUARD;
    while conn.calls_of("hmget") < reads + 2 {
        assert!(Instant::now() < deadline, "hang guard: no background read");
        assert_eq!(token_of(&client), "at-1");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(token_of(&client), "at-1");
    assert!(client.tokens().is_some());

    // A login on a new machine, after the loss.
    std::thread::sleep(Duration::from_millis(5));
    let login = srv.login();
    store(&redis, session).save(&login).unwrap();
    until_served_with(&client, "at-2");
}

#[test]
fn an_unreadable_record_fails_build_and_refreshes_without_quoting_it() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "bad";
    let client = client_on(&srv, store(&redis, session))
        .tokens(srv.login())
        .build()
        .unwrap();
    let mut conn = redis.conn();
    conn.cmd(&[
        "HSET",
        "{bad}:tokens",
        "tokens",
        "{\"version\":1,\"access_token\":\"secret-in-garbage",
    ]);
    let e = client_on(&srv, store(&redis, session)).build().unwrap_err();
    let text = error_text(&e);
    assert!(matches!(e, Error::Store(_)), "{text}");
    assert!(text.contains("{bad}:tokens"), "{text}");
    assert!(!text.contains("secret-in-garbage"), "{text}");

    // A running client goes on with its token; its refresh fails on the record.
    assert_eq!(token_of(&client), "at-1");
    srv.revoke_access_tokens();
    let e = client.get("items").call().unwrap_err();
    assert!(matches!(e, Error::Refresh(_)), "{e:?}");
    assert!(!error_text(&e).contains("secret-in-garbage"));
    assert_eq!(srv.refreshes(), 0);
    // A login replaces it.
    client.set_tokens(srv.login()).unwrap();
    assert_eq!(token_of(&client), "at-2");
    assert_eq!(conn.access_token(session).unwrap(), "at-2");
}

#[test]
fn the_password_never_shows() {
    let password = "pw-s3cret-4817";
    let redis = RedisServer::start_with(&["--requirepass", password]);
    let url = redis.url_with_password(password);
    let good = RedisStore::open(&url, "pw").unwrap();
    let debug = format!("{good:?}");
    assert!(!debug.contains(password), "{debug}");
    assert!(debug.contains("127.0.0.1"), "{debug}");
    good.save(&Tokens::new("at-1")).unwrap();
    assert_eq!(
        good.load().unwrap().unwrap().access_token().secret(),
        "at-1"
    );

    // A wrong password, a user and password, an unreachable server, a bad URL: errors never
    // show the password.
    let srv = TokenServer::start();
    let wrong = "wrong-pw-9911";
    let cases = [
        redis.url_with_password(wrong),
        format!("redis://someone:{wrong}@127.0.0.1:{}/", redis.port()),
        format!("redis://:{wrong}@127.0.0.1:1/"),
    ];
    for url in cases {
        let store = RedisStore::open(&url, "pw").unwrap();
        assert!(!format!("{store:?}").contains(wrong));
        assert!(!format!("{store:?}").contains("someone"));
        let e = client_on(&srv, store).build().unwrap_err();
        let text = error_text(&e);
        assert!(matches!(e, Error::Store(_)), "{text}");
        assert!(!text.contains(wrong), "{text}");
    }
    let unix = format!("redis+unix:///tmp/none.sock?pass={wrong}");
    let store = RedisStore::open(&unix, "pw").unwrap();
    assert!(!format!("{store:?}").contains(wrong));
    let e = store.load().unwrap_err();
    assert!(!e.to_string().contains(wrong), "{e}");
    for bad in [
        format!("http://:{wrong}@x/"),
        format!("redis://:{wrong}@[::1"),
    ] {
        let e = RedisStore::open(&bad, "pw").unwrap_err();
        assert!(matches!(e, Error::InvalidUrl(_)), "{e:?}");
        assert!(!error_text(&e).contains(wrong));
    }
}

#[test]
fn urls_and_session_names_are_checked_when_opened() {
    // TLS is built in (the connection itself is made when first used).
    assert!(RedisStore::open("rediss://127.0.0.1:1/", "s").is_ok());
    assert!(RedisStore::open("redis://127.0.0.1:1/2", "s").is_ok());
    assert!(matches!(
        RedisStore::open("https://127.0.0.1/", "s"),
        Err(Error::InvalidUrl(_))
    ));
    assert!(matches!(
        RedisStore::open("redis://127.0.0.1/", ""),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        RedisStore::open("redis://127.0.0.1/", "a\nb"),
        Err(Error::Config(_))
    ));
    let s = RedisStore::open("redis://127.0.0.1:1/", "s")
        .unwrap()
        .lease(Duration::ZERO)
        .lock_timeout(Duration::from_secs(7));
    let debug = format!("{s:?}");
    assert!(debug.contains("lease: 100ms"), "{debug}");
    assert_eq!(TokenStore::lock_timeout(&s), Duration::from_secs(7));
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<RedisStore>();
}

/// A `Sleeper` that runs `pause` during the first backoff (once), instead of sleeping.
struct PauseOnce(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl tokengate::time::Sleeper for PauseOnce {
    fn sleep(&self, _: Duration) {
        let pause = self.0.lock().unwrap().take();
        if let Some(pause) = pause {
            pause();
        }
    }
}

/// Machine A holds the lease, its token call gets a 503, and while it waits out the backoff
/// it stalls past its lease (the lock key is deleted, as Redis does when the lease runs
/// out); machine B takes the lease, refreshes rt-1 (the server rotates it) and writes. When A
/// resumes it must not present rt-1 again (a rotating server revokes the whole session on
/// reuse): it confirms its lease before the retry, finds it gone, makes no token call and
/// adopts what B wrote. Caught the retry presenting rt-1 a second time (A:rt-1, B:rt-1,
/// A:rt-1; reuse detected, session revoked).
#[test]
fn a_refresh_whose_lease_lapsed_during_a_backoff_makes_no_token_call_and_adopts_the_newer_record() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "lapsed";
    let b = client_on(&srv, store(&redis, session))
        .tokens(srv.login())
        .build()
        .unwrap();
    let machine_b = b.clone();
    let port = redis.port();
    let pause: Box<dyn FnOnce() + Send> = Box::new(move || {
        Resp::connect(port).cmd(&["DEL", "{lapsed}:lock"]);
        assert_eq!(token_of(&machine_b), "at-2", "B refreshed and stored");
    });
    let events = Recorder::new();
    let a = client_on(&srv, store(&redis, session))
        .sleeper(PauseOnce(Mutex::new(Some(pause))))
        .on_event(events.listener())
        .build()
        .unwrap();
    assert_eq!(a.tokens().unwrap().access_token().secret(), "at-1");

    srv.revoke_access_tokens();
    let unavailable = Fault::Unavailable { retry_after: None };
    srv.fault_next_token_calls(1, unavailable.clone());
    let served = token_of(&a);

    assert_eq!(srv.presented(), [Some(1), Some(1)], "A:rt-1 (503), B:rt-1");
    assert_eq!(
        srv.token_calls()[0].outcome,
        Outcome::Faulted(unavailable.clone())
    );
    assert_eq!(srv.reuse_detected(), 0);
    assert!(srv.is_active("rt-2"), "the session lives on");
    assert_eq!(served, "at-2", "A adopted B's refresh");
    assert_eq!(events.count(|e| matches!(e, Event::Adopted { .. })), 1);
    assert_eq!(redis.conn().access_token(session).unwrap(), "at-2");
    assert_eq!(token_of(&b), "at-2");
}

/// Two machines on one session: A, whose writes to Redis can be made to fail (with a manual
/// clock, to make its once-a-second save retry due at will), and B.
struct UnsavedChange {
    redis: RedisServer,
    srv: TokenServer,
    fail: Arc<std::sync::atomic::AtomicBool>,
    clock: Arc<ManualClock>,
    a: AuthClient,
    b: AuthClient,
}

fn unsaved_change(session: &str) -> UnsavedChange {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let fast = Duration::from_millis(10);
    let (store_a, fail) = FailingWrites::new(store(&redis, session).poll_interval(fast));
    let clock = Arc::new(ManualClock::new());
    let a = srv
        .client_builder()
        .store(store_a)
        .clock(clock.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    let b = client_on(&srv, store(&redis, session).poll_interval(fast))
        .build()
        .unwrap();
    assert_eq!(token_of(&b), "at-1");
    UnsavedChange {
        redis,
        srv,
        fail,
        clock,
        a,
        b,
    }
}

/// A logout whose write to Redis failed is never undone: B, still on the old session,
/// refreshes and writes it; A stays logged out, and its retry writes the logout over B's
/// record, which B then adopts. Caught A adopting B's refresh (the logout reverted).
#[test]
fn an_unsaved_logout_is_written_over_another_machines_refresh_never_undone_by_it() {
    let session = "unsaved-logout";
    let UnsavedChange {
        redis,
        srv,
        fail,
        clock,
        a,
        b,
    } = unsaved_change(session);
    fail.store(true, Ordering::SeqCst);
    assert!(matches!(a.clear_tokens(), Err(Error::Store(_))));
    assert!(a.tokens().is_none());
    b.force_refresh().unwrap();
    assert_eq!(redis.conn().access_token(session).unwrap(), "at-2");

    fail.store(false, Ordering::SeqCst);
    wait_until("the logout written over B's refresh", || {
        clock.advance(Duration::from_secs(2)); // a retry is due
        let e = a.get("items").call().unwrap_err();
        assert!(matches!(e, Error::NoTokens), "logged out, got {e:?}");
        redis.conn().tokens(session).is_none()
    });
    assert!(a.tokens().is_none());
    wait_until("B adopting the logout", || {
        matches!(b.get("items").call(), Err(Error::NoTokens))
    });
    assert_eq!(srv.reuse_detected(), 0);
}

/// A login whose write to Redis failed is never replaced by the old session: B refreshes the
/// old session and writes it; A's requests carry the new user's token throughout, and its
/// retry writes the login over B's record, which B then adopts. Caught A adopting B's
/// refresh of the old user's session.
#[test]
fn an_unsaved_login_is_written_over_another_machines_refresh_never_replaced_by_it() {
    let session = "unsaved-login";
    let UnsavedChange {
        redis,
        srv,
        fail,
        clock,
        a,
        b,
    } = unsaved_change(session);
    fail.store(true, Ordering::SeqCst);
    let e = a.set_tokens(srv.login()).unwrap_err(); // another user's login: at-2 / rt-2
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    b.force_refresh().unwrap(); // the old session: rt-1 -> at-3 / rt-3
    assert_eq!(redis.conn().access_token(session).unwrap(), "at-3");

    fail.store(false, Ordering::SeqCst);
    wait_until("the login written over B's refresh", || {
        clock.advance(Duration::from_secs(2)); // a retry is due
        assert_eq!(token_of(&a), "at-2");
        redis.conn().access_token(session).as_deref() == Some("at-2")
    });
    until_served_with(&b, "at-2");
    assert_eq!(token_of(&a), "at-2");
    assert_eq!(srv.reuse_detected(), 0);
}

/// A commit whose reply is lost (the connection breaks after Redis applied it, and the
/// client sends it again on a new connection) is reported done, not refused: a login that
/// reached Redis is never reported unsaved (the client would write it again later, over
/// whatever another machine wrote after it, such as that machine's refresh of this very
/// login). Caught the second send being refused as "written by another process meanwhile".
#[test]
fn a_login_whose_commit_reply_was_lost_is_reported_saved() {
    let redis = RedisServer::start();
    let proxy = ReplyLosingProxy::start(redis.port());
    let srv = TokenServer::start();
    let session = "lost-reply";
    let a = client_on(&srv, RedisStore::open(proxy.url(), session).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    proxy.lose_reply_to("at-2");
    a.set_tokens(srv.login()).unwrap(); // another user's login: at-2 / rt-2
    assert_eq!(proxy.replies_lost(), 1);
    assert_eq!(redis.conn().access_token(session).unwrap(), "at-2");
    assert_eq!(token_of(&a), "at-2");
}

/// Redis goes away while a refresh waits out a 503's backoff: the check of the lease before
/// the retry fails, so no token call is made (a machine never refreshes without knowing it
/// holds the lock); the refresh fails transiently and the session goes on.
#[test]
fn a_refresh_that_cannot_confirm_its_lease_makes_no_token_call() {
    let redis = Arc::new(Mutex::new(RedisServer::start()));
    let srv = TokenServer::start();
    let session = "unconfirmed";
    let url = redis.lock().unwrap().url();
    let down = Arc::clone(&redis);
    let pause: Box<dyn FnOnce() + Send> = Box::new(move || down.lock().unwrap().kill());
    let a = client_on(&srv, RedisStore::open(&url, session).unwrap())
        .tokens(srv.login())
        .sleeper(PauseOnce(Mutex::new(Some(pause))))
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    let unavailable = Fault::Unavailable { retry_after: None };
    srv.fault_next_token_calls(1, unavailable.clone());
    let e = a.get("items").call().unwrap_err();
    match &e {
        Error::Refresh(r) => assert!(matches!(**r, RefreshError::Store(_)), "{r:?}"),
        other => panic!("expected a refresh error, got {other:?}"),
    }
    assert!(e.is_transient());
    assert_eq!(srv.presented(), [Some(1)], "only the call answered 503");
    assert_eq!(srv.token_calls()[0].outcome, Outcome::Faulted(unavailable));
    assert_eq!(a.tokens().unwrap().access_token().secret(), "at-1");
}

/// A `RedisStore` whose lease is gone as soon as it was taken (its holder stalled right
/// after taking it): the lock is given, but the lease is no longer this holder's. `port` is
/// the Redis server's.
fn lapsing_lock(store: RedisStore, port: u16) -> Forwarding<RedisStore> {
    Forwarding::new(store).lock_with(move |inner| {
        let lock = inner.lock()?;
        let key = format!("{{{}}}:lock", inner.session());
        Resp::connect(port).cmd(&["DEL", &key]);
        Ok(lock)
    })
}

/// A lease that lapsed before the first token call: no call at all (the lease is checked
/// before the first call too, not only before retries).
#[test]
fn a_lease_that_lapsed_before_the_first_token_call_makes_none() {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let login = srv.login();
    let a = client_on(&srv, store(&redis, "lapsed-first"))
        .tokens(login)
        .build()
        .unwrap();
    drop(a);
    let a = srv
        .client_builder()
        .store(lapsing_lock(store(&redis, "lapsed-first"), redis.port()))
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    let e = a.get("items").call().unwrap_err();
    assert!(matches!(e, Error::Refresh(_)), "{e:?}");
    assert_eq!(srv.refreshes(), 0);
    assert_eq!(a.tokens().unwrap().access_token().secret(), "at-1");
}
