//! A fleet of processes sharing one session only through Redis, against a token server that
//! rotates refresh tokens and revokes the whole session on reuse:
//! - N processes × M threads: one refresh call per expiry, no reuse, no failed request;
//! - a lock holder killed (SIGKILL) mid-refresh: the next process proceeds once the lease
//!   runs out, with one refresh call and no reuse;
//! - a lock holder paused (SIGSTOP) past its lease and resumed: its write is refused (the
//!   newer record is kept and adopted), an `invalid_grant` it then gets adopts the newer
//!   record instead of ending the session, and one paused during a 503's backoff makes no
//!   further token call;
//! - Redis stopped mid-run and started again: no panic, no hang, no lost session.
//!
//! Each test starts its own `redis-server` (tests/harness/servers/redis.rs) and re-executes
//! its own binary (`current_exe() <module>::<test> --exact`, the name from `test_name!`) with
//! `TOKENGATE_TEST_ROLE` set for each child process; the parent owns the token server and
//! Redis. No assertion is about time: leases are short (500 ms) only so that the tests do not
//! wait long.
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::harness::observe::{body_json, child_test, test_name, HANG_GUARD, ROLE, URL};
use crate::harness::servers::redis::{RedisServer, Reply};
use crate::harness::servers::TokenServer;
use tokengate::testing::{Fault, Outcome};
use tokengate::{AuthClient, Error, Event, RedisStore, RefreshError, Tokens};

const REDIS: &str = "TOKENGATE_TEST_REDIS";
const SESSION: &str = "TOKENGATE_TEST_SESSION";
const THREADS_VAR: &str = "TOKENGATE_TEST_THREADS";
const TARGET_VAR: &str = "TOKENGATE_TEST_TARGET";

/// The lease of the holders that are killed or paused.
const SHORT_LEASE: Duration = Duration::from_millis(500);
/// Bounds that only a bug reaches.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(40);
const PARENT_TIME_LIMIT: Duration = Duration::from_secs(90);
const MAX_REQUESTS_PER_THREAD: u64 = 50_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

/// A client of the test server whose session lives in Redis.
fn fleet_client(url: &str, store: RedisStore) -> tokengate::AuthClientBuilder {
    TokenServer::client_builder_at(url).store(store)
}

/// Another machine of the fleet, in the parent process: a client on `session` in `redis`.
fn machine(srv: &TokenServer, redis: &RedisServer, session: &str) -> tokengate::AuthClientBuilder {
    fleet_client(
        srv.base_url(),
        RedisStore::open(redis.url(), session).unwrap(),
    )
}

