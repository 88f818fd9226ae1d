//! The shared store's lock a flight holds, and how a flight that holds it too long loses
//! it: a flight that holds the lock past its bound (a hung custom refresher) has it taken
//! away, so other processes can go on; it then makes no token call and its write is refused.
//!
//! [`FlightLock`] (the session's) registers the lock of the flight running now; the flight
//! holds it as a [`HeldLock`], through which it reads, confirms and writes, and which gives
//! it back when the flight ends (see `keep.rs`).

use std::cell::Cell;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::persistence::{Change, Persisted, Writer};
use super::Session;
use crate::error::RefreshError;
use crate::gate::Snapshot;
use crate::logging::TARGET;
use crate::store::{StoreLock, Stored};
use crate::timing::deadline_after;
use crate::tokens::{Current, RefreshToken};

/// Why a flight whose store lock was taken away neither calls nor writes.
fn taken_away() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the refresh held the store's lock past its bound and gave it up",
    )
}

/// The store lock of a flight.
enum LockState {
    /// A private store: there is no lock.
    Unshared,
    /// The shared store's lock, held.
    Held(StoreLock),
    /// Taken away from a flight that held it past its bound (released).
    Lost,
}

/// The shared store's lock of the flight running now, registered so that a flight holding
/// it too long can be made to give it up ([`Session::release_stuck_lock`]). Owned by the
/// session.
///
/// Invariants:
/// - `running` is guarded by its own mutex, held only to look at or change it: never across
///   store I/O, and no other lock is taken while it is held. It is taken after the gate's
///   persist lock (an adoption asks [`FlightLock::is_held`] under it), never before.
/// - At most one flight is registered: only the gate's one flight registers, and only a
///   shared store's lock. A flight removes its own registration only (when its
///   [`HeldLock`] drops), never one that replaced it; [`FlightLock::take_stuck`] removes a
///   registration it takes the lock away from.
/// - A registered [`Slot`] is shared by the flight and its registration: see its fields.
#[derive(Default)]
pub(super) struct FlightLock {
    running: Mutex<Option<Registration>>,
}

/// The lock of the flight running now, as registered in [`FlightLock`].
struct Registration {
    /// The flight's lock.
    slot: Arc<Slot>,
    /// When the flight got the lock: it may hold it for `Limits::hold`.
    locked_at: Instant,
}

/// A flight's lock, shared by the flight and its registration.
struct Slot {
    /// Guarded by its own mutex, which the flight holds for a call through the lock (store
    /// I/O): one who takes the lock away only tries it, and never waits for that I/O.
    state: Mutex<LockState>,
    /// Set (once, false to true) by [`FlightLock::take_stuck`] when it takes the lock away,
    /// before it tries `state`: if the flight is inside a call through its lock then, the
    /// flight reads this after the call and gives the lock up right away.
    taken: AtomicBool,
}

impl FlightLock {
    /// Whether a flight holds the shared store's lock now (registered, not taken away).
    pub(super) fn is_held(&self) -> bool {
        self.running.lock().is_some()
    }

    /// When the flight running now got the lock, if one holds it.
    fn locked_at(&self) -> Option<Instant> {
        self.running.lock().as_ref().map(|f| f.locked_at)
    }

    /// Registers `slot`, the lock a flight got just now.
    fn register(&self, slot: &Arc<Slot>) {
        *self.running.lock() = Some(Registration {
            slot: Arc::clone(slot),
            locked_at: Instant::now(),
        });
    }

    /// Removes the registration of `slot` (a flight that ends), if it is still the one.
    fn unregister(&self, slot: &Arc<Slot>) {
        let mut running = self.running.lock();
        if running.as_ref().is_some_and(|f| Arc::ptr_eq(&f.slot, slot)) {
            *running = None;
        }
    }

    /// Takes the lock away from the flight running now if it has held it for `hold`
    /// (`force`: however long). Returns whether it did, and the lock to give back unless the
    /// flight is inside a call through it (it gives the lock up right after that call).
    fn take_stuck(&self, hold: Duration, force: bool) -> (bool, Option<StoreLock>) {
        let mut running = self.running.lock();
        let stuck = running
            .as_ref()
            .is_some_and(|f| force || f.locked_at.elapsed() >= hold);
        let taken = stuck.then(|| running.take()).flatten();
        drop(running);
        let Some(f) = taken else {
            return (stuck, None);
        };
        f.slot.taken.store(true, Release);
        let state = f
            .slot
            .state
            .try_lock()
            .map(|mut s| std::mem::replace(&mut *s, LockState::Lost));
        match state {
            Some(LockState::Held(lock)) => (stuck, Some(lock)),
            _ => (stuck, None),
        }
    }
}

