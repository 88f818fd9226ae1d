//! The lock protocol: a lease on the session's lock key (`SET lock owner NX PX lease`, a
//! random owner), renewed by a thread while it is held, released by its owner only
//! (compare-and-delete), and writes that are compare-and-set on the record's generation and
//! refused while another owner holds the lease.
//!
//! A holder that stops (SIGSTOP, a long pause, a network partition) stops renewing, so its
//! lease runs out and another machine proceeds; when it resumes, its write is refused if the
//! record moved on. A holder killed outright frees the lock when its lease runs out.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{self, Raw, Refused};
use super::Shared;
use crate::store::{LockedWrite, Revision, Stored};
use crate::tokens::{Lineage, RefreshToken, Tokens};
use crate::util::deadline_after;

/// The longest pause between two attempts to take a lease another process holds.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A lease held by this process: renewed by its thread until dropped, then released.
pub(super) struct Lease {
    shared: Arc<Shared>,
    owner: String,
    lease: Duration,
    /// Set (for good) once the lease was found gone: it ran out and another owner may hold
    /// the lock. Written by the renewer thread and by [`Writer::still_held`].
    lost: Arc<AtomicBool>,
    /// Dropping it stops the renewer thread.
    stop: Option<mpsc::Sender<()>>,
}

impl Lease {
    fn new(shared: &Arc<Shared>, owner: String, lease: Duration) -> Lease {
        Lease {
            shared: Arc::clone(shared),
            owner,
            lease,
            lost: Arc::new(AtomicBool::new(false)),
            stop: None,
        }
    }

    /// Extends the lease if it is still ours (one round trip): `Ok(false)`, and the loss
    /// recorded, if it is gone.
    fn renew(shared: &Shared, owner: &str, lease: Duration, lost: &AtomicBool) -> io::Result<bool> {
        let renewed = shared.redis.run("renewing the lock", |c| {
            shared
                .scripts
                .renew
                .key(&shared.keys.lock)
                .arg(owner)
                .arg(millis(lease))
                .invoke::<i64>(c)
        })?;
        if renewed == 0 {
            lost.store(true, Release);
        }
        Ok(renewed != 0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        // If Redis cannot be reached, the lease runs out by itself. (It is not taken back as
        // an orphan: a token call may have been declared under it.)
        let _ = release(&self.shared, &self.owner);
    }
}

/// Releases `owner`'s lease, if it is still theirs, and withdraws their intent (one round
/// trip).
fn release(shared: &Shared, owner: &str) -> io::Result<i64> {
    shared.redis.run("releasing the lock", |c| {
        shared
            .scripts
            .release
            .key(&shared.keys.lock)
            .key(&shared.keys.record)
            .arg(owner)
            .invoke::<i64>(c)
    })
}

/// Takes the lease, waiting at most `timeout` while another process holds it, and reads the
/// record under it (one round trip per attempt).
///
/// # Errors
/// [`io::ErrorKind::TimedOut`] after `timeout`; the connection's error if Redis cannot be
/// reached (at once: a refresh never goes ahead without the lock).
pub(super) fn acquire(
    shared: &Arc<Shared>,
    lease: Duration,
    timeout: Duration,
) -> io::Result<(Lease, Raw)> {
    // A lease an earlier acquire may have taken unbeknownst (its answer lost) is ours.
    let mut owner = Some(
        shared
            .orphan
            .lock()
            .take()
            .unwrap_or_else(crate::util::random_id),
    );
    let deadline = deadline_after(timeout);
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(taken) = try_acquire(shared, &mut owner, lease)? {
            return Ok(taken);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {timeout:?} waiting for the lock of session {:?} in Redis at {}",
                    shared.keys.session,
                    shared.redis.shown()
                ),
            ));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One attempt of [`acquire`]: the lease and the record under it, or `None` while another
/// process holds it. `owner` is taken by the lease once it is ours.
fn try_acquire(
    shared: &Arc<Shared>,
    owner: &mut Option<String>,
    lease: Duration,
) -> io::Result<Option<(Lease, Raw)>> {
    let keys = &shared.keys;
    let id = owner.as_deref().unwrap_or_default();
    let answer = shared.redis.run("taking the lock", |c| {
        shared
            .scripts
            .acquire
            .key(&keys.record)
            .key(&keys.lock)
            .arg(id)
            .arg(millis(lease))
            .invoke::<Vec<redis::Value>>(c)
    });
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            // The answer may be lost after Redis gave us the lease: release it by its
            // owner now if Redis answers, else take it back with the next acquire,
            // rather than leave it to run out.
            if release(shared, id).is_err() {
                *shared.orphan.lock() = owner.take();
            }
            return Err(e);
        }
    };
    // From here on the lease may be ours: a `Lease` releases it on every path.
    match record::acquired(answer, keys) {
        Ok(None) => Ok(None),
        Ok(Some(raw)) => {
            let mut held = Lease::new(shared, owner.take().unwrap_or_default(), lease);
            held.stop = Some(renew_in_background(shared, &held)?);
            Ok(Some((held, raw)))
        }
        Err(e) => {
            let _ = release(shared, id);
            Err(e)
        }
    }
}

