//! A shared store's lock kept while a refresh is not written: fail closed.
//!
//! A refresh spends the refresh token it presents (the server rotates it). If the new tokens
//! cannot be written (a full disk, Redis refusing or not answering the write), the store
//! still holds the spent refresh token: releasing the lock would let another process read it
//! and present it again, and a server that detects reuse would end the session for
//! everyone. So the client keeps the store's lock (a `FileStore` lock stays taken, a
//! `RedisStore` lease stays renewed) while it holds fresh tokens it could not write, goes on
//! serving its own requests with them, and retries the write with backoff on a thread of its
//! own until it succeeds; closing the client tries once more and releases it. Other
//! processes wait for the lock (their lock timeout), never presenting the spent token while
//! this one lives.
//!
//! Every taking of the store's lock by the session goes through [`Session::lock_store`], one
//! thread at a time: the kept lock is lent to the thread that asks (a request's refresh, a
//! login, a retry), a fresh one is taken from the store otherwise, and either comes back
//! exactly once, through [`Locked`]'s `Drop` or [`Session::give_back`] (a flight, or a
//! flight's lock taken away), which keeps it if a refresh is still unsaved, else releases it.

use std::io;
use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Session;
use crate::logging::TARGET;
use crate::store::StoreLock;
use crate::timing::deadline_after;

/// The first pause between two retries of a write under a kept lock; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two retries of a write under a kept lock.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The session's hold on its shared store's lock. `state`'s mutex is held only to look at
/// or change it, never across store I/O; `returned` is signalled whenever it changes.
#[derive(Default)]
pub(crate) struct Keep {
    state: Mutex<State>,
    returned: Condvar,
}

#[derive(Default)]
struct State {
    slot: Slot,
    /// The retry thread ([`Session::keep_writing`]) runs. Set by whoever starts it and
    /// cleared by the thread as it decides to end, both under this mutex, so a lock kept
    /// after that decision starts a new one.
    writing: bool,
}

#[derive(Default)]
enum Slot {
    /// No thread of this session holds the store's lock.
    #[default]
    Empty,
    /// Kept: a refresh is not written yet. Nobody uses it right now.
    Kept(StoreLock),
    /// A thread of this session holds (or is taking) the lock, and gives it back.
    Lent,
}

/// Empties a slot lent for a lock being taken, unless forgotten (the lock was had).
struct Unlend<'s>(Option<&'s Session>);

impl Drop for Unlend<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            session.hand_back_nothing();
        }
    }
}

/// The store's lock as [`Session::lock_store`] hands it out (`None` inside: a private
/// store, or a shared store that has no lock). Dropping it gives it back.
pub(crate) struct Locked<'s> {
    session: &'s Session,
    lock: Option<StoreLock>,
}

impl Locked<'_> {
    /// The lock, if the store has one.
    pub(super) fn get(&mut self) -> Option<&mut StoreLock> {
        self.lock.as_mut()
    }

    /// The lock, read-only.
    pub(super) fn peek(&self) -> Option<&StoreLock> {
        self.lock.as_ref()
    }

    /// Hands the lock over to a flight, which gives it back through [`Session::give_back`].
    pub(super) fn into_inner(mut self) -> Option<StoreLock> {
        self.lock.take()
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.lock.take() {
            self.session.give_back(lock);
        }
    }
}

