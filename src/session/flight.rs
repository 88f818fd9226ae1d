//! The refresh path: one flight ("tokens newer than generation g"), led by one thread with no
//! lock of the gate held, and what its leader and its waiters report after it.
//!
//! 1. Take the store's lock (shared stores) and adopt what another process stored since this
//!    client last read or wrote it, unless that expired too ([`Session::read_under_lock`]).
//! 2. End the session if nothing can refresh these tokens (they are unusable by now).
//! 3. Call the refresher, retrying only where the refresh token cannot have been used and
//!    only while the lock is still held ([`Session::call_refresher`]), and install its answer,
//!    written through the store's lock before it is released ([`Session::install_answer`]).

use std::io;
use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight_lock::HeldLock;
use super::persistence::Verdict;
use super::{Persisted, Session};
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::{Failure, Fresh, Gate, Lead, Role};
use crate::hooks::{Hooks, Tally};
use crate::logging::{Chain, ThisThread, TARGET};
use crate::reentry;
use crate::refresh::Refresh;
use crate::retry;
use crate::store::Revision;
use crate::tokens::{Current, Tokens};

/// The leader's handle on its flight.
pub(super) type Leading<'g, 'l> = &'l mut Lead<'g, Current, Arc<RefreshError>, Persisted>;

/// What a flight did, for the events and log records its leader reports after it.
#[derive(Default)]
pub(super) struct FlightLog {
    /// When the leader started (after winning the flight).
    started: Option<Instant>,
    /// Why it ran.
    reason: Option<RefreshReason>,
    /// Threads waiting for it when it ended.
    pub(super) waiters: usize,
    /// It installed tokens from the token endpoint.
    refreshed: bool,
    /// It adopted what another process stored.
    adopted: bool,
    /// What it adopted replaced a login or logout of this client that was not written yet.
    superseded: bool,
    /// Its write to the store failed.
    store_error: Option<Arc<io::Error>>,
}

impl FlightLog {
    fn took(&self) -> Duration {
        self.started.map(|t| t.elapsed()).unwrap_or_default()
    }
}

/// What the store held when the flight got its lock.
enum UnderLock {
    /// Nothing left to do: memory moved on while the flight waited for the lock (a poll
    /// adopted this very record, or a login), or another process's newer tokens were adopted.
    Done,
    /// Refresh `from` (memory's tokens, or another process's that expired too; `None` when
    /// acquiring without tokens). `read`: the revision read under the lock (shared stores).
    Refresh {
        from: Option<Tokens>,
        read: Option<Revision>,
    },
}

/// A flight past step 1: its store lock, the revision it read under it, why it runs, and
/// what it did so far.
struct InFlight<'s, 'n> {
    held: HeldLock<'s>,
    read: Option<Revision>,
    reason: RefreshReason,
    note: &'n mut FlightLog,
}

/// Gives a [`crate::gate::Claim`] its way to the gate from a background thread.
pub(super) struct GateOf(pub(super) Arc<Session>);

impl std::ops::Deref for GateOf {
    type Target = Gate<Current, Arc<RefreshError>, Persisted>;
    fn deref(&self) -> &Self::Target {
        &self.0.gate
    }
}

impl Session {
    /// Starts a refresh of generation `seen` in the background, unless a flight runs or a
    /// background refresh of it already failed. The caller goes on with its valid token.
    pub(crate) fn refresh_ahead(self: &Arc<Self>, seen: u64) {
        let Some(claim) = Gate::try_claim(GateOf(Arc::clone(self)), seen) else {
            return;
        };
        // If the thread cannot be spawned, the closure and the claim in it are dropped, and
        // the claim's `Drop` ends the flight, so nobody waits on one that never runs.
        let _ = std::thread::Builder::new()
            .name("tokengate-refresh".into())
            .spawn(move || {
                let session = Arc::clone(&claim.owner().0);
                let mut note = FlightLog::default();
                let result =
                    claim.lead(|lead| session.fly(lead, RefreshReason::Proactive, &mut note));
                // Nobody to return errors to: the next request sees the outcome through the gate.
                let _ = session.after_flight(seen, Role::Led, note, result);
            });
    }

