//! A shared store's lock kept while a refresh is not written: fail closed.
//!
//! A refresh spends the refresh token it presents (the server rotates it). If the new tokens
//! cannot be written (a full disk, Redis refusing or not answering the write), the store
//! still holds the spent refresh token: releasing the lock would let another process read it
//! and present it again, and a server that detects reuse would end the session for
//! everyone. So the client keeps the store's lock (a `FileStore` lock stays taken, a
//! `RedisStore` lease stays renewed) while it holds fresh tokens it could not write, goes on
//! serving its own requests with them, and retries the write with backoff on a thread of its
//! own until it succeeds or the client is closed. Other processes wait for the lock (their
//! lock timeout), never presenting the spent token while this one lives.
//!
//! Every taking of the store's lock by the session goes through [`Session::lock_store`]:
//! the kept lock is lent to the thread that asks (a request's refresh, a login, the retry),
//! and comes back through [`Locked`]'s `Drop` (or [`Session::give_back`] from a flight),
//! which keeps it again if a refresh is still unsaved, or releases it.

use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Session;
use crate::logging::TARGET;
use crate::store::StoreLock;
use crate::util::deadline_after;

/// The first pause between two retries of a write under a kept lock; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two retries of a write under a kept lock.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The lock a session keeps. Guarded by `slot`'s mutex, which is held only to look at or
/// change the slot (never across store I/O); `returned` is signalled whenever it changes.
#[derive(Default)]
pub(crate) struct Keep {
    slot: Mutex<Slot>,
    returned: Condvar,
    /// The retry thread ([`Session::keep_writing`]) runs. Written by it and its spawner.
    writing: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
enum Slot {
    /// No lock kept.
    #[default]
    Empty,
    /// Kept: a refresh is not written yet.
    Kept(StoreLock),
    /// Lent to a thread of this session, which gives it back.
    Lent,
}

/// The store's lock as [`Session::lock_store`] hands it out (`None` inside: a private
/// store). Dropping it gives it back: kept while a refresh is unsaved, else released.
pub(crate) struct Locked<'s> {
    session: &'s Session,
    lock: Option<StoreLock>,
}

impl Locked<'_> {
    /// The lock, if the store is shared.
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
            self.session.give_back(Some(lock), true);
        }
    }
}

impl Session {
    /// This client's store's lock (see [`super::StoreMode::lock`]): the one it keeps, if any
    /// (waiting, at most the store's lock timeout, while another thread of this client has
    /// it), else the store's.
    pub(super) fn lock_store(&self) -> io::Result<Locked<'_>> {
        let deadline = deadline_after(self.store.lock_timeout());
        let mut slot = self.keep.slot.lock();
        loop {
            match std::mem::take(&mut *slot) {
                Slot::Empty => break,
                Slot::Kept(lock) => {
                    *slot = Slot::Lent;
                    return Ok(Locked {
                        session: self,
                        lock: Some(lock),
                    });
                }
                Slot::Lent => {
                    *slot = Slot::Lent;
                    if self
                        .keep
                        .returned
                        .wait_until(&mut slot, deadline)
                        .timed_out()
                        && matches!(*slot, Slot::Lent)
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
        drop(slot);
        Ok(Locked {
            session: self,
            lock: self.mode.lock(&*self.store)?,
        })
    }

    /// Takes back a lock handed out by [`Session::lock_store`] (`None`: it was released, e.g.
    /// taken away from a flight). `may_keep`: kept if a refresh is still unsaved and the
    /// client is not closing, else released (outside every lock of the session).
    pub(super) fn give_back(&self, lock: Option<StoreLock>, may_keep: bool) {
        // A lock the store knows lapsed (a lease taken by another holder) protects nothing.
        let keep = lock.filter(|l| may_keep && !l.lost() && self.must_keep());
        let kept = keep.is_some();
        let mut slot = self.keep.slot.lock();
        match keep {
            Some(lock) => *slot = Slot::Kept(lock),
            None if matches!(*slot, Slot::Lent) => *slot = Slot::Empty,
            None => {}
        }
        self.keep.returned.notify_all();
        drop(slot);
        if kept {
            self.start_keep_writing();
        }
    }

    /// Whether the lock must be kept: a refresh this client got is not written, and the
    /// client is not closing (then the lock is released: the process is about to end).
    fn must_keep(&self) -> bool {
        if self.closing.load(Acquire) {
            return false;
        }
        let p = self.gate.persisted();
        p.unsaved.is_some() && !p.replace_pending
    }

    /// Starts the thread that retries the write under the kept lock, unless it runs.
    fn start_keep_writing(&self) {
        if self.keep.writing.swap(true, AcqRel) {
            return;
        }
        let Some(session) = self.this.upgrade() else {
            self.keep.writing.store(false, Release);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("tokengate-keep".into())
            .spawn(move || session.keep_writing());
        if spawned.is_err() {
            // Requests retry the write (at most once a second) all the same.
            self.keep.writing.store(false, Release);
        }
    }

    /// The retry thread: with a growing pause, writes what memory holds through the kept
    /// lock, until the write succeeds (the lock is released), a newer record is adopted, or
    /// the client closes.
    fn keep_writing(self: Arc<Self>) {
        let mut pause = FIRST_PAUSE;
        loop {
            {
                let mut slot = self.keep.slot.lock();
                if !self.closing.load(Acquire) {
                    let _ = self.keep.returned.wait_for(&mut slot, pause);
                }
                if self.closing.load(Acquire) || matches!(*slot, Slot::Empty) {
                    break;
                }
            }
            // Saved meanwhile (by a request's retry), or a newer record adopted.
            if !self.must_keep() {
                self.release_kept();
                break;
            }
            if let Some(e) = self.retry_unsaved_quietly() {
                log::debug!(target: TARGET, "the store's lock is kept: the refreshed tokens are \
                    not written yet ({e}); next try in {:?}", (pause * 2).min(MAX_PAUSE));
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
        self.keep.writing.store(false, Release);
        if self.closing.load(Acquire) {
            // Whatever is kept is released now (`shut_down` retried the write once).
            self.release_kept();
        }
    }

    /// Wakes the retry thread (the client is closing).
    pub(super) fn wake_keeper(&self) {
        let _slot = self.keep.slot.lock();
        self.keep.returned.notify_all();
    }

    /// Releases a kept lock (the client is closing, after its last try of the write).
    pub(super) fn release_kept(&self) {
        let released = {
            let mut slot = self.keep.slot.lock();
            match std::mem::take(&mut *slot) {
                Slot::Kept(lock) => Some(lock),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        self.keep.returned.notify_all();
        drop(released);
    }
}
