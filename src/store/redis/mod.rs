//! [`RedisStore`] (feature `redis`): one session shared by a fleet of machines through Redis.
//!
//! By concern: `record.rs` is the record's layout and the Lua scripts, `lease.rs` the lock
//! protocol (lease, renewal, compare-and-set writes), `poll.rs` change detection off the
//! request path, `conn.rs` connections, timeouts and redacted errors. This file ties them to
//! [`TokenStore`]; what users need to know is documented on [`RedisStore`] itself.
//!
//! Inside one process a store has one mutex of its own besides the connection pool's:
//! `newest`, the record with the highest generation this store has read or written (mirrored
//! in `newest_generation`, so that a request's poll reads two atomics and locks nothing).

mod conn;
mod lease;
mod poll;
mod record;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use self::conn::Redis;
use self::lease::Writer;
use self::poll::Poller;
use self::record::{Keys, Scripts};
use crate::error::Error;
use crate::store::{Revision, StoreLock, Stored, TokenStore};
use crate::tokens::Tokens;

/// Keeps one session's tokens in Redis, shared by every process on every machine that opens
/// the same session: a fleet of workers behind one service account, or one user's session
/// used by many machines. However many machines and threads see the token expire, one of
/// them refreshes it, once; a login or logout on one machine is adopted by all of them.
///
/// Needs the cargo feature `redis` (off by default). Uses the `redis` crate's synchronous
/// API: no async runtime.
///
/// ```no_run
/// use tokengate::{AuthClient, AuthServer, RedisStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tokens = tokengate::Tokens::new("a");
/// let store = RedisStore::open("redis://127.0.0.1:6379/", "myapp:alice")?;
/// let client = AuthClient::builder("https://api.example.com/v1/")
///     .refresher(AuthServer::new("https://auth.example.com/oauth/token").client_id("svc").refresh_grant())
///     .store(store) // no .tokens(..): the session is loaded from Redis
///     .build()?;
/// client.set_tokens(tokens)?; // a login on one machine: every machine adopts it
/// # Ok(()) }
/// ```
///
/// The URL is anything the `redis` crate accepts: `redis://[user][:password@]host[:port][/db]`,
/// `rediss://…` for TLS (checked against the system's root certificates), `redis+unix:///path`.
/// The password never appears in `Debug` output or errors.
///
/// # What it guarantees
/// - **Redis stays off the request path.** Requests use the token in memory. Redis is used
///   when refreshing, on a login or logout, and to notice other machines' changes: a
///   background thread reads the record at most once per [poll interval](Self::poll_interval)
///   (1 s), and only while requests are being made. A request never waits on Redis.
/// - **One refresh per expiry across machines.** Before refreshing, a machine takes the
///   session's lock (a lease) and reads the record under it. If another machine refreshed
///   meanwhile, the stored tokens are adopted and the token endpoint is not called. Within a
///   process the client's own gate lets one thread through; the others wait for it.
/// - **A paused lock holder cannot overwrite newer tokens.** Every write is a
///   compare-and-set on the record's generation, refused if another machine wrote since the
///   record was read, or if another machine holds the lease now.
/// - **Fail closed.** A refresh that cannot take the lock (Redis down, or the lock held past
///   the [lock timeout](Self::lock_timeout)) fails with a transient error: no machine ever
///   refreshes without the lock. Requests go on with the valid token in memory; nothing is
///   cleared.
/// - **Never back in time.** Generations only grow, and a record with a lower generation
///   than one this store has already seen (Redis restarted without persistence, or from an
///   old snapshot) is never adopted: the machines go on with their tokens, and the next
///   refresh or login writes them back.
/// - **No secrets in errors or `Debug`.** Errors name the server (without userinfo or query)
///   and the session, never a token or the password.
///
/// # Locking protocol
/// 1. The one thread of a process about to refresh (or to write a login or logout) takes
///    the lease: `SET {session}:lock <random owner> NX PX <lease>`, retried with a short
///    pause while another owner holds it, for at most the [lock timeout](Self::lock_timeout)
///    (180 s, above the longest refresh a client makes with default settings). The record
///    is read in the same round trip (a Lua script).
/// 2. While the lease is held, a thread renews it every third of the [lease](Self::lease)
///    (10 s) if it is still ours, so a refresh may take as long as the client allows it
///    (token calls with retries) while a holder that is killed, or paused, frees the lock
///    within one lease. A renewal that finds the lease gone records the loss.
/// 3. If the record moved on since this client last read or wrote it, the client adopts
///    it (unless those tokens expired too: then it refreshes them, with their refresh
///    token). Otherwise it calls the token endpoint. Before every token call (the first,
///    and each retry after a 503 or 429) it confirms that the lease is still its own and
///    extends it, in one round trip ([`StoreLock::still_held`]). If the lease is gone (the
///    holder stalled past it during a backoff, or lost Redis), it makes no token call, since
///    the machine holding the lease now may be presenting the same refresh token: it adopts
///    what that machine wrote, or, if nothing yet, fails transiently and adopts the record
///    later.
/// 4. The new tokens are written by a script that checks the record's generation is still
///    the one read in step 1 and that no other owner holds the lease, then stores them
///    with a higher generation. A refused write leaves the new tokens in memory (reported as
///    [`Event::StoreFailed`](crate::Event::StoreFailed)); the client then adopts the newer
///    record it finds.
/// 5. The lease is released by its owner only (compare-and-delete).
///
/// If the token endpoint answers `invalid_grant`, the record is read again under the lock
/// first: if another machine wrote it meanwhile (possible only when this holder's lease ran
/// out), its tokens are adopted instead of ending the session. A logout is a
/// generation-checked write too.
///
/// # Record layout
/// Two keys per session, sharing the hash tag `{session}`:
///
/// | key | type | content |
/// |---|---|---|
/// | `{session}:tokens` | hash | `generation`: a decimal number, larger after every write (each write stores at least the writer's clock in milliseconds since the Unix epoch, so a record written after Redis lost its data is still newer than the lost ones); `tokens`: the tokens as [`FileStore`](crate::FileStore)'s JSON (format version 1: access token and its type, refresh token, absolute expiry, issue time, scope, ID token, lineage; a record without a token type, written by an older version, is read as Bearer, one without an ID token as without one); absent after a logout; `lineage`: on a logout record, the lineage of the session it ended; `writer`: the random id of the write that stored the record (a write whose answer was lost is recognised by it); `intent_owner`, `intent_token`, `intent_until`: a token call in flight, declared by the lease holder before it (its lease owner, a SHA-256 fingerprint of the refresh token it presents, and until when, in milliseconds by Redis' clock, its call and the write of its answer may take) |
/// | `{session}:lock` | string with an expiry | the random owner of the lease, while one is held |
///
/// A logout keeps the key (generation and no `tokens`), so generations never repeat. To end
/// the session on every machine, log out through a client (or call
/// [`clear`](TokenStore::clear)): deleting the keys by hand looks like Redis losing its data,
/// and running machines write their tokens back on their next refresh.
///
/// # Failures
/// | fault | what happens |
/// |---|---|
/// | Redis unreachable at `build()` | `build()` fails with [`Error::Store`](crate::Error::Store) |
/// | Redis unreachable later | requests go on with the token in memory; a refresh that needs the lock fails with [`Error::Refresh`](crate::Error::Refresh) ([`RefreshError::Store`](crate::RefreshError::Store)) and is tried again by a later request; `set_tokens` fails with `Error::Store` and changes nothing; `clear_tokens` fails with `Error::Store` but clears memory, and the logout is written once Redis is back; nothing else is cleared |
/// | lock held by another machine longer than the lock timeout | the refresh fails the same way, transiently; the token endpoint is not called |
/// | the holder is killed | the lease runs out (at most one lease), the next machine takes the lock |
/// | the holder is paused past its lease, or cut off from Redis | another machine takes the lock; the paused holder makes no further token call (it confirms its lease before each one; a backoff stops as soon as its renewal found the lease gone) and adopts the newer record; its write, if its call was already answered, is refused if the record moved on |
/// | the lease lapses while the holder's token call is on the wire (Redis frozen or restarted, a failover, a starved renewal thread) | the holder declared the call in the record, in the same step as its lease check (see "Record layout"); the next holder, finding a live intent of another holder, waits (within its lock timeout) for the record to move or the intent to end, and adopts the answer; if the intent is still live at the lock timeout, its refresh fails transiently and presents nothing; the old holder may write that answer while its intent lives, even though another machine holds the lease; an intent is withdrawn when its holder releases a lease it still holds, never by a holder whose lease lapsed |
/// | a record that does not parse | `build()` and refreshes fail with the reason (never quoting it); requests go on; a login replaces it |
/// | every connect, read and write | bounded by the [I/O timeout](Self::io_timeout) (2 s) |
/// | a write whose answer was lost (the connection broke after Redis applied it) | read back by its write id: applied, it is done and never sent again; not applied, it is sent once more (same id: it cannot apply twice); if it cannot be read back either, it fails as undecided and the next write through that lock reads it back first |
/// | a lease request whose answer was lost | released by its owner at once if Redis answers, else taken back (as its own) by the store's next lock, never left to run out |
/// | a refresh's write that failed (Redis went away mid-refresh, or refused it) | the new tokens stay in memory, and the lease is kept (renewed) while a thread retries the write (50 ms doubling to 5 s) until it succeeds or the client closes: the spent refresh token in the record is never presented by another machine meanwhile (they wait for the lock); a newer record another machine wrote meanwhile (possible only after a lapse) wins over an unsaved refresh |
/// | a login or logout whose write failed | in use in memory; never replaced by what another machine still on the old session writes meanwhile; the retry writes it over its own session (same lineage), and the others adopt it; dropped (`Event::Superseded`) if another login replaced that session meanwhile, or if the record shows it written already |
///
/// What no lock can save: a machine killed (or cut off for good) after the token endpoint
/// rotated the refresh token but before its write reached Redis. Its intent runs out (one
/// token timeout and one lease after its call began); the others still hold the old refresh
/// token, and with a server that detects reuse their next refresh ends the session. The same
/// holds for a holder paused (or cut off) past its intent's end before its answer is
/// written. A provider with a reuse grace window tolerates both.
///
/// # Threads
/// A store starts one background thread, named `tokengate-redis-poll`, with the first
/// request that needs a read (it ends when the store is dropped), and one named
/// `tokengate-redis-lease` for each lock while it is held (to renew the lease).
///
/// # Concurrent calls
/// One `RedisStore` may be shared by several clients in a process (wrap it in an
/// [`Arc`]): each sees the others' changes at once. Separate `RedisStore`s for one session,
/// in one process or many, coordinate through Redis as separate machines do.
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub struct RedisStore {
    shared: Arc<Shared>,
    lease: Duration,
    lock_timeout: Duration,
    poll_interval: Duration,
}

