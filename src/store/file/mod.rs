//! [`FileStore`]: tokens kept in a JSON file that several processes share safely.
//!
//! By concern: the file format is the record both shared stores write (`store/record.rs`),
//! `lock.rs` the lock protocol, `fsio.rs` the careful I/O (no symlinks, no FIFOs, private
//! modes, atomic writes). This file ties them to [`TokenStore`]. What users need to know
//! (format, protocol, crashes, corrupt files) is documented on [`FileStore`] itself.
//!
//! Inside one process a store has two mutexes, never held together: `busy` (with the
//! `freed` Condvar) says a thread of this process holds, or is taking, the store's lock (the
//! lock file's `flock` is taken only by that thread), and `cache` records the version of the
//! file last read or written, so [`TokenStore::poll`] is one `lstat` when nothing changed and
//! never waits for the lock.

mod app_dir;
mod fsio;
mod lock;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use self::fsio::FileId;
use crate::error::Error;
use crate::store::record::{self, Record};
use crate::store::{LockedWrite, Revision, StoreLock, Stored, TokenStore};
use crate::tokens::Tokens;

/// Keeps tokens in a JSON file, shared safely by any number of processes (CLI runs in a shell
/// loop, cron jobs, parallel CI jobs), clients and threads.
///
/// ```
/// use tokengate::{AuthClient, AuthServer, FileStore};
/// # use tokengate::{TokenStore, Tokens};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tokengate-doc-{}", std::process::id()));
/// let path = dir.join("tokens.json");                  // e.g. ~/.config/my-cli/tokens.json
/// # FileStore::new(&path)?.save(&Tokens::new("access").with_refresh_token("refresh"))?;
/// let client = AuthClient::builder("https://api.example.com/v1/")
///     .refresher(AuthServer::new("https://auth.example.com/oauth/token").client_id("my-cli").refresh_grant())
///     .store(FileStore::new(&path)?)                  // no .tokens(): the saved ones are loaded
///     .build()?;
/// assert!(client.tokens().is_some());
/// client.close()?;                                    // waits for a refresh in flight, reports a failed save
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
///
/// # What it guarantees
/// - **Private.** The file and its lock file are created with mode `0600` on Unix; a missing
///   parent directory is created with mode `0700`. A token file that other users can read or
///   write, and a directory that other users can write to (group- or world-writable, like
///   ssh's StrictModes), are refused with an error naming the path and its mode; a usual
///   `0755` directory is fine.
/// - **No tricks with the path.** The token file, its lock file and its temporary file are
///   never opened through a symlink, and must be regular files: a symlink, FIFO or device
///   planted at one of those paths is a clear [`Error::Store`](crate::Error::Store), never a
///   hang.
/// - **Atomic.** Every write goes to a temporary sibling file, is `fsync`ed, renamed over the
///   token file, and the directory is `fsync`ed. A crash or `kill -9` at any instant leaves
///   either the old or the new tokens, never a truncated or mixed file.
/// - **One refresh across processes.** Before refreshing, the client takes an exclusive lock
///   on the lock file and re-reads the token file under it. If another process changed it
///   since this client last read or wrote it, the stored tokens are adopted and the token
///   endpoint is not called. With refresh token rotation and reuse detection, N processes ×
///   M threads make one refresh per expiry.
/// - **Never back in time.** A client compares the file with the version *it* last read or
///   wrote, not with the tokens it holds, so a save that failed (disk full) never makes it
///   adopt the older file and send a consumed refresh token again; the save is retried.
/// - **A refresh that cannot be written keeps the lock.** The token endpoint rotated the
///   refresh token, so the file holds a spent one: on a full disk (or any failed write) the
///   client keeps the lock, serves its own requests with the new tokens and retries the
///   write (50 ms, doubling to 5 s) until it succeeds. Other processes wait for the lock
///   (their [lock timeout](FileStore::lock_timeout), then a transient refresh error) and
///   never present the spent refresh token while it lives. Closing the client tries once
///   more and releases it: a process that exits with its refresh unwritten loses it.
/// - **A late login or logout never undoes a newer login.** The file carries the session's
///   lineage (each login gets one; refreshes keep it): a login or logout that could not be
///   written at once is written later over its own session only, and dropped if another
///   process logged a new session in meanwhile.
/// - **Changes from other processes are seen.** Before every request the client asks the
///   store, with one `lstat` of the file, whether it changed; a new login is adopted, and a
///   logout (file removed) logs this process out too, without a restart.
/// - **No secrets in errors.** Error messages name the file and what is wrong with it
///   (line and column for bad JSON, the field for a bad value), never a token.
///
/// # File format
/// A JSON object, written pretty-printed. Version 1 (the only version so far):
///
/// ```json
/// {
///   "version": 1,
///   "access_token": "…",
///   "token_type": "Bearer",
///   "refresh_token": "…",
///   "expires_at_unix_ms": 1767225600000,
///   "issued_at_unix_ms": 1767222000000,
///   "scope": "read write",
///   "id_token": "…",
///   "lineage": "3f6c0a9e41d27b58"
/// }
/// ```
///
/// | field | meaning |
/// |---|---|
/// | `version` | required; the format version. Any other value than `1` is refused. |
/// | `access_token` | required; 1 to 16384 bytes of visible ASCII |
/// | `token_type` | optional; the token type the token endpoint gave ([`Tokens::token_type`](crate::Tokens::token_type)), compared without regard to case. Only `Bearer` is accepted: another type is refused like any invalid field. Files without it (written by older versions) are read as Bearer. |
/// | `refresh_token` | optional; same rules |
/// | `expires_at_unix_ms` | optional; absolute expiry of the access token, milliseconds since the Unix epoch (absolute, so every process agrees on it) |
/// | `issued_at_unix_ms` | optional; when the access token was issued: with the expiry it gives the lifetime, so every process computes the same refresh window. Files without it (written by older versions) are read with the issue time unknown. |
/// | `scope` | optional; informational |
/// | `id_token` | optional; the OpenID Connect ID token ([`Tokens::id_token`](crate::Tokens::id_token)), same rules as the tokens. Files without it (written by older versions) are read as without one. |
/// | `lineage` | optional; the login these tokens descend from ([`Tokens::lineage`](crate::Tokens::lineage)): 16 hex digits ([`Lineage`](crate::Lineage)). Files without it (written by older versions) are read as of no known lineage: a late login or logout is then written over them. |
///
/// Unknown fields are ignored, so later minor additions stay readable (older versions
/// ignore `issued_at_unix_ms`, `lineage`, `token_type` and `id_token`, and drop them when they rewrite
/// the file). A format that older readers must not misread will get a new
/// `version`. The file holds one token set; logging out
/// ([`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens), or a session that ended)
/// removes the file. No file means no tokens.
///
/// Next to `tokens.json` live `tokens.json.lock` (the lock file, empty, never removed: removing
/// it while a process waits on it would let two processes hold "the" lock) and, only while a
/// write is in progress or after a write was killed, `tokens.json.tmp` (replaced by the next write).
///
/// # Locking protocol
/// The lock is an exclusive lock (std [`File::lock`]: `flock` on Unix) on the sibling lock
/// file, plus an in-process lock so that threads and clients sharing one `FileStore` take
/// turns. Every write of the token file happens under it, and the client holds it across a
/// whole refresh:
///
/// 1. The one thread of a process about to refresh (the client's in-process gate picks it; the
///    process's other threads wait on the gate) calls [`TokenStore::lock`]: take the lock
///    (waiting while another process holds it), then read the token file.
/// 2. If the file is not the version this client last read or wrote, another process (or
///    client) refreshed, logged in or logged out: the client adopts the stored tokens and
///    makes no refresh call — unless they have expired too (nobody refreshed them in time):
///    then it refreshes them, with their refresh token, which is the newest one.
/// 3. Otherwise it calls the token endpoint with its own tokens. Either way it writes the new
///    tokens (atomically, as above) before it releases the lock.
///
/// A login or logout ([`AuthClient::set_tokens`](crate::AuthClient::set_tokens),
/// [`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens), plain
/// [`save`](TokenStore::save) and [`clear`](TokenStore::clear)) takes the same lock, so it
/// never interleaves with a refresh in another process: a login made during another
/// process's refresh is written after it and wins. Readers ([`load`](TokenStore::load), the
/// per-request check) take no lock: a rename is atomic, so they see either the old file or
/// the new one.
///
/// Waiting for the lock is bounded by [`FileStore::lock_timeout`]. A process that dies
/// holding the lock releases it (the OS closes its files); one that hangs holding it makes
/// the others' refreshes ([`Error::Refresh`](crate::Error::Refresh)) and saves
/// ([`Error::Store`](crate::Error::Store)) fail after the timeout, never deadlock. A client
/// whose refresher hangs gives the lock up when it is dropped or closed. A client whose
/// refresh could not be written keeps the lock until the write succeeds (see "What it
/// guarantees"): the others' refreshes fail after their timeout meanwhile, transiently,
/// and never present the spent refresh token; closing that client tries the write once more
/// and releases the lock (a rotation it never wrote is then lost).
/// The lock only excludes programs that take it: write the token file only through
/// `FileStore` (or atomically, by a rename, while holding the lock).
///
/// # Corrupt or unreadable files
/// A token file that cannot be read or parsed (bad JSON, a missing or invalid field, an
/// unknown `version`, not a regular file, too large, permission denied, readable by others)
/// is an error, never a panic: `build()` fails with [`Error::Store`](crate::Error::Store) when
/// it loads it, and so does every request while the file stays bad, also when it went bad
/// while the client was running. A refresh needs a readable file and fails without calling
/// the token endpoint.
///
/// The file is **never overwritten behind your back**: it is replaced only when you decide —
/// by [`AuthClient::set_tokens`](crate::AuthClient::set_tokens) (a new login),
/// [`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens) (removes it), or by giving
/// `.tokens(…)` to the builder. Or fix or delete it yourself; the client notices on its next
/// request.
///
/// # Concurrent calls
/// One `FileStore` may be shared by several clients in a process (wrap it in an
/// [`Arc`](std::sync::Arc)): each client sees the others' logins, logouts and refreshes as
/// it sees another process's. Separate `FileStore`s for one path, in one process or many,
/// coordinate through the lock file like separate processes do.
pub struct FileStore {
    shared: Arc<Shared>,
    lock_timeout: Duration,
}

