//! Fail closed: a refresh the token endpoint answered (it rotated the refresh token) but a
//! shared store could not take (a full disk) keeps the store's lock until it is written.
//!
//! While the lock is kept, the client serves its own requests with the fresh tokens in
//! memory and retries the write on its `tokengate-keep` thread; every other client or
//! process that wants to refresh waits for the lock (its lock timeout), and never reads the
//! old record and presents the spent refresh token, which a server with reuse detection
//! answers by revoking the whole session. Once the write succeeds the lock is released and
//! the others adopt the record. Closing the client while the write still fails releases
//! the lock: the rotation it could not save is lost (the documented residual).
//!
//! - in one process, two clients on one token file, each with its own `FileStore` (separate
//!   `FileStore`s coordinate through the lock file as processes do), writes failing on
//!   purpose (`FailingWrites`);
//! - in real processes (the test re-executes its own binary, as
//!   `file_store_multiprocess.rs` does), on a real 64 KiB tmpfs filled up, so the write
//!   fails with ENOSPC;
//! - closing while the write still fails.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::harness::fixtures::{FailingWrites, TempDir};
use crate::harness::observe::{
    child_test, test_name, token_of, wait_until, Recorder, FILE, HANG_GUARD, ROLE, URL,
};
use crate::harness::servers::TokenServer;
use tokengate::{AuthClient, Error, Event, FileStore, RefreshError, TokenStore};

/// The lock timeout of the client that must wait for the kept lock: short, so its refresh
/// gives up quickly; the holder keeps the lock however long that is.
const SHORT_LOCK_TIMEOUT: Duration = Duration::from_millis(300);

/// The refresh token the token file at `path` holds (read without its lock).
fn stored_refresh_token(path: &Path) -> Option<String> {
    let tokens = FileStore::new(path).unwrap().load().unwrap()?;
    Some(tokens.refresh_token()?.secret().to_owned())
}

/// Whether `e` is a refresh that gave up waiting for the store's lock: transient, and no
/// token call was made.
fn is_lock_timeout(e: &Error) -> bool {
    matches!(e, Error::Refresh(r)
        if matches!(&**r, RefreshError::Store(io) if io.kind() == io::ErrorKind::TimedOut))
}

/// Asserts that B's refresh failed with `e` because it waited for the lock A keeps (and not
/// because it presented a spent refresh token: the message says how often `srv` detected
/// reuse).
#[track_caller]
fn assert_waited_for_the_kept_lock(e: &Error, srv: &TokenServer) {
    assert!(
        is_lock_timeout(e),
        "B's refresh must wait for the kept lock, got {e:?} (the server detected reuse {} time(s))",
        srv.reuse_detected()
    );
}

/// Failed writes reported on the thread named `thread`.
fn failed_writes_on(events: &Recorder, thread: &str) -> usize {
    events
        .on_thread(thread)
        .iter()
        .filter(|e| matches!(e, Event::StoreFailed { .. }))
        .count()
}

/// Failed writes reported on this thread (a request's or a close's try; the retry thread that
/// keeps the lock logs its tries, it does not report them).
fn failed_writes_here(events: &Recorder) -> usize {
    failed_writes_on(events, std::thread::current().name().unwrap_or("unnamed"))
}

/// Takes the lock of the token file at `path` with a fresh `FileStore` (as another process
/// would), waiting at most `HANG_GUARD`, and releases it: panics if it stays held.
fn assert_lock_free(path: &Path, why: &str) {
    let store = FileStore::new(path).unwrap().lock_timeout(HANG_GUARD);
    match store.lock() {
        Ok(lock) => drop(lock),
        Err(e) => panic!("{why}: the store's lock is still held: {e}"),
    }
}

