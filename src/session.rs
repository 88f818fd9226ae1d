//! Behind the request path: the refresh path ("tokens newer than generation g", the same
//! code for a 401, an expiry, a background refresh-ahead and an acquisition), and how the
//! client keeps its store in step: adopting what other processes stored, writing its own
//! changes in order, retrying a write that failed, and finishing a refresh before the client
//! goes away.
//!
//! Lock order, extending the gate's: a shared store's own lock (the cross-process one) is
//! taken before the gate's persist lock, never while holding it; the persist lock before
//! `Inner::flight_lock`; `Inner::flight_lock` before a [`FlightLock`]'s slot; the persist
//! lock before a slot.

use std::cell::Cell;
use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::client::Inner;
use crate::error::{Error, RefreshError};
use crate::event::{Event, RefreshReason};
use crate::gate::{Failure, Fresh, Gate, Lead, Role, Snapshot};
use crate::logging::{Chain, ThisThread, TARGET};
use crate::reentry;
use crate::refresh::Refresh;
use crate::retry;
use crate::stats::Counters;
use crate::store::{Revision, StoreLock, Stored};
use crate::tokens::{Current, Tokens};
use crate::util::deadline_after;

/// A failed write is retried on requests at most this often.
const RETRY_UNSAVED_EVERY: Duration = Duration::from_secs(1);

/// What writing the result of a token call may take beyond the call (an `fsync`, a round trip).
pub(crate) const SAVE_ALLOWANCE: Duration = Duration::from_secs(2);

/// What confirming a shared store's lock before a token call may take: one round trip
/// (`RedisStore`'s I/O timeout is 2 s by default; a `FileStore` lock cannot lapse).
pub(crate) const LOCK_CHECK_ALLOWANCE: Duration = Duration::from_secs(2);

/// What the client knows about its store. Guarded by the gate's persist lock; written in the
/// `commit` of each install (and by a retried write), so it always matches memory.
pub(crate) struct Persisted {
    /// Shared stores: the revision the tokens in memory correspond to, i.e. what this client
    /// last read from or wrote to the store. A stored revision other than this one is another
    /// process's (or client's) newer change. `None` until known (a store that can be locked
    /// but not polled, before the first write). Mirrored in `Inner::base_revision`.
    pub(crate) base: Option<Revision>,
    /// The error of the last write, while memory holds a change the store did not take.
    /// Mirrored in `Inner::unsaved`.
    pub(crate) unsaved: Option<Arc<io::Error>>,
    /// The unsaved change includes a login or logout the user asked for: the next retry
    /// writes it over whatever a shared store holds by then, and nothing the store holds
    /// (another process still on the old session refreshing it) replaces it meanwhile.
    /// Without it, an unsaved refresh gives way to a newer record another process stored.
    pub(crate) replace_pending: bool,
    /// When (by the client's clock) a failed write was last retried.
    pub(crate) last_retry: Option<SystemTime>,
}

impl Persisted {
    pub(crate) fn new(base: Option<Revision>) -> Self {
        Persisted {
            base,
            unsaved: None,
            replace_pending: false,
            last_retry: None,
        }
    }
}

/// The store lock of the flight running now, registered in `Inner::flight_lock` so that a
/// flight holding it longer than its bound (a hung custom refresher) can be made to give it
/// up.
pub(crate) struct FlightLock {
    /// The lock; `None` once taken away. Guarded by its own mutex, held only for a write.
    slot: Arc<Mutex<Option<StoreLock>>>,
    /// When the flight got the lock: it may hold it for `Inner::hold_limit`.
    locked_at: Instant,
}

/// How a change reaches the store.
enum Writer<'a> {
    /// An unshared store: `save` / `clear`.
    Plain,
    /// A shared store, through the lock this thread holds.
    Locked(&'a mut StoreLock),
    /// A shared store whose lock could not be taken, or was taken away from a flight that
    /// held it past its bound: nothing is written, for this reason.
    Unlocked(Arc<io::Error>),
}

impl<'a> Writer<'a> {
    /// Through `lock` if the store gave one (a shared store), else `save` / `clear`; nothing
    /// if taking the lock failed.
    fn of(lock: &'a mut Result<Option<StoreLock>, Arc<io::Error>>) -> Self {
        match lock {
            Ok(Some(l)) => Writer::Locked(l),
            Ok(None) => Writer::Plain,
            Err(e) => Writer::Unlocked(Arc::clone(e)),
        }
    }
}

/// What a write carries, which decides what becomes of it if it fails.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Tokens a refresh got: if unsaved, a newer record another process stores wins.
    Refreshed,
    /// A login or logout the user asked for: if unsaved, it is written over whatever a
    /// shared store holds at the next retry, never replaced by it (see
    /// `Persisted::replace_pending`).
    Replaced,
}