/// What a store shares with the locks it hands out.
struct Shared {
    /// The token file (absolute).
    path: PathBuf,
    /// Its directory, `fsync`ed after every rename or removal.
    dir: PathBuf,
    /// `<file name>.lock`: the cross-process lock.
    lock_path: PathBuf,
    /// `<file name>.tmp`: where a write goes before its rename. Only written under the lock.
    tmp_path: PathBuf,
    /// True while a thread of this process holds or is taking the store's lock. Guarded by
    /// itself; waited on through `freed`.
    busy: Mutex<bool>,
    /// Signalled (under `busy`) when the lock is released.
    freed: Condvar,
    /// The version of the file last read or written by this store. Guarded by itself; written
    /// by every read and write, read by `poll`.
    cache: Mutex<Seen>,
}

/// A version of the token file as this store last saw it.
enum Seen {
    /// Nothing read or written yet.
    Unknown,
    /// There was no file.
    Absent,
    /// A valid file. `_open` pins its inode on Unix (see [`fsio::keep_open`]).
    Valid {
        id: FileId,
        stored: Stored,
        _open: Option<File>,
    },
    /// A file that could not be read or parsed, and why (a message with no secrets in it).
    Invalid {
        id: Option<FileId>,
        kind: io::ErrorKind,
        message: String,
        _open: Option<File>,
    },
}

