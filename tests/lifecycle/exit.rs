//! Issue 10, item 1: a tool that ends during a background refresh keeps the rotated refresh
//! token; a hung refresher does not keep the cross-process lock when the client goes away.
//!
//! The tool runs are real processes: the test re-executes its own binary
//! (`current_exe() <module>::<test> --exact`, the name from `test_name!`) with
//! `TOKENGATE_TEST_ROLE` set; the parent owns the rotating token server (reuse of a rotated
//! refresh token revokes the whole session), whose token endpoint answers 400 ms after
//! rotating.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::closing_log::closing_marked_on;
use crate::harness::fixtures::TempDir;
use crate::harness::observe::{
    body_json, is_refreshed, must_not_block, test_name, Recorder, HANG_GUARD,
};
use crate::harness::servers::TokenServer;
use tokengate::ureq::Agent;
use tokengate::{AuthClient, AuthServer, Error, Event, FileStore, TokenStore, Tokens};

const ROLE: &str = "TOKENGATE_TEST_ROLE";
const URL: &str = "TOKENGATE_TEST_URL";
const TOKEN_URL: &str = "TOKENGATE_TEST_TOKEN_URL";
/// Where the child asks how many refresh calls the parent's server has received.
const CALLS_URL: &str = "TOKENGATE_TEST_CALLS_URL";
const FILE: &str = "TOKENGATE_TEST_FILE";
const RUN_MS: &str = "TOKENGATE_TEST_RUN_MS";
/// How late the token endpoint answers after rotating.
const TOKEN_DELAY: Duration = Duration::from_millis(400);

fn client_for(path: &Path) -> AuthClient {
    builder_for(path).build().unwrap()
}

/// A client as a run of the tool builds it, from the URLs the parent passed.
fn builder_for(path: &Path) -> tokengate::AuthClientBuilder {
    let url = std::env::var(URL).unwrap();
    let token_url = std::env::var(TOKEN_URL).unwrap();
    AuthClient::builder(format!("{url}/api/"))
        .proxy(None)
        .refresher(
            AuthServer::new(token_url)
                .client_id("test-app")
                .client_secret("test-secret")
                .refresh_grant(),
        )
        .store(FileStore::new(path).unwrap())
}

