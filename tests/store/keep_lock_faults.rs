//! The kept lock (see `keep_lock.rs`) under faults of the store or the refresher itself,
//! from a review of issue 23: a store whose `lock()` panics, a hung refresh that borrowed
//! the kept lock and has it taken away, a store that declares no lock timeout, a retry whose
//! write panics.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::harness::fixtures::{FailingWrites, Forwarding, TempDir};
use crate::harness::observe::wait_until;
use tokengate::store::{LockedWrite, Revision, StoreLock};
use tokengate::ureq::Agent;
use tokengate::{AuthClient, FileStore, Refresh, RefreshError, RetryPolicy, TokenStore, Tokens};

const HOUR: Duration = Duration::from_secs(3600);

fn login() -> Tokens {
    Tokens::new("at-1")
        .with_refresh_token("rt-1")
        .with_expires_in(HOUR)
}

fn stored_refresh_token(path: &Path) -> Option<String> {
    let tokens = FileStore::new(path).unwrap().load().unwrap()?;
    Some(tokens.refresh_token()?.secret().to_owned())
}

/// A `FileStore` whose `lock()` panics once when armed (by `arm`).
fn panicky_lock(path: &Path, arm: &Arc<AtomicBool>) -> Forwarding<FileStore> {
    let arm = Arc::clone(arm);
    Forwarding::new(FileStore::new(path).unwrap())
        .lock_with(move |inner| {
            if arm.swap(false, SeqCst) {
                panic!("the store's lock panicked");
            }
            inner.lock()
        })
        .lock_timeout(Duration::from_millis(500))
}

/// A store whose `lock()` panics once: the next login works. Caught the client's own
/// record of who holds the store's lock staying "lent" after the panic, so that every later
/// refresh, login and save waited out the lock timeout and failed.
#[test]
fn a_store_whose_lock_panicked_once_goes_on_working() {
    let dir = TempDir::new("keep_lock_faults-panic");
    let path = dir.path("tokens.json");
    let arm = Arc::new(AtomicBool::new(false));
    let client = AuthClient::builder("http://127.0.0.1:9/")
        .proxy(None)
        .store(panicky_lock(&path, &arm))
        .build()
        .unwrap();
    arm.store(true, SeqCst);
    let c = client.clone();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = c.set_tokens(login());
    }));
    assert!(panicked.is_err(), "the store panicked");
    client.set_tokens(login()).unwrap();
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));
}

/// Rotates on its first call; hangs on the second until released.
struct RotateThenHang {
    calls: AtomicUsize,
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Refresh for RotateThenHang {
    fn refresh(&self, _: &Agent, _: &Tokens) -> Result<Tokens, RefreshError> {
        if self.calls.fetch_add(1, SeqCst) > 0 {
            self.started.lock().unwrap().send(()).unwrap();
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
        let n = self.calls.load(SeqCst) + 1;
        Ok(Tokens::new(format!("at-{n}"))
            .with_refresh_token(format!("rt-{n}"))
            .with_expires_in(HOUR))
    }
}

/// A refresh spends rt-1 and cannot write rt-2: the lock is kept. A second refresh borrows
/// the kept lock and hangs; past its bound (about 4 s here) the lock is taken away from it,
/// but stays kept, since the file still holds the spent rt-1: another process still cannot
/// take it (it tries for 6 s). Caught the lock being released to that process with the spent
/// token in the file (found by a review of issue 23).
#[test]
fn a_kept_lock_taken_from_a_hung_refresh_stays_kept_while_the_file_holds_a_spent_token() {
    let dir = TempDir::new("keep_lock_faults-hung");
    let path = dir.path("tokens.json");
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let refresher = RotateThenHang {
        calls: AtomicUsize::new(0),
        started: Mutex::new(started_tx),
        release: Mutex::new(release_rx),
    };
    let (store, fail) = FailingWrites::new(FileStore::new(&path).unwrap());
    let client = AuthClient::builder("http://127.0.0.1:9/")
        .proxy(None)
        .token_timeout(Duration::from_millis(100))
        .retry(RetryPolicy::none())
        .refresher(refresher)
        .store(store)
        .tokens(login())
        .build()
        .unwrap();
    fail.store(true, SeqCst);
    client.force_refresh().unwrap(); // rt-1 spent; the write fails; the lock is kept
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));

    let c = client.clone();
    let hung = std::thread::spawn(move || c.force_refresh());
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    let other = FileStore::new(&path)
        .unwrap()
        .lock_timeout(Duration::from_secs(6));
    let taken = other.lock().is_ok();
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-1"));
    release.send(()).unwrap();
    let _ = hung.join().unwrap();
    assert!(
        !taken,
        "another process took the lock while the file holds the spent rt-1"
    );
}

