//! Issue 23, item 5: the edges of closing a client and of taking a stuck store lock away.
//!
//! - a close of the last handle that lands while a refresh confirms its store lock, right
//!   before the token call: no token call is made;
//! - a close of the last handle from inside the client's own refresher: `Error::Reentrant`,
//!   and the session is still shut down once the refresh is over;
//! - the release of a lock taken from a hung refresh runs with no lock of the session held:
//!   a request that adopts what the store holds does not wait for the store's release.
//!
//! The stores here are shared stores written for the test: their lock's confirmation or
//! release blocks until the test lets it go, so each of these moments is held open as long
//! as the test needs, instead of being timed.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::closing_log::closing_marked_on;
use crate::harness::fixtures::ClientSlot;
use crate::harness::observe::{must_not_block, token_of, wait_until, HANG_GUARD};
use crate::harness::servers::TokenServer;
use tokengate::store::{LockedWrite, Revision, StoreLock, Stored};
use tokengate::ureq::Agent;
use tokengate::{AuthClient, Error, MemoryStore, RefreshError, RetryPolicy, TokenStore, Tokens};

/// `tokens` as if received 90 s ago with a 100 s lifetime: inside the refresh window and
/// still valid, so a request starts a background refresh and does not wait for it.
fn inside_the_refresh_window(tokens: &Tokens) -> Tokens {
    let now = SystemTime::now();
    Tokens::new(tokens.access_token().secret())
        .with_refresh_token(tokens.refresh_token().unwrap().secret())
        .with_issued_at(now - Duration::from_secs(90))
        .with_expires_at(now + Duration::from_secs(10))
}

/// A point in the store's code that the first thread to reach holds open: it reports its
/// arrival, then waits until the test lets it go (at most twice the hang guard). Later
/// arrivals pass.
struct Hold {
    armed: AtomicBool,
    reached: Mutex<mpsc::Sender<()>>,
    open: Mutex<mpsc::Receiver<()>>,
}

impl Hold {
    /// The hold, the receiver of its arrival and the sender that lets it go.
    fn new() -> (Hold, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (reached_tx, reached) = mpsc::channel();
        let (open_tx, open) = mpsc::channel();
        let hold = Hold {
            armed: AtomicBool::new(true),
            reached: Mutex::new(reached_tx),
            open: Mutex::new(open),
        };
        (hold, reached, open_tx)
    }

    fn pass(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            let _ = self.reached.lock().unwrap().send(());
            let _ = self.open.lock().unwrap().recv_timeout(HANG_GUARD * 2);
        }
    }
}

/// What a [`HeldStore`] holds, and where its lock is held open.
struct HeldState {
    record: Mutex<Stored>,
    /// Held open in the lock's confirmation before a token call (`still_held`, which
    /// `before_call` defaults to).
    confirm: Option<Hold>,
    /// Held open in the lock's release (the writer's `Drop`).
    release: Option<Hold>,
}

/// A shared store in memory whose lock can be held open while it is confirmed or released.
#[derive(Clone)]
struct HeldStore(Arc<HeldState>);

impl HeldStore {
    fn new(tokens: Tokens, confirm: Option<Hold>, release: Option<Hold>) -> HeldStore {
        HeldStore(Arc::new(HeldState {
            record: Mutex::new(Stored::new(Some(tokens), Revision::new(1))),
            confirm,
            release,
        }))
    }

    /// Another process stores `tokens` (the next revision).
    fn store_from_another_process(&self, tokens: Tokens) {
        let mut record = self.0.record.lock().unwrap();
        let next = Revision::new(record.revision().get() + 1);
        *record = Stored::new(Some(tokens), next);
    }
}

/// The lock of a [`HeldStore`]; dropping it releases it.
struct HeldLock(Arc<HeldState>);

impl LockedWrite for HeldLock {
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        let mut record = self.0.record.lock().unwrap();
        let next = Revision::new(record.revision().get() + 1);
        *record = Stored::new(tokens.cloned(), next);
        Ok(next)
    }
    fn still_held(&mut self) -> io::Result<bool> {
        if let Some(hold) = &self.0.confirm {
            hold.pass();
        }
        Ok(true)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(hold) = &self.0.release {
            hold.pass();
        }
    }
}