/// Runs this test binary's test `name` as a child process ("a run of the tool").
fn run_tool(name: &str, role: &str, srv: &TokenServer, path: &Path, run_ms: u64) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(URL, srv.base_url())
        .env(TOKEN_URL, srv.token_url())
        .env(CALLS_URL, srv.counters_url())
        .env(FILE, path)
        .env(RUN_MS, run_ms.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tool run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Tokens the server knows, stored as if received 90 s ago with a 100 s lifetime: a run of
/// the tool starts inside the refresh window, so its first request starts a background
/// refresh (the token is still valid: the request does not wait for it).
fn store_login_inside_the_refresh_window(srv: &TokenServer, path: &Path) {
    let login = srv.login();
    let now = SystemTime::now();
    let tokens = Tokens::new(login.access_token().secret())
        .with_refresh_token(login.refresh_token().unwrap().secret())
        .with_issued_at(now - Duration::from_secs(90))
        .with_expires_at(now + Duration::from_secs(10));
    FileStore::new(path).unwrap().save(&tokens).unwrap();
}

/// One request, then the end of the tool: either `main` returns (the client is dropped) or
/// the tool calls `close()` and `std::process::exit`. The tool ends as soon as the background
/// refresh has started its token call (it does not wait for the answer).
fn short_tool(close_and_exit: bool) {
    let path = PathBuf::from(std::env::var_os(FILE).unwrap());
    let (tx, started) = mpsc::channel();
    let tx = Mutex::new(tx);
    let client = builder_for(&path)
        .on_event(move |e| {
            if matches!(e, Event::RefreshStarted { .. }) {
                let _ = tx.lock().unwrap().send(());
            }
        })
        .build()
        .unwrap();
    let mut resp = client.get("items").call().unwrap();
    println!("TOKEN {}", body_json(&mut resp)["token"].as_str().unwrap());
    if std::env::var(ROLE).unwrap() == "refreshing tool" {
        started.recv_timeout(HANG_GUARD).unwrap();
        // `RefreshStarted` comes before the lock check that precedes the token call, and a
        // close() landing there makes no call at all: end only once the call has arrived.
        wait_for_a_token_call();
    }
    if close_and_exit {
        client.close().unwrap();
        std::process::exit(0);
    }
}

/// Waits (at most `HANG_GUARD`) until the parent's token server has received a refresh call.
fn wait_for_a_token_call() {
    let url = std::env::var(CALLS_URL).unwrap();
    let agent: Agent = Agent::config_builder().proxy(None).build().into();
    let end = Instant::now() + HANG_GUARD;
    loop {
        let text = agent.get(&url).call().unwrap().body_mut().read_to_string();
        let counters: tokengate::testing::Counters = serde_json::from_str(&text.unwrap()).unwrap();
        if counters.refreshes != 0 {
            return;
        }
        assert!(Instant::now() < end, "no token call arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_the_session_survives_the_early_exit(test: &str) {
    let srv = TokenServer::with_lifetime_and_delay(Duration::from_secs(3600), TOKEN_DELAY);
    let dir = TempDir::new(&test.replace("::", "-"));
    let path = dir.path("tokens.json");
    store_login_inside_the_refresh_window(&srv, &path);

    // The run sends rt-1 in the background and ends long before the 400 ms answer: the
    // server rotates, so only a client that waits for the answer keeps the session.
    let out = run_tool(test, "refreshing tool", &srv, &path, 0);
    assert!(out.contains("TOKEN at-1"), "{out}");
    assert_eq!(srv.refreshes(), 1);
    let saved = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(
        saved.refresh_token().unwrap().secret(),
        "rt-2",
        "the rotated refresh token was saved before the tool ended"
    );

    // The next run works with it: no reuse, no logout.
    let out = run_tool(test, "tool", &srv, &path, 0);
    assert!(out.contains("TOKEN at-2"), "{out}");
    assert_eq!(srv.reuse_detected(), 0);
    let saved = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert!(
        srv.is_active(saved.refresh_token().unwrap().secret()),
        "the session lives on"
    );
    drop(dir);
}

#[test]
fn a_tool_returning_from_main_during_a_background_refresh_keeps_the_rotated_token() {
    if std::env::var_os(ROLE).is_some() {
        return short_tool(false);
    }
    assert_the_session_survives_the_early_exit(&test_name!(
        a_tool_returning_from_main_during_a_background_refresh_keeps_the_rotated_token
    ));
}

#[test]
fn a_tool_calling_close_then_process_exit_keeps_the_rotated_token() {
    if std::env::var_os(ROLE).is_some() {
        return short_tool(true);
    }
    assert_the_session_survives_the_early_exit(&test_name!(
        a_tool_calling_close_then_process_exit_keeps_the_rotated_token
    ));
}

/// A tool run of `RUN_MS` milliseconds: two threads make requests until the time is up,
/// then `main` returns, whatever is in flight.
fn timed_tool() {
    let path = PathBuf::from(std::env::var_os(FILE).unwrap());
    let run = Duration::from_millis(std::env::var(RUN_MS).unwrap().parse().unwrap());
    let client = client_for(&path);
    let end = Instant::now() + run;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while Instant::now() < end {
                    match client.get("items").call() {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (ok, failed)
            })
        })
        .collect();
    for t in threads {
        let (ok, failed) = t.join().unwrap();
        println!("OK {ok}");
        for f in failed {
            println!("FAILED {f}");
        }
    }
}

#[test]
fn tool_runs_of_random_length_never_lose_the_session() {
    if std::env::var_os(ROLE).is_some() {
        return timed_tool();
    }
    // 1 s tokens (the client refreshes them from 0.375 s on, in the background), answered
    // 400 ms after rotating: most runs end with a refresh on the wire.
    let srv = TokenServer::with_lifetime_and_delay(Duration::from_secs(1), TOKEN_DELAY);
    let dir = TempDir::new("exit-random-runs");
    let path = dir.path("tokens.json");
    FileStore::new(&path).unwrap().save(&srv.login()).unwrap();

    // A fixed seed: the lengths are arbitrary but the test is repeatable.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut lengths = Vec::new();
    for run in 0..6 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_ms = 300 + seed % 2200;
        lengths.push(run_ms);
        let out = run_tool(
            &test_name!(tool_runs_of_random_length_never_lose_the_session),
            "tool",
            &srv,
            &path,
            run_ms,
        );
        let ok: u64 = out
            .lines()
            .filter_map(|l| l.strip_prefix("OK "))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
        assert!(ok > 0, "run {run} ({run_ms} ms) made no request: {out}");
        assert!(failed.is_empty(), "run {run} ({run_ms} ms): {failed:?}");
        // Whatever the run was doing when it ended, the file holds the server's current
        // refresh token (of the one login, not revoked): nothing the server rotated was lost.
        let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
        assert!(
            srv.is_active(stored.refresh_token().unwrap().secret()),
            "run {run} ({run_ms} ms) lost a rotated refresh token"
        );
    }
    eprintln!(
        "runs of {lengths:?} ms: {} refresh calls, {} API calls, {} API 401s",
        srv.refreshes(),
        srv.api_requests(),
        srv.api_401s()
    );
    assert_eq!(
        srv.reuse_detected(),
        0,
        "a rotated refresh token was presented again"
    );
    assert!(srv.refreshes() >= 6, "the runs crossed refresh windows");
    drop(dir);
}

