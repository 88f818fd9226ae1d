//! How memory and the store stay in step: every change written in the order of installs
//! (under the gate's persist lock), logins and logouts written under a shared store's lock,
//! what other processes stored adopted before requests, and a write that failed retried.
//!
//! Two types, split by the lock that guards them:
//! - [`Persisted`], the record of what the client knows about its store (the revision and
//!   session memory corresponds to, a pending write and its error, the refresh tokens spent),
//!   lives inside the gate, under its persist lock, and changes in the `commit` of each
//!   install, so it always matches memory;
//! - [`Persistence`], owned by the session, holds what needs no lock: the store itself, how
//!   it is kept ([`StoreMode`]), and lock-free mirrors of `Persisted` for the request path
//!   (which polls the store and retries a failed write without taking the persist lock).
//!
//! A write reaches the store only through [`Persistence::write_through`] (the outcome
//! recorded in `Persisted` and its mirrors at once), and what the store is known to hold
//! only through [`Persistence::note_revision`]: both take the `Persisted` they update, so
//! they run under the persist lock.

use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::keep::Locked;
use super::Session;
use crate::clock::Clock;
use crate::error::Error;
use crate::event::Event;
use crate::gate::Snapshot;
use crate::logging::Chain;
use crate::reentry;
use crate::store::{Revision, StoreLock, Stored, TokenStore};
use crate::tokens::{Current, Lineage, Tokens};

/// A failed write is retried on requests at most this often.
const RETRY_UNSAVED_EVERY: Duration = Duration::from_secs(1);

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

/// The session's store, and what the request path knows of it without the persist lock.
///
/// Invariants:
/// - `store` and `mode` are set once, by [`Persistence::new`].
/// - `base_revision` mirrors [`Persisted`]'s `base`, and `unsaved` whether `Persisted` holds
///   an unsaved change. Both are written only by the methods that take the `&mut Persisted`
///   they mirror ([`Persistence::write_through`], [`Persistence::note_revision`]), so under
///   the persist lock and in the same critical section as the field they mirror (`Release`);
///   read with no lock (`Acquire`) by requests, which may see them a moment late: an
///   adoption from a poll made with a stale revision is refused (it checks the revision
///   against `Persisted` under the persist lock), and a retry missed is made by a later
///   request.
/// - `saving` is set (by a swap) by the request that starts the background retry of a
///   failed write, and cleared by that retry's thread when it ends (or by the request if the
///   thread could not be spawned): at most one such thread runs.
pub(super) struct Persistence {
    store: Box<dyn TokenStore>,
    mode: StoreMode,
    /// Mirrors `Persisted::base` (the store revision memory corresponds to; 0 while unknown),
    /// so a request can poll the store without taking the persist lock.
    base_revision: AtomicU64,
    /// Mirrors `Persisted::unsaved.is_some()`: memory holds a change the store did not take.
    /// Read by every request to decide whether to retry.
    unsaved: AtomicBool,
    /// A thread retrying a failed write to a shared store runs (at most one at a time).
    saving: AtomicBool,
}

