//! The session: the tokens, and everything that keeps them fresh and in step with the store.
//! [`Session`] is what a client's handles and its background threads share.
//!
//! By concern, each part a type of its own that [`Session`] owns, and that the others use
//! through its methods:
//! - here: the session's parts and its small API (the tokens for a request, a refresh
//!   through the gate, a forced refresh, closing the client);
//! - `flight.rs`: the refresh path, "tokens newer than generation g", the same code for a
//!   401, an expiry, a background refresh-ahead, a forced refresh and an acquisition;
//! - `persistence.rs`: how memory and the store stay in step: writes in the order of
//!   installs, adopting what other processes stored, retrying a write that failed, logins
//!   and logouts. `Persisted` is what the client knows about its store (under the gate's
//!   persist lock), `Persistence` the store itself and lock-free mirrors of `Persisted`;
//! - `flight_lock.rs`: the store lock a flight holds (`FlightLock`, the session's
//!   registration of it; `HeldLock`, the flight's hold on it), and how a flight that holds
//!   it too long loses it;
//! - `keep.rs`: every taking of the store's lock by the session, and the lock kept while a
//!   refresh is not written (`Keep`).
//!
//! Lock order, extending the gate's (`flight` before `state`, `persist` before `state`):
//! - a shared store's own lock (the cross-process one, taken through `Session::lock_store`)
//!   before the gate's persist lock, never while holding it;
//! - the persist lock before `FlightLock`'s mutex (an adoption asks whether a flight holds
//!   the store's lock) and before a flight's `Slot` mutex (a flight's write, in its
//!   install's commit);
//! - a `Slot` mutex is held across store I/O through the flight's lock, and nothing of the
//!   session is taken under it; who takes the lock away from a flight only tries it;
//! - `FlightLock`'s mutex and `Keep`'s are innermost: nothing is taken while either is held
//!   (`Session::give_back` asks the persist lock whether to keep a lock before it takes
//!   `Keep`'s); `Persistence` has no lock (atomics, each written as its doc says).

mod flight;
mod flight_lock;
mod keep;
mod persistence;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Release;
use std::sync::{Arc, Weak};

use ureq::Agent;

use crate::config::Config;
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::Gate;
use crate::hooks::Hooks;
use crate::logging::TARGET;
use crate::login::RevocationError;
use crate::reentry;
use crate::refresh::Refresh;
use crate::store::{Revision, TokenStore};
use crate::timing::deadline_after;
use crate::tokens::{Current, Tokens};

use self::flight::FlightLog;
use self::flight_lock::FlightLock;
use self::persistence::Persistence;
pub(crate) use self::persistence::{Persisted, StoreMode};

/// The tokens of one client and what keeps them fresh. Fields are written once by `build()`,
/// except the parts that guard their own state: the gate (see `gate.rs` for which lock
/// guards what), `persistence`, `flight_lock` and `keep` (each type's doc says which lock
/// guards which field and who writes each atomic), and `closing`.
pub(crate) struct Session {
    config: Arc<Config>,
    hooks: Hooks,
    /// The tokens, the refresh gate, and (under its persist lock) what the store holds.
    gate: Gate<Current, Arc<RefreshError>, Persisted>,
    refresher: Option<Box<dyn Refresh>>,
    token_agent: Agent,
    /// The store, and the lock-free mirrors of `Persisted` (see `persistence.rs`).
    persistence: Persistence,
    /// Set once (never cleared), by [`Session::shut_down`] of the last handle: a flight still
    /// running makes no new token call (it finishes the one on the wire and saves it), and
    /// the thread retrying a kept lock's write ends (see `keep.rs`).
    closing: AtomicBool,
    /// The store lock held by the flight running now, so a flight that holds it too long
    /// (a hung custom refresher) can be made to give it up (see `flight_lock.rs`).
    flight_lock: FlightLock,
    /// The store's lock, kept while a refresh is not written (see `keep.rs`).
    keep: keep::Keep,
    /// This session, for the threads it starts from a `&self` (set by [`Session::into_arc`]).
    this: Weak<Session>,
}

/// What `build()` hands to [`Session::new`].
pub(crate) struct Parts {
    pub(crate) config: Arc<Config>,
    pub(crate) hooks: Hooks,
    pub(crate) refresher: Option<Box<dyn Refresh>>,
    pub(crate) token_agent: Agent,
    pub(crate) store: Box<dyn TokenStore>,
    pub(crate) mode: StoreMode,
    /// The tokens to start with.
    pub(crate) tokens: Option<Current>,
    /// The revision of a shared store they correspond to, if known.
    pub(crate) base: Option<Revision>,
}

