//! The refresh gate: one thread refreshes, the others wait, everyone retries.
//!
//! ```text
//!             read()                          lock()                 notify_all()
//! request ──► state: RwLock<State> ──stale?──► flight: Mutex<Flight> ───────────────┐
//!   ▲           tokens, generation             running? ── yes ─► wait on Condvar ◄─┘
//!   │                                            │ no                    │ woken: generation moved
//!   │                                            ▼                       │ (retry with new token) or
//!   │                                     lead: refresh with no lock     │ the flight failed (share
//!   └─────── retry with generation+1 ◄──── install (generation check) ───┘ its one outcome)
//! ```
//!
//! Invariants (checked by `tests/gate/gate.rs` with real threads, and under loom by
//! `src/gate_loom_tests.rs`):
//! - At most one flight runs at a time; a flight is only started for the current generation,
//!   so one expiry causes exactly one refresh no matter how many threads see it.
//! - A caller whose generation is stale never refreshes: it returns the newer tokens at once.
//! - A flight always ends by publishing an outcome and waking every waiter, also when the
//!   refresher panics (the [`LeaderGuard`] does it in `Drop`) and when a claimed proactive
//!   flight is dropped without running (the [`Claim`] does it in `Drop`).
//! - A result is installed only if the generation is still the one it refreshed (or the one
//!   an adoption read): it never overwrites a newer login (`replace`) nor resurrects a logout.
//! - A proactive flight that fails or panics is not tried again for the same generation.
//!
//! Lock order: `flight` → `state` (read) and `persist` → `state` (write). Nothing takes
//! `flight` or `persist` while holding `state`, nor `persist` while holding `flight`. The
//! leader runs with no lock of the gate held; it holds `persist` only inside
//! [`Lead::install`], for the install and its `commit`. (The client takes a shared store's
//! own lock before `persist`, never after.)

use std::ops::Deref;
use std::time::Instant;

use crate::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

/// The tokens as seen at one instant, with their generation.
pub(crate) struct Snapshot<T> {
    /// `None` when logged out or the session expired.
    pub(crate) tokens: Option<Arc<T>>,
    /// Bumped by every change of `tokens`.
    pub(crate) generation: u64,
    /// True when `tokens` is `None` because a refresh ended the session.
    pub(crate) expired: bool,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            tokens: self.tokens.clone(),
            generation: self.generation,
            expired: self.expired,
        }
    }
}

/// Why a blocking refresh returned no newer tokens.
#[derive(Clone, Debug)]
pub(crate) enum Failure<E> {
    /// The flight failed with this error; every waiter of that flight gets a clone.
    Failed(E),
    /// The refresher panicked.
    Panicked,
    /// The deadline passed while waiting on another thread's flight.
    TimedOut,
}

/// What the calling thread did inside [`Gate::refresh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Its generation was stale: it took the newer tokens without refreshing.
    Stale,
    /// It ran the flight.
    Led,
    /// It waited for another thread's flight.
    Waited,
}

/// The result of a flight that produced or found newer tokens.
pub(crate) struct Fresh<T> {
    pub(crate) snapshot: Snapshot<T>,
    /// True only for the one caller whose flight ended the session (it runs the listener).
    pub(crate) ended_session: bool,
}

/// The tokens. Guarded by `Gate::state`; written only by `install`, under `Gate::persist`.
struct State<T> {
    tokens: Option<Arc<T>>,
    generation: u64,
    expired: bool,
}

/// The single-flight state. Every field is guarded by `Gate::flight`.
struct Flight<E> {
    /// A leader is running (or a proactive flight is claimed). Set by the thread that claims
    /// the flight, cleared by its [`LeaderGuard`] or [`Claim`].
    running: bool,
    /// Number of finished flights; waiters wait for it to move.
    finished: u64,
    /// Outcome of the last finished flight: `Ok` if it changed (or found changed) the tokens.
    last: Result<(), Failure<E>>,
    /// The generation the last finished flight refreshed. A waiter shares a failure only
    /// if it was for the waiter's own generation.
    last_generation: u64,
    /// The generation whose proactive (refresh-ahead) flight failed, panicked or was
    /// abandoned: no second proactive attempt is made for it; the next attempt waits until
    /// the token expires or draws a 401. Cleared by `replace`.
    proactive_failed: Option<u64>,
    /// Threads blocked on `cond` waiting for a flight (or a replacement).
    waiting: usize,
}