/// What the local half of a logout did.
pub(crate) struct LoggedOut {
    /// The tokens logged out: revoke these.
    pub(crate) tokens: Option<Tokens>,
    /// The generation they had.
    pub(crate) generation: u64,
    /// Whether the store was cleared too.
    pub(crate) cleared: Result<(), Error>,
}

/// What a flight did, for the events and log records its leader reports after it.
#[derive(Default)]
struct FlightLog {
    /// When the leader started (after winning the flight).
    started: Option<Instant>,
    /// Why it ran.
    reason: Option<RefreshReason>,
    /// Threads waiting for it when it ended.
    waiters: usize,
    /// It installed tokens from the token endpoint.
    refreshed: bool,
    /// It adopted what another process stored.
    adopted: bool,
    /// Its write to the store failed.
    store_error: Option<Arc<io::Error>>,
}

/// Gives a [`crate::gate::Claim`] its way to the gate from a background thread.
pub(crate) struct GateOf(Arc<Inner>);

impl std::ops::Deref for GateOf {
    type Target = Gate<Current, Arc<RefreshError>, Persisted>;
    fn deref(&self) -> &Self::Target {
        &self.0.gate
    }
}

impl Inner {
    /// The refresh path, in one place: returns tokens newer than generation `seen`. This
    /// thread leads the flight ([`Inner::fly`]) or waits for the thread that does and shares
    /// its outcome; a caller whose generation is already stale gets the newer tokens at once.
    pub(crate) fn renew(
        self: &Arc<Self>,
        seen: u64,
        reason: RefreshReason,
    ) -> Result<(Arc<Current>, u64), Error> {
        if reentry::is_busy(self.key()) {
            return Err(Error::Reentrant);
        }
        let deadline = deadline_after(self.refresh_timeout);
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
                let inner = Arc::clone(&claim.owner().0);
                let mut note = FlightLog::default();
                let result =
                    claim.lead(|lead| inner.fly(lead, RefreshReason::Proactive, &mut note));
                // Nobody to return errors to: the next request sees the outcome through the gate.
                let _ = inner.after_flight(seen, Role::Led, note, result);
            });
    }

    /// For a flight that holds a shared store's lock: a thread that takes the lock away from
    /// it once it has held it for `hold_limit` (a hung custom refresher), whether the flight
    /// runs in the background or on a request's thread, and also in a process that makes no
    /// more requests (whose threads would otherwise do this only when they give up
    /// waiting), so that it never keeps every other process from refreshing. It wakes when
    /// the flight has held the lock that long, and ends with the flight, or once it has
    /// released the lock. If it cannot be spawned, the flight runs unwatched.
    fn watch_flight(self: &Arc<Self>) {
        let inner = Arc::clone(self);
        let step = (self.hold_limit / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let _ = std::thread::Builder::new()
            .name("tokengate-watch".into())
            .spawn(move || loop {
                let locked_at = inner.flight_lock.lock().as_ref().map(|f| f.locked_at);
                let deadline = locked_at
                    .and_then(|t| t.checked_add(inner.hold_limit))
                    .unwrap_or_else(|| deadline_after(step));
                if inner.gate.wait_idle(deadline) {
                    return;
                }
                if inner.release_stuck_lock(false) {
                    log::warn!(target: TARGET, "a refresh held the store's lock for {:?}, its \
                        bound: the lock is released and its result will not be saved",
                        inner.hold_limit);
                    return;
                }
            });
    }

    /// One flight, led by this thread with no lock of the gate held:
    /// 1. take the store's lock (shared stores) and adopt what another process stored since
    ///    this client last read or wrote it, unless that expired too;
    /// 2. end the session if nothing can refresh these tokens (they are unusable by now);
    /// 3. call the refresher, retrying only where the refresh token cannot have been used,
    ///    and install its answer, written through the store's lock before it is released.
    ///
    /// Returns `Err` when nothing was installed and the session goes on.
    fn fly(
        self: &Arc<Self>,
        lead: &mut Lead<'_, Current, Arc<RefreshError>, Persisted>,
        reason: RefreshReason,
        note: &mut FlightLog,
    ) -> Result<(), Arc<RefreshError>> {
        let _busy = reentry::enter(self.key());
        let _panics = CountPanic(&self.stats);
        note.started = Some(Instant::now());
        note.reason = Some(reason);
        let proactive = reason == RefreshReason::Proactive;
        // Asked for, or ahead of time: the tokens in hand are still valid, so a refresh that
        // cannot be made (no refresh token) is an error, not the end of the session.
        let optional = proactive || reason == RefreshReason::Forced;
        let Some(refresher) = self.refresher.as_deref() else {
            return Err(Arc::new(RefreshError::NoRefreshToken));
        };
        let lock = self
            .store
            .lock()
            .map_err(|e| Arc::new(RefreshError::Store(Arc::new(e))))?;
        let shared = lock.is_some();
        let held = HeldLock::register(self, lock);
        if shared {
            self.watch_flight();
        }

        // 1. Another process (or client) changed the store since this client last read or
        //    wrote it: its tokens are newer than ours.
        let mut from = lead.tokens().map(|c| c.tokens.clone());
        let stored = held
            .stored()
            .transpose()
            .map_err(|e| Arc::new(RefreshError::Store(Arc::new(e))))?;
        // The record this flight read under the lock (shared stores).
        let read_revision = stored.as_ref().map(Stored::revision);
        if let Some(stored) = stored {
            // The base must be the one of the tokens this flight replaces: if memory moved on
            // (a poll adopted this very record while we waited for the lock), the flight is
            // moot: the newer tokens are in.
            let (base, replace_pending) = {
                let p = lead.persisted();
                if self.gate.generation() != lead.generation() {
                    return Ok(());
                }
                (p.base, p.replace_pending)
            };
            let changed = match base {
                // A login or logout this client could not save yet is newer than anything
                // stored: its tokens are refreshed, and the write goes over the record.
                _ if replace_pending => false,
                Some(base) => stored.revision() != base,
                // Not known yet (a store that is never polled): compare the tokens.
                None => {
                    let ours = from.as_ref().map(|t| t.access_token().secret());
                    stored.tokens().map(|t| t.access_token().secret()) != ours
                }
            };
            if changed {
                let revision = stored.revision();
                let adopted = stored
                    .into_tokens()
                    .map(|t| self.stamp(t))
                    .transpose()
                    .map_err(|_| Arc::new(RefreshError::InvalidResponse(STORED_INVALID)))?;
                match adopted {
                    // Nobody refreshed them in time: refresh them, with their refresh token,
                    // which is the newest one.
                    Some(c) if c.is_expired(self.clock.now()) => from = Some(c.tokens),
                    adopted => {
                        note.adopted = lead.install(adopted, false, |_, p| {
                            self.note_revision(p, revision);
                        });
                        return Ok(());
                    }
                }
            }
        }

        // 2. Nothing can refresh these tokens: the session ends now that they are unusable
        //    (never ahead of that: a background refresh is not even attempted).
        let acquiring = from.is_none() && refresher.acquires_without_tokens();
        let can_refresh = match &from {
            Some(t) => refresher.can_refresh(t),
            None => acquiring,
        };
        if !can_refresh {
            if optional {
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

        // 3. The token endpoint.
        log::debug!(target: TARGET, "refresh of token generation {} started ({reason:?}) on thread {}",
            lead.generation(), ThisThread);
        self.emit(Event::RefreshStarted {
            reason,
            generation: lead.generation(),
        });
        let current = from.unwrap_or_else(|| Tokens::new("-"));
        match self.call_refresher(refresher, &current, &held) {
            Ok(new) => {
                let new = new.keep_refresh_token(current.refresh_token());
                let stamped = self
                    .stamp(new)
                    .map_err(|_| Arc::new(RefreshError::InvalidResponse(RECEIVED_INVALID)))?;
                note.refreshed = lead.install(Some(stamped), false, |snap, p| {
                    note.store_error = held.write(snap, p).err();
                });
                Ok(())
            }
            // A background refresh never ends the session: the access token is still valid;
            // the refresh at expiry (or on a 401) decides.
            Err(e) if e.is_terminal() && !proactive => {
                // A store whose lock can lapse (a lease that ran out while this process was
                // paused) may hold a newer record by now, from a process whose refresh
                // rotated the token the server just refused: adopt it, the session goes on.
                if self.adopt_newer(lead, &held, read_revision, note) {
                    return Ok(());
                }
                lead.install(None, true, |snap, p| {
                    note.store_error = held.write(snap, p).err();
                });
                Ok(())
            }
            // The lock lapsed before a token call, which was not made: the process holding
            // it now may have stored its refresh already.
            Err(_) if held.lapsed() && self.adopt_newer(lead, &held, read_revision, note) => Ok(()),
            Err(e) => Err(Arc::new(e)),
        }
    }

    /// Installs the record a store whose lock can lapse holds now, if another process wrote
    /// it since this flight read it (`read_revision`), and unless a login or logout of this
    /// client is still unsaved. Returns whether it did.
    fn adopt_newer(
        &self,
        lead: &mut Lead<'_, Current, Arc<RefreshError>, Persisted>,
        held: &HeldLock<'_>,
        read_revision: Option<Revision>,
        note: &mut FlightLog,
    ) -> bool {
        if lead.persisted().replace_pending {
            return false;
        }
        let Some(newer) = held
            .reread()
            .filter(|s| Some(s.revision()) != read_revision)
        else {
            return false;
        };
        let revision = newer.revision();
        let Ok(adopted) = newer.into_tokens().map(|t| self.stamp(t)).transpose() else {
            return false;
        };
        note.adopted = lead.install(adopted, false, |_, p| self.note_revision(p, revision));
        note.adopted
    }

    /// Calls the refresher; retries (per the [`crate::RetryPolicy`]) only failures after which the
    /// server cannot have used the refresh token, and none once the client is closing.
    /// Before every call (the first and each retry) it confirms that the flight still holds
    /// the store's lock: one that was taken away, or a lease that lapsed, means another
    /// process may be refreshing with the same refresh token, so no call is made.
    fn call_refresher(
        &self,
        refresher: &dyn Refresh,
        current: &Tokens,
        held: &HeldLock<'_>,
    ) -> Result<Tokens, RefreshError> {
        // Closed: the process may not be there to save the answer (a rotated refresh token).
        // Lock taken away: no point waiting out a backoff.
        let stop = || self.closing.load(Acquire) || held.lost();
        let mut retries = 0;
        loop {
            held.confirm()?;
            match refresher.refresh(&self.token_agent, current) {
                Err(e) if retries < self.retry.retries() && refresh_retryable(&e) && !stop() => {
                    let after = match &e {
                        RefreshError::Status { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    self.token_backoff(retries, after, &e);
                    if stop() {
                        return Err(e);
                    }
                    retries += 1;
                }
                answer => return answer,
            }
        }
    }

    /// Reports a finished flight: the events of its leader (with no lock held: the store lock
    /// was released when the flight ended), the session listener once, and the error every
    /// caller of a failed flight shares.
    fn after_flight(
        &self,
        seen: u64,
        role: Role,
        note: FlightLog,
        result: Result<Fresh<Current>, Failure<Arc<RefreshError>>>,
    ) -> Result<Fresh<Current>, Error> {
        if role == Role::Waited {
            Counters::bump(&self.stats.waited);
            log::debug!(target: TARGET, "waited for another thread's refresh of token generation {seen}");
            self.emit(Event::Waited { generation: seen });
        }
        let led = role == Role::Led;
        let took = note.started.map(|t| t.elapsed()).unwrap_or_default();
        match result {
            Ok(fresh) => {
                let generation = fresh.snapshot.generation;
                if let Some(e) = &note.store_error {
                    log::warn!(target: TARGET, "could not save tokens of generation {generation} \
                        (in use in memory; the save is retried): {}", Chain(&**e));
                    self.emit(Event::StoreFailed { generation });
                }
                if fresh.ended_session {
                    Counters::bump(&self.stats.session_expiries);
                    log::info!(target: TARGET, "session ended at token generation {seen}: \
                        the refresh token was rejected or the tokens cannot be refreshed; log in again");
                    self.emit(Event::SessionExpired);
                    if let Some(listener) = &self.on_session_expired {
                        listener();
                    }
                } else if note.adopted {
                    Counters::bump(&self.stats.adopted);
                    log::info!(target: TARGET, "adopted tokens another process stored ({}; generation {generation})",
                        if fresh.snapshot.tokens.is_some() { "a refresh or login" } else { "a logout" });
                    self.emit(Event::Adopted { generation });
                } else if led && note.refreshed {
                    Counters::bump(&self.stats.refreshes);
                    log::debug!(target: TARGET, "refresh of token generation {seen} ({:?}) finished: \
                        generation {generation} in {took:?} on thread {}, {} waiting thread(s) released",
                        note.reason.unwrap_or(RefreshReason::Expired), ThisThread, note.waiters);
                    self.emit(Event::Refreshed { generation });
                }
                Ok(fresh)
            }
            Err(failure) => {
                if led {
                    Counters::bump(&self.stats.refresh_failures);
                    match &failure {
                        Failure::Failed(e) => {
                            log::warn!(target: TARGET, "refresh of token generation {seen} \
                            failed after {took:?} (the session goes on; {} waiting thread(s) share the error): {}",
                            note.waiters, Chain(&**e))
                        }
                        other => {
                            log::warn!(target: TARGET, "refresh of token generation {seen} failed: {other:?}")
                        }
                    }
                    self.emit(Event::RefreshFailed { generation: seen });
                }
                Err(match failure {
                    Failure::Failed(e) => Error::Refresh(e),
                    Failure::Panicked => Error::RefresherPanicked,
                    Failure::TimedOut => {
                        log::warn!(target: TARGET, "gave up waiting {:?} for another thread's refresh \
                            of token generation {seen}", self.refresh_timeout);
                        self.release_stuck_lock(false);
                        Error::RefreshTimeout(self.refresh_timeout)
                    }
                })
            }
        }
    }

    /// Writes a login or logout: under the shared store's lock (taken first, so it waits for
    /// a refresh another process is making), then installed and written in one step. If the
    /// write fails, memory changes all the same and the change is written at a later retry,
    /// over whatever the store holds by then. If the lock cannot be taken, a login is not
    /// made (the caller still has the tokens, and may try again), but a logout is: a user
    /// who logged out must not go on sending the token.
    pub(crate) fn replace(&self, tokens: Option<Current>) -> Result<(), Error> {
        if reentry::is_busy(self.key()) {
            return Err(Error::Reentrant);
        }
        let _busy = reentry::enter(self.key());
        let mut lock = self.store.lock().map_err(Arc::new);
        if let (Some(_), Err(e)) = (&tokens, &lock) {
            return Err(Error::Store(Arc::clone(e)));
        }
        let mut written = Ok(());
        let snap = self.gate.replace(
            None,
            |_| true,
            tokens,
            |snap, p| {
                written = self.write_through(snap, Writer::of(&mut lock), Change::Replaced, p);
            },
        );
        drop(lock);
        written.map_err(|e| {
            log::warn!(target: TARGET, "could not write a login or logout to the store: {}", Chain(&*e));
            if let Some(snap) = snap {
                self.emit(Event::StoreFailed {
                    generation: snap.generation,
                });
            }
            Error::Store(e)
        })
    }

    /// The local half of a logout: under the shared store's lock, clears memory (generation-
    /// checked: if a refresh or login lands first, the newer tokens are the ones cleared) and
    /// the store. Returns the tokens logged out (another process's, if it stored newer ones),
    /// the generation they had, and whether the store was cleared.
    pub(crate) fn log_out_locally(&self) -> Result<LoggedOut, Error> {
        if reentry::is_busy(self.key()) {
            return Err(Error::Reentrant);
        }
        let _busy = reentry::enter(self.key());
        let mut lock = self.store.lock().map_err(Arc::new);
        // Not while a login or logout of this client is unsaved: memory is the newer then.
        let newer_stored = lock.as_ref().ok().and_then(Option::as_ref).and_then(|l| {
            let stored = l.stored().ok()?;
            let p = self.gate.persisted();
            let newer = p.base != Some(stored.revision()) && !p.replace_pending;
            newer.then(|| stored.tokens().cloned())?
        });
        loop {
            let snap = self.gate.snapshot();
            let mut written = Ok(());
            let cleared = self.gate.replace(
                Some(snap.generation),
                |_| true,
                None,
                |s, p| {
                    written = self.write_through(s, Writer::of(&mut lock), Change::Replaced, p);
                },
            );
            if let Some(cleared) = cleared {
                drop(lock);
                let written = written.map_err(|e| {
                    log::warn!(target: TARGET, "could not clear the store on logout: {}", Chain(&*e));
                    self.emit(Event::StoreFailed {
                        generation: cleared.generation,
                    });
                    Error::Store(e)
                });
                let tokens = newer_stored.or_else(|| snap.tokens.map(|c| c.tokens.clone()));
                return Ok(LoggedOut {
                    tokens,
                    generation: snap.generation,
                    cleared: written,
                });
            }
            // The generation moved between the read and the clear: log out the newer tokens.
        }
    }

    /// Before a request: retries a failed write (at most once a second; for a shared store on
    /// a thread of its own), and adopts what another process (or client) stored since this
    /// client last read or wrote a shared store.
    pub(crate) fn sync_store(self: &Arc<Self>) -> Result<(), Error> {
        let unsaved = self.unsaved.load(Acquire);
        if !self.store_shared && !unsaved {
            return Ok(());
        }
        // Called back from this client's own store or flight: leave the store alone.
        if reentry::is_busy(self.key()) {
            return Ok(());
        }
        if unsaved && self.store_shared {
            self.retry_unsaved_in_background();
        } else if unsaved {
            let _ = self.retry_unsaved(false);
        }
        if !self.store_shared {
            return Ok(());
        }
        let generation = self.gate.generation();
        let since = Revision::new(self.base_revision.load(Acquire));
        let polled = {
            let _busy = reentry::enter(self.key());
            self.store.poll(Some(since))
        };
        match polled.map_err(|e| Error::Store(Arc::new(e)))? {
            None => Ok(()),
            Some(stored) => self.adopt(generation, since, stored),
        }
    }

    /// Installs what a shared store holds, if neither memory (`generation`) nor the revision
    /// this client knows (`since`) changed since it was read: a poll that read the store
    /// before a local login or logout never overwrites it, nor does any poll while a login
    /// or logout of this client is unsaved (its retry writes it over the record).
    fn adopt(&self, generation: u64, since: Revision, stored: Stored) -> Result<(), Error> {
        let revision = stored.revision();
        let current = stored
            .into_tokens()
            .map(|t| self.stamp(t))
            .transpose()
            .map_err(Error::InvalidToken)?;
        let adopted = self.gate.replace(
            Some(generation),
            // Not while this client's flight holds the store's lock: nobody else can have
            // written since the flight read the store, so what this read found is not newer
            // than what the flight works from, and replacing memory would make the flight
            // discard its answer (whose refresh token the server has rotated already).
            |p| p.base == Some(since) && !p.replace_pending && self.flight_lock.lock().is_none(),
            current,
            |_, p| self.note_revision(p, revision),
        );
        if let Some(snap) = adopted {
            Counters::bump(&self.stats.adopted);
            log::info!(target: TARGET, "adopted tokens another process stored ({}; generation {})",
                if snap.tokens.is_some() { "a refresh or login" } else { "a logout" }, snap.generation);
            self.emit(Event::Adopted {
                generation: snap.generation,
            });
        }
        Ok(())
    }

    /// Writes what memory holds now if an earlier write failed; `force` ignores the once-a-
    /// second limit. If a shared store moved on meanwhile, another process's tokens are newer
    /// than the unsaved ones: they are adopted instead. Returns the error if still unsaved.
    pub(crate) fn retry_unsaved(&self, force: bool) -> Option<Arc<io::Error>> {
        match self.take_retry(force) {
            Ok(()) => self.write_unsaved(),
            Err(pending) => pending,
        }
    }

    /// On a request's path, for a shared store: the retry of a failed write runs on a thread
    /// of its own (one at a time), because taking the store's lock can wait for another
    /// process's whole refresh, and a request with a valid token never waits for that.
    fn retry_unsaved_in_background(self: &Arc<Self>) {
        if self.saving.load(Acquire) || self.take_retry(false).is_err() {
            return;
        }
        if self.saving.swap(true, AcqRel) {
            return;
        }
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tokengate-save".into())
            .spawn(move || {
                // Cleared however the retry ends, also by a panicking listener or store:
                // otherwise no request would start a retry again.
                struct Done<'a>(&'a std::sync::atomic::AtomicBool);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        self.0.store(false, Release);
                    }
                }
                let _done = Done(&inner.saving);
                let _ = inner.write_unsaved();
            });
        if spawned.is_err() {
            // Retried by a later request.
            self.saving.store(false, Release);
        }
    }

    /// Takes the turn to retry a failed write: `Err(None)` if nothing is unsaved,
    /// `Err(Some(error))` if the last try was less than a second ago (unless `force`).
    fn take_retry(&self, force: bool) -> Result<(), Option<Arc<io::Error>>> {
        let mut p = self.gate.persisted();
        let Some(err) = p.unsaved.clone() else {
            return Err(None);
        };
        let now = self.clock.now();
        // A clock that went back does not hold the retry up.
        let recent = |t: SystemTime| {
            now.duration_since(t)
                .is_ok_and(|since| since < RETRY_UNSAVED_EVERY)
        };
        if !force && p.last_retry.is_some_and(recent) {
            return Err(Some(err));
        }
        p.last_retry = Some(now);
        Ok(())
    }

    /// The retry itself (see [`Inner::retry_unsaved`]). Events are sent once the store is
    /// left, so a listener may call the client.
    fn write_unsaved(&self) -> Option<Arc<io::Error>> {
        enum Outcome {
            Saved,
            Failed(Arc<io::Error>, u64),
            Newer(u64, Revision, Stored),
        }
        let outcome = {
            let _busy = reentry::enter(self.key());
            let mut lock = match self.store.lock() {
                Ok(lock) => Ok(lock),
                Err(e) => return Some(Arc::new(e)),
            };
            let mut p = self.gate.persisted();
            p.unsaved.as_ref()?;
            let newer = match lock
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map(StoreLock::stored)
            {
                // An unsaved login or logout is written over whatever is stored.
                _ if p.replace_pending => None,
                // A record that went bad meanwhile is not overwritten behind the user's back.
                Some(Err(e)) => return Some(Arc::new(e)),
                Some(Ok(stored)) if p.base.is_some_and(|base| stored.revision() != base) => {
                    let since = p.base.unwrap_or(stored.revision());
                    Some(Outcome::Newer(
                        self.gate.generation(),
                        since,
                        stored.clone(),
                    ))
                }
                _ => None,
            };
            match newer {
                Some(newer) => newer,
                None => {
                    // Under the persist lock: no install can slip between this snapshot and
                    // its write.
                    let snap = self.gate.snapshot();
                    match self.write_through(
                        &snap,
                        Writer::of(&mut lock),
                        Change::Refreshed,
                        &mut p,
                    ) {
                        Ok(()) => Outcome::Saved,
                        Err(e) => Outcome::Failed(e, snap.generation),
                    }
                }
            }
        };
        match outcome {
            Outcome::Saved => None,
            Outcome::Newer(generation, since, stored) => self
                .adopt(generation, since, stored)
                .err()
                .map(|e| Arc::new(io::Error::other(e))),
            Outcome::Failed(err, generation) => {
                log::warn!(target: TARGET, "retrying a failed save failed again: {}", Chain(&*err));
                self.emit(Event::StoreFailed { generation });
                Some(err)
            }
        }
    }

    /// Writes `snap` to the store and records the outcome in `p`: a failed write leaves the
    /// change unsaved (a login or logout as `replace_pending`, until a write succeeds).
    /// Called under the persist lock, in the order of installs.
    fn write_through(
        &self,
        snap: &Snapshot<Current>,
        writer: Writer<'_>,
        change: Change,
        p: &mut Persisted,
    ) -> Result<(), Arc<io::Error>> {
        let tokens = snap.tokens.as_ref().map(|c| &c.tokens);
        let written = match writer {
            Writer::Locked(lock) => lock.write(tokens).map(Some).map_err(Arc::new),
            Writer::Plain => match tokens {
                Some(t) => self.store.save(t),
                None => self.store.clear(),
            }
            .map(|()| None)
            .map_err(Arc::new),
            Writer::Unlocked(e) => Err(e),
        };
        match written {
            Ok(revision) => {
                if let Some(revision) = revision {
                    self.note_revision(p, revision);
                }
                p.unsaved = None;
                p.replace_pending = false;
                self.unsaved.store(false, Release);
                Ok(())
            }
            Err(e) => {
                p.replace_pending |= change == Change::Replaced;
                p.unsaved = Some(Arc::clone(&e));
                p.last_retry = Some(self.clock.now());
                self.unsaved.store(true, Release);
                Err(e)
            }
        }
    }

    /// Records that memory now corresponds to the shared store's `revision`.
    fn note_revision(&self, p: &mut Persisted, revision: Revision) {
        p.base = Some(revision);
        p.unsaved = None;
        p.replace_pending = false;
        self.base_revision.store(revision.get(), Release);
        self.unsaved.store(false, Release);
    }

    /// Takes the store lock away from the running flight if it has held it for `hold_limit`
    /// (`force`: however long), so other processes can go on; the flight then makes no token
    /// call and its write is refused. Returns whether it did.
    pub(crate) fn release_stuck_lock(&self, force: bool) -> bool {
        let mut held = self.flight_lock.lock();
        let stuck = held
            .as_ref()
            .is_some_and(|f| force || f.locked_at.elapsed() >= self.hold_limit);
        if stuck {
            if let Some(f) = held.take() {
                drop(f.slot.lock().take());
            }
        }
        stuck
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
        }
        let bound = if last {
            self.token_call_limit.saturating_add(SAVE_ALLOWANCE)
        } else {
            self.flight_limit
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
        if self.unsaved.load(Acquire) {
            if let Some(e) = self.retry_unsaved(true) {
                result = result.and(Err(Error::Store(e)));
            }
        }
        result
    }
}

/// The flight's store lock, registered for [`Inner::release_stuck_lock`] while it is held.
/// Dropping it unregisters and releases it.
struct HeldLock<'a> {
    inner: &'a Inner,
    /// `None` for an unshared store.
    slot: Option<Arc<Mutex<Option<StoreLock>>>>,
    /// Set by [`HeldLock::confirm`] when it found the lock gone.
    lapsed: Cell<bool>,
}