/// A flight's store lock, registered while held. Dropping it unregisters and releases it.
pub(super) struct HeldLock<'s> {
    session: &'s Session,
    slot: Arc<Slot>,
    /// Set by [`HeldLock::confirm`] when it found the lock gone.
    lapsed: Cell<bool>,
}

impl<'s> HeldLock<'s> {
    /// The shared store's lock (`None`: a private store), registered if there is one.
    pub(super) fn register(session: &'s Session, lock: Option<StoreLock>) -> Self {
        let state = lock.map_or(LockState::Unshared, LockState::Held);
        let shared = matches!(state, LockState::Held(_));
        let slot = Arc::new(Slot {
            state: Mutex::new(state),
            taken: AtomicBool::new(false),
        });
        if shared {
            session.flight_lock.register(&slot);
        }
        HeldLock {
            session,
            slot,
            lapsed: Cell::new(false),
        }
    }

    /// True once [`Session::release_stuck_lock`] took the lock away from this flight, or the
    /// store found its lock lapsed (see [`StoreLock::lost`]; no round trip).
    pub(super) fn lost(&self) -> bool {
        if self.slot.taken.load(Acquire) {
            return true;
        }
        match &*self.slot.state.lock() {
            LockState::Lost => true,
            LockState::Held(lock) => lock.lost(),
            LockState::Unshared => false,
        }
    }

    /// True once [`HeldLock::confirm`] found the lock gone (taken away, or lapsed).
    pub(super) fn lapsed(&self) -> bool {
        self.lapsed.get()
    }

    /// Before a token call that presents `presenting`: confirms that this flight still holds
    /// the store's lock, and records the call's intent (one round trip for a store whose
    /// lock can lapse; see [`StoreLock::before_call`]). A private store has nothing to
    /// confirm.
    ///
    /// # Errors
    /// [`RefreshError::Store`] if the lock was taken away, lapsed, or cannot be confirmed:
    /// no token call may be made then.
    pub(super) fn confirm(&self, presenting: Option<&RefreshToken>) -> Result<(), RefreshError> {
        let bound = self.session.config.limits().token_call;
        let mut state = self.slot.state.lock();
        let gone = match &mut *state {
            LockState::Unshared => return Ok(()),
            LockState::Held(_) if self.slot.taken.load(Acquire) => taken_away(),
            LockState::Lost => taken_away(),
            LockState::Held(lock) => match lock.before_call(presenting, bound) {
                Ok(true) if !self.slot.taken.load(Acquire) => return Ok(()),
                Ok(true) => taken_away(),
                Ok(false) => io::Error::other(
                    "the store's lock lapsed before the token call (another process may \
                     hold it now): no token call was made",
                ),
                Err(e) => e,
            },
        };
        // Taken away while the check ran: given up now.
        if self.slot.taken.load(Acquire) {
            if let LockState::Held(lock) = std::mem::replace(&mut *state, LockState::Lost) {
                drop(state);
                self.session.give_back(lock);
            }
        }
        self.lapsed.set(true);
        Err(RefreshError::Store(Arc::new(gone)))
    }

    /// What the store held when the lock was taken (`None` for a private store).
    pub(super) fn stored(&self) -> Option<io::Result<Stored>> {
        match &*self.slot.state.lock() {
            LockState::Held(lock) => Some(lock.stored().cloned()),
            LockState::Unshared | LockState::Lost => None,
        }
    }

    /// The record read again under the lock, if the store's lock can lapse and the read
    /// succeeded (see [`crate::store::LockedWrite::reread`]).
    pub(super) fn reread(&self) -> Option<Stored> {
        match &mut *self.slot.state.lock() {
            LockState::Held(lock) => lock.reread().ok().flatten().cloned(),
            LockState::Unshared | LockState::Lost => None,
        }
    }