/// A custom refresher that reports each start and then hangs until released (at most twice
/// the hang guard), answering `late-access` / `late-refresh`.
struct Hanging {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl tokengate::Refresh for Hanging {
    fn refresh(&self, _: &Agent, _: &Tokens) -> Result<Tokens, tokengate::RefreshError> {
        self.started.lock().unwrap().send(()).unwrap();
        let _ = self.release.lock().unwrap().recv_timeout(HANG_GUARD * 2);
        Ok(Tokens::new("late-access").with_refresh_token("late-refresh"))
    }
}

/// A [`Hanging`] refresher, the receiver of its starts and the sender that releases it.
fn hanging_refresher() -> (Hanging, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let hung = Hanging {
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
    };
    (hung, started, release)
}

/// A client of `srv` whose refresher is `hung`, with one token call of 100 ms and no retries,
/// on a `FileStore` at `path` that waits `lock_wait` for its lock. A flight holds the lock
/// for at most the token call after a 2 s check of the lock, and the 2 s save allowance:
/// 4.1 s; its own lock wait is no part of that.
fn hung_client(srv: &TokenServer, path: &Path, hung: Hanging, lock_wait: Duration) -> AuthClient {
    AuthClient::builder(srv.api_url())
        .proxy(None)
        .token_timeout(Duration::from_millis(100))
        .retry(tokengate::RetryPolicy::none())
        .refresher(hung)
        .store(FileStore::new(path).unwrap().lock_timeout(lock_wait))
        .build()
        .unwrap()
}

/// Another process takes the store's lock at `path` within `wait`, and releases it.
fn another_process_locks_within(path: &Path, wait: Duration) {
    let other = FileStore::new(path).unwrap().lock_timeout(wait);
    let lock = other
        .lock()
        .expect("the lock within the other process's wait");
    drop(lock);
}

/// A custom refresher that hangs (until the test lets it go) holds the store's lock; the
/// last handle's drop gives up waiting after the token call's timeout and releases the lock,
/// so other processes can refresh. The hung refresher's late result is not written.
#[test]
fn dropping_the_client_releases_the_lock_held_by_a_hung_refresher() {
    let srv = TokenServer::start();
    let dir = TempDir::new("exit-hung");
    let path = dir.path("tokens.json");
    store_login_inside_the_refresh_window(&srv, &path);

    let (hung, started, release) = hanging_refresher();
    let events = Recorder::new();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .token_timeout(Duration::from_millis(100))
        .refresher(hung)
        .store(FileStore::new(&path).unwrap())
        .on_event(events.listener())
        .build()
        .unwrap();
    let mut resp = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut resp)["token"], "at-1");
    started.recv_timeout(HANG_GUARD).unwrap();

    // The refresher is stuck: dropping the last handle must come back, not hang…
    must_not_block("dropping the client", move || drop(client));
    // …and the lock is free for another process.
    let other = FileStore::new(&path)
        .unwrap()
        .lock_timeout(Duration::from_millis(50));
    let lock = other.lock().unwrap().unwrap();
    drop(lock);

    // When the refresher finally answers, its result reaches memory but not the file: the
    // lock it would have written under is gone.
    release.send(()).unwrap();
    events.wait_for("the late refresh", 1, is_refreshed);
    events.wait_for("its failed save", 1, |e| {
        matches!(e, Event::StoreFailed { .. })
    });
    let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "at-1");
    drop(dir);
}

