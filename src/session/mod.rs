//! The session: the tokens, and everything that keeps them fresh and in step with the store.
//! [`Session`] is what a client's handles and its background threads share.
//!
//! By concern:
//! - here: the session's parts and its small API (the tokens for a request, a refresh
//!   through the gate, a forced refresh);
//! - `flight.rs`: the refresh path, "tokens newer than generation g", the same code for a
//!   401, an expiry, a background refresh-ahead, a forced refresh and an acquisition;
//! - `persistence.rs`: how memory and the store stay in step: writes in the order of
//!   installs, adopting what other processes stored, retrying a write that failed, logins
//!   and logouts;
//! - `lifecycle.rs`: the store lock a flight holds (and how a flight that holds it too long
//!   loses it), and finishing a refresh before the client goes away.
//!
//! Lock order, extending the gate's: a shared store's own lock (the cross-process one) is
//! taken before the gate's persist lock, never while holding it; the persist lock before
//! `Session::flight_lock`; `Session::flight_lock` before a flight's lock slot; the persist
//! lock before a slot.

mod flight;
mod keep;
mod lifecycle;
mod persistence;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use ureq::Agent;

use crate::config::Config;
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::Gate;
use crate::hooks::Hooks;
use crate::login::RevocationError;
use crate::reentry;
use crate::refresh::Refresh;
use crate::store::{Revision, TokenStore};
use crate::timing::deadline_after;
use crate::tokens::{Current, Tokens};

use self::flight::FlightLog;
use self::lifecycle::FlightLock;
pub(crate) use self::persistence::Persisted;

/// How the client keeps its store in step, as the store declares
/// ([`TokenStore::is_shared`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreMode {
    /// Kept by this process only: written with `save` and `clear`, never read back.
    Private,
    /// Shared with other processes or clients: polled before requests, read under its lock
    /// before refreshing, written only under its lock.
    Shared,
}

impl StoreMode {
    /// The store's lock, read under it (see [`TokenStore::lock`]); `None` for a private
    /// store, which is never locked: its changes go through `save` and `clear`.
    pub(crate) fn lock(
        self,
        store: &dyn TokenStore,
    ) -> std::io::Result<Option<crate::store::StoreLock>> {
        match self {
            StoreMode::Shared => store.lock(),
            StoreMode::Private => Ok(None),
        }
    }
}

/// The tokens of one client and what keeps them fresh. Fields are written once by `build()`,
/// except: the gate (see `gate.rs` for which lock guards what), the atomics (each says who
/// writes it) and `flight_lock` (its own mutex).
pub(crate) struct Session {
    config: Arc<Config>,
    hooks: Hooks,
    /// The tokens, the refresh gate, and (under its persist lock) what the store holds.
    gate: Gate<Current, Arc<RefreshError>, Persisted>,
    refresher: Option<Box<dyn Refresh>>,
    token_agent: Agent,
    store: Box<dyn TokenStore>,
    mode: StoreMode,
    /// Mirrors `Persisted::base` (the store revision memory corresponds to), so a request can
    /// poll the store without taking the persist lock. Written under the persist lock.
    base_revision: AtomicU64,
    /// Mirrors `Persisted::unsaved.is_some()`: memory holds a change the store did not take.
    /// Written under the persist lock; read by every request to decide whether to retry.
    unsaved: AtomicBool,
    /// A thread retrying a failed write to a shared store runs (at most one at a time).
    saving: AtomicBool,
    /// Set once the last handle is dropped or closed: a flight still running makes no new
    /// token call (it finishes the one on the wire and saves it).
    closing: AtomicBool,
    /// The store lock held by the flight running now, so a flight that holds it too long
    /// (a hung custom refresher) can be made to give it up. Guarded by its own mutex.
    flight_lock: Mutex<Option<FlightLock>>,
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
            store: p.store,
            mode: p.mode,
            base_revision: AtomicU64::new(p.base.map_or(0, Revision::get)),
            unsaved: AtomicBool::new(false),
            saving: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            flight_lock: Mutex::new(None),
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
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (has_tokens, generation, expired) = self.state();
        f.debug_struct("Session")
            .field("has_tokens", &has_tokens)
            .field("generation", &generation)
            .field("session_expired", &expired)
            .field("store", &self.mode)
            .finish_non_exhaustive()
    }
}