/// What the client knows about its store. Guarded by the gate's persist lock; written in the
/// `commit` of each install (and by a retried write), so it always matches memory. Its
/// fields are this file's: other files ask through its methods.
pub(crate) struct Persisted {
    /// Shared stores: the revision the tokens in memory correspond to, i.e. what this client
    /// last read from or wrote to the store. A stored revision other than this one is another
    /// process's (or client's) newer change. `None` until known (a store that can be locked
    /// but not polled, before the first write). Mirrored in `Persistence::base_revision`.
    base: Option<Revision>,
    /// The error of the last write, while memory holds a change the store did not take.
    /// Mirrored in `Persistence::unsaved`.
    unsaved: Option<Arc<io::Error>>,
    /// The unsaved change includes a login or logout the user asked for: the next retry
    /// writes it over whatever a shared store holds by then, and nothing the store holds
    /// (another process still on the old session refreshing it) replaces it meanwhile.
    /// Without it, an unsaved refresh gives way to a newer record another process stored.
    replace_pending: bool,
    /// Shared stores: the lineage (see [`Tokens::lineage`]) of the tokens at `base`, i.e. of
    /// the session the store held when memory and store last agreed.
    base_lineage: Option<Lineage>,
    /// While `replace_pending`: the lineage the pending login or logout replaces (the
    /// session the store held, as read under its lock, when it was made). The retry writes
    /// it only over that session (or one the store cannot name); a record of another login
    /// made meanwhile wins.
    replaced: Option<Lineage>,
    /// While `replace_pending`: the lineage memory holds for the pending change (a login's;
    /// `None` for a logout), and those of earlier logins of this client made while a change
    /// was pending (any of them may have reached the store unanswered): a record of one of
    /// those is this client's own, older than the pending change.
    pending_lineage: Option<Lineage>,
    written: Vec<Lineage>,
    /// Fingerprints of the last refresh tokens this client spent (presented and got a new
    /// one for): a record holding one of them is older than memory, never adopted, whatever
    /// its revision (this client's own write whose answer was lost, read back later).
    spent: std::collections::VecDeque<u64>,
    /// When (by the client's clock) a failed write was last retried.
    last_retry: Option<SystemTime>,
}

/// What a login or logout of this client that is not written yet becomes, judged against
/// the record a shared store holds now (see [`Persisted::judge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It still has to be written: the store holds the session it replaces (maybe refreshed
    /// since by another process), or a record that names no session.
    Stands,
    /// It is in the store already (a write that was reported failed but happened, maybe
    /// refreshed since by another process): adopt the record, write nothing.
    Done,
    /// Another login replaced the session it applied to (or the login it made was logged
    /// out elsewhere): it is dropped, and the record adopted.
    Superseded,
}

impl Persisted {
    /// Memory corresponds to the shared store's `base`, a record of the session `lineage`.
    pub(crate) fn new(base: Option<Revision>, lineage: Option<Lineage>) -> Self {
        Persisted {
            base,
            unsaved: None,
            replace_pending: false,
            base_lineage: lineage,
            replaced: None,
            pending_lineage: None,
            written: Vec::new(),
            spent: std::collections::VecDeque::new(),
            last_retry: None,
        }
    }

    /// Whether `stored` holds a refresh token this client already spent: it is older than
    /// memory, whatever its revision.
    pub(crate) fn is_spent(&self, stored: &Stored) -> bool {
        stored
            .tokens()
            .and_then(Tokens::refresh_token)
            .is_some_and(|r| self.spent.contains(&fingerprint(r.secret())))
    }

    /// Records that a refresh spent `presented` (the server answered with another one).
    pub(crate) fn note_spent(&mut self, presented: &str) {
        if self.spent.len() == MAX_SPENT {
            self.spent.pop_front();
        }
        self.spent.push_back(fingerprint(presented));
    }

    /// Whether memory (`memory`) may give way to `stored`, and as what: `None` when it must
    /// not, because `stored` holds a refresh token this client spent (it is older than
    /// memory), or a login or logout of this client not written yet stands against it;
    /// otherwise the verdict on the pending change (`Stands` when nothing is pending: then
    /// `stored` is adopted if it is another revision). The one rule every path that adopts
    /// a record follows (a poll, a refresh under the lock, a retried write, the
    /// `invalid_grant` re-read).
    pub(crate) fn may_adopt(&self, memory: Option<&Current>, stored: &Stored) -> Option<Verdict> {
        if self.is_spent(stored) {
            return None;
        }
        let verdict = self.judge(memory, stored);
        (!self.replace_pending || verdict != Verdict::Stands).then_some(verdict)
    }