impl Session {
    /// This client's store's lock: the one it keeps, if any, else the store's (see
    /// [`Persistence::lock`](super::persistence::Persistence::lock)). One thread of the
    /// client at a time: another waits for it to be given back, at most as long as the
    /// longest refresh (`Limits::flight`: the store's lock wait and the longest a refresh
    /// holds the lock), then takes it from the store (its own lock wait).
    pub(super) fn lock_store(&self) -> io::Result<Locked<'_>> {
        if !self.persistence.is_shared() {
            return Ok(Locked {
                session: self,
                lock: None,
            });
        }
        let deadline = deadline_after(self.config.limits().flight);
        let mut state = self.keep.state.lock();
        loop {
            match std::mem::replace(&mut state.slot, Slot::Lent) {
                Slot::Empty => break,
                Slot::Kept(lock) => {
                    return Ok(Locked {
                        session: self,
                        lock: Some(lock),
                    })
                }
                Slot::Lent => {
                    if self
                        .keep
                        .returned
                        .wait_until(&mut state, deadline)
                        .timed_out()
                        && matches!(state.slot, Slot::Lent)
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out waiting for the store's lock, which another thread of \
                             this client holds",
                        ));
                    }
                }
            }
        }
        drop(state);
        // Lent from here on: whatever happens (an error, no lock, a panicking store), the
        // slot is emptied again unless a lock is handed out.
        let mut unlend = Unlend(Some(self));
        match self.persistence.lock() {
            Ok(Some(lock)) => {
                unlend.0 = None;
                Ok(Locked {
                    session: self,
                    lock: Some(lock),
                })
            }
            other => {
                drop(unlend);
                other.map(|_| Locked {
                    session: self,
                    lock: None,
                })
            }
        }
    }

    /// Takes back a lock handed out by [`Session::lock_store`]. Kept if a refresh is still
    /// unsaved (also when the lock is taken away from a hung flight: the store still holds
    /// the refresh token that refresh spent) and the store does not know the lock lapsed;
    /// else released (outside every lock of the session).
    pub(super) fn give_back(&self, lock: StoreLock) {
        // `must_keep` takes the persist lock: before the slot's.
        let keep = !lock.lost() && self.must_keep();
        let mut state = self.keep.state.lock();
        let (released, start) = if keep {
            state.slot = Slot::Kept(lock);
            let start = !state.writing && !self.closing.load(Acquire);
            state.writing |= start;
            (None, start)
        } else {
            state.slot = Slot::Empty;
            (Some(lock), false)
        };
        self.keep.returned.notify_all();
        drop(state);
        drop(released);
        if start {
            self.start_keep_writing();
        }
    }

    /// A lock handed out by [`Session::lock_store`] that was never had (taking it failed).
    fn hand_back_nothing(&self) {
        let mut state = self.keep.state.lock();
        state.slot = Slot::Empty;
        self.keep.returned.notify_all();
    }

    /// Whether the lock must be kept: a refresh this client got is not written.
    fn must_keep(&self) -> bool {
        self.gate.persisted().refresh_unsaved()
    }

    /// Starts the retry thread (`writing` is set already).
    fn start_keep_writing(&self) {
        let spawned = self.this.upgrade().and_then(|session| {
            std::thread::Builder::new()
                .name("tokengate-keep".into())
                .spawn(move || session.keep_writing())
                .ok()
        });
        if spawned.is_none() {
            // Requests retry the write (at most once a second) all the same; a later kept
            // lock tries to start the thread again.
            self.keep.state.lock().writing = false;
        }
    }

    /// The retry thread: after a growing pause, writes what memory holds through the kept
    /// lock (only that one: it never takes a fresh lock), until the lock is no longer kept
    /// (written, or a newer record adopted) or the client closes (`shut_down` makes the
    /// last try and releases it).
    fn keep_writing(self: Arc<Self>) {
        let mut pause = FIRST_PAUSE;
        loop {
            let lock = {
                let mut state = self.keep.state.lock();
                let due = Instant::now() + pause;
                // Woken early by every change of the slot: wait on until due.
                while !self.closing.load(Acquire) {
                    if self.keep.returned.wait_until(&mut state, due).timed_out() {
                        break;
                    }
                }
                let closing = self.closing.load(Acquire);
                match std::mem::take(&mut state.slot) {
                    Slot::Kept(lock) if !closing => {
                        state.slot = Slot::Lent;
                        lock
                    }
                    // In use by another thread of the client, which gives it back.
                    Slot::Lent if !closing => {
                        state.slot = Slot::Lent;
                        continue;
                    }
                    // Released (written, or a newer record adopted), or closing (the kept
                    // lock stays for `shut_down`): the thread ends, decided under the mutex,
                    // so a lock kept after this starts a new one.
                    other => {
                        state.slot = other;
                        state.writing = false;
                        return;
                    }
                }
            };
            let locked = Locked {
                session: &self,
                lock: Some(lock),
            };
            // A store (or listener) that panics costs this try, not the thread: the lock
            // comes back (kept) as the panic unwinds, and is tried again later.
            let tried = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.retry_unsaved_quietly(locked)
            }));
            match tried {
                Ok(Some(e)) => {
                    log::debug!(target: TARGET, "the store's lock is kept: the refreshed tokens \
                        are not written yet ({e}); next try in {:?}", (pause * 2).min(MAX_PAUSE));
                }
                Ok(None) => {}
                Err(_) => {
                    log::warn!(target: TARGET, "a retry of the kept refresh's write panicked; \
                        tried again in {:?}", (pause * 2).min(MAX_PAUSE));
                }
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Wakes the retry thread (the client is closing): it ends, leaving the kept lock for
    /// `shut_down`'s last try.
    pub(super) fn wake_keeper(&self) {
        let _state = self.keep.state.lock();
        self.keep.returned.notify_all();
    }

    /// Releases a kept lock (the client is closing, after its last try of the write, or
    /// nothing is unsaved any more).
    pub(super) fn release_kept(&self) {
        let released = {
            let mut state = self.keep.state.lock();
            match std::mem::take(&mut state.slot) {
                Slot::Kept(lock) => Some(lock),
                other => {
                    state.slot = other;
                    None
                }
            }
        };
        self.keep.returned.notify_all();
        drop(released);
    }
}
