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
//! Invariants (checked by `tests/gate.rs` with real threads, and under loom by
//! `src/gate_loom_tests.rs`):
//! - At most one flight runs at a time; a flight is only started for the current generation,
//!   so one expiry causes exactly one refresh no matter how many threads see it.
//! - A caller whose generation is stale never refreshes: it returns the newer tokens at once.
//! - A flight always ends by publishing an outcome and waking every waiter, also when the
//!   refresher panics (the [`LeaderGuard`] does it in `Drop`).
//! - A refresh result is installed only if the generation is still the one it refreshed:
//!   it never overwrites a newer login (`replace`) nor resurrects a logout.
//!
//! Lock order: `flight` → `state` (read) and `persist` → `state` (write). Nothing takes `flight`
//! or `persist` while holding `state`, and nothing takes `persist` while holding `flight`.
//! No lock is held while the refresher runs or while a user callback runs.

use std::time::Instant;

use crate::sync::{Arc, Condvar, Mutex, RwLock};

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

/// What one call of the refresher produced.
pub(crate) enum Attempt<T, E> {
    /// New tokens.
    Refreshed(T),
    /// A failure that keeps the session (network, 5xx, …).
    Failed(E),
    /// The session is over (`invalid_grant`).
    Expired,
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

/// A proactive flight claimed by [`Gate::try_claim`], holding the snapshot it refreshes.
/// It must be passed to [`Gate::lead_claimed`]; dropping it unused would leave the flight
/// marked as running.
#[must_use]
pub(crate) struct Claim<T>(Snapshot<T>);

/// What the calling thread did inside [`Gate::refresh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Its generation was stale: it took the newer tokens without refreshing.
    Stale,
    /// It ran the refresher.
    Led,
    /// It waited for another thread's flight.
    Waited,
}

/// The result of a blocking refresh that produced or found newer tokens.
pub(crate) struct Fresh<T> {
    pub(crate) snapshot: Snapshot<T>,
    /// True only for the one caller whose flight ended the session (it runs the listener).
    pub(crate) ended_session: bool,
}

struct State<T> {
    tokens: Option<Arc<T>>,
    generation: u64,
    expired: bool,
}

struct Flight<E> {
    /// A leader is running the refresher. Set by the thread that claims the flight,
    /// cleared by its [`LeaderGuard`]. Guarded by `Gate::flight`.
    running: bool,
    /// Number of finished flights; waiters wait for it to move. Guarded by `Gate::flight`.
    finished: u64,
    /// Outcome of the last finished flight: `Ok` if it changed the tokens. Guarded by `Gate::flight`.
    last: Result<(), Failure<E>>,
    /// The generation the last finished flight refreshed. A waiter shares a failure only
    /// if it was for the waiter's own generation. Guarded by `Gate::flight`.
    last_generation: u64,
    /// The generation whose proactive (refresh-ahead) flight failed: no second proactive
    /// attempt is made for it; the next attempt waits until the token expires or draws a 401.
    proactive_failed: Option<u64>,
    /// Threads blocked on `cond` waiting for a flight (or a replacement). Guarded by `Gate::flight`.
    waiting: usize,
}

/// The gate. `T` is the token set, `E` the (cheaply cloned) error a failed flight shares.
pub(crate) struct Gate<T, E> {
    /// The tokens and their generation. Written only by `install` (under `persist`).
    state: RwLock<State<T>>,
    /// Serializes installs with the `commit` callback that persists them, so the store sees
    /// changes in the same order as memory.
    persist: Mutex<()>,
    /// The single-flight state.
    flight: Mutex<Flight<E>>,
    /// Signalled (under `flight`) when a flight finishes or the tokens are replaced.
    cond: Condvar,
}

