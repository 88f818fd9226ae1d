//! 4 processes × 8 threads share one token file against a server that rotates refresh tokens
//! and revokes the session on reuse: one refresh per expiry window, and every failed request
//! explained (none is, unless the machine stalls a thread for most of a token's lifetime).
//!
//! "One refresh per expiry" is checked from the server's record: every token call minted a
//! generation (none was rejected or reused), and every call arrived at least ¾ of a lifetime
//! after the generation it presented was minted, i.e. no process refreshed a generation
//! before it was due, so no expiry was refreshed twice.
//!
//! The test re-executes its own binary (`current_exe() <module>::<test> --exact`, the name
//! from `test_name!`) with `TOKENGATE_TEST_ROLE=child` for each process; the parent owns the
//! token server.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::observe::{body_json, child_test, test_name, FILE, ROLE, URL};
use crate::harness::servers::TokenServer;
use tokengate::testing::ApiCall;
use tokengate::{Event, FileStore};

const PROCESSES: usize = 4;
const THREADS: usize = 8;
/// Server-side lifetime of an access token. The client refreshes proactively at 75% of it.
const LIFETIME: Duration = Duration::from_millis(400);
/// Every child runs until it has been served a token of this generation (`at-7`: the login
/// was `at-1`, so six refreshes, six expiry windows), ~2 s.
const TARGET_GENERATION: u64 = 7;
/// Bounds that only a bug reaches.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(30);
const PARENT_TIME_LIMIT: Duration = Duration::from_secs(60);
const MAX_REQUESTS_PER_THREAD: u64 = 20_000;
const MAX_FAILURES_PER_THREAD: u64 = 20;