impl TokenStore for HeldStore {
    fn load(&self) -> io::Result<Option<Tokens>> {
        Ok(self.0.record.lock().unwrap().tokens().cloned())
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        HeldLock(Arc::clone(&self.0)).write(Some(tokens)).map(drop)
    }
    fn clear(&self) -> io::Result<()> {
        HeldLock(Arc::clone(&self.0)).write(None).map(drop)
    }
    fn is_shared(&self) -> bool {
        true
    }
    fn lock(&self) -> io::Result<Option<StoreLock>> {
        let stored = self.0.record.lock().unwrap().clone();
        Ok(Some(StoreLock::new(stored, HeldLock(Arc::clone(&self.0)))))
    }
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        let record = self.0.record.lock().unwrap();
        Ok((since != Some(record.revision())).then(|| record.clone()))
    }
}

/// The name of the closing thread of the test below (see `closing_log.rs`).
const CLOSER_WHILE_CONFIRMING: &str = "close_bounds: closer while the lock is confirmed";

/// A close of the last handle that marks the client closing while the background refresh
/// is confirming its store lock (the check right before the token call, held open here)
/// stops the refresh there: the lock is confirmed, yet the refresher is never called, and
/// `close()` returns without error.
///
/// Catches `closing` being checked only before the lock check (before issue 23 item 5):
/// the refresh went on to call the refresher (1 call), so a rotated refresh token could
/// arrive after the process is gone. The held-open check is `LockedWrite::still_held`, which
/// `LockedWrite::before_call` defaults to (the test compiles without `before_call`).
#[test]
fn a_close_while_the_lock_is_confirmed_makes_no_token_call() {
    let srv = TokenServer::start();
    let (confirm, confirming, confirmed) = Hold::new();
    let store = HeldStore::new(inside_the_refresh_window(&srv.login()), Some(confirm), None);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |_: &Agent, _: &Tokens| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Tokens::new("late-access").with_refresh_token("late-refresh"))
        })
        .store(store)
        .build()
        .unwrap();
    assert_eq!(token_of(&client), "at-1"); // starts the background refresh
    confirming
        .recv_timeout(HANG_GUARD)
        .expect("the refresh confirms its store lock before the token call");

    let closing = closing_marked_on(CLOSER_WHILE_CONFIRMING);
    let (closed_tx, closed) = mpsc::channel();
    std::thread::Builder::new()
        .name(CLOSER_WHILE_CONFIRMING.to_owned())
        .spawn(move || {
            let _ = closed_tx.send(client.close());
        })
        .unwrap();
    closing
        .recv_timeout(HANG_GUARD)
        .expect("close marks the client closing");
    confirmed.send(()).unwrap(); // the lock is still held
    let closed = closed
        .recv_timeout(HANG_GUARD)
        .expect("close() returned once the refresh ended");
    assert!(closed.is_ok(), "{closed:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a token call was made after the client was marked closing"
    );
}

/// A private store whose first save fails (as on a full disk) and whose later saves work.
struct FirstSaveFails {
    store: MemoryStore,
    saves: AtomicUsize,
}

impl TokenStore for FirstSaveFails {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.store.load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        if self.saves.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(io::Error::other("No space left on device"));
        }
        self.store.save(tokens)
    }
    fn clear(&self) -> io::Result<()> {
        self.store.clear()
    }
}