/// A process that makes no more requests (nobody waits, nobody drops the client) while its
/// background refresh hangs in a custom refresher: once the flight outlives its bound, the
/// store's lock is taken away from it, and another process can refresh. Caught only waiters
/// and drop/close releasing a stuck lock (the other process's lock wait timed out).
#[test]
fn an_idle_process_does_not_keep_the_lock_of_a_hung_background_refresh() {
    let srv = TokenServer::start();
    let dir = TempDir::new("exit-hung-idle");
    let path = dir.path("tokens.json");
    store_login_inside_the_refresh_window(&srv, &path);

    let (hung, started, release) = hanging_refresher();
    let client = hung_client(&srv, &path, hung, Duration::from_millis(50));
    let mut resp = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut resp)["token"], "at-1");
    started.recv_timeout(HANG_GUARD).unwrap();

    // Another process waits for the lock (far longer than the flight's bound, never for
    // ever); the idle client must give it up.
    let other = FileStore::new(&path).unwrap().lock_timeout(HANG_GUARD);
    let lock = other
        .lock()
        .expect("the hung refresh's lock was released")
        .unwrap();
    drop(lock);
    // The late answer reaches memory, its write under the lost lock fails, and closing
    // retries it: the store did not change meanwhile, so the late tokens are saved.
    release.send(()).unwrap();
    client.close().unwrap();
    let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "late-access");
    drop(dir);
}

/// A background refresh whose store lock was taken away (it outlived its bound) makes no
/// further token call: another process may have refreshed with the same refresh token by
/// then. Here the first call, a retryable 503, comes back only after the lock was taken and
/// another process holds it. Caught the retry loop ignoring the lost lock (2 calls).
#[test]
fn a_refresh_that_lost_its_store_lock_makes_no_further_token_call() {
    let srv = TokenServer::start();
    let dir = TempDir::new("exit-lost-lock");
    let path = dir.path("tokens.json");
    store_login_inside_the_refresh_window(&srv, &path);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let other_path = path.clone();
    let events = Recorder::new();
    // Bound of a flight: lock wait 50 ms + two 100 ms token calls + one 10 ms backoff + the
    // save allowance.
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .token_timeout(Duration::from_millis(100))
        .retry(
            tokengate::RetryPolicy::new()
                .max_retries(1)
                .base_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(10)),
        )
        .refresher(move |_: &Agent, _: &Tokens| {
            if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                // Slow: by the time it answers, the lock was taken away and another process
                // holds it (and may be refreshing).
                let other = FileStore::new(&other_path)
                    .unwrap()
                    .lock_timeout(HANG_GUARD);
                let held = other.lock().expect("the lock was taken away").unwrap();
                drop(held);
            }
            Err(tokengate::RefreshError::Status {
                status: 503,
                retry_after: None,
            })
        })
        .store(
            FileStore::new(&path)
                .unwrap()
                .lock_timeout(Duration::from_millis(50)),
        )
        .on_event(events.listener())
        .build()
        .unwrap();
    let mut resp = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut resp)["token"], "at-1");
    events.wait_for("the background refresh to fail", 1, |e| {
        matches!(e, Event::RefreshFailed { .. })
    });
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a token call was made without the store's lock"
    );
    drop(client);
    drop(dir);
}

