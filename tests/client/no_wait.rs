//! "No caller waits while its token is valid": inside the refresh window the refresh runs in
//! the background, and every request, from any number of threads, goes out at once with the
//! still-valid token. Also when that background refresh fails (one at a time, the old token
//! keeps working), and with a `FileStore` shared with another process, whose background
//! refresh must wait for the file lock without making its callers wait.
//!
//! The refresher is held on a channel while the test sends requests, so the refresh is known
//! to be running; `must_not_block` turns a request that waits for it into a failure (after
//! `HANG_GUARD`, a bound only a bug reaches). The clock is a `ManualClock`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::fixtures::TempDir;
use crate::harness::observe::{
    body_json, is_refresh_started, must_not_block, release_together, Recorder, HANG_GUARD,
};
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::ureq::Agent;
use tokengate::{AuthClient, Event, FileStore, Refresh, RefreshError, Tokens};

const THREADS: usize = 8;
const CALLS: usize = 5;

/// Holds every refresher call until the test releases it, and counts calls running at once.
#[derive(Clone)]
struct Hold {
    started: Arc<Mutex<Sender<()>>>,
    release: Arc<Mutex<Receiver<()>>>,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

/// The test's end of a [`Hold`].
struct Control {
    started: Receiver<()>,
    release: Sender<()>,
}

impl Control {
    fn wait_started(&self) {
        self.started
            .recv_timeout(HANG_GUARD)
            .expect("the background refresh started");
    }
    fn release(&self) {
        self.release.send(()).unwrap();
    }
}

fn hold() -> (Hold, Control) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let h = Hold {
        started: Arc::new(Mutex::new(started_tx)),
        release: Arc::new(Mutex::new(release_rx)),
        running: Arc::default(),
        most_at_once: Arc::default(),
        calls: Arc::default(),
    };
    (h, Control { started, release })
}

impl Hold {
    /// Wraps `inner`: signal, wait for the release, then run it.
    fn around<T>(
        self,
        inner: impl Fn(&Agent, &Tokens) -> Result<T, RefreshError> + Send + Sync + 'static,
    ) -> impl Fn(&Agent, &Tokens) -> Result<T, RefreshError> + Send + Sync + 'static {
        move |agent: &Agent, current: &Tokens| {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            self.started.lock().unwrap().send(()).unwrap();
            self.release
                .lock()
                .unwrap()
                .recv_timeout(HANG_GUARD)
                .expect("released by the test");
            let result = inner(agent, current);
            self.running.fetch_sub(1, Ordering::SeqCst);
            result
        }
    }
}

fn token_of(client: &AuthClient) -> String {
    let mut r = client.get("items").call().expect("request succeeds");
    body_json(&mut r)["token"].as_str().unwrap().to_owned()
}

/// THREADS threads × CALLS requests at once; every one must return without waiting.
fn burst(client: &AuthClient) -> Vec<String> {
    let c = client.clone();
    must_not_block("requests while the token is valid", move || {
        release_together(THREADS, &c, |_, c| {
            (0..CALLS).map(|_| token_of(c)).collect::<Vec<_>>()
        })
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
    })
}

fn count(events: &Recorder, pred: impl Fn(&Event) -> bool) -> usize {
    events.count(pred)
}

#[test]
fn many_threads_do_not_wait_for_a_running_background_refresh() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let (h, control) = hold();
    let inner = srv.refresher();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .clock(clock.clone())
        .refresher(h.clone().around(move |a, t| inner.refresh(a, t)))
        .tokens(srv.login())
        .on_event(events.listener())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600 - 10)); // inside the 30 s window

    let c = client.clone();
    assert_eq!(
        must_not_block("the first request", move || token_of(&c)),
        "at-1"
    );
    control.wait_started();
    assert_eq!(burst(&client), vec!["at-1"; THREADS * CALLS]);
    assert_eq!(
        count(&events, is_refresh_started),
        1,
        "one background refresh"
    );
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);

    control.release();
    events.wait_for("the background refresh", 1, |e| {
        matches!(e, Event::Refreshed { .. })
    });
    assert_eq!(burst(&client), vec!["at-2"; THREADS * CALLS]);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    assert_eq!(srv.api_401s(), 0);
    assert_eq!(count(&events, |e| matches!(e, Event::Waited { .. })), 0);
}