#[test]
fn processes_sharing_a_file_store_refresh_once_per_expiry() {
    if std::env::var_os(ROLE).is_some() {
        return child();
    }
    let srv = TokenServer::with_lifetime(LIFETIME);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("file_store_multiprocess-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tokens.json");

    // The login, as a CLI's `login` command would save it.
    srv.client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();

    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            child_test(
                &test_name!(processes_sharing_a_file_store_refresh_once_per_expiry),
                "child",
            )
            .env(URL, srv.base_url())
            .env(FILE, &path)
            .spawn()
            .unwrap()
        })
        .collect();
    let reports = wait_all(children);
    let _ = std::fs::remove_dir_all(&dir);

    let api_calls = srv.api_calls();
    let minted_after_login = srv.issued() - 1;
    eprintln!(
        "{PROCESSES} processes x {THREADS} threads: refresh calls {}, generations minted after login {}, \
         api calls {}, api 401s {}, reuse detected {}; per process {:?}",
        srv.refreshes(),
        minted_after_login,
        api_calls.len(),
        srv.api_401s(),
        srv.reuse_detected(),
        reports
    );
    // Every failed request is explained: it ended in a 401 for a token that had expired by the
    // time the server read it, after an earlier 401 for an older one. That is, the thread was
    // descheduled for most of a 400 ms lifetime between getting the refreshed token and the
    // server reading it. On a quiet machine there are none.
    let mut unexplained = Vec::new();
    for r in &reports {
        assert!(r.max_generation >= TARGET_GENERATION, "{r:?}");
        assert_eq!(r.ok + r.failed, r.requests, "{r:?}");
        assert_eq!(r.failures.len() as u64, r.failed, "{r:?}");
        for (id, error) in &r.failures {
            let attempts: Vec<&ApiCall> = api_calls
                .iter()
                .filter(|c| c.request_id.as_deref() == Some(id.as_str()))
                .collect();
            let explained = error == "unauthorized"
                && attempts.split_last().is_some_and(|(last, earlier)| {
                    last.status == 401
                        && last.expired
                        && earlier
                            .iter()
                            .any(|x| x.status == 401 && x.generation < last.generation)
                });
            if !explained {
                unexplained.push(format!("{id}: {error} (server saw {attempts:?})"));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "unexplained failures: {unexplained:#?}"
    );
    assert_eq!(
        srv.reuse_detected(),
        0,
        "no refresh token was ever presented twice"
    );
    // The session lives: the newest refresh token is its current one.
    assert!(srv.is_active(&format!("rt-{}", srv.issued())));
    // Each expiry window is one token generation: the server mints exactly one new generation
    // per successful refresh call, and a refresh that reused a rotated token or lost a race
    // would be a call that minted nothing.
    assert_eq!(srv.refreshes(), minted_after_login);
    // No generation was refreshed before it was due.
    srv.assert_no_generation_refreshed_before_due(LIFETIME);
    // The children ran until they were served generation TARGET_GENERATION: the run covered
    // at least that many windows.
    assert!(minted_after_login >= TARGET_GENERATION - 1);
    // Every call the server saw was started by exactly one process (the others adopted).
    let started: u64 = reports.iter().map(|r| r.refreshes_started).sum();
    assert_eq!(started, srv.refreshes());
}

/// What one child process reports on its last line of output.
#[derive(Debug)]
struct Report {
    requests: u64,
    ok: u64,
    failed: u64,
    refreshes_started: u64,
    max_generation: u64,
    /// (request id, error kind) of every failed request.
    failures: Vec<(String, String)>,
}

fn wait_all(mut children: Vec<Child>) -> Vec<Report> {
    let deadline = Instant::now() + PARENT_TIME_LIMIT;
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        if Instant::now() > deadline {
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("child processes did not finish within {PARENT_TIME_LIMIT:?}");
        }
        for (c, s) in children.iter_mut().zip(&mut statuses) {
            if s.is_none() {
                *s = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .iter_mut()
        .zip(statuses)
        .map(|(c, status)| {
            let mut out = String::new();
            c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            assert!(status.unwrap().success(), "child failed: {out}");
            parse_report(&out)
        })
        .collect()
}

fn parse_report(out: &str) -> Report {
    let line = out
        .lines()
        .find_map(|l| Some(l.split_once("REPORT ")?.1))
        .unwrap_or_else(|| panic!("no report in child output: {out}"));
    let field = |name: &str| -> u64 {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    Report {
        requests: field("requests"),
        ok: field("ok"),
        failed: field("failed"),
        refreshes_started: field("refreshes_started"),
        max_generation: field("max_generation"),
        failures: out
            .lines()
            .filter_map(|l| l.split_once("FAILURE ")?.1.split_once(' '))
            .map(|(id, kind)| (id.to_owned(), kind.to_owned()))
            .collect(),
    }
}

/// One process: M threads making requests through one client whose tokens live in the
/// shared file, until each has been served a token of `TARGET_GENERATION` (or a time limit).
fn child() {
    let url = std::env::var(URL).unwrap();
    let path = PathBuf::from(std::env::var_os(FILE).unwrap());
    let started = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&started);
    let client = TokenServer::client_builder_at(&url)
        .store(FileStore::new(&path).unwrap())
        .on_event(move |e| {
            if matches!(e, Event::RefreshStarted { .. }) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();

    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || {
                let (mut requests, mut ok, mut failed, mut max_gen) = (0u64, 0u64, 0u64, 0u64);
                let mut failures = Vec::new();
                while max_gen < TARGET_GENERATION
                    && failed < MAX_FAILURES_PER_THREAD
                    && requests < MAX_REQUESTS_PER_THREAD
                    && Instant::now() < deadline
                {
                    requests += 1;
                    let id = format!("{}-{i}-{requests}", std::process::id());
                    match client.get("items").header("x-request-id", &id).call() {
                        Ok(mut resp) => {
                            ok += 1;
                            let token = body_json(&mut resp)["token"].as_str().unwrap().to_owned();
                            let generation: u64 =
                                token.strip_prefix("at-").unwrap().parse().unwrap();
                            max_gen = max_gen.max(generation);
                        }
                        Err(e) => {
                            failed += 1;
                            let kind = match e {
                                tokengate::Error::Unauthorized => "unauthorized".to_owned(),
                                other => format!("{other:?}").replace(' ', "_"),
                            };
                            failures.push((id, kind));
                        }
                    }
                    // Staggered pacing: requests keep arriving throughout each window.
                    std::thread::sleep(Duration::from_millis(3 + (i as u64 + requests) % 5));
                }
                (requests, ok, failed, max_gen, failures)
            })
        })
        .collect();
    let (mut requests, mut ok, mut failed, mut max_gen) = (0, 0, 0, u64::MAX);
    for t in threads {
        let (r, o, f, g, failures) = t.join().unwrap();
        for (id, kind) in failures {
            println!("FAILURE {id} {kind}");
        }
        requests += r;
        ok += o;
        failed += f;
        max_gen = max_gen.min(g);
    }
    println!(
        "REPORT requests={requests} ok={ok} failed={failed} refreshes_started={} max_generation={max_gen}",
        started.load(Ordering::SeqCst)
    );
}
