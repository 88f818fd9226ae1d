//! Where tokens live between refreshes: the [`TokenStore`] trait, [`MemoryStore`] (one
//! process), [`FileStore`] (the processes of one machine) and `RedisStore` (a fleet; feature
//! `redis`), plus the four small types a store shared by several processes speaks in
//! ([`Revision`], [`Stored`], [`StoreLock`] and the [`LockedWrite`] a lock writes through).

use std::fmt;
use std::io;
use std::time::Duration;

use parking_lot::Mutex;

use crate::tokens::{Lineage, RefreshToken, Tokens};

pub(crate) mod file;
mod record;
#[cfg(feature = "redis")]
pub(crate) mod redis;

pub use file::FileStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisStore;

/// Persistence for tokens. The client keeps the authoritative copy in memory and writes
/// through to the store after every change (refresh, `set_tokens`, `clear_tokens`, session
/// expiry), in the order the changes happened.
///
/// A store kept by one process needs only [`load`](TokenStore::load),
/// [`save`](TokenStore::save) and [`clear`](TokenStore::clear). A store shared by several
/// processes or machines ([`FileStore`], `RedisStore`) also implements
/// [`lock`](TokenStore::lock) and [`poll`](TokenStore::poll): the client then writes only
/// under the store's lock, adopts what other processes stored, and never refreshes tokens
/// another process already refreshed.
///
/// # Errors
/// A failing write is reported as [`Error::Store`](crate::Error::Store) to `set_tokens` /
/// `clear_tokens`, and as an [`Event::StoreFailed`](crate::Event::StoreFailed) when a refresh
/// could not be saved. The tokens in memory are already updated, so the process goes on; the
/// client retries the write on a later request, and [`AuthClient::close`](crate::AuthClient::close)
/// reports a write that never succeeded. A shared store whose `lock` fails: a login is not
/// made (memory unchanged, `Error::Store`), a logout clears memory all the same (and is
/// written later), a refresh fails with `Error::Refresh` (`RefreshError::Store`) without
/// calling the token endpoint; a failing `poll` fails the request with `Error::Store`.
/// With a shared store, an unsaved refresh gives way to
/// a newer record another process stores meanwhile, and the store's lock is kept until the
/// refresh is written (another process would otherwise present the spent refresh token); an
/// unsaved login or logout is written over its own session (see [`Tokens::lineage`]), even
/// if another process refreshed it meanwhile, and dropped if another login replaced that
/// session. A store of your own keeps the lineage by storing the tokens whole (the `serde`
/// form does); one that drops it falls back to "the last write wins".
///
/// # Deadlocks
/// The client calls the store from the thread that made the change, with its own locks
/// arranged so that a store may block (e.g. on a file lock). A store must not call back into
/// the client that uses it: such a call returns [`Error::Reentrant`](crate::Error::Reentrant).
pub trait TokenStore: Send + Sync + 'static {
    /// Loads the saved tokens, if any. Called once by `build()` when no tokens were given: for
    /// a private store, at once; a shared one is asked with [`poll(None)`](TokenStore::poll)
    /// first, and loaded only if that found no record.
    fn load(&self) -> io::Result<Option<Tokens>>;
    /// Saves `tokens`, replacing what was there.
    fn save(&self, tokens: &Tokens) -> io::Result<()>;
    /// Removes the saved tokens (logout or session expiry).
    fn clear(&self) -> io::Result<()>;

    /// Whether several processes or clients share this store. A shared store is polled
    /// before requests ([`poll`](TokenStore::poll)), read under its
    /// [`lock`](TokenStore::lock) before every refresh, and written only under that lock; a
    /// private one is never locked: it is written with [`save`](TokenStore::save) and
    /// [`clear`](TokenStore::clear) and never read back after `build()`.
    /// [`FileStore`] and `RedisStore` are shared; a store that wraps one
    /// must forward this.
    ///
    /// Defaults to false: the store is this process's own.
    fn is_shared(&self) -> bool {
        false
    }

    /// Shared stores: takes the store's exclusive lock (held against every other process and
    /// client using the same store) and reads the stored tokens under it. The client takes it
    /// before refreshing and before writing a login or logout, and writes through it.
    /// Waiting for another holder is bounded by [`TokenStore::lock_timeout`].
    ///
    /// Defaults to `Ok(None)`: not shared; writes go through `save` and `clear`.
    fn lock(&self) -> io::Result<Option<StoreLock>> {
        Ok(None)
    }

    /// Shared stores: a cheap check, made before each request, whether the stored tokens are
    /// another revision than `since` (the one this client last read or wrote). Returns the
    /// stored tokens if so. `since: None` asks for the current record unconditionally.
    ///
    /// Defaults to `Ok(None)`: nothing ever changes behind the client's back.
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        let _ = since;
        Ok(None)
    }

    /// Shared stores: the longest [`TokenStore::lock`] waits for another holder. The client's
    /// default `refresh_timeout` adds it to the longest refresh, so a thread never stops
    /// waiting for a refresh that is still inside its bounds. Defaults to zero.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokengate::{FileStore, MemoryStore, TokenStore};
    /// let memory = MemoryStore::new();
    /// assert!(!memory.is_shared() && TokenStore::lock_timeout(&memory) == Duration::ZERO);
    /// assert_eq!(FileStore::DEFAULT_LOCK_TIMEOUT, Duration::from_secs(180));
    /// ```
    fn lock_timeout(&self) -> Duration {
        Duration::ZERO
    }
}