    /// Writes `snap` through the lock (or with `save`/`clear` for a private store).
    pub(super) fn write(
        &self,
        snap: &Snapshot<Current>,
        p: &mut Persisted,
    ) -> Result<(), Arc<io::Error>> {
        let mut state = self.slot.state.lock();
        let writer = match &mut *state {
            LockState::Unshared => Writer::Plain,
            LockState::Held(_) if self.slot.taken.load(Acquire) => {
                Writer::Unlocked(Arc::new(taken_away()))
            }
            LockState::Held(lock) => Writer::Locked(lock),
            LockState::Lost => Writer::Unlocked(Arc::new(taken_away())),
        };
        let clock = self.session.config.clock();
        self.session
            .persistence
            .write_through(snap, writer, Change::Refreshed, p, clock)
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        self.session.flight_lock.unregister(&self.slot);
        // Kept if the refresh it got could not be written (see `keep.rs`), else released. A
        // lock taken away was given back by `release_stuck_lock`, or is given up here.
        let state = std::mem::replace(&mut *self.slot.state.lock(), LockState::Lost);
        if let LockState::Held(lock) = state {
            self.session.give_back(lock);
        }
    }
}

impl Session {
    /// For a flight that holds a shared store's lock: a thread that takes the lock away from
    /// it once it has held it for `Limits::hold` (a hung custom refresher), whether the
    /// flight runs in the background or on a request's thread, and also in a process that
    /// makes no more requests (whose threads would otherwise do this only when they give up
    /// waiting), so that it never keeps every other process from refreshing. It wakes when
    /// the flight has held the lock that long, and ends with the flight, or once it has
    /// released the lock. If it cannot be spawned, the flight runs unwatched.
    pub(super) fn watch_flight(self: &Arc<Self>) {
        let session = Arc::clone(self);
        let hold = self.config.limits().hold;
        let step = (hold / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let _ = std::thread::Builder::new()
            .name("tokengate-watch".into())
            .spawn(move || loop {
                let locked_at = session.flight_lock.locked_at();
                let deadline = locked_at
                    .and_then(|t| t.checked_add(hold))
                    .unwrap_or_else(|| deadline_after(step));
                if session.gate.wait_idle(deadline) {
                    return;
                }
                if session.release_stuck_lock(false) {
                    log::warn!(target: TARGET, "a refresh held the store's lock for {hold:?}, its \
                        bound: the lock is released and its result will not be saved");
                    return;
                }
            });
    }

    /// Takes the store lock away from the running flight if it has held it for
    /// `Limits::hold` (`force`: however long), so other processes can go on; the flight then
    /// makes no token call and its write is refused. Returns whether it did.
    pub(crate) fn release_stuck_lock(&self, force: bool) -> bool {
        let hold = self.config.limits().hold;
        // The release (a Redis round trip) runs with no lock of the session held, and never
        // waits for the flight's own store I/O: a flight inside a call through its lock gives
        // it up right after that call.
        let (stuck, lock) = self.flight_lock.take_stuck(hold, force);
        if let Some(lock) = lock {
            self.give_back(lock);
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::gate::Gate;
    use crate::session::flight::GateOf;
    use crate::{AuthClient, FileStore, RetryPolicy};

    /// `close()` on a handle that is not the last one takes the store's lock only from a
    /// flight that has held it past its bound, as a waiter giving up does. Its wait ends at
    /// its deadline with some flight running, and that may be one that got the lock during
    /// the wait (after an idle moment the closing thread did not see): here a flight that
    /// got it halfway through. It keeps the lock. Caught the close taking the lock from
    /// whatever flight ran at its deadline.
    #[test]
    fn closing_a_handle_that_is_not_the_last_keeps_the_lock_of_a_flight_inside_its_bound() {
        let dir = std::env::temp_dir().join(format!("tokengate-close-{}", std::process::id()));
        let store = FileStore::new(dir.join("tokens.json"))
            .unwrap()
            .lock_timeout(Duration::from_millis(10));
        let client = AuthClient::builder("http://127.0.0.1:9/")
            .token_timeout(Duration::from_millis(10))
            .retry(RetryPolicy::none())
            .store(store)
            .build()
            .unwrap();
        let session = Arc::clone(client.session());
        let flight = Gate::try_claim(GateOf(Arc::clone(&session)), session.gate.generation());
        let lock = session.persistence.lock().unwrap().unwrap();
        let slot = Arc::new(Slot {
            state: Mutex::new(LockState::Held(lock)),
            taken: AtomicBool::new(false),
        });
        *session.flight_lock.running.lock() = Some(Registration {
            slot: Arc::clone(&slot),
            locked_at: Instant::now() + session.config.limits().flight / 2,
        });

        let other_handle = client.clone();
        let closed = other_handle.close();
        assert!(
            matches!(closed, Err(Error::RefreshTimeout(_))),
            "{closed:?}"
        );
        assert!(
            matches!(*slot.state.lock(), LockState::Held(_)),
            "the flight inside its bound keeps its lock"
        );
        drop(flight);
        drop(client);
        let _ = std::fs::remove_dir_all(dir);
    }
}