/// `close()` on the last handle waits for the refresh in flight and reports a failed save.
#[test]
fn close_waits_for_the_refresh_in_flight_and_reports_its_store_error() {
    struct FailingSaves(tokengate::MemoryStore);
    impl TokenStore for FailingSaves {
        fn load(&self) -> std::io::Result<Option<Tokens>> {
            self.0.load()
        }
        fn save(&self, _: &Tokens) -> std::io::Result<()> {
            Err(std::io::Error::other("read-only file system"))
        }
        fn clear(&self) -> std::io::Result<()> {
            self.0.clear()
        }
    }
    let srv = TokenServer::with_lifetime_and_delay(Duration::from_secs(3600), TOKEN_DELAY);
    let login = srv.login();
    let now = SystemTime::now();
    let store = FailingSaves(tokengate::MemoryStore::with_tokens(
        Tokens::new(login.access_token().secret())
            .with_refresh_token(login.refresh_token().unwrap().secret())
            .with_issued_at(now - Duration::from_secs(90))
            .with_expires_at(now + Duration::from_secs(10)),
    ));
    let events = Recorder::new();
    let client = srv
        .client_builder()
        .store(store)
        .on_event(events.listener())
        .build()
        .unwrap();
    client.get("items").call().unwrap(); // starts the background refresh
                                         // Once its token call is under way (a close before that stops it from starting): the
                                         // store error exists only once the answer arrived, so close waited for it.
    events.wait_for("the token call", 1, |e| {
        matches!(e, Event::RefreshStarted { .. })
    });
    let err = client.close().unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn closing_one_clone_leaves_the_others_refreshing() {
    // Only the last handle's close (or drop) stops new token calls; with clones alive,
    // `close` just waits for a refresh in flight.
    let srv = TokenServer::start();
    let client = srv.client_builder().tokens(srv.login()).build().unwrap();
    client.clone().close().unwrap();
    srv.revoke_access_tokens();
    let mut r = client.get("items").call().unwrap();
    assert_eq!(body_json(&mut r)["token"], "at-2");
    assert_eq!(srv.refreshes(), 1);
    client.close().unwrap();
}

/// The name of the closing thread of the test below: the closing log reports the moment it
/// marked the client closing (see `closing_log.rs`).
const CLOSER: &str = "closer during a backoff";

/// A sleeper whose first sleep reports itself and lasts until the test ends it.
struct GatedSleeper {
    slept: Mutex<mpsc::Sender<()>>,
    wake: Mutex<mpsc::Receiver<()>>,
    first: std::sync::atomic::AtomicBool,
}

impl tokengate::time::Sleeper for GatedSleeper {
    fn sleep(&self, _: Duration) {
        if self.first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let _ = self.slept.lock().unwrap().send(());
            let _ = self.wake.lock().unwrap().recv_timeout(HANG_GUARD);
        }
    }
}

/// Closing the last handle while a background refresh waits out a 503's backoff: the
/// refresh makes no new token call after the backoff (its answer, a rotated refresh token,
/// could arrive after the process is gone). Caught the retry loop checking `closing` only
/// before the backoff.
#[test]
fn closing_during_a_token_endpoint_backoff_makes_no_new_token_call() {
    let closing_rx = closing_marked_on(CLOSER);

    let srv = TokenServer::start();
    let login = srv.login();
    let now = SystemTime::now();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let (slept_tx, slept_rx) = mpsc::channel();
    let (wake_tx, wake_rx) = mpsc::channel();
    let client = srv
        .client_builder()
        .refresher(move |_: &Agent, _: &Tokens| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(tokengate::RefreshError::Status {
                status: 503,
                retry_after: None,
            })
        })
        .sleeper(GatedSleeper {
            slept: Mutex::new(slept_tx),
            wake: Mutex::new(wake_rx),
            first: std::sync::atomic::AtomicBool::new(true),
        })
        .tokens(
            // Inside the refresh window, still valid: the request starts a background refresh.
            Tokens::new(login.access_token().secret())
                .with_refresh_token(login.refresh_token().unwrap().secret())
                .with_issued_at(now - Duration::from_secs(90))
                .with_expires_at(now + Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    client.get("items").call().unwrap();
    slept_rx
        .recv_timeout(HANG_GUARD)
        .expect("the background refresh got a 503 and backs off");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    let closer = std::thread::Builder::new()
        .name(CLOSER.to_owned())
        .spawn(move || client.close())
        .unwrap();
    closing_rx
        .recv_timeout(HANG_GUARD)
        .expect("close marks the client closing");
    wake_tx.send(()).unwrap(); // the backoff ends
    let closed = closer.join().unwrap();
    assert!(closed.is_ok(), "{closed:?}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a token call was made after the client was closed"
    );
}

/// `close()` on the last handle waits for a hung refresh once: the documented bound (the
/// token timeout + 2 s) and no more, so at least the bound and less than twice it. Caught
/// `close()` shutting down again from its own handle's drop (twice the bound; with a shared
/// store's lock wait, up to 180 s more).
#[test]
fn close_waits_for_a_hung_refresh_once() {
    let srv = TokenServer::start();
    let dir = TempDir::new("exit-close-once");
    let path = dir.path("tokens.json");
    store_login_inside_the_refresh_window(&srv, &path);
    let (hung, started, release) = hanging_refresher();
    let token_timeout = Duration::from_millis(200);
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .token_timeout(token_timeout)
        .refresher(hung)
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    client.get("items").call().unwrap(); // starts the background refresh, which hangs
    started.recv_timeout(HANG_GUARD).unwrap();

    let bound = token_timeout + Duration::from_secs(2);
    let t = Instant::now();
    let err = client.close().unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, Error::RefreshTimeout(b) if b == bound),
        "{err:?}"
    );
    assert!(took >= bound, "{took:?}");
    assert!(
        took < bound * 2,
        "close() waited {took:?}, more than once {bound:?}"
    );
    release.send(()).unwrap();
    drop(dir);
}