/// Starts this test binary's test `name` as a child process in `role`.
fn spawn_child(
    name: &str,
    role: &str,
    srv: &TokenServer,
    redis: &RedisServer,
    session: &str,
    extra: &[(&str, String)],
) -> Child {
    let mut cmd = child_test(name, role);
    cmd.env(URL, srv.base_url())
        .env(REDIS, redis.url())
        .env(SESSION, session)
        .stdin(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Reads the child's stdout on a thread, line by line.
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line holding `prefix` (bounded by the parent's time limit); returns what
/// follows it.
fn wait_line(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + PARENT_TIME_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the child never printed {prefix}"));
        // The test harness may have printed the test's name on the same line.
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest.trim().to_owned();
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PARENT_TIME_LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not finish within {PARENT_TIME_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field(line: &str, name: &str) -> String {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .to_owned()
}

fn number(line: &str, name: &str) -> u64 {
    field(line, name).parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// N processes × M threads
// ---------------------------------------------------------------------------------------

const PROCESSES: usize = 4;
const THREADS: usize = 8;
/// Server-side lifetime of an access token. The client refreshes proactively at 75% of it.
/// Long enough that a process stalled by a loaded machine does not adopt a token the server
/// has already expired (its replay would be a 401, a failed request that is not the store's).
const LIFETIME: Duration = Duration::from_millis(800);
/// Every child runs until it has been served a token of this generation (`at-6`: the login
/// was `at-1`, so five refreshes, five expiry windows).
const TARGET_GENERATION: u64 = 6;

#[test]
fn processes_sharing_a_redis_session_refresh_once_per_expiry() {
    if std::env::var_os(ROLE).is_some() {
        return fleet_worker();
    }
    let redis = RedisServer::start();
    let srv = TokenServer::with_lifetime(LIFETIME);
    let children = start_fleet(
        &test_name!(processes_sharing_a_redis_session_refresh_once_per_expiry),
        &srv,
        &redis,
        "fleet:many",
        [PROCESSES, THREADS],
        TARGET_GENERATION,
    );
    let reports = reports_of(children);

    let minted_after_login = srv.issued() - 1;
    eprintln!(
        "{PROCESSES} processes x {THREADS} threads via Redis: refresh calls {}, generations \
         minted after login {minted_after_login}, api calls {}, api 401s {}, reuse detected {}; \
         per process {reports:?}",
        srv.refreshes(),
        srv.api_requests(),
        srv.api_401s(),
        srv.reuse_detected()
    );
    for r in &reports {
        assert_eq!(number(r, "failed"), 0, "no request failed: {r}");
        assert_eq!(number(r, "ok"), number(r, "requests"), "{r}");
        assert!(number(r, "max_generation") >= TARGET_GENERATION, "{r}");
    }
    assert!(minted_after_login >= TARGET_GENERATION - 1);
    assert_one_refresh_per_expiry(&srv, &reports);
}

/// The login, made on one machine, then `processes` × `threads` fleet workers (children
/// running `test`) sharing `session` until each is served generation `target`.
fn start_fleet(
    test: &str,
    srv: &TokenServer,
    redis: &RedisServer,
    session: &str,
    [processes, threads]: [usize; 2],
    target: u64,
) -> Vec<Child> {
    machine(srv, redis, session)
        .tokens(srv.login())
        .build()
        .unwrap();
    let extra = [
        (THREADS_VAR, threads.to_string()),
        (TARGET_VAR, target.to_string()),
    ];
    (0..processes)
        .map(|_| spawn_child(test, "fleet", srv, redis, session, &extra))
        .collect()
}

/// What the server saw of a fleet run: no refresh token presented twice, the session never
/// revoked, one call per generation minted (a call that reused a rotated token would mint
/// nothing: each expiry window was refreshed exactly once, by one thread of one process),
/// none early, and every call started by one of the workers (the others adopted).
fn assert_one_refresh_per_expiry(srv: &TokenServer, reports: &[String]) {
    assert_eq!(
        srv.reuse_detected(),
        0,
        "no refresh token was presented twice"
    );
    // Not revoked: the newest refresh token is the session's current one.
    assert!(srv.is_active(&format!("rt-{}", srv.issued())));
    assert_eq!(srv.refreshes(), srv.issued() - 1);
    srv.assert_no_generation_refreshed_before_due(LIFETIME);
    let started: u64 = reports.iter().map(|r| number(r, "refreshes_started")).sum();
    assert_eq!(started, srv.refreshes());
}

/// Waits for every child and returns the `REPORT` line of each.
fn reports_of(mut children: Vec<Child>) -> Vec<String> {
    let outputs: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut stdout = c.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut out = String::new();
                stdout.read_to_string(&mut out).unwrap();
                out
            })
        })
        .collect();
    let statuses: Vec<_> = children.iter_mut().map(wait_exit).collect();
    outputs
        .into_iter()
        .zip(statuses)
        .map(|(out, status)| {
            let out = out.join().unwrap();
            assert!(status.success(), "child failed: {out}");
            out.lines()
                .find_map(|l| Some(l.split_once("REPORT ")?.1))
                .unwrap_or_else(|| panic!("no report in child output: {out}"))
                .to_owned()
        })
        .collect()
}

/// One process of the fleet: M threads making requests through one client whose session
/// lives in Redis, until each has been served a token of the target generation.
fn fleet_worker() {
    let url = env(URL);
    let threads: usize = env(THREADS_VAR).parse().unwrap();
    let target: u64 = env(TARGET_VAR).parse().unwrap();
    let started = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&started);
    let store = RedisStore::open(env(REDIS), env(SESSION))
        .unwrap()
        .poll_interval(Duration::from_millis(100));
    let client = fleet_client(&url, store)
        .on_event(move |e| {
            if matches!(e, Event::RefreshStarted { .. }) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();

    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    let workers: Vec<_> = (0..threads)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut t = Tally::default();
                while t.max_generation < target
                    && t.requests < MAX_REQUESTS_PER_THREAD
                    && Instant::now() < deadline
                {
                    t.requests += 1;
                    match client.get("items").call() {
                        Ok(mut resp) => {
                            t.ok += 1;
                            let token = body_json(&mut resp)["token"].as_str().unwrap().to_owned();
                            let generation: u64 =
                                token.strip_prefix("at-").unwrap().parse().unwrap();
                            t.max_generation = t.max_generation.max(generation);
                        }
                        Err(e) => {
                            t.failed += 1;
                            let store_error = matches!(&e, Error::Refresh(r)
                                if matches!(**r, RefreshError::Store(_)));
                            if !store_error {
                                t.failed_other += 1;
                            }
                            if t.errors.is_empty() {
                                t.errors
                                    .push(format!("{e}: {:?}", std::error::Error::source(&e)));
                            }
                        }
                    }
                    // Staggered pacing: requests keep arriving throughout each window.
                    std::thread::sleep(Duration::from_millis(3 + (i as u64 + t.requests) % 5));
                }
                t
            })
        })
        .collect();
    let mut all = Tally {
        max_generation: u64::MAX,
        ..Tally::default()
    };
    for w in workers {
        let t = w.join().unwrap();
        for e in &t.errors {
            eprintln!("child {} error: {e}", std::process::id());
        }
        all.requests += t.requests;
        all.ok += t.ok;
        all.failed += t.failed;
        all.failed_other += t.failed_other;
        all.max_generation = all.max_generation.min(t.max_generation);
    }
    println!(
        "REPORT requests={} ok={} failed={} failed_other={} refreshes_started={} max_generation={}",
        all.requests,
        all.ok,
        all.failed,
        all.failed_other,
        started.load(Ordering::SeqCst),
        all.max_generation
    );
}