impl<'a> HeldLock<'a> {
    fn register(inner: &'a Inner, lock: Option<StoreLock>) -> Self {
        let slot = lock.map(|l| Arc::new(Mutex::new(Some(l))));
        if let Some(slot) = &slot {
            *inner.flight_lock.lock() = Some(FlightLock {
                slot: Arc::clone(slot),
                locked_at: Instant::now(),
            });
        }
        HeldLock {
            inner,
            slot,
            lapsed: Cell::new(false),
        }
    }

    /// True once [`Inner::release_stuck_lock`] took the lock away from this flight.
    fn lost(&self) -> bool {
        self.slot.as_ref().is_some_and(|slot| slot.lock().is_none())
    }

    /// True once [`HeldLock::confirm`] found the lock gone (taken away, or lapsed).
    fn lapsed(&self) -> bool {
        self.lapsed.get()
    }

    /// Before a token call: confirms that this flight still holds the store's lock (one
    /// round trip for a store whose lock can lapse; see [`StoreLock::still_held`]). An
    /// unshared store has nothing to confirm.
    ///
    /// # Errors
    /// [`RefreshError::Store`] if the lock was taken away, lapsed, or cannot be confirmed:
    /// no token call may be made then.
    fn confirm(&self) -> Result<(), RefreshError> {
        let Some(slot) = &self.slot else {
            return Ok(());
        };
        let gone = match slot.lock().as_mut() {
            None => io::Error::new(io::ErrorKind::TimedOut, LOCK_TAKEN_AWAY),
            Some(lock) => match lock.still_held() {
                Ok(true) => return Ok(()),
                Ok(false) => io::Error::other(
                    "the store's lock lapsed before the token call (another process may \
                     hold it now): no token call was made",
                ),
                Err(e) => e,
            },
        };
        self.lapsed.set(true);
        Err(RefreshError::Store(Arc::new(gone)))
    }