/// Identifies one state of a shared store: two reads with equal revisions saw the same tokens.
/// What the number is depends on the store (a hash of the file's bytes for
/// [`FileStore`], a generation counter for `RedisStore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Revision(u64);

impl Revision {
    /// A revision with this value.
    pub const fn new(value: u64) -> Self {
        Revision(value)
    }

    /// Its value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// What a shared store held at one moment: tokens (none after a logout) and their revision.
#[derive(Clone, Debug)]
pub struct Stored {
    tokens: Option<Tokens>,
    revision: Revision,
    /// A logout record that names the session it ended (`RedisStore` keeps it).
    ended: Option<Lineage>,
}

impl Stored {
    /// The record `tokens` at `revision`.
    pub fn new(tokens: Option<Tokens>, revision: Revision) -> Self {
        Stored {
            tokens,
            revision,
            ended: None,
        }
    }

    /// A logout record at `revision` that remembers the lineage of the session it ended.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn logged_out(ended: Option<Lineage>, revision: Revision) -> Self {
        Stored {
            tokens: None,
            revision,
            ended,
        }
    }

    /// For a logout record that says so, the lineage (see [`Tokens::lineage`]) of the
    /// session it ended; `None` otherwise.
    pub(crate) fn ended(&self) -> Option<Lineage> {
        self.ended
    }

    /// The stored tokens; `None` when logged out.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_ref()
    }

    /// The revision they were read at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The tokens, by value.
    pub fn into_tokens(self) -> Option<Tokens> {
        self.tokens
    }
}

/// Writes a shared store while its lock is held; the lock is released when it is dropped.
/// Implemented by the stores for [`StoreLock::new`].
pub trait LockedWrite: Send {
    /// Replaces the stored tokens (`None`: logout) and returns the new revision. A store whose
    /// lock can expire (a lease) must refuse the write once it has, rather than overwrite a
    /// newer record.
    ///
    /// Return an error only if the record did not change. A write that happened (other
    /// processes can read it) returns its revision even if something after it failed (a
    /// directory `fsync`, a lost reply): the client writes a login or logout it believes
    /// unsaved again, over whatever the store holds by then, which could be another process's
    /// refresh of those very tokens.
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision>;

    /// Reads the record again while the lock is held. Only a store whose lock can lapse (a
    /// lease that ran out while its holder was paused) can see it changed by another process
    /// since the lock was taken; such a store implements this, so that a refresh token the
    /// server refused is first checked against a newer record before the session ends.
    ///
    /// Defaults to `Ok(None)`: the record cannot have changed under the lock.
    fn reread(&mut self) -> io::Result<Option<Stored>> {
        Ok(None)
    }

    /// Confirms that the lock is still this holder's, right before the client makes a token
    /// call under it, and extends it if it can lapse. Only a store whose lock can lapse (a
    /// lease that ran out while its holder was paused or cut off) implements it: a holder
    /// that lost its lock makes no token call, because the process that holds the lock now
    /// may be presenting the same refresh token. `Ok(false)` when the lock is gone; an error
    /// when it cannot be told (the client then makes no token call either).
    ///
    /// Defaults to `Ok(true)`: the lock cannot lapse while it is held. A `LockedWrite` that
    /// wraps another store's [`StoreLock`] must forward this (and [`LockedWrite::reread`]),
    /// or the client can no longer tell that the inner lock lapsed.
    fn still_held(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// Whether the store already knows the lock lapsed (e.g. a lease's renewal found it gone),
    /// without a round trip: a refresh waiting out a backoff stops at once then.
    ///
    /// Defaults to false. A `LockedWrite` that wraps another store's [`StoreLock`] should
    /// forward it.
    fn lost(&self) -> bool {
        false
    }

    /// Right before a token call that presents `presenting` (the refresh token; `None` when
    /// acquiring without one) and may take up to `bound`: confirms the lock as
    /// [`LockedWrite::still_held`] does, and, for a store whose lock can lapse, records the
    /// intent in the same step, so that a holder who takes the lock after a lapse while this
    /// call is on the wire waits for its answer instead of presenting the same refresh token
    /// (`RedisStore` does).
    ///
    /// Defaults to [`LockedWrite::still_held`]. A `LockedWrite` that wraps another store's
    /// [`StoreLock`] must forward it.
    fn before_call(
        &mut self,
        presenting: Option<&RefreshToken>,
        bound: Duration,
    ) -> io::Result<bool> {
        let _ = (presenting, bound);
        self.still_held()
    }
}

/// A shared store's exclusive lock, returned by [`TokenStore::lock`], with the tokens read
/// under it (or why they could not be read). Dropping it releases the lock.
pub struct StoreLock {
    /// The record read under the lock, or the read's error kind and message.
    stored: Result<Stored, (io::ErrorKind, String)>,
    writer: Box<dyn LockedWrite>,
}

impl StoreLock {
    /// A held lock that read `stored` and writes (and, when dropped, releases) through `writer`.
    pub fn new(stored: Stored, writer: impl LockedWrite + 'static) -> Self {
        StoreLock {
            stored: Ok(stored),
            writer: Box::new(writer),
        }
    }

