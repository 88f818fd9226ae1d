//! Change detection off the request path. Each request's [`TokenStore::poll`] only compares
//! two numbers; at most once per poll interval it asks a background thread to read the
//! record, and that thread alone waits on Redis. A slow or unreachable Redis never holds a
//! request up, and an idle client does not read Redis at all.
//!
//! [`TokenStore::poll`]: crate::TokenStore::poll

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Shared;

/// The background reader's state, shared by the store and its thread.
pub(super) struct Poller {
    /// When the next read is due, in milliseconds since `epoch`. Moved forward (by
    /// compare-and-swap) by the one poll that asks for a read.
    next_due_ms: AtomicU64,
    epoch: Instant,
    /// Guarded by itself; the thread waits on `wake`.
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// A read was asked for and not yet started.
    requested: bool,
    /// The thread was started (it lives until `stopped`).
    started: bool,
    /// The store was dropped: the thread ends.
    stopped: bool,
}

impl Poller {
    pub(super) fn new() -> Poller {
        Poller {
            next_due_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Called by every poll: asks the thread for a read if one is due, at most once per
    /// `interval`. Never waits on Redis.
    pub(super) fn tick(shared: &Arc<Shared>, interval: Duration) {
        let poller = &shared.poller;
        let now = poller.now_ms();
        let due = poller.next_due_ms.load(Relaxed);
        if now < due {
            return;
        }
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let next = now.saturating_add(interval_ms);
        if poller
            .next_due_ms
            .compare_exchange(due, next, Relaxed, Relaxed)
            .is_err()
        {
            return; // another thread asked
        }
        let mut state = poller.state.lock();
        if state.stopped {
            return;
        }
        state.requested = true;
        if state.started {
            poller.wake.notify_one();
            return;
        }
        let thread_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("tokengate-redis-poll".into())
            .spawn(move || run(&thread_shared));
        // If no thread can be started, a later poll tries again.
        state.started = spawned.is_ok();
    }

    /// Delays the next background read by `interval`: the record was just read.
    pub(super) fn just_read(&self, interval: Duration) {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.next_due_ms
            .store(self.now_ms().saturating_add(interval_ms), Relaxed);
    }

    /// Ends the thread (the store was dropped). A read in progress finishes first.
    pub(super) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}

/// The thread: one read per request, until stopped. A failed read (Redis unreachable, a
/// record that does not parse) changes nothing: memory stays authoritative.
fn run(shared: &Shared) {
    loop {
        {
            let mut state = shared.poller.state.lock();
            while !state.requested && !state.stopped {
                shared.poller.wake.wait(&mut state);
            }
            if state.stopped {
                return;
            }
            state.requested = false;
        }
        let _ = shared.current();
    }
}