/// Client A (its writes can be made to fail) and client B (lock timeout
/// `SHORT_LOCK_TIMEOUT`), each with its own `FileStore` on the token file at `path`, logged
/// in by A (`at-1`/`rt-1`, written). Returns A, its switch, its events, and B.
fn two_clients(
    srv: &TokenServer,
    path: &Path,
) -> (AuthClient, Arc<AtomicBool>, Recorder, AuthClient) {
    let (store, fail) = FailingWrites::new(FileStore::new(path).unwrap());
    let events = Recorder::new();
    let a = srv
        .client_builder()
        .store(store)
        .on_event(events.listener())
        .tokens(srv.login())
        .build()
        .unwrap();
    assert_eq!(stored_refresh_token(path).as_deref(), Some("rt-1"));
    let b = srv
        .client_builder()
        .store(
            FileStore::new(path)
                .unwrap()
                .lock_timeout(SHORT_LOCK_TIMEOUT),
        )
        .build()
        .unwrap();
    assert_eq!(token_of(&b), "at-1");
    (a, fail, events, b)
}

/// A refreshes (`rt-1` → `rt-2` at the server) and cannot write; B then needs a refresh (its
/// `at-1` is rejected with a 401, and a forced refresh): both attempts fail with a transient
/// error after B's lock timeout (A keeps the lock) and make no token call, while A's requests
/// go on with `at-2`. Once writes work again, A's `tokengate-keep` thread writes `rt-2` and
/// releases the lock, and B adopts `at-2` with no token call: one refresh, no reuse.
///
/// Caught: releasing the lock right after the failed write (the code before fail-closed, at
/// 2340986). B then took the lock, read the old record, presented the spent `rt-1`, and the
/// server revoked the session (`reuse_detected` 1, B's request `SessionExpired`). Also
/// catches a kept lock that is never retried or never released (the hang guards), and a
/// client that stops serving its own requests while it keeps the lock.
#[test]
fn a_refresh_that_cannot_be_written_keeps_the_lock_until_it_is_written() {
    let srv = TokenServer::start();
    let dir = TempDir::new("keep_lock-in-process");
    let path = dir.path("tokens.json");
    let (a, fail, events, b) = two_clients(&srv, &path);

    // A's write fails: at-2 / rt-2 live in A's memory only, the file still holds rt-1.
    fail.store(true, SeqCst);
    a.force_refresh().unwrap();
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.presented(), vec![Some(1)]);
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));
    assert_eq!(
        failed_writes_here(&events),
        1,
        "the refresh's own write failed once"
    );

    // B's at-1 is rejected: its refresh waits for the lock, gives up, and calls nobody.
    assert!(srv.revoke("at-1"));
    let e = b.get("items").call().unwrap_err();
    assert_waited_for_the_kept_lock(&e, &srv);
    assert!(e.is_transient(), "{e:?}");
    let e = b.force_refresh().unwrap_err();
    assert_waited_for_the_kept_lock(&e, &srv);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    assert!(b.tokens().is_some(), "B's session goes on");

    // A goes on with the tokens it holds.
    assert_eq!(token_of(&a), "at-2");
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));

    // Space again: the keeper writes rt-2 and releases the lock.
    fail.store(false, SeqCst);
    wait_until("the kept refresh written", || {
        stored_refresh_token(&path).as_deref() == Some("rt-2")
    });
    assert_lock_free(&path, "after the kept refresh was written");

    // B adopts A's tokens: no token call, no reuse.
    assert_eq!(token_of(&b), "at-2");
    assert_eq!(token_of(&a), "at-2");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.presented(), vec![Some(1)]);
    assert_eq!(srv.reuse_detected(), 0);
    assert!(srv.is_active("rt-2"), "the session lives on");
    a.close().unwrap();
    b.close().unwrap();
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-2"));
}

