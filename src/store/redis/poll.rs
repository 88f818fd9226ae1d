//! Change detection off the request path. A request's [`TokenStore::poll`] reads one atomic
//! flag; the first request after a background read sets it and wakes the reader thread,
//! which reads the record once the poll interval since its last read has passed, and then
//! clears the flag. Only that thread waits on Redis: a slow or unreachable Redis never
//! holds a request up, Redis is read at most once per interval, and an idle client does not
//! read it at all.
//!
//! [`TokenStore::poll`]: crate::TokenStore::poll

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Shared;

/// The background reader's state, shared by the store and its thread.
pub(super) struct Poller {
    /// A read is wanted (or being waited for, or made). Set by a request, cleared by the
    /// thread after its read: while it is set, requests do nothing more.
    wanted: AtomicBool,
    /// Guarded by itself; the thread waits on `wake`.
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    /// The next read is not made before this (the last read plus the poll interval).
    not_before: Option<Instant>,
    /// The store's poll interval, as of the last request that woke the thread.
    interval: Duration,
    /// The thread was started (it lives until `stopped`).
    started: bool,
    /// The store was dropped: the thread ends.
    stopped: bool,
}

impl Poller {
    pub(super) fn new() -> Poller {
        Poller {
            wanted: AtomicBool::new(false),
            state: Mutex::new(State {
                not_before: None,
                interval: Duration::ZERO,
                started: false,
                stopped: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Called by every poll: asks the thread for a read unless one is already wanted. Never
    /// waits on Redis; one atomic load while a read is pending.
    pub(super) fn tick(shared: &Arc<Shared>, interval: Duration) {
        let poller = &shared.poller;
        if poller.wanted.load(Ordering::Relaxed) || poller.wanted.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut state = poller.state.lock();
        if state.stopped {
            return;
        }
        state.interval = interval;
        if state.started {
            poller.wake.notify_one();
            return;
        }
        let thread_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("tokengate-redis-poll".into())
            .spawn(move || run(&thread_shared));
        state.started = spawned.is_ok();
        if !state.started {
            // A later poll tries again.
            poller.wanted.store(false, Ordering::Release);
        }
    }

    /// The record was just read (by `build()`): the next background read waits an interval.
    pub(super) fn just_read(&self, interval: Duration) {
        self.state.lock().not_before = Instant::now().checked_add(interval);
    }

    /// Ends the thread (the store was dropped). A read in progress finishes first.
    pub(super) fn stop(&self) {
        self.state.lock().stopped = true;
        self.wake.notify_all();
    }
}

/// The thread: one read per wakeup, at most one per interval, until stopped. A failed read
/// (Redis unreachable, a record that does not parse) changes nothing: memory stays
/// authoritative.
fn run(shared: &Shared) {
    let poller = &shared.poller;
    loop {
        {
            let mut state = poller.state.lock();
            while !poller.wanted.load(Ordering::Acquire) && !state.stopped {
                poller.wake.wait(&mut state);
            }
            while let Some(at) = state.not_before.filter(|at| *at > Instant::now()) {
                if state.stopped {
                    break;
                }
                poller.wake.wait_until(&mut state, at);
            }
            if state.stopped {
                return;
            }
        }
        let _ = shared.current();
        let mut state = poller.state.lock();
        state.not_before = Instant::now().checked_add(state.interval);
        poller.wanted.store(false, Ordering::Release);
    }
}