/// The gate. `T` is the token set, `E` the (cheaply cloned) error a failed flight shares,
/// `P` what the owner persists alongside each install (kept under the persist lock).
pub(crate) struct Gate<T, E, P> {
    /// The tokens and their generation. Written only by `install` (under `persist`).
    state: RwLock<State<T>>,
    /// Serializes installs with the `commit` callback that persists them, so the store sees
    /// changes in the same order as memory; guards the owner's persistence record `P`.
    persist: Mutex<P>,
    /// The single-flight state.
    flight: Mutex<Flight<E>>,
    /// Signalled (under `flight`) when a flight finishes or the tokens are replaced.
    cond: Condvar,
}

impl<T, E: Clone, P> Gate<T, E, P> {
    /// A gate holding `tokens` at generation 0.
    pub(crate) fn new(tokens: Option<T>, persisted: P) -> Self {
        Gate {
            state: RwLock::new(State {
                tokens: tokens.map(Arc::new),
                generation: 0,
                expired: false,
            }),
            persist: Mutex::new(persisted),
            flight: Mutex::new(Flight {
                running: false,
                finished: 0,
                last: Ok(()),
                last_generation: 0,
                proactive_failed: None,
                waiting: 0,
            }),
            cond: Condvar::new(),
        }
    }

    /// The current tokens. One uncontended read lock and an `Arc` clone.
    pub(crate) fn snapshot(&self) -> Snapshot<T> {
        let s = self.state.read();
        Snapshot {
            tokens: s.tokens.clone(),
            generation: s.generation,
            expired: s.expired,
        }
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.state.read().generation
    }

    /// How many threads are blocked right now waiting for a flight to finish.
    pub(crate) fn waiting(&self) -> usize {
        self.flight.lock().waiting
    }