    /// Judges the pending login or logout of this client (memory holds `memory`) against
    /// `stored`. `Stands` when nothing is pending.
    pub(crate) fn judge(&self, memory: Option<&Current>, stored: &Stored) -> Verdict {
        if !self.replace_pending {
            return Verdict::Stands;
        }
        let ours = memory.and_then(|c| c.tokens.lineage());
        let own_earlier = |l: Lineage| self.written.contains(&l);
        match stored.tokens() {
            Some(theirs) => match theirs.lineage() {
                // Our login is stored, maybe refreshed since by another process: adopt it,
                // unless it holds a refresh token this client spent (memory is newer).
                Some(l) if Some(l) == ours => {
                    if self.is_spent(stored) {
                        Verdict::Stands
                    } else {
                        Verdict::Done
                    }
                }
                // An earlier login of this client, or the session the change replaces (or a
                // record that names none): the pending change is newer.
                Some(l) if own_earlier(l) || Some(l) == self.replaced => Verdict::Stands,
                Some(_) => Verdict::Superseded,
                None => Verdict::Stands,
            },
            // A logout record: of our own login (it was written, then logged out elsewhere),
            // or, for a pending logout, already what we want.
            None if ours.is_some() && stored.ended() == ours => Verdict::Superseded,
            None if memory.is_none() => Verdict::Done,
            None => Verdict::Stands,
        }
    }
}

impl Persisted {
    /// No login or logout is pending any more.
    fn clear_pending(&mut self) {
        self.replace_pending = false;
        self.replaced = None;
        self.pending_lineage = None;
        self.written.clear();
    }

    /// The revision of a shared store memory corresponds to (`None` until known).
    pub(super) fn base(&self) -> Option<Revision> {
        self.base
    }

    /// Whether a login or logout of this client is not written yet (see `replace_pending`).
    pub(super) fn replace_pending(&self) -> bool {
        self.replace_pending
    }

    /// Whether memory holds a refresh this client got that the store did not take (and no
    /// login or logout): the store still holds the refresh token it spent.
    pub(super) fn refresh_unsaved(&self) -> bool {
        self.unsaved.is_some() && !self.replace_pending
    }

    /// Takes the turn to retry a failed write: `Err(None)` if nothing is unsaved,
    /// `Err(Some(error))` if the last try was less than a second ago by `clock` (unless
    /// `force`).
    fn take_retry(&mut self, clock: &dyn Clock, force: bool) -> Result<(), Option<Arc<io::Error>>> {
        let Some(err) = self.unsaved.clone() else {
            return Err(None);
        };
        let now = clock.now();
        // A clock that went back does not hold the retry up.
        let recent = |t: SystemTime| {
            now.duration_since(t)
                .is_ok_and(|since| since < RETRY_UNSAVED_EVERY)
        };
        if !force && self.last_retry.is_some_and(recent) {
            return Err(Some(err));
        }
        self.last_retry = Some(now);
        Ok(())
    }
}

impl Persistence {
    /// `store`, kept as `mode` says; memory corresponds to its revision `base`, if known.
    pub(super) fn new(store: Box<dyn TokenStore>, mode: StoreMode, base: Option<Revision>) -> Self {
        Persistence {
            store,
            mode,
            base_revision: AtomicU64::new(base.map_or(0, Revision::get)),
            unsaved: AtomicBool::new(false),
            saving: AtomicBool::new(false),
        }
    }

    /// How the store is kept.
    pub(super) fn mode(&self) -> StoreMode {
        self.mode
    }

    /// Whether the store is shared (see [`StoreMode::Shared`]).
    pub(super) fn is_shared(&self) -> bool {
        self.mode == StoreMode::Shared
    }

    /// The store's own lock (see [`StoreMode::lock`]), taken from the store: the session
    /// takes it only through `Session::lock_store` (see `keep.rs`).
    pub(super) fn lock(&self) -> io::Result<Option<StoreLock>> {
        self.mode.lock(&*self.store)
    }

    /// Whether memory holds a change the store did not take (the mirror; no lock).
    pub(super) fn is_unsaved(&self) -> bool {
        self.unsaved.load(Acquire)
    }

    /// The revision memory corresponds to, as mirrored (no lock; 0 while unknown).
    fn base_revision(&self) -> Revision {
        Revision::new(self.base_revision.load(Acquire))
    }

    /// What a shared store holds if it changed since `since` (see [`TokenStore::poll`]).
    fn poll(&self, since: Revision) -> io::Result<Option<Stored>> {
        self.store.poll(Some(since))
    }