    /// What the store held when the lock was taken (`None` for an unshared store).
    fn stored(&self) -> Option<io::Result<Stored>> {
        let slot = self.slot.as_ref()?;
        let lock = slot.lock();
        Some(lock.as_ref()?.stored().cloned())
    }

    /// The record read again under the lock, if the store's lock can lapse and the read
    /// succeeded (see [`crate::LockedWrite::reread`]).
    fn reread(&self) -> Option<Stored> {
        let mut lock = self.slot.as_ref()?.lock();
        lock.as_mut()?.reread().ok().flatten().cloned()
    }

    /// Writes `snap` through the lock (or with `save`/`clear` for an unshared store).
    fn write(&self, snap: &Snapshot<Current>, p: &mut Persisted) -> Result<(), Arc<io::Error>> {
        let inner = self.inner;
        let Some(slot) = &self.slot else {
            return inner.write_through(snap, Writer::Plain, Change::Refreshed, p);
        };
        let mut lock = slot.lock();
        let writer = match lock.as_mut() {
            Some(l) => Writer::Locked(l),
            None => Writer::Unlocked(Arc::new(io::Error::new(
                io::ErrorKind::TimedOut,
                LOCK_TAKEN_AWAY,
            ))),
        };
        inner.write_through(snap, writer, Change::Refreshed, p)
    }
}