    /// One flight (see the module docs). Returns `Err` when nothing was installed and the
    /// session goes on.
    pub(super) fn fly(
        self: &Arc<Self>,
        lead: Leading<'_, '_>,
        reason: RefreshReason,
        note: &mut FlightLog,
    ) -> Result<(), Arc<RefreshError>> {
        let _busy = reentry::enter(self.key());
        let _panics = CountPanic(&self.hooks);
        note.started = Some(Instant::now());
        note.reason = Some(reason);
        let Some(refresher) = self.refresher.as_deref() else {
            return Err(Arc::new(RefreshError::NoRefreshToken));
        };
        let lock = self.lock_store().map_err(store_error)?.into_inner();
        let shared = lock.is_some();
        let held = HeldLock::register(self, lock);
        if shared {
            self.watch_flight();
        }
        let (from, read) = match self.read_under_lock(lead, &held, note)? {
            UnderLock::Done => return Ok(()),
            UnderLock::Refresh { from, read } => (from, read),
        };
        let can_refresh = match &from {
            Some(t) => refresher.can_refresh(t),
            None => refresher.acquires_without_tokens(),
        };
        if !can_refresh {
            // Asked for, or ahead of time: the tokens in hand are still valid, so a refresh
            // that cannot be made is an error, not the end of the session (which comes only
            // once they are unusable).
            if matches!(reason, RefreshReason::Proactive | RefreshReason::Forced) {
                return Err(Arc::new(RefreshError::NoRefreshToken));
            }
            lead.install(None, true, |snap, p| {
                note.store_error = held.write(snap, p).err();
            });
            return Ok(());
        }
        if self.closing.load(Acquire) {
            return Err(Arc::new(RefreshError::transient(
                "the client was closed before the refresh started",
            )));
        }
        let generation = lead.generation();
        self.hooks.report(
            Event::RefreshStarted { reason, generation },
            format_args!("refresh of token generation {generation} started ({reason:?}) on thread {ThisThread}"),
        );
        // Acquiring without tokens (client credentials) is a login: a new lineage.
        let current = from.unwrap_or_else(|| Tokens::new("-").new_lineage());
        let answer = self.call_refresher(refresher, &current, &held);
        let mut flight = InFlight {
            held,
            read,
            reason,
            note,
        };
        self.install_answer(lead, &mut flight, &current, answer)
    }

    /// Step 1: what the store holds under its lock. Another process (or client) that
    /// changed it since this client last read or wrote it has newer tokens than ours: they
    /// are adopted, unless they expired too (then they are refreshed, with their refresh
    /// token, which is the newest one), or a login or logout of this client is still unsaved
    /// (it is newer than anything stored: memory's tokens are refreshed and written over the
    /// record).
    fn read_under_lock(
        &self,
        lead: Leading<'_, '_>,
        held: &HeldLock<'_>,
        note: &mut FlightLog,
    ) -> Result<UnderLock, Arc<RefreshError>> {
        let from = lead.tokens().map(|c| c.tokens.clone());
        let Some(stored) = held.stored().transpose().map_err(store_error)? else {
            return Ok(UnderLock::Refresh { from, read: None });
        };
        let read = Some(stored.revision());
        // The base must be the one of the tokens this flight replaces: if memory moved on
        // (a poll adopted this very record while we waited for the lock), the flight is moot.
        let (base, pending, adoptable) = {
            let p = lead.persisted();
            if self.gate.generation() != lead.generation() {
                return Ok(UnderLock::Done);
            }
            let adoptable = p.may_adopt(lead.tokens().map(Arc::as_ref), &stored);
            (p.base(), p.replace_pending(), adoptable)
        };
        let changed = match base {
            // Older than memory (a refresh token this client spent), or a login or logout of
            // this client not written yet that stands against it (see `Persisted::may_adopt`).
            _ if adoptable.is_none() => false,
            // The store shows the pending change written already, or replaced by another login.
            _ if pending => true,
            Some(base) => stored.revision() != base,
            // Not known yet (a store that is never polled): compare the tokens.
            None => {
                let ours = from.as_ref().map(|t| t.access_token().secret());
                stored.tokens().map(|t| t.access_token().secret()) != ours
            }
        };
        if !changed {
            return Ok(UnderLock::Refresh { from, read });
        }
        note.superseded = adoptable == Some(Verdict::Superseded);
        let revision = stored.revision();
        let lineage = stored.tokens().and_then(Tokens::lineage);
        let adopted = stored
            .into_tokens()
            .map(|t| self.stamp(t))
            .transpose()
            .map_err(|_| Arc::new(RefreshError::InvalidResponse(STORED_INVALID)))?;
        match adopted {
            Some(c) if c.is_expired(self.config.clock().now()) => Ok(UnderLock::Refresh {
                from: Some(c.tokens),
                read,
            }),
            adopted => {
                note.adopted = lead.install(adopted, false, |_, p| {
                    self.persistence.note_revision(p, revision, lineage);
                });
                Ok(UnderLock::Done)
            }
        }
    }