/// What a store shares with its background threads and the locks it hands out.
struct Shared {
    redis: Redis,
    keys: Keys,
    scripts: Scripts,
    /// The record with the highest generation this store has read or written. Guarded by
    /// itself; written by every read and write (`observe`).
    newest: Mutex<Option<Stored>>,
    /// `newest`'s generation (0 before any read), read by each request's poll.
    newest_generation: AtomicU64,
    poller: Poller,
    /// The owner of a lease this store may hold without knowing it (an acquire whose answer
    /// was lost, and whose release could not reach Redis either): the next acquire takes it
    /// back as its own rather than wait for it to run out. Guarded by itself.
    orphan: Mutex<Option<String>>,
}

impl Shared {
    /// Runs one of the session's scripts (see `record.rs`) with `keys` (the session's, in the
    /// order the script names them) and `args`; `doing` names it in errors.
    fn invoke<T: redis::FromRedisValue>(
        &self,
        doing: &str,
        script: &redis::Script,
        keys: impl redis::ToRedisArgs,
        args: impl redis::ToRedisArgs,
    ) -> io::Result<T> {
        self.redis
            .run(doing, |c| script.key(&keys).arg(&args).invoke(c))
    }

    /// Records `stored` if it is newer than anything seen, and returns the newest record
    /// seen: an older generation (Redis lost data) is never handed out over a newer one.
    fn observe(&self, stored: Stored) -> Stored {
        let mut newest = self.newest.lock();
        match &*newest {
            Some(seen) if seen.revision().get() >= stored.revision().get() => seen.clone(),
            _ => {
                self.newest_generation
                    .store(stored.revision().get(), Ordering::Release);
                *newest = Some(stored.clone());
                stored
            }
        }
    }