/// Starts the thread that extends the lease every third of it while it is held. It stops
/// when the returned sender is dropped, or for good when the lease is found gone (ran out
/// and taken by another owner: the loss is recorded, so the holder makes no token call and
/// its commit will be refused). A failed renewal (Redis unreachable) is tried again a third
/// of a lease later; the lease may run out meanwhile.
fn renew_in_background(shared: &Arc<Shared>, held: &Lease) -> io::Result<mpsc::Sender<()>> {
    let (stop, stopped) = mpsc::channel::<()>();
    let lease = held.lease;
    let every = (lease / 3).max(Duration::from_millis(1));
    let shared = Arc::clone(shared);
    let owner = held.owner.clone();
    let lost = Arc::clone(&held.lost);
    std::thread::Builder::new()
        .name("tokengate-redis-lease".into())
        .spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            if matches!(Lease::renew(&shared, &owner, lease, &lost), Ok(false)) {
                return;
            }
        })?;
    Ok(stop)
}

/// A lease's length in whole milliseconds, at least 1 (what `PX` and `PEXPIRE` take).
fn millis(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Writes the record through a held lease; dropping it releases the lease.
pub(super) struct Writer {
    lease: Lease,
    /// The generation read (as stored): the commit is refused unless it is still this one.
    expected: String,
    /// The highest generation this store knows; the next write stores one above it.
    floor: u64,
    /// The lineage of the record as last read or written: what a logout records it ended.
    lineage: Option<Lineage>,
    /// The id of a write whose outcome is not known (its answer and the read-back were
    /// lost): the next write first reads back whether it was applied.
    undecided: Option<(String, u64)>,
}

impl Writer {
    pub(super) fn new(lease: Lease, raw: &Raw, read: Option<&Stored>, floor: u64) -> Writer {
        Writer {
            lease,
            expected: raw.generation.clone(),
            floor,
            lineage: read.and_then(lineage_of),
            undecided: None,
        }
    }

    fn refused(&self, why: Refused, now: u64) -> io::Error {
        let session = &self.lease.shared.keys.session;
        let message = match why {
            Refused::Moved => format!(
                "write refused: session {session:?} was written by another process meanwhile \
                 (generation {now}, this write was based on {})",
                self.expected
            ),
            Refused::LeaseTaken => format!(
                "write refused: the lease on session {session:?} ran out and another process \
                 holds the lock (generation {now} kept)"
            ),
        };
        io::Error::other(message)
    }

    /// Sends the commit of `json` as write `id` (one round trip).
    fn commit(
        &self,
        json: &[u8],
        generation: u64,
        id: &str,
        ended: &str,
    ) -> io::Result<Result<u64, (Refused, u64)>> {
        let shared = &self.lease.shared;
        let keys = &shared.keys;
        let answer = shared.redis.run("writing the record", |c| {
            shared
                .scripts
                .commit
                .key(&keys.record)
                .key(&keys.lock)
                .arg(&self.lease.owner)
                .arg(&self.expected)
                .arg(generation)
                .arg(json)
                .arg(id)
                .arg(ended)
                .invoke::<Vec<redis::Value>>(c)
        })?;
        record::committed(answer, keys)
    }

    /// Reads the record back after write `id` (of `generation`) went unanswered:
    /// `Some(generation)` if the write was applied and is still the record (it names the
    /// write and its generation), `None` if not (never applied, or overwritten since: then
    /// sending it again is refused as any stale write is).
    fn read_back(&mut self, id: &str, generation: u64) -> io::Result<Option<u64>> {
        let shared = Arc::clone(&self.lease.shared);
        let raw = shared.read_raw("reading back an unanswered write")?;
        if raw.writer.as_deref() != Some(id) || raw.generation(&shared.keys)? != generation {
            return Ok(None);
        }
        self.expected = raw.generation;
        self.floor = self.floor.max(generation);
        Ok(Some(generation))
    }

    /// Before a write: settles a write whose outcome was left unknown. If it was applied,
    /// the record it wrote is the one the next write replaces.
    ///
    /// # Errors
    /// The read's error: the outcome is still unknown, and nothing is written meanwhile.
    fn settle(&mut self) -> io::Result<()> {
        if let Some((id, generation)) = self.undecided.clone() {
            self.read_back(&id, generation).map_err(undecided)?;
            self.undecided = None;
        }
        Ok(())
    }
}

/// The lineage a record names: its tokens', or the one a logout record ended.
fn lineage_of(stored: &Stored) -> Option<Lineage> {
    stored.tokens().and_then(Tokens::lineage).or(stored.ended())
}

/// Why a write is reported failed although it may have been applied.
fn undecided(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "the write's outcome is unknown (its answer was lost and reading it back failed; \
             it is read back before anything else is written): {e}"
        ),
    )
}