    /// Step 3: calls the refresher; retries (per the [`crate::RetryPolicy`]) only failures
    /// after which the server cannot have used the refresh token, and none once the client
    /// is closing. Before every call (the first and each retry) it confirms that the flight
    /// still holds the store's lock: one that was taken away, or a lease that lapsed, means
    /// another process may be refreshing with the same refresh token, so no call is made.
    fn call_refresher(
        &self,
        refresher: &dyn Refresh,
        current: &Tokens,
        held: &HeldLock<'_>,
    ) -> Result<Tokens, RefreshError> {
        // Closed: the process may not be there to save the answer (a rotated refresh token).
        // Lock taken away, or a lease found lapsed: no point waiting out a backoff (it stops
        // at once).
        let stop = || self.closing.load(Acquire) || held.lost();
        let mut retries = 0;
        loop {
            held.confirm(current.refresh_token())?;
            // Closed while the lock was being confirmed: no new call (see `shut_down`).
            if self.closing.load(Acquire) {
                return Err(RefreshError::transient(
                    "the client was closed before the token call",
                ));
            }
            match refresher.refresh(&self.token_agent, current) {
                Err(e)
                    if retries < self.config.retry().retries()
                        && refresh_retryable(&e)
                        && !stop() =>
                {
                    let after = match &e {
                        RefreshError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let of = self.config.retry().retries();
                    let describe = |f: &mut std::fmt::Formatter<'_>, delay| {
                        write!(
                            f,
                            "token endpoint: retry {} of {of} in {delay:?} after: {}",
                            retries + 1,
                            Chain(&e)
                        )
                    };
                    self.config
                        .backoff()
                        .wait(&self.hooks, retries, after, describe, &stop);
                    // A lock found lost is confirmed (and its loss recorded) at the top.
                    if self.closing.load(Acquire) {
                        return Err(e);
                    }
                    retries += 1;
                }
                answer => return answer,
            }
        }
    }

    /// Step 3, continued: installs the refresher's answer, or decides what its error means.
    fn install_answer(
        &self,
        lead: Leading<'_, '_>,
        flight: &mut InFlight<'_, '_>,
        current: &Tokens,
        answer: Result<Tokens, RefreshError>,
    ) -> Result<(), Arc<RefreshError>> {
        let (held, note) = (&flight.held, &mut *flight.note);
        match answer {
            Ok(new) => {
                let new = new.continuing(current);
                let stamped = self
                    .stamp(new)
                    .map_err(|_| Arc::new(RefreshError::InvalidResponse(RECEIVED_INVALID)))?;
                // Only a shared store is read back: there a record holding the spent refresh
                // token must never be adopted.
                let rotated = self.persistence.is_shared()
                    && stamped.tokens.refresh_token().map(|r| r.secret())
                        != current.refresh_token().map(|r| r.secret());
                note.refreshed = lead.install(Some(stamped), false, |snap, p| {
                    if let (true, Some(spent)) = (rotated, current.refresh_token()) {
                        p.note_spent(spent.secret());
                    }
                    note.store_error = held.write(snap, p).err();
                });
                Ok(())
            }
            // A background refresh never ends the session: the access token is still valid;
            // the refresh at expiry (or on a 401) decides.
            Err(e) if e.is_terminal() && flight.reason != RefreshReason::Proactive => {
                // A store whose lock can lapse (a lease that ran out while this process was
                // paused) may hold a newer record by now, from a process whose refresh
                // rotated the token the server just refused: adopt it, the session goes on.
                if !self.adopt_newer(lead, held, flight.read, note) {
                    lead.install(None, true, |snap, p| {
                        note.store_error = held.write(snap, p).err();
                    });
                }
                Ok(())
            }
            // The lock lapsed before a token call, which was not made: the process holding
            // it now may have stored its refresh already.
            Err(_) if held.lapsed() && self.adopt_newer(lead, held, flight.read, note) => Ok(()),
            Err(e) => Err(Arc::new(e)),
        }
    }

    /// Installs the record a store whose lock can lapse holds now, if another process wrote
    /// it since this flight read it (`read`), and unless a login or logout of this client is
    /// still unsaved. Returns whether it did.
    fn adopt_newer(
        &self,
        lead: Leading<'_, '_>,
        held: &HeldLock<'_>,
        read: Option<Revision>,
        note: &mut FlightLog,
    ) -> bool {
        let Some(newer) = held.reread().filter(|s| Some(s.revision()) != read) else {
            return false;
        };
        let adoptable = lead
            .persisted()
            .may_adopt(lead.tokens().map(Arc::as_ref), &newer);
        let Some(verdict) = adoptable else {
            return false;
        };
        note.superseded = verdict == Verdict::Superseded;
        let revision = newer.revision();
        let lineage = newer.tokens().and_then(Tokens::lineage);
        let Ok(adopted) = newer.into_tokens().map(|t| self.stamp(t)).transpose() else {
            return false;
        };
        note.adopted = lead.install(adopted, false, |_, p| {
            self.persistence.note_revision(p, revision, lineage);
        });
        note.adopted
    }