    /// Reads the record (no lock) and returns the newest record seen.
    fn current(&self) -> io::Result<Stored> {
        let raw = self.read_raw("reading the record")?;
        Ok(self.observe(raw.parse(&self.keys)?))
    }

    /// Reads the record as it is, not yet parsed (one round trip; `doing` names it in
    /// errors).
    fn read_raw(&self, doing: &str) -> io::Result<record::Raw> {
        let answer = self
            .redis
            .run(doing, |c| record::read(c, &self.scripts, &self.keys))?;
        record::read_raw(answer, &self.keys)
    }
}

impl RedisStore {
    /// Default for [`RedisStore::lease`].
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
    /// Default for [`RedisStore::lock_timeout`]: above the longest a refresh of a client
    /// with default settings holds the lock (4 token calls of 30 s, each after a 2 s check of
    /// the lock, 3 backoffs of at most 10 s, and 2 s to save: 160 s).
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(180);
    /// Default for [`RedisStore::poll_interval`].
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
    /// Default for [`RedisStore::io_timeout`].
    pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(2);
    /// The shortest lease: a shorter one given to [`RedisStore::lease`] is raised to it.
    pub const MIN_LEASE: Duration = Duration::from_millis(100);

    /// A store for the session named `session` in the Redis at `url`. Sessions are
    /// independent: one Redis may hold many (`"myapp:alice"`, `"myapp:bob"`). Connects
    /// later, when first used (the client's `build()` reads the session).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if `url` is not a Redis URL the `redis` crate accepts (the
    /// message never quotes it); [`Error::Config`] if `session` is empty or holds control
    /// characters.
    pub fn open(url: impl AsRef<str>, session: impl AsRef<str>) -> Result<RedisStore, Error> {
        let session = session.as_ref();
        if session.is_empty() {
            return Err(Error::Config("the RedisStore session name is empty"));
        }
        if session.chars().any(char::is_control) {
            return Err(Error::Config(
                "the RedisStore session name holds control characters",
            ));
        }
        let redis = Redis::open(url.as_ref(), Self::DEFAULT_IO_TIMEOUT)
            .map_err(|e| Error::InvalidUrl(format!("Redis URL: {e}")))?;
        let shared = Shared {
            redis,
            keys: Keys::new(session),
            scripts: Scripts::new(),
            newest: Mutex::new(None),
            newest_generation: AtomicU64::new(0),
            poller: Poller::new(),
            orphan: Mutex::new(None),
        };
        Ok(RedisStore {
            shared: Arc::new(shared),
            lease: Self::DEFAULT_LEASE,
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
        })
    }