    /// The owner's persistence record, locked (the persist lock). Must not be called while
    /// holding another lock of the gate, nor held across a blocking call.
    pub(crate) fn persisted(&self) -> MutexGuard<'_, P> {
        self.persist.lock()
    }

    /// Returns tokens newer than generation `seen`, refreshing them if no other thread is.
    ///
    /// - If the generation already moved on, returns the current tokens without refreshing.
    /// - If no flight runs, this thread leads: it calls `lead` with no lock held; `lead`
    ///   installs what it got through [`Lead::install`] and returns `Err` if it got nothing.
    /// - Otherwise it waits, at most until `deadline`, for that flight, and shares its outcome.
    pub(crate) fn refresh(
        &self,
        seen: u64,
        deadline: Instant,
        lead: impl FnOnce(&mut Lead<'_, T, E, P>) -> Result<(), E>,
    ) -> (Role, Result<Fresh<T>, Failure<E>>) {
        let mut flight = self.flight.lock();
        let mut waited_for: Option<u64> = None;
        let role = |w: &Option<u64>| {
            if w.is_some() {
                Role::Waited
            } else {
                Role::Stale
            }
        };
        loop {
            let snap = self.snapshot();
            if snap.generation != seen {
                let fresh = Fresh {
                    snapshot: snap,
                    ended_session: false,
                };
                return (role(&waited_for), Ok(fresh));
            }
            if let Some(n) = waited_for {
                // The flight we waited for ended and the tokens did not change: it failed.
                if flight.finished > n && flight.last_generation == seen {
                    if let Err(failure) = &flight.last {
                        return (Role::Waited, Err(failure.clone()));
                    }
                }
            }
            if !flight.running {
                flight.running = true;
                drop(flight);
                return (Role::Led, self.fly(snap, false, lead));
            }
            let n = flight.finished;
            waited_for = Some(n);
            flight.waiting += 1;
            let mut timed_out = false;
            while flight.finished == n && self.generation() == seen {
                if self.cond.wait_until(&mut flight, deadline)
                    && flight.finished == n
                    && self.generation() == seen
                {
                    timed_out = true;
                    break;
                }
            }
            flight.waiting -= 1;
            if timed_out {
                return (Role::Waited, Err(Failure::TimedOut));
            }
        }
    }

    /// Claims a proactive (refresh-ahead) flight for generation `seen` without blocking, for
    /// `owner` (the handle through which the claim reaches the gate, e.g. an `Arc`). `None` if
    /// a flight is running, the generation moved, or a proactive flight for this generation
    /// already failed. The claim runs the flight with [`Claim::lead`] (on any thread);
    /// dropped unused, it ends the flight and wakes whoever waits on it.
    pub(crate) fn try_claim<O: Deref<Target = Self>>(owner: O, seen: u64) -> Option<Claim<O>> {
        {
            let mut flight = owner.flight.lock();
            if flight.running || flight.proactive_failed == Some(seen) || owner.generation() != seen
            {
                return None;
            }
            flight.running = true;
        }
        Some(Claim {
            owner,
            generation: Some(seen),
        })
    }

    /// Waits until no flight runs (or `deadline` passes: then returns false).
    pub(crate) fn wait_idle(&self, deadline: Instant) -> bool {
        let mut flight = self.flight.lock();
        while flight.running {
            if self.cond.wait_until(&mut flight, deadline) && flight.running {
                return false;
            }
        }
        true
    }

    /// Runs a flight this thread claimed, and publishes its outcome (also if `lead` panics).
    fn fly(
        &self,
        snap: Snapshot<T>,
        proactive: bool,
        lead: impl FnOnce(&mut Lead<'_, T, E, P>) -> Result<(), E>,
    ) -> Result<Fresh<T>, Failure<E>> {
        let guard = LeaderGuard {
            gate: self,
            generation: snap.generation,
            proactive,
            armed: true,
        };
        let mut leading = Lead {
            gate: self,
            snap,
            installed: None,
            ended_session: false,
        };
        let result = match lead(&mut leading) {
            Ok(()) => Ok(Fresh {
                // What it installed, or (if a login or logout replaced the tokens first)
                // what is there now: the newer tokens win.
                snapshot: leading.installed.unwrap_or_else(|| self.snapshot()),
                ended_session: leading.ended_session,
            }),
            Err(e) => Err(Failure::Failed(e)),
        };
        guard.publish(match &result {
            Ok(_) => Ok(()),
            Err(f) => Err(f.clone()),
        });
        result
    }

    /// Replaces the tokens (a new login, a logout, or what another process stored) if the
    /// generation is still `expected` (`None`: unconditionally) and `accept` agrees (it sees
    /// the persistence record, under the persist lock), and wakes every waiter, who retries
    /// with the new generation. `commit` runs under the persist lock.
    pub(crate) fn replace(
        &self,
        expected: Option<u64>,
        accept: impl FnOnce(&P) -> bool,
        tokens: Option<T>,
        commit: impl FnOnce(&Snapshot<T>, &mut P),
    ) -> Option<Snapshot<T>> {
        let snap = self.install(expected, accept, tokens, false, commit)?;
        let mut flight = self.flight.lock();
        flight.proactive_failed = None;
        self.cond.notify_all();
        drop(flight);
        Some(snap)
    }

    /// Installs `tokens` if the generation is still `expected` (or unconditionally for `None`)
    /// and `accept` agrees, then calls `commit` with the new snapshot while still holding the
    /// persist lock.
    fn install(
        &self,
        expected: Option<u64>,
        accept: impl FnOnce(&P) -> bool,
        tokens: Option<T>,
        expired: bool,
        commit: impl FnOnce(&Snapshot<T>, &mut P),
    ) -> Option<Snapshot<T>> {
        let mut persisted = self.persist.lock();
        if !accept(&persisted) {
            return None;
        }
        let snap = {
            let mut s = self.state.write();
            if expected.is_some_and(|g| g != s.generation) {
                return None;
            }
            s.tokens = tokens.map(Arc::new);
            s.generation += 1;
            s.expired = expired;
            Snapshot {
                tokens: s.tokens.clone(),
                generation: s.generation,
                expired,
            }
        };
        commit(&snap, &mut persisted);
        Some(snap)
    }

    /// Ends a flight that never ran (a dropped [`Claim`]); waiters wake and one of them leads.
    #[cold]
    fn abandon(&self, generation: u64) {
        let mut flight = self.flight.lock();
        flight.running = false;
        flight.finished += 1;
        flight.last = Ok(());
        flight.last_generation = generation;
        flight.proactive_failed = Some(generation);
        self.cond.notify_all();
    }
}

/// The leader's view of its flight, handed to the `lead` callback of [`Gate::refresh`] and
/// [`Claim::lead`]: the tokens it replaces, and the one way to install what it got.
pub(crate) struct Lead<'g, T, E, P> {
    gate: &'g Gate<T, E, P>,
    snap: Snapshot<T>,
    /// What this flight installed.
    installed: Option<Snapshot<T>>,
    /// Set when this flight's install ended the session.
    ended_session: bool,
}