    /// Reports a finished flight: the events of its leader (with no lock held: the store lock
    /// was released when the flight ended), and the error every caller of a failed flight
    /// shares.
    pub(super) fn after_flight(
        &self,
        seen: u64,
        role: Role,
        note: FlightLog,
        result: Result<Fresh<Current>, Failure<Arc<RefreshError>>>,
    ) -> Result<Fresh<Current>, Error> {
        if role == Role::Waited {
            self.hooks.report(
                Event::Waited { generation: seen },
                format_args!("waited for another thread's refresh of token generation {seen}"),
            );
        }
        let led = role == Role::Led;
        match result {
            Ok(fresh) => {
                self.report_success(seen, led, &note, &fresh);
                Ok(fresh)
            }
            Err(failure) => Err(self.report_failure(seen, led, &note, failure)),
        }
    }

    fn report_success(&self, seen: u64, led: bool, note: &FlightLog, fresh: &Fresh<Current>) {
        let generation = fresh.snapshot.generation;
        if let Some(e) = &note.store_error {
            self.hooks.report(
                Event::StoreFailed { generation },
                format_args!(
                    "could not save tokens of generation {generation} \
                    (in use in memory; the save is retried): {}",
                    Chain(&**e)
                ),
            );
        }
        if fresh.ended_session {
            self.hooks.report(
                Event::SessionExpired,
                format_args!(
                    "session ended at token generation {seen}: \
                    the refresh token was rejected or the tokens cannot be refreshed; log in again"
                ),
            );
        } else if note.adopted {
            if note.superseded {
                self.report_superseded(generation);
            }
            self.report_adopted(generation, fresh.snapshot.tokens.is_some());
        } else if led && note.refreshed {
            let reason = note.reason.unwrap_or(RefreshReason::Expired);
            self.hooks.report(
                Event::Refreshed { generation },
                format_args!("refresh of token generation {seen} ({reason:?}) finished: \
                    generation {generation} in {:?} on thread {ThisThread}, {} waiting thread(s) released",
                    note.took(), note.waiters),
            );
        }
    }

    fn report_failure(
        &self,
        seen: u64,
        led: bool,
        note: &FlightLog,
        failure: Failure<Arc<RefreshError>>,
    ) -> Error {
        if led {
            let event = Event::RefreshFailed { generation: seen };
            match &failure {
                Failure::Failed(e) => self.hooks.report(
                    event,
                    format_args!(
                        "refresh of token generation {seen} failed after {:?} \
                        (the session goes on; {} waiting thread(s) share the error): {}",
                        note.took(),
                        note.waiters,
                        Chain(&**e)
                    ),
                ),
                other => self.hooks.report(
                    event,
                    format_args!("refresh of token generation {seen} failed: {other:?}"),
                ),
            }
        }
        match failure {
            Failure::Failed(e) => Error::Refresh(e),
            Failure::Panicked => Error::RefresherPanicked,
            Failure::TimedOut => {
                let waited = self.config.limits().refresh_timeout;
                log::warn!(target: TARGET, "gave up waiting {waited:?} for another thread's refresh \
                    of token generation {seen}");
                self.release_stuck_lock(false);
                Error::RefreshTimeout(waited)
            }
        }
    }
}

/// Counts a refresher that panicked while this thread led its flight.
struct CountPanic<'a>(&'a Hooks);

impl Drop for CountPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.tally(Tally::PanickedRefresh);
            log::warn!(target: TARGET, "the refresher panicked on thread {ThisThread}; waiting threads are released");
        }
    }
}

fn store_error(e: io::Error) -> Arc<RefreshError> {
    Arc::new(RefreshError::Store(Arc::new(e)))
}

const STORED_INVALID: &str = "stored token is empty, too long or has invalid characters";
const RECEIVED_INVALID: &str = "token is empty, too long or has invalid characters";

/// Whether a failed refresh may be retried within the same flight: only where the server
/// cannot have consumed the refresh token (nothing sent, or an explicit 503/429).
fn refresh_retryable(e: &RefreshError) -> bool {
    match e {
        RefreshError::Transport(t) => retry::nothing_sent(t.ureq_error()),
        RefreshError::Status { status, .. } => matches!(status, 429 | 503),
        _ => false,
    }
}