/// A keeps the lock for a refresh it cannot write (B's refresh times out on it and makes no
/// token call); then `A.close()` tries the write once more (on the closing thread), fails,
/// returns `Error::Store`, and releases the lock: a third `FileStore` takes it, and B's next
/// refresh proceeds.
///
/// The documented residual: a process that ends with a rotation it could not write loses
/// it. The file still holds the spent `rt-1`, so B's refresh presents it and the server,
/// which detects reuse, ends the session (`reuse_detected` 1). This test pins that: if
/// closing ever keeps the rotation (e.g. waits for space), the counts here change on purpose.
///
/// Caught: a close that keeps the lock after its last try (every other process would wait
/// for it until the process exits, or forever while a keeper thread outlives the client),
/// a close that hangs on the kept lock, and a close that reports success for tokens it
/// never wrote. The first half (B times out while A lives) fails at 2340986, where the lock
/// was released at once.
#[test]
fn closing_while_the_write_still_fails_releases_the_kept_lock() {
    let srv = TokenServer::start();
    let dir = TempDir::new("keep_lock-close");
    let path = dir.path("tokens.json");
    let (a, fail, events, b) = two_clients(&srv, &path);

    fail.store(true, SeqCst);
    a.force_refresh().unwrap();
    let e = b.force_refresh().unwrap_err();
    assert_waited_for_the_kept_lock(&e, &srv);
    assert_eq!(srv.refreshes(), 1);

    // Closed with the disk still full: one more try, which fails, then the lock is released.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("closing-a".into())
        .spawn(move || tx.send(a.close()).unwrap())
        .unwrap();
    let closed = rx
        .recv_timeout(HANG_GUARD)
        .expect("closing A while its write fails blocked");
    assert!(matches!(closed, Err(Error::Store(_))), "{closed:?}");
    assert_eq!(
        failed_writes_on(&events, "closing-a"),
        1,
        "close tried the write once more"
    );
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));
    assert_lock_free(&path, "after A was closed");

    // B's refresh proceeds. The rotation A could not write is lost: B presents rt-1 again.
    let refreshed = b.force_refresh();
    assert!(
        matches!(refreshed, Err(Error::SessionExpired)),
        "{refreshed:?}"
    );
    assert_eq!(srv.refreshes(), 2);
    assert_eq!(srv.presented(), vec![Some(1), Some(1)]);
    assert_eq!(srv.reuse_detected(), 1, "the documented residual");
    b.close().unwrap();
}

// --- Real processes on a real full disk ------------------------------------------------

const COORD: &str = "TOKENGATE_TEST_COORD";

/// Bounds that only a bug (or a machine stalled for most of a minute) reaches.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(60);
const PARENT_TIME_LIMIT: Duration = Duration::from_secs(120);

/// The contender's lock timeout: it tries for this long while the holder keeps the lock.
const CONTENDER_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Marker files in the coordination directory (not on the full disk).
const HOLDER_REFRESHED: &str = "holder-refreshed";
const HOLDER_KEEPING: &str = "holder-keeping";
const CONTENDER_REFUSED: &str = "contender-refused";