    /// How long the lock stays held by a holder that stopped renewing it (killed, paused,
    /// cut off from Redis): the others wait at most this long after such a holder. A live
    /// holder renews it every third of it, so a refresh may take longer. Defaults to 10 s
    /// ([`RedisStore::DEFAULT_LEASE`]); at least [`RedisStore::MIN_LEASE`].
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Self::MIN_LEASE);
        self
    }

    /// How long a refresh, login or logout waits for the lock while another machine holds
    /// it, before failing with [`io::ErrorKind::TimedOut`] (reported as
    /// [`Error::Refresh`](crate::Error::Refresh) or [`Error::Store`](crate::Error::Store)).
    /// Defaults to 180 s ([`RedisStore::DEFAULT_LOCK_TIMEOUT`]), above the longest refresh
    /// of a client with default settings.
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How often, at most, the record is read in the background to notice other machines'
    /// logins, logouts and refreshes while requests are being made. Defaults to 1 s
    /// ([`RedisStore::DEFAULT_POLL_INTERVAL`]). Refreshes never depend on it: they read the
    /// record under the lock.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The timeout of every connect, read and write to Redis. Defaults to 2 s
    /// ([`RedisStore::DEFAULT_IO_TIMEOUT`]).
    #[must_use]
    pub fn io_timeout(self, timeout: Duration) -> Self {
        self.shared.redis.set_timeout(timeout);
        self
    }

    /// The session's name, as given to [`RedisStore::open`].
    pub fn session(&self) -> &str {
        &self.shared.keys.session
    }

    /// The key of the session's record: `{session}:tokens`.
    pub fn record_key(&self) -> &str {
        &self.shared.keys.record
    }

    /// The key of the session's lock: `{session}:lock`.
    pub fn lock_key(&self) -> &str {
        &self.shared.keys.lock
    }

    /// Takes the lock and reads the record under it. A record that does not parse still
    /// gives the lock (a login may replace it; a refresh fails on it).
    fn locked(&self) -> io::Result<StoreLock> {
        let shared = &self.shared;
        let started = std::time::Instant::now();
        let (lease, raw) = lease::acquire(shared, self.lease, self.lock_timeout)?;
        // Another holder's token call with the refresh token the record holds may still be
        // on the wire (its lease lapsed meanwhile): wait for its answer. If Redis cannot be
        // read, the lease is released (dropped) and no refresh goes ahead.
        let left = self.lock_timeout.saturating_sub(started.elapsed());
        let raw = lease::wait_out_intent(shared, raw, left)?;
        Ok(match raw.parse(&shared.keys) {
            Ok(stored) => {
                let newest = shared.observe(stored.clone());
                let floor = newest.revision().get();
                StoreLock::new(newest, Writer::new(lease, &raw, Some(&stored), floor))
            }
            Err(e) => {
                let read = raw.generation(&shared.keys).unwrap_or(0);
                let floor = read.max(shared.newest_generation.load(Ordering::Acquire));
                StoreLock::unreadable(&e, Writer::new(lease, &raw, None, floor))
            }
        })
    }
}