impl Session {
    pub(crate) fn new(p: Parts) -> Session {
        let lineage = p.tokens.as_ref().and_then(|c| c.tokens.lineage());
        Session {
            config: p.config,
            hooks: p.hooks,
            gate: Gate::new(p.tokens, Persisted::new(p.base, lineage)),
            refresher: p.refresher,
            token_agent: p.token_agent,
            persistence: Persistence::new(p.store, p.mode, p.base),
            closing: AtomicBool::new(false),
            flight_lock: FlightLock::default(),
            keep: keep::Keep::default(),
            this: Weak::new(),
        }
    }

    /// The session in its `Arc`, knowing its own address.
    pub(crate) fn into_arc(mut self) -> Arc<Session> {
        Arc::new_cyclic(|this| {
            self.this = this.clone();
            self
        })
    }

    /// The listeners and counters.
    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// Whether the client has a refresher (without one a 401 is final).
    pub(crate) fn has_refresher(&self) -> bool {
        self.refresher.is_some()
    }

    /// A copy of the current tokens, if any.
    pub(crate) fn tokens(&self) -> Option<Tokens> {
        self.gate.snapshot().tokens.map(|c| c.tokens.clone())
    }

    /// `(has tokens, generation, the session expired)`, for `Debug`.
    pub(crate) fn state(&self) -> (bool, u64, bool) {
        let snap = self.gate.snapshot();
        (snap.tokens.is_some(), snap.generation, snap.expired)
    }

    /// How many threads wait for a refresh right now.
    pub(crate) fn waiting(&self) -> usize {
        self.gate.waiting()
    }

    /// The tokens to send now. Blocks only if there is no valid token: expired (or none, with
    /// a strategy that can acquire one). Inside the refresh window it starts a background
    /// refresh (when one can succeed) and returns the still-valid token at once.
    pub(crate) fn usable_tokens(self: &Arc<Self>) -> Result<(Arc<Current>, u64), Error> {
        self.sync_store()?;
        let snap = self.gate.snapshot();
        let Some(current) = snap.tokens else {
            return match &self.refresher {
                _ if snap.expired => Err(Error::SessionExpired),
                Some(r) if r.acquires_without_tokens() => {
                    self.renew(snap.generation, RefreshReason::Acquire)
                }
                _ => Err(Error::NoTokens),
            };
        };
        if let (Some(refresher), Some(_)) = (&self.refresher, current.refresh_at) {
            let now = self.config.clock().now();
            if current.wants_refresh(now) {
                if current.is_expired(now) {
                    return self.renew(snap.generation, RefreshReason::Expired);
                }
                if refresher.can_refresh(&current.tokens) {
                    self.refresh_ahead(snap.generation);
                }
            }
        }
        Ok((current, snap.generation))
    }

    /// Tokens to hand out (see [`crate::AuthClient::access_token`]): as for a request, and
    /// inside the refresh window, after the refresh-ahead flight that request starts (at most
    /// one per generation, see `Gate::try_claim`) has ended, since whoever gets them cannot
    /// come back after a 401. That flight never ends the session and is not tried again for
    /// the same tokens once it failed: the still-valid tokens are returned then, with no call.
    pub(crate) fn valid_tokens(self: &Arc<Self>) -> Result<Arc<Current>, Error> {
        let (current, _) = self.usable_tokens()?;
        let now = self.config.clock().now();
        let due = self
            .refresher
            .as_ref()
            .is_some_and(|r| current.wants_refresh(now) && r.can_refresh(&current.tokens));
        // From inside a refresh (a listener), waiting would wait for this very thread.
        if !due || reentry::is_busy(self.key()) {
            return Ok(current);
        }
        // Bounded like any wait for a refresh; past it, what is there now is what there is.
        self.gate
            .wait_idle(deadline_after(self.config.limits().refresh_timeout));
        // The new tokens, the still-valid ones (the flight failed), or, if they expired
        // meanwhile, the refresh at expiry (which may end the session).
        self.usable_tokens().map(|(c, _)| c)
    }