    /// Writes `snap` to the store and records the outcome in `p` (and its mirrors): a failed
    /// write leaves the change unsaved (a login or logout as `replace_pending`, until a write
    /// succeeds), retried no sooner than a second later by `clock`. Called under the persist
    /// lock, in the order of installs.
    pub(super) fn write_through(
        &self,
        snap: &Snapshot<Current>,
        writer: Writer<'_>,
        change: Change,
        p: &mut Persisted,
        clock: &dyn Clock,
    ) -> Result<(), Arc<io::Error>> {
        let tokens = snap.tokens.as_ref().map(|c| &c.tokens);
        // The session the store holds, as read under its lock: what a login or logout that
        // fails now replaces (the last one this client saw, without the lock).
        let under_lock = match &writer {
            Writer::Locked(lock) => lock
                .stored()
                .ok()
                .map(|s| s.tokens().and_then(Tokens::lineage)),
            _ => None,
        };
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
            Ok(Some(revision)) => {
                self.note_revision(p, revision, tokens.and_then(Tokens::lineage));
                Ok(())
            }
            Ok(None) => {
                self.mark_saved(p);
                Ok(())
            }
            Err(e) => {
                if change == Change::Replaced {
                    let lineage = tokens.and_then(Tokens::lineage);
                    if p.replace_pending {
                        // A change over a pending one: the earlier login may have reached
                        // the store unanswered, and is this client's own.
                        if let Some(earlier) = p.pending_lineage.take() {
                            p.written.push(earlier);
                        }
                    } else {
                        p.replaced = under_lock.unwrap_or(p.base_lineage);
                        p.replace_pending = true;
                    }
                    p.pending_lineage = lineage;
                }
                p.unsaved = Some(Arc::clone(&e));
                p.last_retry = Some(clock.now());
                self.unsaved.store(true, Release);
                Err(e)
            }
        }
    }

    /// Records in `p` (and its mirrors) that memory now corresponds to the shared store's
    /// `revision`, a record of the session `lineage`: nothing is unsaved any more. Called
    /// under the persist lock.
    pub(super) fn note_revision(
        &self,
        p: &mut Persisted,
        revision: Revision,
        lineage: Option<Lineage>,
    ) {
        p.base = Some(revision);
        p.base_lineage = lineage;
        self.base_revision.store(revision.get(), Release);
        self.mark_saved(p);
    }

    /// Records in `p` (and its mirror) that the store holds what memory holds: nothing is
    /// unsaved or pending any more. Called under the persist lock.
    fn mark_saved(&self, p: &mut Persisted) {
        p.unsaved = None;
        p.clear_pending();
        self.unsaved.store(false, Release);
    }

    /// Takes the turn to start the background retry of a failed write: false if one runs.
    /// The retry gives the turn back with [`Persistence::end_saving`].
    fn start_saving(&self) -> bool {
        !self.saving.swap(true, AcqRel)
    }

    /// Whether the background retry of a failed write runs.
    fn saving(&self) -> bool {
        self.saving.load(Acquire)
    }

    /// The background retry ended (or never started).
    fn end_saving(&self) {
        self.saving.store(false, Release);
    }
}

/// How many spent refresh tokens a client remembers (see `Persisted::spent`).
const MAX_SPENT: usize = 16;

/// A fingerprint of a refresh token, kept in memory only: 64-bit FNV-1a (cheap on the
/// refresh path; only equality among a client's last few tokens matters).
fn fingerprint(secret: &str) -> u64 {
    crate::encoding::fnv1a(secret.as_bytes())
}

/// How a change reaches the store.
pub(super) enum Writer<'a> {
    /// A private store: `save` / `clear`.
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
    fn of(lock: &'a mut Result<Locked<'_>, Arc<io::Error>>) -> Self {
        match lock {
            Ok(l) => match l.get() {
                Some(l) => Writer::Locked(l),
                None => Writer::Plain,
            },
            Err(e) => Writer::Unlocked(Arc::clone(e)),
        }
    }
}

/// What a write carries, which decides what becomes of it if it fails.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
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

/// What a retried write found under the store's lock.
enum Retried {
    Saved,
    Failed(Arc<io::Error>, u64),
    /// The record went bad meanwhile: it is not overwritten behind the user's back, and
    /// nothing was written.
    Unreadable(Arc<io::Error>),
    /// Another process stored newer tokens than an unsaved refresh, or a record that resolves
    /// an unsaved login or logout (see [`Verdict`]): adopt them.
    Newer(u64, Revision, Stored),
}