impl TokenStore for RedisStore {
    /// Reads the record: `None` if there are no tokens (never logged in, or logged out).
    ///
    /// # Errors
    /// The connection's error; [`io::ErrorKind::InvalidData`] for a record that does not
    /// parse.
    fn load(&self) -> io::Result<Option<Tokens>> {
        Ok(self.shared.current()?.into_tokens())
    }

    /// Writes `tokens` under the lock. A relative `expires_in` that was not yet turned into
    /// an absolute expiry is counted from now.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for tokens that cannot be stored (nothing is written);
    /// [`io::ErrorKind::TimedOut`] if the lock was not had within the lock timeout; the
    /// connection's error.
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        super::write_under_lock(|| self.locked(), Some(tokens))
    }

    /// Logs out under the lock: the record keeps its key and a higher generation, without
    /// tokens.
    fn clear(&self) -> io::Result<()> {
        super::write_under_lock(|| self.locked(), None)
    }

    /// `since: None` reads the record now (the client's `build()`; errors are returned).
    /// Otherwise no Redis round trip: returns the newest record the background reader (or a
    /// lock, or a write) has seen if it is newer than `since`, and asks for a background
    /// read (made once the poll interval since the last one has passed). Never fails.
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        let shared = &self.shared;
        let Some(since) = since else {
            let stored = shared.current()?;
            shared.poller.just_read(self.poll_interval);
            return Ok(Some(stored));
        };
        Poller::tick(shared, self.poll_interval);
        if shared.newest_generation.load(Ordering::Acquire) <= since.get() {
            return Ok(None);
        }
        let newest = shared.newest.lock();
        Ok(newest
            .as_ref()
            .filter(|s| s.revision().get() > since.get())
            .cloned())
    }

    /// Shared: by every process (and client), on any machine, that opens the same session.
    fn is_shared(&self) -> bool {
        true
    }

    fn lock(&self) -> io::Result<Option<StoreLock>> {
        self.locked().map(Some)
    }

    fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.shared.poller.stop();
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.redis.shown())
            .field("session", &self.shared.keys.session)
            .field("lease", &self.lease)
            .field("lock_timeout", &self.lock_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("io_timeout", &self.shared.redis.timeout())
            .finish_non_exhaustive()
    }
}