impl<T, E: Clone> Gate<T, E> {
    /// A gate holding `tokens` at generation 0.
    pub(crate) fn new(tokens: Option<T>) -> Self {
        Gate {
            state: RwLock::new(State {
                tokens: tokens.map(Arc::new),
                generation: 0,
                expired: false,
            }),
            persist: Mutex::new(()),
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

    /// How many threads are blocked right now waiting for a flight to finish.
    pub(crate) fn waiting(&self) -> usize {
        self.flight.lock().waiting
    }

    fn generation(&self) -> u64 {
        self.state.read().generation
    }

    /// Returns tokens newer than generation `seen`, refreshing them if no other thread is.
    ///
    /// - If the generation already moved on, returns the current tokens without refreshing.
    /// - If no flight runs, this thread leads: it calls `run` with no lock held and installs
    ///   the result (then calls `commit` with the new snapshot, under the persist lock).
    /// - Otherwise it waits, at most until `deadline`, for that flight, and shares its outcome.
    pub(crate) fn refresh(
        &self,
        seen: u64,
        deadline: Instant,
        run: impl FnOnce(Option<&Arc<T>>) -> Attempt<T, E>,
        commit: impl FnOnce(&Snapshot<T>),
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
                return (Role::Led, self.lead(snap, false, run, commit));
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

    /// Claims a proactive (refresh-ahead) flight for generation `seen` without blocking.
    /// Returns false if a flight is running, the generation moved, or a proactive flight for
    /// this generation already failed. With `Some(claim)`, the caller must pass the claim
    /// to [`Gate::lead_claimed`] (on any thread).
    pub(crate) fn try_claim(&self, seen: u64) -> Option<Claim<T>> {
        let mut flight = self.flight.lock();
        let snap = self.snapshot();
        if flight.running || flight.proactive_failed == Some(seen) || snap.generation != seen {
            return None;
        }
        flight.running = true;
        Some(Claim(snap))
    }

    /// Runs a flight claimed by [`Gate::try_claim`].
    pub(crate) fn lead_claimed(
        &self,
        claim: Claim<T>,
        run: impl FnOnce(Option<&Arc<T>>) -> Attempt<T, E>,
        commit: impl FnOnce(&Snapshot<T>),
    ) -> Result<Fresh<T>, Failure<E>> {
        self.lead(claim.0, true, run, commit)
    }

    /// Gives up a claim that will not run (e.g. its thread could not be spawned). Waiters
    /// that joined it wake up and one of them leads.
    pub(crate) fn abandon(&self, claim: Claim<T>) {
        let mut flight = self.flight.lock();
        flight.running = false;
        flight.finished += 1;
        flight.last = Ok(());
        flight.last_generation = claim.0.generation;
        self.cond.notify_all();
    }

    fn lead(
        &self,
        snap: Snapshot<T>,
        proactive: bool,
        run: impl FnOnce(Option<&Arc<T>>) -> Attempt<T, E>,
        commit: impl FnOnce(&Snapshot<T>),
    ) -> Result<Fresh<T>, Failure<E>> {
        let seen = snap.generation;
        let guard = LeaderGuard {
            gate: self,
            generation: seen,
            armed: true,
        };
        let attempt = run(snap.tokens.as_ref());
        let result = match attempt {
            Attempt::Refreshed(t) => Ok(match self.install(Some(seen), Some(t), false, commit) {
                Some(snapshot) => Fresh {
                    snapshot,
                    ended_session: false,
                },
                // Replaced meanwhile by set_tokens/clear_tokens: the newer tokens win.
                None => Fresh {
                    snapshot: self.snapshot(),
                    ended_session: false,
                },
            }),
            Attempt::Expired => Ok(match self.install(Some(seen), None, true, commit) {
                Some(snapshot) => Fresh {
                    snapshot,
                    ended_session: true,
                },
                None => Fresh {
                    snapshot: self.snapshot(),
                    ended_session: false,
                },
            }),
            Attempt::Failed(e) => Err(Failure::Failed(e)),
        };
        let published = match &result {
            Ok(_) => Ok(()),
            Err(f) => Err(f.clone()),
        };
        guard.publish(published, (proactive && result.is_err()).then_some(seen));
        result
    }

    /// Replaces the tokens unconditionally (a new login or a logout) and wakes every waiter,
    /// who will retry with the new generation.
    pub(crate) fn replace(
        &self,
        tokens: Option<T>,
        commit: impl FnOnce(&Snapshot<T>),
    ) -> Snapshot<T> {
        let snap = self
            .install(None, tokens, false, commit)
            .expect("an unconditional install always succeeds");
        let mut flight = self.flight.lock();
        flight.proactive_failed = None;
        self.cond.notify_all();
        drop(flight);
        snap
    }

    /// Clears the tokens (a logout) if the generation is still `expected`, and wakes every
    /// waiter like [`Gate::replace`]. Returns `None`, changing nothing, if the generation moved.
    pub(crate) fn clear_if(
        &self,
        expected: u64,
        commit: impl FnOnce(&Snapshot<T>),
    ) -> Option<Snapshot<T>> {
        let snap = self.install(Some(expected), None, false, commit)?;
        let mut flight = self.flight.lock();
        flight.proactive_failed = None;
        self.cond.notify_all();
        drop(flight);
        Some(snap)
    }

    /// Installs `tokens` if the generation is still `expected` (or unconditionally for `None`),
    /// then calls `commit` with the new snapshot while still holding the persist lock.
    fn install(
        &self,
        expected: Option<u64>,
        tokens: Option<T>,
        expired: bool,
        commit: impl FnOnce(&Snapshot<T>),
    ) -> Option<Snapshot<T>> {
        let _persist = self.persist.lock();
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
        commit(&snap);
        Some(snap)
    }
}

/// Owned by the thread running a flight. Publishing the outcome ends the flight and wakes
/// every waiter; if the refresher panics, `Drop` publishes [`Failure::Panicked`] instead,
/// so no waiter is ever stranded.
struct LeaderGuard<'a, T, E: Clone> {
    gate: &'a Gate<T, E>,
    /// The generation this flight refreshes.
    generation: u64,
    armed: bool,
}

impl<T, E: Clone> LeaderGuard<'_, T, E> {
    fn publish(mut self, outcome: Result<(), Failure<E>>, proactive_failed: Option<u64>) {
        self.armed = false;
        self.finish(outcome, proactive_failed);
    }

    fn finish(&self, outcome: Result<(), Failure<E>>, proactive_failed: Option<u64>) {
        let mut flight = self.gate.flight.lock();
        flight.running = false;
        flight.finished += 1;
        flight.last = outcome;
        flight.last_generation = self.generation;
        if proactive_failed.is_some() {
            flight.proactive_failed = proactive_failed;
        }
        self.gate.cond.notify_all();
    }
}

impl<T, E: Clone> Drop for LeaderGuard<'_, T, E> {
    #[cold]
    fn drop(&mut self) {
        if self.armed {
            self.finish(Err(Failure::Panicked), None);
        }
    }
}

// Model checks under loom; see that file for how to run them.
#[cfg(all(test, tokengate_loom))]
#[path = "gate_loom_tests.rs"]
mod loom_tests;