/// The reproduction, in real processes on a real full disk: the token file on a
/// 64 KiB tmpfs, logged in (`rt-1`), then the tmpfs filled up. The holder process refreshes
/// (`rt-1` → `rt-2` at the server); its write fails with ENOSPC and it keeps the lock. The
/// contender process, whose `at-1` the API now rejects, tries to refresh: it times out on the
/// lock (its lock timeout 1 s) and makes no token call while the holder lives. The parent
/// then removes the filler: the holder's keeper writes `rt-2` and releases the lock (the
/// holder takes it once more through a `FileStore` of its own to show it), and the contender
/// adopts `at-2`. Both end holding the session: one refresh for the expiry, no reuse.
///
/// Caught: releasing the lock after the failed write (2340986): the contender took it at
/// once, read `rt-1`, presented it, and the server revoked the session. Also a lock kept
/// forever (the holder's and contender's bounded waits), and a write that is never retried
/// once there is space again.
///
/// Needs root (`mount -t tmpfs`); fails, with the reason, where mounting is not possible.
#[test]
fn a_full_disk_never_lets_another_process_present_the_spent_refresh_token() {
    match std::env::var(ROLE).as_deref() {
        Ok("holder") => return holder(),
        Ok("contender") => return contender(),
        Ok(other) => panic!("unknown role {other:?}"),
        Err(_) => {}
    }
    let srv = TokenServer::start();
    let dir = TempDir::new("keep_lock-full-disk");
    let coord = dir.path("coord");
    std::fs::create_dir(&coord).unwrap();
    // Declared after `dir`: unmounted before the directory is removed.
    let disk = Tmpfs::mount(dir.path("disk"));
    let path = disk.dir.join("tokens.json");

    // The login, as a CLI's `login` command would save it.
    srv.client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));
    let filler = disk.fill();

    let mut children = Children::default();
    let spawn = |role| {
        child_test(
            &test_name!(a_full_disk_never_lets_another_process_present_the_spent_refresh_token),
            role,
        )
        .env(URL, srv.base_url())
        .env(FILE, &path)
        .env(COORD, &coord)
        .spawn()
        .unwrap()
    };

    children.0.push(("holder", spawn("holder")));
    children.wait_for_marker(&coord, HOLDER_REFRESHED);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.presented(), vec![Some(1)]);
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));

    // The contender's access token is rejected: it needs a refresh while the holder lives.
    assert!(srv.revoke("at-1"));
    children.0.push(("contender", spawn("contender")));
    children.wait_for_marker(&coord, CONTENDER_REFUSED);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
    // The holder's write was retried, on the full disk, by the thread that keeps the lock.
    children.wait_for_marker(&coord, HOLDER_KEEPING);

    // Space again.
    std::fs::remove_file(&filler).unwrap();
    let reports = children.wait_all();
    for (role, report) in &reports {
        assert!(
            report.contains("token=at-2"),
            "{role} must end holding the session: {report}"
        );
    }
    assert_eq!(srv.refreshes(), 1, "one refresh for the expiry");
    assert_eq!(srv.presented(), vec![Some(1)]);
    assert_eq!(srv.reuse_detected(), 0);
    assert!(srv.is_active("rt-2"), "the session lives on");
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-2"));
}