impl Session {
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
        let mut lock = self.lock_store().map_err(Arc::new);
        if let (Some(_), Err(e)) = (&tokens, &lock) {
            return Err(Error::Store(Arc::clone(e)));
        }
        let mut written = Ok(());
        let snap = self.gate.replace(
            None,
            |_| true,
            tokens,
            |snap, p| {
                written = self.persistence.write_through(
                    snap,
                    Writer::of(&mut lock),
                    Change::Replaced,
                    p,
                    self.config.clock(),
                );
            },
        );
        drop(lock);
        written.map_err(|e| {
            if let Some(snap) = snap {
                self.hooks.report(
                    Event::StoreFailed {
                        generation: snap.generation,
                    },
                    format_args!(
                        "could not write a login or logout to the store: {}",
                        Chain(&*e)
                    ),
                );
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
        let mut lock = self.lock_store().map_err(Arc::new);
        let newer_stored = self.newer_stored(&lock);
        loop {
            let snap = self.gate.snapshot();
            let mut written = Ok(());
            let cleared = self.gate.replace(
                Some(snap.generation),
                |_| true,
                None,
                |s, p| {
                    written = self.persistence.write_through(
                        s,
                        Writer::of(&mut lock),
                        Change::Replaced,
                        p,
                        self.config.clock(),
                    );
                },
            );
            // The generation moved between the read and the clear: log out the newer tokens.
            let Some(cleared) = cleared else { continue };
            drop(lock);
            let cleared = written.map_err(|e| {
                self.hooks.report(
                    Event::StoreFailed {
                        generation: cleared.generation,
                    },
                    format_args!("could not clear the store on logout: {}", Chain(&*e)),
                );
                Error::Store(e)
            });
            return Ok(LoggedOut {
                tokens: newer_stored.or_else(|| snap.tokens.map(|c| c.tokens.clone())),
                generation: snap.generation,
                cleared,
            });
        }
    }

    /// The tokens a shared store holds under `lock` if another process stored them since this
    /// client last read or wrote it. Not while a login or logout of this client is unsaved:
    /// memory is the newer then.
    fn newer_stored(&self, lock: &Result<Locked<'_>, Arc<io::Error>>) -> Option<Tokens> {
        let stored = lock.as_ref().ok()?.peek()?.stored().ok()?;
        let p = self.gate.persisted();
        let newer = p.base != Some(stored.revision()) && !p.replace_pending;
        newer.then(|| stored.tokens().cloned())?
    }

    /// Before a request: retries a failed write (at most once a second; for a shared store on
    /// a thread of its own), and adopts what another process (or client) stored since this
    /// client last read or wrote a shared store.
    pub(crate) fn sync_store(self: &Arc<Self>) -> Result<(), Error> {
        let unsaved = self.persistence.is_unsaved();
        let shared = self.persistence.is_shared();
        if !shared && !unsaved {
            return Ok(());
        }
        // Called back from this client's own store or flight: leave the store alone.
        if reentry::is_busy(self.key()) {
            return Ok(());
        }
        if !shared {
            let _ = self.retry_unsaved(false);
            return Ok(());
        }
        if unsaved {
            self.retry_unsaved_in_background();
        }
        let generation = self.gate.generation();
        let since = self.persistence.base_revision();
        let polled = {
            let _busy = reentry::enter(self.key());
            self.persistence.poll(since)
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
        let lineage = stored.tokens().and_then(Tokens::lineage);
        let current = stored
            .tokens()
            .cloned()
            .map(|t| self.stamp(t))
            .transpose()
            .map_err(Error::InvalidToken)?;
        let mut verdict = None;
        let adopted = self.gate.replace(
            Some(generation),
            // Not while this client's flight holds the store's lock: nobody else can have
            // written since the flight read the store, so what this read found is not newer
            // than what the flight works from, and replacing memory would make the flight
            // discard its answer (whose refresh token the server has rotated already).
            |p| {
                verdict = p.may_adopt(self.gate.snapshot().tokens.as_deref(), &stored);
                p.base == Some(since) && verdict.is_some() && !self.flight_lock.is_held()
            },
            current,
            |_, p| self.persistence.note_revision(p, revision, lineage),
        );
        if let Some(snap) = adopted {
            if verdict == Some(Verdict::Superseded) {
                self.report_superseded(snap.generation);
            }
            self.report_adopted(snap.generation, snap.tokens.is_some());
        }
        Ok(())
    }

    /// Writes what memory holds now if an earlier write failed; `force` ignores the once-a-
    /// second limit. If a shared store moved on meanwhile, another process's tokens are newer
    /// than an unsaved refresh: they are adopted instead (an unsaved login or logout is
    /// written over them). Returns the error if still unsaved.
    pub(crate) fn retry_unsaved(&self, force: bool) -> Option<Arc<io::Error>> {
        match self.take_retry(force) {
            Ok(()) => self.write_unsaved(true),
            Err(pending) => pending,
        }
    }

    /// The retry of the thread that keeps the store's lock (see `keep.rs`): a failure is
    /// logged (at debug) by that thread, not reported as an event each time: it retries
    /// every few seconds for as long as the store fails.
    /// It leaves the once-a-second turn of requests' retries alone, and writes through
    /// `lock` (the kept one).
    pub(super) fn retry_unsaved_quietly(&self, lock: Locked<'_>) -> Option<Arc<io::Error>> {
        self.gate.persisted().unsaved.as_ref()?;
        self.write_unsaved_through(Ok(lock), false)
    }

    /// On a request's path, for a shared store: the retry of a failed write runs on a thread
    /// of its own (one at a time), because taking the store's lock can wait for another
    /// process's whole refresh, and a request with a valid token never waits for that.
    fn retry_unsaved_in_background(self: &Arc<Self>) {
        if self.persistence.saving() || self.take_retry(false).is_err() {
            return;
        }
        if !self.persistence.start_saving() {
            return;
        }
        let session = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tokengate-save".into())
            .spawn(move || {
                let _done = EndSaving(&session.persistence);
                let _ = session.write_unsaved(true);
            });
        if spawned.is_err() {
            // Retried by a later request.
            self.persistence.end_saving();
        }
    }

    /// Takes the turn to retry a failed write (see `Persisted::take_retry`).
    fn take_retry(&self, force: bool) -> Result<(), Option<Arc<io::Error>>> {
        self.gate.persisted().take_retry(self.config.clock(), force)
    }

    /// The retry itself (see [`Session::retry_unsaved`]). Events are sent once the store is
    /// left, so a listener may call the client.
    fn write_unsaved(&self, report: bool) -> Option<Arc<io::Error>> {
        let _busy = reentry::enter(self.key());
        let lock = self.lock_store();
        drop(_busy);
        self.write_unsaved_through(lock, report)
    }

    /// [`Session::write_unsaved`] through `lock`, as [`Session::lock_store`] gave it.
    fn write_unsaved_through(
        &self,
        lock: io::Result<Locked<'_>>,
        report: bool,
    ) -> Option<Arc<io::Error>> {
        let retried = {
            let _busy = reentry::enter(self.key());
            let mut lock = match lock {
                Ok(lock) => Ok(lock),
                Err(e) => return Some(Arc::new(e)),
            };
            self.retry_under_lock(&mut lock)?
        };
        match retried {
            Retried::Saved => None,
            Retried::Unreadable(err) => Some(err),
            Retried::Newer(generation, since, stored) => {
                let adopted = self.adopt(generation, since, stored);
                // Nothing unsaved any more: a kept lock is released now.
                if !self.persistence.is_unsaved() {
                    self.release_kept();
                }
                adopted.err().map(|e| Arc::new(io::Error::other(e)))
            }
            Retried::Failed(err, _) if !report => Some(err),
            Retried::Failed(err, generation) => {
                self.hooks.report(
                    Event::StoreFailed { generation },
                    format_args!("retrying a failed save failed again: {}", Chain(&*err)),
                );
                Some(err)
            }
        }
    }

    /// Under the store's lock: writes what memory holds, or finds another process's newer
    /// tokens to adopt instead. `None` if nothing is unsaved any more.
    fn retry_under_lock(&self, lock: &mut Result<Locked<'_>, Arc<io::Error>>) -> Option<Retried> {
        // A store whose lock can lapse (a kept lease) may hold another record by now: read
        // it again first (no I/O under the persist lock).
        if let Some(l) = lock.as_mut().ok().and_then(Locked::get) {
            let _ = l.reread();
        }
        let mut p = self.gate.persisted();
        p.unsaved.as_ref()?;
        let stored = lock
            .as_ref()
            .ok()
            .and_then(Locked::peek)
            .map(StoreLock::stored);
        // Under the persist lock: no install can slip between this snapshot and its write.
        let snap = self.gate.snapshot();
        match stored {
            // A record memory gives way to (see `Persisted::may_adopt`): an unsaved login or
            // logout that is in the store already, or that another login replaced meanwhile;
            // or, for an unsaved refresh, another process's newer tokens (not this client's
            // own write whose answer was lost: memory is newer, and is written over it). It
            // is adopted, nothing written.
            Some(Ok(stored))
                if (p.replace_pending || p.base.is_some_and(|base| stored.revision() != base))
                    && p.may_adopt(snap.tokens.as_deref(), stored).is_some() =>
            {
                let since = p.base.unwrap_or(stored.revision());
                return Some(Retried::Newer(snap.generation, since, stored.clone()));
            }
            // An unsaved login or logout is written over its own session (refreshed since by
            // another process) or a record that names none.
            _ if p.replace_pending => {}
            // A record that went bad meanwhile is not overwritten behind the user's back.
            Some(Err(e)) => return Some(Retried::Unreadable(Arc::new(e))),
            _ => {}
        }
        Some(
            match self.persistence.write_through(
                &snap,
                Writer::of(lock),
                Change::Refreshed,
                &mut p,
                self.config.clock(),
            ) {
                Ok(()) => Retried::Saved,
                Err(e) => Retried::Failed(e, snap.generation),
            },
        )
    }
}

impl Session {
    /// Reports a login or logout of this client that was dropped unwritten: another login
    /// replaced the session it applied to.
    pub(super) fn report_superseded(&self, generation: u64) {
        self.hooks.report(
            Event::Superseded { generation },
            format_args!(
                "a login or logout of this client that could not be written was dropped: \
                 another login replaced that session in the store meanwhile (adopted as \
                 generation {generation})"
            ),
        );
    }
}

/// Ends the background retry's turn however its thread ends, also by a panicking listener
/// or store.
struct EndSaving<'a>(&'a Persistence);

impl Drop for EndSaving<'_> {
    fn drop(&mut self) {
        self.0.end_saving();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// A lineage named for the test (the same name, the same lineage).
    fn lin(name: &str) -> Lineage {
        let n = name
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        Lineage::parse(&format!("{:016x}", n.max(1))).unwrap()
    }

    fn current(access: &str, lineage: Option<&str>, issued_s: u64) -> Current {
        let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + issued_s);
        let mut t = Tokens::new(access)
            .with_refresh_token(format!("rt-{access}"))
            .with_issued_at(issued)
            .with_expires_at(issued + Duration::from_secs(3600));
        if let Some(l) = lineage {
            t = t.with_lineage(lin(l));
        }
        Current::new(t, issued, Duration::from_secs(30)).unwrap()
    }

    fn stored(access: &str, lineage: Option<&str>, issued_s: u64) -> Stored {
        Stored::new(
            Some(current(access, lineage, issued_s).tokens),
            Revision::new(7),
        )
    }

    /// Pending, made while the store held `replaced`.
    fn pending(replaced: Option<&str>) -> Persisted {
        let mut p = Persisted::new(Some(Revision::new(1)), replaced.map(lin));
        p.replace_pending = true;
        p.replaced = replaced.map(lin);
        p
    }

    /// Every case of the rule that decides a login or logout written late (issue 23, item
    /// 1): each row would catch a verdict that destroys a newer session or undoes a change.
    #[test]
    fn a_pending_change_is_judged_by_the_lineage_the_store_holds() {
        let logout = pending(Some("old"));
        // A pending logout of "old": its own session refreshed since is logged out.
        let v = logout.judge(None, &stored("at-2", Some("old"), 10));
        assert_eq!(v, Verdict::Stands);
        // Another login replaced it: dropped.
        let v = logout.judge(None, &stored("at-n", Some("new"), 10));
        assert_eq!(v, Verdict::Superseded);
        // A record of no known lineage (an older writer): written over, as before.
        assert_eq!(
            logout.judge(None, &stored("at-x", None, 10)),
            Verdict::Stands
        );
        // Logged out already: nothing to write.
        let out = Stored::new(None, Revision::new(9));
        assert_eq!(logout.judge(None, &out), Verdict::Done);

        let login = pending(Some("old"));
        let mine = current("at-mine", Some("mine"), 5);
        // The store still holds the session it replaces (maybe refreshed): written.
        let v = login.judge(Some(&mine), &stored("at-2", Some("old"), 10));
        assert_eq!(v, Verdict::Stands);
        // The login is in the store already, refreshed since by another process: adopted.
        let v = login.judge(Some(&mine), &stored("at-9", Some("mine"), 10));
        assert_eq!(v, Verdict::Done);
        // ...unless the store holds a refresh token this client spent (its own write whose
        // answer was lost, and memory refreshed since): memory is newer.
        let mut spent = pending(Some("old"));
        spent.note_spent("rt-at-9");
        let later = current("at-later", Some("mine"), 0);
        let v = spent.judge(Some(&later), &stored("at-9", Some("mine"), 10));
        assert_eq!(v, Verdict::Stands);
        // An earlier login of this client made while a change was pending (it may have
        // reached the store unanswered): the pending change is newer.
        let mut twice = pending(Some("old"));
        twice.written.push(lin("first"));
        let v = twice.judge(None, &stored("at-f", Some("first"), 10));
        assert_eq!(v, Verdict::Stands);
        // Another login replaced the session: dropped.
        let v = login.judge(Some(&mine), &stored("at-n", Some("new"), 10));
        assert_eq!(v, Verdict::Superseded);
        // The login was written and then logged out elsewhere: dropped, not resurrected.
        let ended = Stored::logged_out(Some(lin("mine")), Revision::new(9));
        assert_eq!(login.judge(Some(&mine), &ended), Verdict::Superseded);
        // A logout of another session, or one that names none: the login is written.
        let other = Stored::logged_out(Some(lin("old")), Revision::new(9));
        assert_eq!(login.judge(Some(&mine), &other), Verdict::Stands);
        assert_eq!(login.judge(Some(&mine), &out), Verdict::Stands);

        // Nothing pending: nothing to judge.
        let calm = Persisted::new(Some(Revision::new(1)), Some(lin("old")));
        let v = calm.judge(Some(&mine), &stored("at-n", Some("new"), 10));
        assert_eq!(v, Verdict::Stands);
    }

    /// The one rule for giving way to a stored record: never to one holding a refresh token
    /// this client spent (its own write whose answer was lost, read back later), whatever
    /// else; never to one a pending login or logout stands against; else as judged.
    #[test]
    fn memory_never_gives_way_to_a_record_holding_a_spent_refresh_token() {
        let mut calm = Persisted::new(Some(Revision::new(1)), Some(lin("old")));
        let mine = current("at-mine", Some("old"), 5);
        let theirs = stored("at-2", Some("old"), 10);
        assert_eq!(calm.may_adopt(Some(&mine), &theirs), Some(Verdict::Stands));
        calm.note_spent("rt-at-2");
        assert_eq!(calm.may_adopt(Some(&mine), &theirs), None);

        let mut logout = pending(Some("old"));
        let replaced = stored("at-3", Some("old"), 10);
        assert_eq!(logout.may_adopt(None, &replaced), None, "the logout stands");
        let newer = stored("at-n", Some("new"), 10);
        assert_eq!(logout.may_adopt(None, &newer), Some(Verdict::Superseded));
        logout.note_spent("rt-at-n");
        assert_eq!(logout.may_adopt(None, &newer), None);
    }
}