impl LockedWrite for Writer {
    /// A commit whose answer is lost (a broken connection, a timeout) is read back: applied,
    /// it is reported done and never sent again; not applied, it is sent once more (the
    /// same write id, so it cannot apply twice). If its outcome cannot be read back, the
    /// write fails as undecided and the next write through this lock settles it first.
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        self.settle()?;
        let (json, stored) = record::encode(tokens)?;
        let generation = record::next_generation(self.floor);
        let id = crate::util::random_id();
        let ended = match tokens {
            None => self.lineage.map(|l| l.to_hex()).unwrap_or_default(),
            Some(_) => String::new(),
        };
        let answer = match self.commit(&json, generation, &id, &ended) {
            Ok(answer) => answer,
            Err(lost) => match self.read_back(&id, generation) {
                Ok(Some(applied)) => Ok(applied),
                Ok(None) => self.commit(&json, generation, &id, &ended).map_err(|e| {
                    self.undecided = Some((id.clone(), generation));
                    undecided(e)
                })?,
                Err(_) => {
                    self.undecided = Some((id, generation));
                    return Err(undecided(lost));
                }
            },
        };
        match answer {
            Ok(generation) => {
                self.expected = generation.to_string();
                self.floor = generation;
                let revision = Revision::new(generation);
                let written = match stored {
                    Some(t) => Stored::new(Some(t), revision),
                    None => Stored::logged_out(Lineage::parse(&ended), revision),
                };
                self.lineage = lineage_of(&written);
                self.lease.shared.observe(written);
                Ok(revision)
            }
            Err((why, now)) => Err(self.refused(why, now)),
        }
    }

    /// One round trip: extends the lease if it is still ours. A lease the renewer already
    /// found gone is not asked about again.
    fn still_held(&mut self) -> io::Result<bool> {
        let l = &self.lease;
        if l.lost.load(Acquire) {
            return Ok(false);
        }
        Lease::renew(&l.shared, &l.owner, l.lease, &l.lost)
    }

    fn lost(&self) -> bool {
        self.lease.lost.load(Acquire)
    }

    /// One round trip: if the lease is still ours, extends it and records the intent (which
    /// refresh token, for how long: the call's bound plus a lease for writing its answer).
    fn before_call(
        &mut self,
        presenting: Option<&RefreshToken>,
        bound: Duration,
    ) -> io::Result<bool> {
        let l = &self.lease;
        if l.lost.load(Acquire) {
            return Ok(false);
        }
        let shared = &l.shared;
        let fingerprint = presenting.map_or_else(String::new, |t| fingerprint(t.secret()));
        let recorded = shared.redis.run("declaring the token call", |c| {
            shared
                .scripts
                .intent
                .key(&shared.keys.lock)
                .key(&shared.keys.record)
                .arg(&l.owner)
                .arg(millis(l.lease))
                .arg(&fingerprint)
                .arg(millis(bound.saturating_add(l.lease)))
                .invoke::<i64>(c)
        })?;
        if recorded == 0 {
            l.lost.store(true, Release);
        }
        Ok(recorded != 0)
    }

    fn reread(&mut self) -> io::Result<Option<Stored>> {
        let shared = Arc::clone(&self.lease.shared);
        let raw = shared.read_raw("reading the record")?;
        let stored = raw.parse(&shared.keys)?;
        self.expected = raw.generation;
        self.lineage = lineage_of(&stored);
        let stored = shared.observe(stored);
        self.floor = self.floor.max(stored.revision().get());
        Ok(Some(stored))
    }
}

/// What an intent records of the refresh token a holder presents: the first 128 bits of its
/// SHA-256, in hex. Enough to tell tokens apart; the token itself is never written there.
pub(super) fn fingerprint(refresh_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, refresh_token.as_bytes());
    crate::util::hex(&digest.as_ref()[..16])
}

/// After taking the lease: if another holder declared a token call that may still be in
/// flight (its intent is live), waits for the record to move (that holder writes its answer;
/// the refresh token it presented is spent) or for the intent to end (withdrawn, or run
/// out), and returns the record as it is then. Any live intent is waited for, whatever
/// refresh token it names (one that is not the record's means that holder's memory is ahead
/// of the record) and whoever declared it. The lease is renewed meanwhile by its thread.
///
/// # Errors
/// Redis' error reading the record; [`io::ErrorKind::TimedOut`] if an intent is still live
/// after `timeout` (no refresh may go ahead then: it could present a spent refresh token).
pub(super) fn wait_out_intent(shared: &Shared, mut raw: Raw, timeout: Duration) -> io::Result<Raw> {
    let deadline = deadline_after(timeout);
    let mut pause = Duration::from_millis(2);
    let generation = raw.generation.clone();
    loop {
        let Some(intent_ms) = raw.intent_ms else {
            return Ok(raw);
        };
        if raw.generation != generation {
            return Ok(raw);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out waiting for another holder's token call on session {:?} to be \
                     answered (its intent is live for {} ms more)",
                    shared.keys.session, intent_ms
                ),
            ));
        }
        let wait = pause
            .min(Duration::from_millis(intent_ms.max(1)))
            .min(deadline - now);
        std::thread::sleep(wait);
        pause = (pause * 2).min(MAX_PAUSE);
        raw = shared.read_raw("waiting for a token call in flight")?;
    }
}