/// A background refresh hung in a custom refresher holds the store's lock no longer than
/// its token calls, backoffs and save may take, counted from when it got the lock: less
/// than another process waits for the lock, so that process gets it. Caught the bound being
/// counted from the lock while including the lock wait (and checked a quarter of it late):
/// the other process's wait of 8 s timed out.
#[test]
fn a_hung_background_refresh_holds_the_lock_less_long_than_another_process_waits_for_it() {
    let srv = TokenServer::start();
    let dir = TempDir::new("exit-hung-hold");
    let path = dir.path("tokens.json");
    store_login_inside_the_refresh_window(&srv, &path);
    let (hung, started, release) = hanging_refresher();
    let client = hung_client(&srv, &path, hung, Duration::from_secs(10));
    client.get("items").call().unwrap();
    started.recv_timeout(HANG_GUARD).unwrap();

    another_process_locks_within(&path, Duration::from_secs(8));
    release.send(()).unwrap();
    drop(client);
    drop(dir);
}

/// The same for a refresh on a request's thread (the token expired, so the request itself
/// leads the refresh, and hangs with it): it holds the store's lock no longer than its
/// bound, and another process gets it within its wait. Caught only background refreshes
/// being watched (the other process's wait timed out).
#[test]
fn a_hung_refresh_on_a_requests_thread_holds_the_lock_less_long_than_another_process_waits_for_it()
{
    let srv = TokenServer::start();
    let dir = TempDir::new("exit-hung-hold-request");
    let path = dir.path("tokens.json");
    let login = srv.login();
    let now = SystemTime::now();
    let expired = Tokens::new(login.access_token().secret())
        .with_refresh_token(login.refresh_token().unwrap().secret())
        .with_issued_at(now - Duration::from_secs(100))
        .with_expires_at(now - Duration::from_secs(1));
    FileStore::new(&path).unwrap().save(&expired).unwrap();
    let (hung, started, release) = hanging_refresher();
    let client = hung_client(&srv, &path, hung, Duration::from_secs(10));
    let c = client.clone();
    let request = std::thread::spawn(move || c.get("items").call().map(drop));
    started.recv_timeout(HANG_GUARD).unwrap();

    another_process_locks_within(&path, Duration::from_secs(8));
    release.send(()).unwrap();
    let _ = request.join().unwrap();
    drop(client);
    drop(dir);
}

/// A client whose token calls may take forever still closes: the bounds saturate instead of
/// overflowing (a panic in `Drop`).
#[test]
fn a_client_with_unbounded_token_calls_closes_without_overflow() {
    let client = AuthClient::builder("http://127.0.0.1:9/api/")
        .proxy(None)
        .token_timeout(Duration::MAX)
        .tokens(Tokens::new("at"))
        .build()
        .unwrap();
    client.clone().close().unwrap();
    client.close().unwrap();
}
