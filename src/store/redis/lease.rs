//! The lock protocol: a lease on the session's lock key (`SET lock owner NX PX lease`, a
//! random owner), renewed by a thread while it is held, released by its owner only
//! (compare-and-delete), and writes that are compare-and-set on the record's generation and
//! refused while another owner holds the lease.
//!
//! A holder that stops (SIGSTOP, a long pause, a network partition) stops renewing, so its
//! lease runs out and another machine proceeds; when it resumes, its write is refused if the
//! record moved on. A holder killed outright frees the lock when its lease runs out.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::{self, Raw, Refused};
use super::Shared;
use crate::store::{LockedWrite, Revision, Stored};
use crate::tokens::Tokens;
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
        // If Redis cannot be reached, the lease runs out by itself.
        let shared = &self.shared;
        let _ = shared.redis.run("releasing the lock", |c| {
            shared
                .scripts
                .release
                .key(&shared.keys.lock)
                .arg(&self.owner)
                .invoke::<i64>(c)
        });
    }
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
    let owner = new_owner();
    let lease_ms = millis(lease);
    let deadline = deadline_after(timeout);
    let mut pause = Duration::from_millis(2);
    let keys = &shared.keys;
    loop {
        let answer = shared.redis.run("taking the lock", |c| {
            shared
                .scripts
                .acquire
                .key(&keys.record)
                .key(&keys.lock)
                .arg(&owner)
                .arg(lease_ms)
                .invoke::<Vec<redis::Value>>(c)
        })?;
        // From here on the lease may be ours: a `Lease` releases it on every path.
        let taken = record::acquired(answer, keys);
        match taken {
            Ok(None) => {}
            Ok(Some(raw)) => {
                let mut held = Lease::new(shared, owner, lease);
                held.stop = Some(renew_in_background(shared, &held)?);
                return Ok((held, raw));
            }
            Err(e) => {
                drop(Lease::new(shared, owner, lease));
                return Err(e);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out after {timeout:?} waiting for the lock of session {:?} in Redis at {}",
                    keys.session,
                    shared.redis.shown()
                ),
            ));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
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

/// A random owner for one lease: 128 bits from std's per-process random hash keys, mixed
/// with the process id, the time and a counter. Only its uniqueness matters.
fn new_owner() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u32(std::process::id());
        h.write_u128(nanos);
        h.write_usize(i);
        *word = h.finish();
    }
    format!("{:016x}{:016x}", words[0], words[1])
}

/// Writes the record through a held lease; dropping it releases the lease.
pub(super) struct Writer {
    lease: Lease,
    /// The generation read (as stored): the commit is refused unless it is still this one.
    expected: String,
    /// The highest generation this store knows; the next write stores one above it.
    floor: u64,
}

impl Writer {
    pub(super) fn new(lease: Lease, raw: &Raw, floor: u64) -> Writer {
        Writer {
            lease,
            expected: raw.generation.clone(),
            floor,
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
}

impl LockedWrite for Writer {
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        let (json, stored) = record::encode(tokens)?;
        let generation = record::next_generation(self.floor);
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
                .arg(&json)
                .invoke::<Vec<redis::Value>>(c)
        })?;
        match record::committed(answer, keys)? {
            Ok(generation) => {
                self.expected = generation.to_string();
                self.floor = generation;
                let revision = Revision::new(generation);
                shared.observe(Stored::new(stored, revision));
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

    fn reread(&mut self) -> io::Result<Option<Stored>> {
        let shared = Arc::clone(&self.lease.shared);
        let raw = shared
            .redis
            .run("reading the record", |c| record::read(c, &shared.keys))?;
        let stored = raw.parse(&shared.keys)?;
        self.expected = raw.generation;
        let stored = shared.observe(stored);
        self.floor = self.floor.max(stored.revision().get());
        Ok(Some(stored))
    }
}