/// A 64 KiB tmpfs mounted at `dir`, unmounted (lazily, so a process still using it does not
/// stop that) on drop, also when the test fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: PathBuf) -> Tmpfs {
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=700", "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs root and mount(8) for a full disk (a tmpfs): {e}")
            });
        assert!(
            out.status.success(),
            "this test needs root to mount a full disk (`mount -t tmpfs` on {}): {} {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    /// Fills the disk with a file of zeros until a write fails with ENOSPC; returns its path.
    /// Checks that the next write in the directory fails with ENOSPC.
    fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut f = File::create(&filler).unwrap();
        let chunk = [0u8; 1024];
        let full = loop {
            if let Err(e) = f.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(full.kind(), io::ErrorKind::StorageFull, "{full}");
        drop(f);
        let probe = self.dir.join("probe");
        let e = std::fs::write(&probe, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        let _ = std::fs::remove_file(&probe);
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The child processes, by role; any still running when this is dropped (a failed test)
/// are killed.
#[derive(Default)]
struct Children(Vec<(&'static str, Child)>);

impl Children {
    /// Waits for `name` in `coord`; panics if a child exits first or the parent's bound
    /// passes.
    fn wait_for_marker(&mut self, coord: &Path, name: &str) {
        let deadline = Instant::now() + PARENT_TIME_LIMIT;
        while !coord.join(name).exists() {
            for (role, child) in &mut self.0 {
                if let Some(status) = child.try_wait().unwrap() {
                    let out = read_stdout(child);
                    panic!("the {role} exited ({status}) before {name}: {out}");
                }
            }
            assert!(Instant::now() < deadline, "never saw {name}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for every child to end, asserts each succeeded, and returns each one's report.
    fn wait_all(&mut self) -> Vec<(&'static str, String)> {
        let deadline = Instant::now() + PARENT_TIME_LIMIT;
        let mut reports = Vec::new();
        for (role, child) in &mut self.0 {
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < deadline, "the {role} did not end in time");
                std::thread::sleep(Duration::from_millis(10));
            };
            let out = read_stdout(child);
            assert!(status.success(), "the {role} failed ({status}): {out}");
            let report = out
                .lines()
                .find_map(|l| l.split_once("REPORT ").map(|(_, r)| r.to_owned()))
                .unwrap_or_else(|| panic!("no report from the {role}: {out}"));
            reports.push((*role, report));
        }
        reports
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn read_stdout(child: &mut Child) -> String {
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    out
}

/// A child's client on the shared token file, against the parent's token server.
fn child_client(lock_timeout: Duration, events: &Recorder) -> AuthClient {
    let url = std::env::var(URL).unwrap();
    let path = PathBuf::from(std::env::var_os(FILE).unwrap());
    TokenServer::client_builder_at(&url)
        .store(FileStore::new(&path).unwrap().lock_timeout(lock_timeout))
        .on_event(events.listener())
        .build()
        .unwrap()
}

fn mark(name: &str) {
    let coord = PathBuf::from(std::env::var_os(COORD).unwrap());
    std::fs::write(coord.join(name), b"").unwrap();
}

/// Polls `cond` until it holds; panics after `CHILD_TIME_LIMIT`.
fn child_wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The holder: refreshes on the full disk (its write fails) and keeps the lock; once the
/// parent made space, its keeper writes, the lock is free, and it goes on with `at-2`.
fn holder() {
    let path = PathBuf::from(std::env::var_os(FILE).unwrap());
    let events = Recorder::new();
    let client = child_client(FileStore::DEFAULT_LOCK_TIMEOUT, &events);
    assert_eq!(token_of(&client), "at-1");
    client.force_refresh().unwrap();
    assert_eq!(
        failed_writes_here(&events),
        1,
        "the write on the full disk failed"
    );
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));
    assert_eq!(token_of(&client), "at-2");
    mark(HOLDER_REFRESHED);
    mark(HOLDER_KEEPING);

    // The parent removes the filler once the contender was refused the lock.
    child_wait("the kept refresh written", || {
        stored_refresh_token(&path).as_deref() == Some("rt-2")
    });
    let store = FileStore::new(&path)
        .unwrap()
        .lock_timeout(CHILD_TIME_LIMIT);
    drop(
        store
            .lock()
            .expect("the lock is released once the refresh is written"),
    );
    let token = token_of(&client);
    assert_eq!(token, "at-2");
    client.close().unwrap();
    println!("REPORT role=holder token={token}");
}

/// The contender: its `at-1` is rejected; its refresh must wait for the holder's lock and
/// give up, calling nobody. Once the holder wrote `rt-2`, it adopts it.
fn contender() {
    let events = Recorder::new();
    let client = child_client(CONTENDER_LOCK_TIMEOUT, &events);
    let e = client.get("items").call().unwrap_err();
    assert!(
        is_lock_timeout(&e),
        "the contender's refresh must wait for the holder's lock, got {e:?}"
    );
    assert_eq!(
        events.count(|e| matches!(e, Event::RefreshStarted { .. })),
        0
    );
    mark(CONTENDER_REFUSED);

    // Until the holder wrote rt-2 (the parent makes space), every refresh times out.
    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    let token = loop {
        match client.get("items").call() {
            Ok(mut r) => {
                break crate::harness::observe::body_json(&mut r)["token"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            Err(e) if is_lock_timeout(&e) => {
                assert!(
                    Instant::now() < deadline,
                    "the holder never released the lock"
                );
            }
            Err(e) => panic!("the contender's request failed: {e:?}"),
        }
    };
    assert_eq!(token, "at-2");
    assert_eq!(
        events.count(|e| matches!(e, Event::RefreshStarted { .. })),
        0
    );
    assert_eq!(events.count(|e| matches!(e, Event::Adopted { .. })), 1);
    client.close().unwrap();
    println!("REPORT role=contender token={token}");
}