impl Drop for HeldLock<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut held = self.inner.flight_lock.lock();
            if held.as_ref().is_some_and(|f| Arc::ptr_eq(&f.slot, &slot)) {
                *held = None;
            }
            drop(held);
            drop(slot.lock().take());
        }
    }
}

/// Counts a refresher that panicked while this thread led its flight.
struct CountPanic<'a>(&'a crate::stats::Counters);

impl Drop for CountPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            Counters::bump(&self.0.refresh_failures);
            log::warn!(target: TARGET, "the refresher panicked on thread {}; waiting threads are released", ThisThread);
        }
    }
}

/// Why a flight whose store lock was taken away neither calls nor writes.
const LOCK_TAKEN_AWAY: &str = "the refresh held the store's lock past its bound and gave it up";
const STORED_INVALID: &str = "stored token is empty, too long or has invalid characters";
const RECEIVED_INVALID: &str = "token is empty, too long or has invalid characters";

/// Whether a failed refresh may be retried within the same flight: only where the server
/// cannot have consumed the refresh token (nothing sent, or an explicit 503/429).
fn refresh_retryable(e: &RefreshError) -> bool {
    match e {
        RefreshError::Transport(t) => retry::nothing_sent(t),
        RefreshError::Status { status, .. } => matches!(status, 429 | 503),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let inner = Arc::clone(client.inner());
        let flight = Gate::try_claim(GateOf(Arc::clone(&inner)), inner.gate.generation());
        let slot = Arc::new(Mutex::new(inner.store.lock().unwrap()));
        *inner.flight_lock.lock() = Some(FlightLock {
            slot: Arc::clone(&slot),
            locked_at: Instant::now() + inner.flight_limit / 2,
        });

        let other_handle = client.clone();
        let closed = other_handle.close();
        assert!(
            matches!(closed, Err(Error::RefreshTimeout(_))),
            "{closed:?}"
        );
        assert!(
            slot.lock().is_some(),
            "the flight inside its bound keeps its lock"
        );
        drop(flight);
        drop(client);
        let _ = std::fs::remove_dir_all(dir);
    }
}