#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
    failed: u64,
    /// Failures other than "a refresh could not use the store" (Redis down).
    failed_other: u64,
    max_generation: u64,
    errors: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// A lock holder killed, or paused, mid-refresh
// ---------------------------------------------------------------------------------------

/// The parent's side: a login whose access token the API no longer accepts, so the first
/// request of whoever comes next refreshes.
fn stale_login(srv: &TokenServer, redis: &RedisServer, session: &str) {
    machine(srv, redis, session)
        .tokens(srv.login())
        .build()
        .unwrap();
    srv.revoke_access_tokens();
}

/// Says `what` on stdout, then blocks until a line arrives on stdin.
fn say_and_wait(what: &str) {
    println!("{what}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// The backoff of `holder-503`: says `BACKING-OFF` (the token call got its 503; the lease is
/// held and being renewed), then waits for the parent's line.
struct BackoffUntilToldTo;

impl tokengate::time::Sleeper for BackoffUntilToldTo {
    fn sleep(&self, _: Duration) {
        say_and_wait("BACKING-OFF");
    }
}

/// A holder's child process, in one of three modes. `holder-tokens` / `holder-invalid-grant`:
/// its refresher says `HOLDING` (the lease is taken and being renewed), then blocks until a
/// line arrives on stdin, and then answers its own new tokens (as if its token call
/// succeeded) or `invalid_grant`. `holder-503`: the test server's refresher, whose first
/// call the server answers 503; the backoff blocks as `BackoffUntilToldTo` says.
/// Afterwards it makes requests until one succeeds and reports what it saw.
fn holder() {
    let mode = env(ROLE);
    let store = RedisStore::open(env(REDIS), env(SESSION))
        .unwrap()
        .lease(SHORT_LEASE)
        .poll_interval(Duration::from_millis(20));
    let store_failed = Arc::new(AtomicU64::new(0));
    let expired = Arc::new(AtomicU64::new(0));
    let (failed, ended) = (Arc::clone(&store_failed), Arc::clone(&expired));
    let builder = if mode == "holder-503" {
        fleet_client(&env(URL), store).sleeper(BackoffUntilToldTo)
    } else {
        AuthClient::builder(format!("{}/api/", env(URL)))
            .proxy(None)
            .refresher(move |_: &tokengate::ureq::Agent, _: &Tokens| {
                say_and_wait("HOLDING");
                if mode == "holder-invalid-grant" {
                    Err(RefreshError::terminal("invalid_grant"))
                } else {
                    Ok(Tokens::new("at-paused")
                        .with_refresh_token("rt-paused")
                        .with_expires_in(Duration::from_secs(3600)))
                }
            })
            .store(store)
    };
    let client = builder
        .on_event(move |e| {
            if matches!(e, Event::StoreFailed { .. }) {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_session_expired(move || {
            ended.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let first = client.get("items").call();
    let first = match first {
        Ok(mut r) => body_json(&mut r)["token"].as_str().unwrap().to_owned(),
        Err(e) => format!("error:{}", e.to_string().replace(' ', "_")),
    };
    let deadline = Instant::now() + HANG_GUARD;
    let last = loop {
        if let Ok(mut r) = client.get("items").call() {
            break body_json(&mut r)["token"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: no request succeeded"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    println!(
        "REPORT first={first} last={last} store_failed={} session_expired={}",
        store_failed.load(Ordering::SeqCst),
        expired.load(Ordering::SeqCst)
    );
}

#[test]
fn a_holder_killed_mid_refresh_frees_the_lock_when_its_lease_ends() {
    let name = &test_name!(a_holder_killed_mid_refresh_frees_the_lock_when_its_lease_ends);
    if std::env::var_os(ROLE).is_some() {
        return holder();
    }
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "fleet:killed";
    stale_login(&srv, &redis, session);
    let mut child = spawn_child(name, "holder-tokens", &srv, &redis, session, &[]);
    let lines = lines_of(child.stdout.take().unwrap());
    wait_line(&lines, "HOLDING");
    assert!(redis.conn().lock_holder(session).is_some());
    signal(&child, "-KILL");
    let status = child.wait().unwrap();
    assert!(!status.success());

    // Another machine: it waits for the lease to end, then refreshes, once.
    let client = machine(&srv, &redis, session).build().unwrap();
    let mut r = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    let mut conn = redis.conn();
    assert_eq!(conn.access_token(session).unwrap(), "at-2");
    assert_eq!(conn.lock_holder(session), None);
}

/// Pauses the holder (SIGSTOP) while it holds the lock, lets another machine refresh once
/// the lease ran out, then resumes the holder and lets its refresher answer per `mode`.
/// Returns the holder's report and the token the other machine got.
fn pause_a_holder(name: &str, mode: &str) -> (String, TokenServer, RedisServer) {
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "fleet:paused";
    stale_login(&srv, &redis, session);
    let before = redis.conn().generation(session);
    let mut child = spawn_child(name, mode, &srv, &redis, session, &[]);
    let mut stdin: ChildStdin = child.stdin.take().unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    wait_line(&lines, "HOLDING");
    signal(&child, "-STOP");

    // Another machine takes the lock once the paused holder's lease ran out, refreshes and
    // writes; the record moves on.
    let client = machine(&srv, &redis, session).build().unwrap();
    let mut r = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    let mut conn = redis.conn();
    let moved = conn.generation(session);
    assert!(moved > before);
    assert_eq!(conn.lock_holder(session), None);

    signal(&child, "-CONT");
    stdin.write_all(b"go\n").unwrap();
    let report = wait_line(&lines, "REPORT");
    assert!(wait_exit(&mut child).success(), "{report}");

    // The record is the other machine's, never the paused holder's.
    assert_eq!(conn.access_token(session).unwrap(), "at-2");
    assert_eq!(conn.generation(session), moved);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    (report, srv, redis)
}

#[test]
fn a_holder_paused_past_its_lease_cannot_write_its_refresh() {
    let name = &test_name!(a_holder_paused_past_its_lease_cannot_write_its_refresh);
    if std::env::var_os(ROLE).is_some() {
        return holder();
    }
    let (report, _srv, _redis) = pause_a_holder(name, "holder-tokens");
    // Its write was refused once; it then adopted the newer record.
    assert_eq!(number(&report, "store_failed"), 1, "{report}");
    assert_eq!(field(&report, "last"), "at-2", "{report}");
    assert_eq!(number(&report, "session_expired"), 0, "{report}");
}

/// The holder's token call gets a 503; during the backoff it is paused (SIGSTOP) past its
/// lease, and another machine takes the lease and refreshes rt-1 (the server rotates it).
/// Resumed, the holder confirms its lease before the retry, finds it gone, makes no token
/// call, and adopts the other machine's tokens: the server saw rt-1 twice (the 503, the
/// other machine), never a third time. Caught the retry presenting rt-1 again (reuse: the
/// whole session revoked).
#[test]
fn a_holder_paused_past_its_lease_during_a_backoff_makes_no_token_call() {
    let name = &test_name!(a_holder_paused_past_its_lease_during_a_backoff_makes_no_token_call);
    if std::env::var_os(ROLE).is_some() {
        return holder();
    }
    let redis = RedisServer::start();
    let srv = TokenServer::start();
    let session = "fleet:backoff";
    stale_login(&srv, &redis, session);
    let unavailable = Fault::Unavailable { retry_after: None };
    srv.fault_next_token_calls(1, unavailable.clone());
    let mut child = spawn_child(name, "holder-503", &srv, &redis, session, &[]);
    let mut stdin: ChildStdin = child.stdin.take().unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    wait_line(&lines, "BACKING-OFF");
    signal(&child, "-STOP");

    // Another machine: it waits for the paused holder's lease to run out, then refreshes.
    let client = machine(&srv, &redis, session).build().unwrap();
    let mut r = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");

    signal(&child, "-CONT");
    stdin.write_all(b"go\n").unwrap();
    let report = wait_line(&lines, "REPORT");
    assert!(wait_exit(&mut child).success(), "{report}");
    // The holder's rt-1 (answered 503), then the other machine's rt-1; no third call.
    assert_eq!(
        srv.presented(),
        [Some(1), Some(1)],
        "holder (503), other machine"
    );
    assert_eq!(srv.token_calls()[0].outcome, Outcome::Faulted(unavailable));
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(field(&report, "first"), "at-2", "{report}");
    assert_eq!(number(&report, "session_expired"), 0, "{report}");
    assert_eq!(redis.conn().access_token(session).unwrap(), "at-2");
}

#[test]
fn a_holder_paused_past_its_lease_adopts_the_newer_record_on_invalid_grant() {
    let name = &test_name!(a_holder_paused_past_its_lease_adopts_the_newer_record_on_invalid_grant);
    if std::env::var_os(ROLE).is_some() {
        return holder();
    }
    let (report, _srv, _redis) = pause_a_holder(name, "holder-invalid-grant");
    // The refused refresh token did not end the session: the newer record was adopted and
    // the request that waited for the refresh went through with it.
    assert_eq!(field(&report, "first"), "at-2", "{report}");
    assert_eq!(number(&report, "session_expired"), 0, "{report}");
    assert_eq!(number(&report, "store_failed"), 0, "{report}");
}

// ---------------------------------------------------------------------------------------
// Redis stopped mid-run and started again
// ---------------------------------------------------------------------------------------

const RESTART_PROCESSES: usize = 3;
const RESTART_THREADS: usize = 4;
/// The children run until served `at-7`; Redis is stopped once `at-3` was minted.
const RESTART_TARGET: u64 = 7;
const RESTART_AT: u64 = 3;
/// How long Redis stays down: longer than a token lives, so refreshes are needed meanwhile.
const DOWNTIME: Duration = Duration::from_millis(1200);

#[test]
fn redis_restarted_mid_run_loses_no_session() {
    let name = &test_name!(redis_restarted_mid_run_loses_no_session);
    if std::env::var_os(ROLE).is_some() {
        return fleet_worker();
    }
    let mut redis = RedisServer::start();
    let srv = TokenServer::with_lifetime(LIFETIME);
    let session = "fleet:restart";
    let children = start_fleet(
        name,
        &srv,
        &redis,
        session,
        [RESTART_PROCESSES, RESTART_THREADS],
        RESTART_TARGET,
    );

    // Mid-run: once a few refreshes went through, stop Redis, leave it down for longer than
    // a token lives, and start it again (with its data, as a maintenance restart does).
    let deadline = Instant::now() + PARENT_TIME_LIMIT;
    while srv.issued() < RESTART_AT {
        assert!(
            Instant::now() < deadline,
            "hang guard: no refresh went through"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The stop is made while this test holds the session's lock, so that no refresh is
    // between its token call and its write when Redis goes away: a rotation whose write
    // never reached Redis is the loss no lock can prevent (see `RedisStore`'s docs).
    let mut conn = redis.conn();
    let lock_key = format!("{{{session}}}:lock");
    while conn.cmd(&["SET", &lock_key, "test", "NX", "PX", "30000"]) != Reply::Status("OK".into()) {
        assert!(
            Instant::now() < deadline,
            "hang guard: the lock was never free"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let minted_before_stop = srv.issued();
    redis.shut_down_saving();
    std::thread::sleep(DOWNTIME);
    redis.start_again();
    let mut conn = redis.conn();
    assert_eq!(
        conn.get(&lock_key).as_deref(),
        Some("test"),
        "the data survived"
    );
    conn.cmd(&["DEL", &lock_key]);

    let reports = reports_of(children);
    let minted_after_login = srv.issued() - 1;
    eprintln!(
        "Redis restarted under {RESTART_PROCESSES} processes x {RESTART_THREADS} threads: \
         refresh calls {}, generations minted after login {minted_after_login} ({} before the \
         stop), reuse detected {}; per process {reports:?}",
        srv.refreshes(),
        minted_before_stop,
        srv.reuse_detected()
    );
    for r in &reports {
        // Requests failed only while a refresh needed Redis and it was down.
        assert_eq!(number(r, "failed_other"), 0, "{r}");
        assert!(number(r, "ok") > 0, "{r}");
        // The session went on after the restart, to the target generation.
        assert!(number(r, "max_generation") >= RESTART_TARGET, "{r}");
    }
    assert_one_refresh_per_expiry(&srv, &reports);
}