impl<T, E: Clone, P> Lead<'_, T, E, P> {
    /// The tokens this flight replaces (`None` when acquiring without tokens).
    pub(crate) fn tokens(&self) -> Option<&Arc<T>> {
        self.snap.tokens.as_ref()
    }

    /// The generation this flight replaces.
    pub(crate) fn generation(&self) -> u64 {
        self.snap.generation
    }

    /// The owner's persistence record (the persist lock; see [`Gate::persisted`]).
    pub(crate) fn persisted(&self) -> MutexGuard<'_, P> {
        self.gate.persisted()
    }

    /// Installs `tokens` (`None` with `expired`: the session is over) if the generation is
    /// still the flight's, calling `commit` under the persist lock. Returns false (and
    /// installs nothing) if a login or logout replaced the tokens meanwhile.
    pub(crate) fn install(
        &mut self,
        tokens: Option<T>,
        expired: bool,
        commit: impl FnOnce(&Snapshot<T>, &mut P),
    ) -> bool {
        let Some(snap) = self.gate.install(
            Some(self.snap.generation),
            |_| true,
            tokens,
            expired,
            commit,
        ) else {
            return false;
        };
        self.installed = Some(snap);
        self.ended_session |= expired;
        true
    }
}

/// A claimed proactive flight, owned through `O` (an `Arc` of whatever holds the gate) so it
/// can move to another thread. Run it with [`Claim::lead`]; dropped unused (its thread could
/// not be spawned, or panicked before leading) it ends the flight in `Drop`.
pub(crate) struct Claim<O>
where
    O: Deref,
    O::Target: Abandon,
{
    owner: O,
    /// The generation claimed; `None` once the flight was handed to [`Claim::lead`].
    generation: Option<u64>,
}

/// Lets a [`Claim`] end its flight from `Drop` without naming the gate's type parameters.
pub(crate) trait Abandon {
    /// Ends an unused claim's flight.
    fn abandon_claim(&self, generation: u64);
}

impl<T, E: Clone, P> Abandon for Gate<T, E, P> {
    fn abandon_claim(&self, generation: u64) {
        self.abandon(generation);
    }
}

impl<O, T, E, P> Claim<O>
where
    O: Deref<Target = Gate<T, E, P>>,
    E: Clone,
{
    /// The owner the claim was made through.
    pub(crate) fn owner(&self) -> &O {
        &self.owner
    }

    /// Runs the claimed flight (see [`Gate::refresh`] for `lead`) and publishes its outcome.
    /// A failure (or a panic) marks the generation: no second proactive flight for it. If a
    /// login or logout replaced the tokens since the claim, the flight ends without leading.
    pub(crate) fn lead(
        mut self,
        lead: impl FnOnce(&mut Lead<'_, T, E, P>) -> Result<(), E>,
    ) -> Result<Fresh<T>, Failure<E>> {
        let claimed = self.generation.take().expect("a claim leads once");
        let snap = self.owner.snapshot();
        if snap.generation != claimed {
            return self.owner.fly(snap, true, |_| Ok(()));
        }
        self.owner.fly(snap, true, lead)
    }
}

impl<O> Drop for Claim<O>
where
    O: Deref,
    O::Target: Abandon,
{
    fn drop(&mut self) {
        if let Some(generation) = self.generation.take() {
            self.owner.abandon_claim(generation);
        }
    }
}

/// Owned by the thread running a flight. Publishing the outcome ends the flight and wakes
/// every waiter; if the leader panics, `Drop` publishes [`Failure::Panicked`] instead, so no
/// waiter is ever stranded.
struct LeaderGuard<'a, T, E: Clone, P> {
    gate: &'a Gate<T, E, P>,
    /// The generation this flight refreshes.
    generation: u64,
    /// A refresh-ahead flight: a failure marks `proactive_failed`.
    proactive: bool,
    armed: bool,
}

impl<T, E: Clone, P> LeaderGuard<'_, T, E, P> {
    fn publish(mut self, outcome: Result<(), Failure<E>>) {
        self.armed = false;
        self.finish(outcome);
    }

    fn finish(&self, outcome: Result<(), Failure<E>>) {
        let mut flight = self.gate.flight.lock();
        if self.proactive && outcome.is_err() {
            flight.proactive_failed = Some(self.generation);
        }
        flight.running = false;
        flight.finished += 1;
        flight.last = outcome;
        flight.last_generation = self.generation;
        self.gate.cond.notify_all();
    }
}

impl<T, E: Clone, P> Drop for LeaderGuard<'_, T, E, P> {
    #[cold]
    fn drop(&mut self) {
        if self.armed {
            self.finish(Err(Failure::Panicked));
        }
    }
}

// Model checks under loom; see that file for how to run them.
#[cfg(all(test, tokengate_loom))]
#[path = "gate_loom_tests.rs"]
mod loom_tests;