/// `close()` called on the last handle from inside the client's own (background) refresher
/// returns `Error::Reentrant` at once, and the session is still shut down once the refresh
/// is over: here the refresh's answer, whose save failed, is saved by the shutdown's retry
/// (nothing else retries it: no request follows).
///
/// Catches a reentrant close marking the handle closed (before issue 23 item 5): its drop
/// then shut nothing down, and the refreshed tokens never reached the store.
#[test]
fn a_reentrant_close_of_the_last_handle_shuts_down_after_the_refresh() {
    let srv = TokenServer::start();
    let store = Arc::new(FirstSaveFails {
        store: MemoryStore::with_tokens(inside_the_refresh_window(&srv.login())),
        saves: AtomicUsize::new(0),
    });
    let slot = ClientSlot::default();
    let (dropped_tx, dropped) = mpsc::channel::<()>();
    let (closed_tx, closed) = mpsc::channel();
    let (dropped, closed_tx) = (Mutex::new(dropped), Mutex::new(closed_tx));
    let last = slot.clone();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |_: &Agent, _: &Tokens| {
            // Once the test dropped its handle, the slot's is the last one.
            dropped
                .lock()
                .unwrap()
                .recv_timeout(HANG_GUARD)
                .expect("the test dropped its handle");
            let handle = last.take().expect("the last handle");
            let _ = closed_tx.lock().unwrap().send(handle.close());
            Ok(Tokens::new("refreshed-access").with_refresh_token("refreshed-refresh"))
        })
        .store(Arc::clone(&store))
        .build()
        .unwrap();
    slot.set(&client);
    assert_eq!(token_of(&client), "at-1"); // starts the background refresh
    drop(client);
    dropped_tx.send(()).unwrap();

    let closed = closed
        .recv_timeout(HANG_GUARD)
        .expect("close() from the refresher returned");
    assert!(matches!(closed, Err(Error::Reentrant)), "{closed:?}");
    wait_until("the shutdown to save the refresh's answer", || {
        store
            .load()
            .unwrap()
            .is_some_and(|t| t.access_token().secret() == "refreshed-access")
    });
    assert_eq!(
        store.saves.load(Ordering::SeqCst),
        2,
        "the refresh's failed save, then the shutdown's retry"
    );
}

/// A custom refresher that reports its start and hangs until released (at most twice the
/// hang guard).
struct Hanging {
    started: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl tokengate::Refresh for Hanging {
    fn refresh(&self, _: &Agent, _: &Tokens) -> Result<Tokens, RefreshError> {
        let _ = self.started.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv_timeout(HANG_GUARD * 2);
        Ok(Tokens::new("late-access").with_refresh_token("late-refresh"))
    }
}

/// A background refresh hangs in its refresher past its bound (100 ms token calls, no
/// retries: 4.1 s), so the watcher takes its store lock away; the store's release of that
/// lock is held open. Meanwhile another process stores newer tokens, and a request, which
/// polls the store and adopts them, completes (and is served with them) without waiting
/// for the release.
///
/// Catches `release_stuck_lock` running the store's release while holding the session's
/// `flight_lock` (before issue 23 item 5): the request's adopt waited on that mutex, i.e. on
/// the store's I/O, and blocked as long as the release did.
#[test]
fn a_request_does_not_wait_for_the_release_of_a_lock_taken_from_a_hung_refresh() {
    let srv = TokenServer::start();
    let first = srv.login();
    let newer = srv.login();
    let (release, releasing, released) = Hold::new();
    let store = HeldStore::new(inside_the_refresh_window(&first), None, Some(release));
    let (started_tx, started) = mpsc::channel();
    let (let_go, hung) = mpsc::channel();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .token_timeout(Duration::from_millis(100))
        .retry(RetryPolicy::none())
        .refresher(Hanging {
            started: Mutex::new(started_tx),
            release: Mutex::new(hung),
        })
        .store(store.clone())
        .build()
        .unwrap();
    assert_eq!(token_of(&client), "at-1"); // starts the background refresh, which hangs
    started.recv_timeout(HANG_GUARD).unwrap();
    releasing
        .recv_timeout(HANG_GUARD)
        .expect("the hung refresh's lock is taken away and released");

    store.store_from_another_process(newer);
    let c = client.clone();
    let served_with = must_not_block("a request adopting the store's newer tokens", move || {
        token_of(&c)
    });
    assert_eq!(served_with, "at-2", "the request adopted the newer tokens");

    released.send(()).unwrap();
    let_go.send(()).unwrap();
    drop(client);
}