impl FileStore {
    /// Default for [`FileStore::lock_timeout`]: above the longest a refresh of a client
    /// with default settings holds the lock (4 token calls of 30 s, each after a 2 s check of
    /// the lock, 3 backoffs of at most 10 s, and 2 s to save: 160 s).
    pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(180);

    /// A store for the token file at `path` (e.g. `~/.config/my-cli/tokens.json`; a relative
    /// path is made absolute now). Creates the parent directory, with mode `0700` on Unix, if
    /// it is missing. Reads nothing yet: the client loads the file when it is built.
    ///
    /// For a tool's own place for its tokens, see [`FileStore::for_app`].
    ///
    /// # Errors
    /// [`Error::Store`](crate::Error::Store) with an I/O error naming the path:
    /// [`io::ErrorKind::InvalidInput`] if `path` does not end in a file name;
    /// [`io::ErrorKind::PermissionDenied`] if the directory can be written by other users;
    /// the error of creating the directory if that fails.
    pub fn new(path: impl AsRef<Path>) -> Result<FileStore, Error> {
        Self::open(path.as_ref()).map_err(|e| Error::Store(Arc::new(e)))
    }

    /// [`FileStore::new`], with the I/O error unwrapped.
    fn open(path: &Path) -> io::Result<FileStore> {
        let path = std::path::absolute(path)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("token file path {} does not name a file", path.display()),
            ));
        };
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| fsio::context(e, "could not create directory", dir))?;
        }
        fsio::check_dir(dir)?;
        let sibling = |suffix: &str| {
            let mut n = name.to_os_string();
            n.push(suffix);
            dir.join(n)
        };
        let shared = Shared {
            lock_path: sibling(".lock"),
            tmp_path: sibling(".tmp"),
            dir: dir.to_path_buf(),
            path,
            busy: Mutex::new(false),
            freed: Condvar::new(),
            cache: Mutex::new(Seen::Unknown),
        };
        Ok(FileStore {
            shared: Arc::new(shared),
            lock_timeout: Self::DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// How long a refresh, save or clear waits for the lock while another process (or another
    /// client of this store) holds it, before failing with [`io::ErrorKind::TimedOut`]
    /// (reported as [`Error::Store`](crate::Error::Store) or
    /// [`Error::Refresh`](crate::Error::Refresh)). Defaults to 180 s
    /// ([`FileStore::DEFAULT_LOCK_TIMEOUT`]), above the longest refresh of a client with default settings.
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The token file's path (absolute).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The lock file's path: the token file's, with `.lock` appended.
    pub fn lock_path(&self) -> &Path {
        &self.shared.lock_path
    }

    /// Takes the lock and reads the file under it. A file that cannot be read still gives
    /// the lock (a login may replace it; a refresh fails on it).
    fn locked(&self) -> io::Result<StoreLock> {
        let held = lock::acquire(&self.shared, self.lock_timeout)?;
        let read = {
            let mut cache = self.shared.cache.lock();
            self.shared.reload(&mut cache)
        };
        Ok(match read {
            Ok(stored) => StoreLock::new(stored, Writer(held)),
            Err(e) => StoreLock::unreadable(&e, Writer(held)),
        })
    }
}

impl Shared {
    /// Reads the token file and records what it found in `seen`.
    fn reload(&self, seen: &mut Seen) -> io::Result<Stored> {
        let path = &self.path;
        let invalid = |seen: &mut Seen, id, open, e: io::Error| {
            *seen = Seen::Invalid {
                id,
                kind: e.kind(),
                message: e.to_string(),
                _open: open,
            };
            Err(e)
        };
        let (file, meta) = match fsio::open_token_file(path) {
            Ok(Some(opened)) => {
                // A directory others can write to may hold a file they put there: refused on
                // every read, not cached, so a `chmod go-w` takes effect at the next read.
                fsio::check_dir(&self.dir)?;
                opened
            }
            Ok(None) => {
                *seen = Seen::Absent;
                return Ok(Stored::new(None, ABSENT));
            }
            Err(e) => {
                let id = fsio::stat(path).ok().flatten().map(|m| FileId::of(&m));
                return invalid(seen, id, None, e);
            }
        };
        let id = FileId::of(&meta);
        let parsed = fsio::read_all(&file, path).and_then(|bytes| {
            Ok((
                record::parse(&bytes, &format_args!("token file {}", path.display()))?,
                bytes,
            ))
        });
        match parsed {
            Ok((rec, bytes)) => {
                let stored = Stored::new(Some(rec.to_tokens()), revision_of(&bytes));
                *seen = Seen::Valid {
                    id,
                    stored: stored.clone(),
                    _open: fsio::keep_open(file),
                };
                Ok(stored)
            }
            Err(e) => invalid(seen, Some(id), fsio::keep_open(file), e),
        }
    }

    /// Writes `tokens` (removes the file for `None`). The caller holds the lock.
    fn write(&self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        fsio::check_dir(&self.dir)?;
        let Some(tokens) = tokens else {
            fsio::remove(&self.path, &self.dir)?;
            *self.cache.lock() = Seen::Absent;
            return Ok(ABSENT);
        };
        let rec = Record::from_tokens(tokens)?;
        let bytes = rec.to_json();
        let file = fsio::write_atomically(&self.path, &self.tmp_path, &self.dir, &bytes)?;
        let revision = revision_of(&bytes);
        // The file is in place: the write happened, whatever follows. Without its metadata
        // the next poll reads it again.
        *self.cache.lock() = match file.metadata() {
            Ok(meta) => Seen::Valid {
                id: FileId::of(&meta),
                stored: Stored::new(Some(rec.to_tokens()), revision),
                _open: fsio::keep_open(file),
            },
            Err(_) => Seen::Unknown,
        };
        Ok(revision)
    }
}

/// Writes through a held lock ([`StoreLock`]); dropping it releases the lock.
struct Writer(lock::Held);

impl LockedWrite for Writer {
    fn write(&mut self, tokens: Option<&Tokens>) -> io::Result<Revision> {
        self.0.shared.write(tokens)
    }
}

impl TokenStore for FileStore {
    /// Reads the file: `None` if there is none.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] for a file that is not a valid token file; the OS error
    /// (with the path) if it cannot be read; see "Corrupt or unreadable files" above.
    fn load(&self) -> io::Result<Option<Tokens>> {
        let mut cache = self.shared.cache.lock();
        Ok(self.shared.reload(&mut cache)?.into_tokens())
    }

    /// Writes `tokens` atomically under the lock. A relative `expires_in` that was not yet
    /// turned into an absolute expiry is counted from now.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for tokens that cannot be stored (nothing is written);
    /// [`io::ErrorKind::TimedOut`] if the lock was not had within the lock timeout;
    /// [`io::ErrorKind::PermissionDenied`] or [`io::ErrorKind::InvalidInput`] if the directory
    /// or the lock file breaks the rules above; the OS error (with the path) if writing failed
    /// (the old file is then intact).
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        super::write_under_lock(|| self.locked(), Some(tokens))
    }

    /// Removes the file under the lock.
    fn clear(&self) -> io::Result<()> {
        super::write_under_lock(|| self.locked(), None)
    }

    /// Shared: by every process (and client) that opens the same file.
    fn is_shared(&self) -> bool {
        true
    }

    fn lock(&self) -> io::Result<Option<StoreLock>> {
        self.locked().map(Some)
    }

    fn poll(&self, since: Option<Revision>) -> io::Result<Option<Stored>> {
        let shared = &*self.shared;
        let mut cache = shared.cache.lock();
        let now = fsio::stat(&shared.path)?.map(|m| FileId::of(&m));
        // The common case, once per request: the file is the version last seen, and that is
        // the caller's; nothing is cloned.
        let changed = |revision: Revision| since != Some(revision);
        let current = match (&*cache, now) {
            (Seen::Absent, None) => return Ok(changed(ABSENT).then(|| Stored::new(None, ABSENT))),
            (Seen::Valid { id, stored, .. }, Some(now)) if *id == now => {
                return Ok(changed(stored.revision()).then(|| stored.clone()));
            }
            (
                Seen::Invalid {
                    id: Some(id),
                    kind,
                    message,
                    ..
                },
                Some(now),
            ) if *id == now => return Err(io::Error::new(*kind, message.clone())),
            _ => shared.reload(&mut cache)?,
        };
        Ok(changed(current.revision()).then_some(current))
    }

    fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.shared.path)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

/// The revision of "no file".
const ABSENT: Revision = Revision::new(0);

/// The revision of a file holding `bytes`: a 64-bit FNV-1a hash (never [`ABSENT`]). Equal
/// bytes are the same tokens, so a rewrite of the same record is the same revision.
fn revision_of(bytes: &[u8]) -> Revision {
    Revision::new(crate::encoding::fnv1a(bytes).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_follow_the_bytes() {
        assert_eq!(revision_of(b"abc"), revision_of(b"abc"));
        assert_ne!(revision_of(b"abc"), revision_of(b"abd"));
        assert_ne!(revision_of(b""), ABSENT);
    }
}