/// A shared store of your own that declares no lock timeout (the trait's default, zero),
/// forwarding everything else to a `FileStore`.
fn no_lock_timeout(path: &Path) -> Forwarding<FileStore> {
    Forwarding::new(FileStore::new(path).unwrap()).no_lock_timeout()
}

/// Answers after 400 ms.
struct Slow;

impl Refresh for Slow {
    fn refresh(&self, _: &Agent, _: &Tokens) -> Result<Tokens, RefreshError> {
        std::thread::sleep(Duration::from_millis(400));
        Ok(Tokens::new("at-2")
            .with_refresh_token("rt-2")
            .with_expires_in(HOUR))
    }
}

/// A login made while another thread of the client refreshes waits for that refresh, also
/// with a store that declares no lock timeout. Caught the login failing at once ("timed out")
/// because the wait for another thread of the client was bounded by the store's lock timeout.
#[test]
fn a_login_during_a_refresh_waits_for_it_with_a_store_that_declares_no_lock_timeout() {
    let dir = TempDir::new("keep_lock_faults-zero");
    let path = dir.path("tokens.json");
    let client = AuthClient::builder("http://127.0.0.1:9/")
        .proxy(None)
        .token_timeout(Duration::from_secs(2))
        .refresher(Slow)
        .store(no_lock_timeout(&path))
        .tokens(login())
        .build()
        .unwrap();
    let c = client.clone();
    let refresh = std::thread::spawn(move || c.force_refresh());
    wait_until("the refresh took the store's lock", || {
        FileStore::new(&path)
            .unwrap()
            .lock_timeout(Duration::ZERO)
            .lock()
            .is_err()
    });
    client
        .set_tokens(Tokens::new("at-9").with_refresh_token("rt-9"))
        .unwrap();
    refresh.join().unwrap().unwrap();
    assert_eq!(stored_refresh_token(&path).as_deref(), Some("rt-9"));
}

/// A `FileStore` whose writes under its lock succeed, fail or panic, by `mode`.
fn mode_store(path: &Path, mode: &Arc<AtomicU8>) -> Forwarding<FileStore> {
    let mode = Arc::clone(mode);
    Forwarding::new(FileStore::new(path).unwrap())
        .lock_with(move |inner| {
            let lock = inner.lock()?.expect("a shared store");
            let stored = lock.stored().cloned()?;
            let mode = Arc::clone(&mode);
            Ok(Some(StoreLock::new(stored, ModeWrite { lock, mode })))
        })
        .lock_timeout(Duration::from_secs(1))
}

const WRITE: u8 = 0;
const FAIL: u8 = 1;
const PANIC: u8 = 2;

struct ModeWrite {
    lock: StoreLock,
    mode: Arc<AtomicU8>,
}

impl LockedWrite for ModeWrite {
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        match self.mode.load(SeqCst) {
            FAIL => Err(io::Error::other("No space left on device")),
            PANIC => panic!("the store's write panicked"),
            _ => self.lock.write(tokens),
        }
    }
}

/// The retry thread of a kept lock survives a store whose write panics: once writes work
/// again, the refresh is written (with no request made meanwhile) and the lock released.
/// Caught the thread dying on the panic, leaving the lock kept with nobody retrying.
#[test]
fn a_retry_whose_write_panicked_does_not_end_the_retries() {
    let dir = TempDir::new("keep_lock_faults-keeper-panic");
    let path = dir.path("tokens.json");
    let mode = Arc::new(AtomicU8::new(WRITE));
    let client = AuthClient::builder("http://127.0.0.1:9/")
        .proxy(None)
        .refresher(Slow)
        .store(mode_store(&path, &mode))
        .tokens(login())
        .build()
        .unwrap();
    mode.store(FAIL, SeqCst);
    client.force_refresh().unwrap(); // rt-1 spent; the write fails; the lock is kept
    mode.store(PANIC, SeqCst);
    std::thread::sleep(Duration::from_millis(300)); // the retry thread's next try panics
    mode.store(WRITE, SeqCst);
    wait_until("the kept refresh written", || {
        stored_refresh_token(&path).as_deref() == Some("rt-2")
    });
    wait_until("the lock released", || {
        FileStore::new(&path)
            .unwrap()
            .lock_timeout(Duration::from_millis(50))
            .lock()
            .is_ok()
    });
    drop(client);
}