/// A failed background refresh keeps the old token working: callers get 200 with it, nobody
/// waits, and no second background attempt is made for the same token (no retry storm while
/// the token is still valid); the next attempt is the one refresh when it expires.
#[test]
fn a_failing_background_refresh_keeps_the_old_token_working_without_a_retry_storm() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let (h, control) = hold();
    let inner = srv.refresher();
    let first = Arc::new(AtomicUsize::new(0));
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .clock(clock.clone())
        .sleeper(clock.clone())
        .refresher(h.clone().around(move |a, t| {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(RefreshError::transient("token endpoint down"))
            } else {
                inner.refresh(a, t)
            }
        }))
        .tokens(srv.login())
        .on_event(events.listener())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600 - 10));

    let c = client.clone();
    assert_eq!(must_not_block("a request", move || token_of(&c)), "at-1");
    control.wait_started();
    // While it runs, nobody starts another and nobody waits for it.
    assert_eq!(burst(&client), vec!["at-1"; THREADS * CALLS]);
    assert_eq!(count(&events, is_refresh_started), 1);
    control.release();
    events.wait_for("the failed refresh", 1, |e| {
        matches!(e, Event::RefreshFailed { .. })
    });

    // After the failure: still the old token, still no waiting, no new attempt.
    assert_eq!(burst(&client), vec!["at-1"; THREADS * CALLS]);
    assert_eq!(
        count(&events, is_refresh_started),
        1,
        "no second background attempt"
    );
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-1");

    // At expiry the one refresh runs (on a calling thread) and succeeds.
    clock.advance(Duration::from_secs(11));
    control.release(); // let the held refresher through
    assert_eq!(token_of(&client), "at-2");
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        h.most_at_once.load(Ordering::SeqCst),
        1,
        "one refresh at a time"
    );
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.api_401s(), 0);
    assert_eq!(count(&events, |e| matches!(e, Event::Waited { .. })), 0);
    assert_eq!(count(&events, |e| *e == Event::SessionExpired), 0);
}

#[test]
fn with_a_file_store_neither_this_process_nor_another_waits_for_a_background_refresh() {
    let srv = TokenServer::start();
    let dir = TempDir::new("no-wait-file-store");
    let path = dir.path("tokens.json");
    let clock = Arc::new(ManualClock::new());
    let (events, other_events) = (Recorder::new(), Recorder::new());
    let (h, control) = hold();
    let inner = srv.refresher();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .clock(clock.clone())
        .refresher(h.clone().around(move |a, t| inner.refresh(a, t)))
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .on_event(events.listener())
        .build()
        .unwrap();
    // Another process with the same file (and the same clock: its token is in the window too).
    let other = AuthClient::builder(srv.api_url())
        .proxy(None)
        .clock(clock.clone())
        .refresher(srv.refresher())
        .store(FileStore::new(&path).unwrap())
        .on_event(other_events.listener())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(3600 - 10));

    let c = client.clone();
    assert_eq!(
        must_not_block("the first request", move || token_of(&c)),
        "at-1"
    );
    control.wait_started();
    // This process's refresh holds the file's refresh lock now.
    assert_eq!(burst(&client), vec!["at-1"; THREADS * CALLS]);
    // The other process starts its own background refresh, which waits for the lock; its
    // requests do not.
    assert_eq!(burst(&other), vec!["at-1"; THREADS * CALLS]);
    assert_eq!(count(&events, is_refresh_started), 1);
    assert_eq!(
        srv.refreshes(),
        0,
        "the held refresh has not called out yet"
    );

    control.release();
    events.wait_for("the refresh", 1, |e| matches!(e, Event::Refreshed { .. }));
    // The other process's background flight ends by adopting the new tokens from the file.
    other_events.wait_for("the other process's flight", 1, |e| {
        matches!(e, Event::Adopted { .. })
    });
    assert_eq!(burst(&other), vec!["at-2"; THREADS * CALLS]);
    assert_eq!(burst(&client), vec!["at-2"; THREADS * CALLS]);
    assert_eq!(srv.refreshes(), 1, "one refresh for both processes");
    assert_eq!(srv.reuse_detected(), 0);
    assert_eq!(srv.api_401s(), 0);
    assert_eq!(
        count(&other_events, is_refresh_started),
        0,
        "the other process adopted"
    );
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
}