    /// A held lock under which the record could not be read (a corrupt file): a refresh
    /// fails with `error`, but a login or logout may still replace the record.
    pub fn unreadable(error: &io::Error, writer: impl LockedWrite + 'static) -> Self {
        StoreLock {
            stored: Err((error.kind(), error.to_string())),
            writer: Box::new(writer),
        }
    }

    /// The record as read when the lock was taken, or as last written through it.
    ///
    /// # Errors
    /// Why it could not be read (see [`StoreLock::unreadable`]).
    pub fn stored(&self) -> io::Result<&Stored> {
        self.stored
            .as_ref()
            .map_err(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    /// Reads the record again (see [`LockedWrite::reread`]) and returns it; `Ok(None)` when
    /// the store's lock cannot lapse, so the record is the one [`StoreLock::stored`] returns.
    ///
    /// # Errors
    /// The store's error reading the record.
    pub fn reread(&mut self) -> io::Result<Option<&Stored>> {
        match self.writer.reread()? {
            Some(stored) => {
                self.stored = Ok(stored);
                Ok(self.stored.as_ref().ok())
            }
            None => Ok(None),
        }
    }

    /// Whether the lock is still held (see [`LockedWrite::still_held`]); always true for a
    /// store whose lock cannot lapse.
    ///
    /// # Errors
    /// The store's error when it cannot tell (e.g. Redis unreachable).
    pub fn still_held(&mut self) -> io::Result<bool> {
        self.writer.still_held()
    }

    /// Whether the store already knows the lock lapsed (see [`LockedWrite::lost`]).
    pub fn lost(&self) -> bool {
        self.writer.lost()
    }

    /// Confirms the lock before a token call and records its intent (see
    /// [`LockedWrite::before_call`]).
    ///
    /// # Errors
    /// The store's error when it cannot tell (e.g. Redis unreachable).
    pub fn before_call(
        &mut self,
        presenting: Option<&RefreshToken>,
        bound: Duration,
    ) -> io::Result<bool> {
        self.writer.before_call(presenting, bound)
    }

    /// Writes `tokens` (`None`: logout) under the lock and returns the new revision.
    ///
    /// # Errors
    /// The store's error; the stored record is then unchanged.
    pub fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        let revision = self.writer.write(tokens)?;
        self.stored = Ok(Stored::new(tokens.cloned(), revision));
        Ok(revision)
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLock")
            .field("stored", &self.stored.as_ref().map_err(|(kind, _)| kind))
            .finish_non_exhaustive()
    }
}

/// Keeps tokens in memory only; the default store.
#[derive(Default)]
pub struct MemoryStore {
    /// Written by the client under its persist lock; read by `load`.
    tokens: Mutex<Option<Tokens>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `tokens`.
    pub fn with_tokens(tokens: Tokens) -> Self {
        MemoryStore {
            tokens: Mutex::new(Some(tokens)),
        }
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> io::Result<Option<Tokens>> {
        Ok(self.tokens.lock().clone())
    }

    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        *self.tokens.lock() = Some(tokens.clone());
        Ok(())
    }

    fn clear(&self) -> io::Result<()> {
        *self.tokens.lock() = None;
        Ok(())
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("has_tokens", &self.tokens.lock().is_some())
            .finish()
    }
}

impl<S: TokenStore> TokenStore for std::sync::Arc<S> {
    fn load(&self) -> io::Result<Option<Tokens>> {
        (**self).load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        (**self).save(tokens)
    }
    fn clear(&self) -> io::Result<()> {
        (**self).clear()
    }
    fn is_shared(&self) -> bool {
        (**self).is_shared()
    }
    fn lock(&self) -> io::Result<Option<StoreLock>> {
        (**self).lock()
    }
    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        (**self).poll(since)
    }
    fn lock_timeout(&self) -> Duration {
        (**self).lock_timeout()
    }
}

/// `save`, or `clear` (`tokens: None`), of a store whose every change goes through its lock
/// (`FileStore`, `RedisStore`): tokens that cannot be stored are refused before the lock is
/// taken, so nothing is written.
pub(crate) fn write_under_lock(
    lock: impl FnOnce() -> io::Result<StoreLock>,
    tokens: Option<&Tokens>,
) -> io::Result<()> {
    if let Some(tokens) = tokens {
        record::Record::from_tokens(tokens)?;
    }
    lock()?.write(tokens).map(drop)
}