    /// The refresh path, in one place: returns tokens newer than generation `seen`. This
    /// thread leads the flight (see `flight.rs`) or waits for the thread that does and shares
    /// its outcome; a caller whose generation is already stale gets the newer tokens at once.
    pub(crate) fn renew(
        self: &Arc<Self>,
        seen: u64,
        reason: RefreshReason,
    ) -> Result<(Arc<Current>, u64), Error> {
        if reentry::is_busy(self.key()) {
            return Err(Error::Reentrant);
        }
        let deadline = deadline_after(self.config.limits().refresh_timeout);
        let mut note = FlightLog::default();
        let (role, result) = self.gate.refresh(seen, deadline, |lead| {
            let flown = self.fly(lead, reason, &mut note);
            note.waiters = self.gate.waiting();
            flown
        });
        let snapshot = self.after_flight(seen, role, note, result)?.snapshot;
        match snapshot.tokens {
            Some(c) => Ok((c, snapshot.generation)),
            None if snapshot.expired => Err(Error::SessionExpired),
            None => Err(Error::NoTokens),
        }
    }

    /// A refresh asked for (see [`crate::AuthClient::force_refresh`]).
    pub(crate) fn force_refresh(self: &Arc<Self>) -> Result<(), Error> {
        let Some(refresher) = &self.refresher else {
            return Err(Error::Config("force_refresh needs a refresher"));
        };
        self.sync_store()?;
        let snap = self.gate.snapshot();
        if snap.tokens.is_none() && !refresher.acquires_without_tokens() {
            return Err(if snap.expired {
                Error::SessionExpired
            } else {
                Error::NoTokens
            });
        }
        self.renew(snap.generation, RefreshReason::Forced).map(drop)
    }

    /// Revokes `tokens` at the server, if the refresher can (see [`Refresh::revoke`]).
    pub(crate) fn revoke(&self, tokens: &Tokens) -> Option<Result<(), RevocationError>> {
        self.refresher.as_ref()?.revoke(&self.token_agent, tokens)
    }

    /// Stamps `tokens` with this client's clock and skew (see [`Current::new`]).
    pub(crate) fn stamp(&self, tokens: Tokens) -> Result<Current, &'static str> {
        Current::new(tokens, self.config.clock().now(), self.config.skew())
    }

    /// Reports tokens adopted from a shared store (`has_tokens`: a refresh or login, else a
    /// logout).
    fn report_adopted(&self, generation: u64, has_tokens: bool) {
        let what = if has_tokens {
            "a refresh or login"
        } else {
            "a logout"
        };
        self.hooks.report(
            Event::Adopted { generation },
            format_args!("adopted tokens another process stored ({what}; generation {generation})"),
        );
    }

    /// Identifies this client for [`crate::reentry`].
    pub(crate) fn key(&self) -> usize {
        self as *const Session as usize
    }

    /// Finishes with the client: waits for a refresh in flight and retries a failed write
    /// (see [`crate::AuthClient::close`]). Called once per handle closed. `last`: no other
    /// handle is left, so the flight makes no new token call, the wait is bounded by one
    /// call, and a flight still running then loses the store's lock, whatever its age (the
    /// process is about to end). A handle that is not the last one takes the lock only from
    /// a flight that held it past its bound, as a waiter giving up does.
    pub(crate) fn shut_down(&self, last: bool) -> Result<(), Error> {
        if reentry::is_busy(self.key()) {
            return Err(Error::Reentrant);
        }
        if last {
            self.closing.store(true, Release);
            self.wake_keeper();
        }
        let limits = self.config.limits();
        let bound = if last {
            limits.closing()
        } else {
            limits.flight
        };
        log::debug!(target: TARGET, "closing the client ({} handle): waiting up to {bound:?} for a refresh in flight",
            if last { "last" } else { "not the last" });
        let mut result = Ok(());
        if !self.gate.wait_idle(deadline_after(bound)) {
            if self.release_stuck_lock(last) {
                log::warn!(target: TARGET, "a refresh did not finish within {bound:?} of closing the client: \
                    its store lock is released and its result will not be saved");
            }
            result = Err(Error::RefreshTimeout(bound));
        }
        if self.persistence.is_unsaved() {
            if let Some(e) = self.retry_unsaved(true) {
                result = result.and(Err(Error::Store(e)));
            }
        }
        if last {
            // A lock kept for a refresh that could not be written is released: the process
            // is about to end (see `keep.rs`).
            self.release_kept();
        }
        result
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (has_tokens, generation, expired) = self.state();
        f.debug_struct("Session")
            .field("has_tokens", &has_tokens)
            .field("generation", &generation)
            .field("session_expired", &expired)
            .field("store", &self.persistence.mode())
            .finish_non_exhaustive()
    }
}
