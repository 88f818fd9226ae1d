//! [`FileStore`]: tokens kept in a JSON file that several processes share safely.
//!
//! The file format (versioned), the locking protocol, what happens on a corrupt file and
//! what a crash leaves behind are documented on [`FileStore`] itself, where users read them.
//!
//! Inside one process, a store's state is one `parking_lot::Mutex<State>` plus a `Condvar`:
//! `State::seen` records which version of the file this store last read or wrote (so
//! [`TokenStore::poll_external_change`] is one `stat` and never reports this process's own
//! writes), and `State::flock` says which thread of this process holds (or is taking) the
//! cross-process lock on the sibling lock file. Lock order: the lock file's `flock` is
//! always taken *before* the state mutex, and a thread never blocks on the lock file while
//! holding the state mutex, so `poll_external_change` never waits for another process.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::store::{RefreshLock, TokenStore};
use crate::tokens::Tokens;

/// The version of the file format this tokengate writes, and the only one it reads.
const FORMAT_VERSION: u64 = 1;

/// Largest token file read. Two 16 KiB tokens and a scope fit many times over; anything
/// bigger is not a token file.
const MAX_FILE_LEN: u64 = 256 * 1024;

/// Default for [`FileStore::lock_timeout`].
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest pause between two attempts to take the lock file while another process holds it.
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(8);

/// Keeps tokens in a JSON file, shared safely by any number of processes (CLI runs in a shell
/// loop, cron jobs, parallel CI jobs) and threads.
///
/// ```
/// use tokengate::{AuthClient, FileStore, OAuth2Refresh};
/// # use tokengate::{TokenStore, Tokens};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("tokengate-doc-{}", std::process::id()));
/// let path = dir.join("tokens.json");                  // e.g. ~/.config/my-cli/tokens.json
/// # FileStore::new(&path)?.save(&Tokens::new("access").with_refresh_token("refresh"))?;
/// let client = AuthClient::builder("https://api.example.com/v1/")
///     .refresher(OAuth2Refresh::new("https://auth.example.com/oauth/token").client_id("my-cli"))
///     .store(FileStore::new(&path)?)                  // no .tokens(): the saved ones are loaded
///     .build()?;
/// assert!(client.tokens().is_some());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
///
/// # What it guarantees
/// - **Private.** The file and its lock file are created with mode `0600` on Unix; a missing
///   parent directory is created with mode `0700` (an existing one is left as it is).
/// - **Atomic.** Every write goes to a temporary sibling file, is `fsync`ed, renamed over the
///   token file, and the directory is `fsync`ed. A crash or `kill -9` at any instant leaves
///   either the old or the new tokens, never a truncated or mixed file.
/// - **One refresh across processes.** Before refreshing, the client takes an exclusive lock
///   on the lock file and re-reads the token file under it. If another process already
///   rotated the tokens, they are adopted and the token endpoint is not called. With refresh
///   token rotation and reuse detection, N processes × M threads make one refresh per expiry.
/// - **Changes from other processes are seen.** Before every request the client asks the
///   store, with one `stat` of the file, whether another process changed it; a new login is
///   adopted, and a logout (file removed) logs this process out too, without a restart.
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
///   "refresh_token": "…",
///   "expires_at_unix_ms": 1767225600000,
///   "scope": "read write"
/// }
/// ```
///
/// | field | meaning |
/// |---|---|
/// | `version` | required; the format version. Any other value than `1` is refused. |
/// | `access_token` | required; 1 to 16384 bytes of visible ASCII |
/// | `refresh_token` | optional; same rules |
/// | `expires_at_unix_ms` | optional; absolute expiry of the access token, milliseconds since the Unix epoch (absolute, so every process agrees on it) |
/// | `scope` | optional; informational |
///
/// Unknown fields are ignored, so later minor additions stay readable. A format that older
/// readers must not misread will get a new `version`. The file holds one token set; logging
/// out ([`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens), or a session that
/// ended) removes the file. No file means no tokens.
///
/// Next to `tokens.json` live `tokens.json.lock` (the lock file, empty, never removed: removing
/// it while a process waits on it would let two processes hold "the" lock) and, only while a
/// write is in progress or after a write was killed, `tokens.json.tmp` (reused by the next write).
///
/// # Locking protocol
/// The lock is an exclusive lock (std [`File::lock`]: `flock` on Unix, `LockFileEx` on
/// Windows) on the sibling lock file. Every process that writes the token file holds
/// it while writing, and the client holds it across a whole refresh:
///
/// 1. The one thread of a process about to refresh (the client's in-process gate picks it; the
///    process's other threads wait on the gate) calls [`TokenStore::lock_for_refresh`]: take
///    the lock (waiting while another process holds it), then read the token file.
/// 2. If the stored access token is not the one this process is replacing, another process
///    already refreshed (or logged in or out): the client adopts the stored tokens and makes
///    no refresh call — unless they have expired too (nobody refreshed them in time): then it
///    refreshes them, with their refresh token, which is the newest one.
/// 3. Otherwise it calls the token endpoint with its own tokens. Either way it writes the new
///    tokens (atomically, as above) before it releases the lock.
///
/// Plain [`save`](TokenStore::save) and [`clear`](TokenStore::clear) (a login, a logout) take
/// the same lock, so they never interleave with a refresh in another process: a login made
/// during another process's refresh is written after it and wins. Readers
/// ([`load`](TokenStore::load), the per-request check) take no lock: a rename is atomic, so
/// they see either the old file or the new one.
///
/// Waiting for the lock is bounded by [`FileStore::lock_timeout`]. A process that dies
/// holding the lock releases it (the OS closes its files); one that hangs holding it makes
/// the others' refreshes ([`Error::Refresh`](crate::Error::Refresh)) and saves
/// ([`Error::Store`](crate::Error::Store)) fail after the timeout, never deadlock.
/// The lock only excludes programs that take it: write the token file only through
/// `FileStore` (or atomically, by a rename, while holding the lock).
///
/// # Corrupt or unreadable files
/// A token file that cannot be read or parsed (bad JSON, a missing or invalid field, an
/// unknown `version`, a directory, too large, permission denied) is an error, never a panic:
/// `build()` fails with [`Error::Store`](crate::Error::Store) when it loads it, and so does
/// every request while the file stays bad, also when it went bad while the client was running.
/// A refresh needs a readable file and fails without calling the token endpoint.
///
/// The file is **never overwritten behind your back**: it is replaced only when you decide —
/// by [`AuthClient::set_tokens`](crate::AuthClient::set_tokens) (a new login),
/// [`AuthClient::clear_tokens`](crate::AuthClient::clear_tokens) (removes it), or by giving
/// `.tokens(…)` to the builder. Or fix or delete it yourself; the client notices on its next
/// request.
///
/// # Concurrent calls
/// One `FileStore` may be shared by several clients in a process (wrap it in an
/// [`Arc`](std::sync::Arc)); separate `FileStore`s for one path, in one process or many,
/// coordinate through the lock file like separate processes do.
pub struct FileStore {
    shared: Arc<Shared>,
    lock_timeout: Duration,
}

/// What a store shares with the [`RefreshLock`] guards it hands out.
struct Shared {
    /// The token file (absolute).
    path: PathBuf,
    /// Its directory, `fsync`ed after every rename or removal.
    dir: PathBuf,
    /// `<file name>.lock`: the cross-process lock.
    lock_path: PathBuf,
    /// `<file name>.tmp`: where a write goes before its rename. Only written under the lock.
    tmp_path: PathBuf,
    state: Mutex<State>,
    /// Signalled (under `state`) whenever `State::flock` becomes `Free`.
    cond: Condvar,
}

struct State {
    /// The version of the token file this store last read or wrote. Written by every read and
    /// write (under this mutex); compared by `poll_external_change`.
    seen: Seen,
    /// Which thread of this process holds the lock file. Written under this mutex.
    flock: Flock,
}

/// Who in this process holds the cross-process lock of a store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flock {
    /// Nobody; a thread that wants it marks it `Busy` and takes the lock file.
    Free,
    /// A `save`/`clear`/`lock_for_refresh` is taking it, or a `save`/`clear` holds it.
    /// Others wait on `Shared::cond`.
    Busy,
    /// A live [`RefreshLock`] holds it. A `save`/`clear` from any thread writes at once
    /// under it instead of waiting: the refresh it belongs to may be waiting for that very
    /// save (the client persists changes in order), so waiting could deadlock.
    Refresh,
}

/// A version of the token file as this store last saw it.
enum Seen {
    /// Nothing read or written yet.
    Unknown,
    /// There was no file.
    Absent,
    /// A valid file. `_open` keeps it open on Unix, so its inode number cannot be reused by a
    /// later file while we compare against it (a file replaced twice could otherwise look
    /// unchanged). See [`keep_open`].
    Valid {
        id: FileId,
        record: Record,
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

impl Seen {
    fn invalid(id: Option<FileId>, open: Option<File>, e: &io::Error) -> Seen {
        Seen::Invalid {
            id,
            kind: e.kind(),
            message: e.to_string(),
            _open: open,
        }
    }
}

/// What identifies one version of the file: which file (device and inode on Unix, where a
/// rename always brings a new inode) and its size and modification time (an in-place edit).
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        FileId {
            #[cfg(unix)]
            dev: meta.dev(),
            #[cfg(unix)]
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

/// One token set as the file holds it. No `Debug`: it holds secrets.
#[derive(Clone, PartialEq, Eq)]
struct Record {
    access_token: String,
    refresh_token: Option<String>,
    expires_at_unix_ms: Option<u64>,
    scope: Option<String>,
}

/// The file's JSON, as written.
#[derive(serde::Serialize)]
struct FileV1<'a> {
    version: u64,
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

impl FileStore {
    /// A store for the token file at `path` (e.g. `~/.config/my-cli/tokens.json`; a relative
    /// path is made absolute now). Creates the parent directory, with mode `0700` on Unix, if
    /// it is missing. Reads nothing yet: the client loads the file when it is built.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `path` does not end in a file name; the error of
    /// creating the directory if that fails.
    pub fn new(path: impl AsRef<Path>) -> io::Result<FileStore> {
        let path = std::path::absolute(path.as_ref())?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("token file path {} does not name a file", path.display()),
            ));
        };
        if !dir.exists() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| context(e, "could not create directory", dir))?;
        }
        let sibling = |suffix: &str| {
            let mut n = OsString::from(name);
            n.push(suffix);
            dir.join(n)
        };
        let shared = Shared {
            lock_path: sibling(".lock"),
            tmp_path: sibling(".tmp"),
            dir: dir.to_path_buf(),
            path,
            state: Mutex::new(State {
                seen: Seen::Unknown,
                flock: Flock::Free,
            }),
            cond: Condvar::new(),
        };
        Ok(FileStore {
            shared: Arc::new(shared),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// How long a refresh, save or clear waits for the lock while another process holds it,
    /// before failing with [`io::ErrorKind::TimedOut`] (reported as
    /// [`Error::Store`](crate::Error::Store) or [`Error::Refresh`](crate::Error::Refresh)).
    /// Defaults to 60 s.
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

    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.lock_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    }

    /// Runs `write` with the cross-process lock held: the one of a live [`RefreshLock`] of
    /// this store if there is one, else taken (and released) here.
    fn with_write_lock(&self, write: impl FnOnce(&mut State) -> io::Result<()>) -> io::Result<()> {
        let shared = &*self.shared;
        let deadline = self.deadline();
        let mut st = shared.state.lock();
        loop {
            match st.flock {
                Flock::Refresh => return write(&mut st),
                Flock::Free => break,
                Flock::Busy => shared.wait(&mut st, deadline, self.lock_timeout)?,
            }
        }
        st.flock = Flock::Busy;
        drop(st);
        let _busy = BusyGuard::new(shared);
        let file = shared.take_lock_file(deadline, self.lock_timeout)?;
        let mut st = shared.state.lock();
        let result = write(&mut st);
        unlock(file);
        result
    }
}

impl Shared {
    /// Waits until `flock` may have changed; an error once `deadline` has passed.
    fn wait(
        &self,
        st: &mut MutexGuard<'_, State>,
        deadline: Instant,
        timeout: Duration,
    ) -> io::Result<()> {
        if self.cond.wait_until(st, deadline).timed_out() {
            return Err(self.timed_out(timeout));
        }
        Ok(())
    }

    fn timed_out(&self, timeout: Duration) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "timed out after {timeout:?} waiting for the lock on {}",
                self.lock_path.display()
            ),
        )
    }

    /// Opens the lock file and takes its exclusive lock, waiting at most until `deadline`.
    /// Must be called without holding `state`.
    fn take_lock_file(&self, deadline: Instant, timeout: Duration) -> io::Result<File> {
        loop {
            let file = open_lock_file(&self.lock_path)?;
            let mut pause = Duration::from_millis(1);
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(self.timed_out(timeout));
                        }
                        std::thread::sleep(pause.min(deadline - now));
                        pause = (pause * 2).min(MAX_LOCK_PAUSE);
                    }
                    Err(TryLockError::Error(e)) => {
                        return Err(context(e, "could not lock", &self.lock_path))
                    }
                }
            }
            // If the lock file was removed or replaced while we waited, our lock is on a file
            // nobody else will lock: take the lock again on the one that is there now.
            if is_still_at(&file, &self.lock_path)? {
                return Ok(file);
            }
            unlock(file);
            if Instant::now() >= deadline {
                return Err(self.timed_out(timeout));
            }
        }
    }

    /// Reads the token file and records what it found in `seen`.
    fn reload(&self, seen: &mut Seen) -> io::Result<Option<Tokens>> {
        let path = &self.path;
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                *seen = Seen::Absent;
                return Ok(None);
            }
            Err(e) => {
                let e = context(e, "could not open token file", path);
                let id = fs::metadata(path).ok().map(|m| FileId::of(&m));
                *seen = Seen::invalid(id, None, &e);
                return Err(e);
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                let e = context(e, "could not read token file", path);
                *seen = Seen::invalid(None, None, &e);
                return Err(e);
            }
        };
        let id = FileId::of(&meta);
        match read_record(&file, &meta, path) {
            Ok(record) => {
                let tokens = record.to_tokens();
                *seen = Seen::Valid {
                    id,
                    record,
                    _open: keep_open(file),
                };
                Ok(Some(tokens))
            }
            Err(e) => {
                *seen = Seen::invalid(Some(id), keep_open(file), &e);
                Err(e)
            }
        }
    }

    /// Writes `record` (or removes the file for `None`). The caller holds the lock file.
    fn write(&self, st: &mut State, record: Option<&Record>) -> io::Result<()> {
        let now = match fs::metadata(&self.path) {
            Ok(m) => Some(FileId::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(context(e, "could not read token file", &self.path)),
        };
        let Some(record) = record else {
            if now.is_some() {
                match fs::remove_file(&self.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(context(e, "could not remove token file", &self.path)),
                }
                st.seen = Seen::Absent;
                return sync_dir(&self.dir);
            }
            st.seen = Seen::Absent;
            return Ok(());
        };
        // Already there (typically tokens another process wrote and this one adopted):
        // rewriting would only make every other process read the file again.
        if let (
            Seen::Valid {
                id, record: old, ..
            },
            Some(now),
        ) = (&st.seen, now)
        {
            if *id == now && old == record {
                return Ok(());
            }
        }
        let file = self.write_atomically(&record.to_json())?;
        let id = file
            .metadata()
            .map_err(|e| context(e, "could not read token file", &self.path))?;
        st.seen = Seen::Valid {
            id: FileId::of(&id),
            record: record.clone(),
            _open: keep_open(file),
        };
        sync_dir(&self.dir)
    }

    /// temp file → write → fsync → rename over the token file. Returns the written file.
    fn write_atomically(&self, bytes: &[u8]) -> io::Result<File> {
        let tmp = &self.tmp_path;
        // A leftover of a write that was killed; `create_new` below also refuses to follow a
        // symlink planted there.
        match fs::remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context(e, "could not remove stale temporary file", tmp)),
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(tmp)
            .map_err(|e| context(e, "could not create temporary file", tmp))?;
        let written = (|| {
            // Exactly 0600, whatever the umask.
            #[cfg(unix)]
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(tmp);
            return Err(context(e, "could not write token file", &self.path));
        }
        Ok(file)
    }
}

/// Sets `flock` back to `Free` (and wakes waiters) when a save, clear or refresh lock that
/// was being taken ends, whichever way it ends.
struct BusyGuard<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl<'a> BusyGuard<'a> {
    fn new(shared: &'a Shared) -> Self {
        BusyGuard {
            shared,
            armed: true,
        }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.shared.state.lock();
            st.flock = Flock::Free;
            self.shared.cond.notify_all();
        }
    }
}

/// The guard inside a [`RefreshLock`] handed out by [`FileStore::lock_for_refresh`]: holds the
/// locked lock file; dropping it releases the lock.
struct HeldLock {
    shared: Arc<Shared>,
    file: Option<File>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // Under the state mutex, so no save that writes under this lock is cut short.
        let mut st = self.shared.state.lock();
        if let Some(file) = self.file.take() {
            unlock(file);
        }
        st.flock = Flock::Free;
        self.shared.cond.notify_all();
    }
}

impl TokenStore for FileStore {
    /// Reads the file: `None` if there is none.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] for a file that is not a valid token file; the OS error
    /// (with the path) if it cannot be read.
    fn load(&self) -> io::Result<Option<Tokens>> {
        let mut st = self.shared.state.lock();
        self.shared.reload(&mut st.seen)
    }

    /// Writes `tokens` atomically under the lock. A relative `expires_in` that was not yet
    /// turned into an absolute expiry is counted from now.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for tokens that cannot be stored (nothing is written);
    /// [`io::ErrorKind::TimedOut`] if the lock was not had within the lock timeout; the OS
    /// error (with the path) if writing failed (the old file is then intact).
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        let record = Record::from_tokens(tokens)?;
        self.with_write_lock(|st| self.shared.write(st, Some(&record)))
    }

    /// Removes the file under the lock.
    fn clear(&self) -> io::Result<()> {
        self.with_write_lock(|st| self.shared.write(st, None))
    }

    fn lock_for_refresh(&self) -> io::Result<Option<RefreshLock>> {
        let shared = &*self.shared;
        let deadline = self.deadline();
        let mut st = shared.state.lock();
        while st.flock != Flock::Free {
            shared.wait(&mut st, deadline, self.lock_timeout)?;
        }
        st.flock = Flock::Busy;
        drop(st);
        let mut busy = BusyGuard::new(shared);
        let file = shared.take_lock_file(deadline, self.lock_timeout)?;
        let mut st = shared.state.lock();
        // On error, `st`, `file` and `busy` drop in that order: the lock is released.
        let stored = shared.reload(&mut st.seen)?;
        // From here on the `HeldLock` sets `flock` back to `Free`.
        st.flock = Flock::Refresh;
        busy.armed = false;
        drop(st);
        let guard = HeldLock {
            shared: Arc::clone(&self.shared),
            file: Some(file),
        };
        Ok(Some(RefreshLock::new(guard, stored)))
    }

    fn poll_external_change(&self) -> io::Result<Option<Option<Tokens>>> {
        let shared = &*self.shared;
        // Under the mutex: a write of this process is never half-way between its rename and
        // its update of `seen` while we compare, so our own writes are never reported.
        let mut st = shared.state.lock();
        let now = match fs::metadata(&shared.path) {
            Ok(m) => Some(FileId::of(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(context(e, "could not read token file", &shared.path)),
        };
        let baseline = match (&st.seen, now) {
            (Seen::Absent, None) => return Ok(None),
            (Seen::Valid { id, .. }, Some(now)) if *id == now => return Ok(None),
            (
                Seen::Invalid {
                    id: Some(id),
                    kind,
                    message,
                    ..
                },
                Some(now),
            ) if *id == now => return Err(io::Error::new(*kind, message.clone())),
            (Seen::Unknown, _) => true,
            _ => false,
        };
        let tokens = shared.reload(&mut st.seen)?;
        // With nothing seen before there is nothing to compare with: this is the baseline.
        Ok((!baseline).then_some(tokens))
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

impl Record {
    fn from_tokens(tokens: &Tokens) -> io::Result<Record> {
        tokens.validate().map_err(|which| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot store an invalid {which}: tokens must be 1 to 16384 bytes of visible ASCII"),
            )
        })?;
        let expires_at = tokens.expires_at().or_else(|| {
            tokens
                .expires_in()
                .and_then(|d| SystemTime::now().checked_add(d))
        });
        Ok(Record {
            access_token: tokens.access_token().secret().to_owned(),
            refresh_token: tokens.refresh_token().map(|r| r.secret().to_owned()),
            // Before 1970 is long expired: 0 says the same.
            expires_at_unix_ms: expires_at.map(|at| {
                at.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }),
            scope: tokens.scope().map(str::to_owned),
        })
    }

    fn to_tokens(&self) -> Tokens {
        let mut t = Tokens::new(self.access_token.clone());
        if let Some(r) = &self.refresh_token {
            t = t.with_refresh_token(r.clone());
        }
        if let Some(at) = self.expires_at_unix_ms.and_then(unix_ms) {
            t = t.with_expires_at(at);
        }
        if let Some(s) = &self.scope {
            t = t.with_scope(s.clone());
        }
        t
    }

    fn to_json(&self) -> Vec<u8> {
        let file = FileV1 {
            version: FORMAT_VERSION,
            access_token: &self.access_token,
            refresh_token: self.refresh_token.as_deref(),
            expires_at_unix_ms: self.expires_at_unix_ms,
            scope: self.scope.as_deref(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("strings and integers serialize");
        bytes.push(b'\n');
        bytes
    }
}

fn unix_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// Reads and parses an open token file. Error messages never quote the file's content.
fn read_record(file: &File, meta: &fs::Metadata, path: &Path) -> io::Result<Record> {
    let invalid = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("token file {} {what}", path.display()),
        )
    };
    if !meta.is_file() {
        return Err(invalid("is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| context(e, "could not read token file", path))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(invalid(format!(
            "is larger than {MAX_FILE_LEN} bytes: not a token file"
        )));
    }
    // serde_json's own messages can quote a value (a token in the wrong field): only its
    // position is used.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        let what = if e.is_eof() {
            "ends early (empty or truncated)"
        } else {
            "is not valid JSON"
        };
        invalid(format!(
            "{what} at line {}, column {}",
            e.line(),
            e.column()
        ))
    })?;
    let Some(obj) = value.as_object() else {
        return Err(invalid("is not a JSON object".into()));
    };
    match obj.get("version") {
        None => return Err(invalid("has no \"version\" field".into())),
        Some(v) => match v.as_u64() {
            Some(FORMAT_VERSION) => {}
            Some(n) => {
                return Err(invalid(format!(
                    "has format version {n}; this tokengate reads version {FORMAT_VERSION}"
                )))
            }
            None => {
                return Err(invalid(
                    "has a \"version\" that is not a whole number".into(),
                ))
            }
        },
    }
    let string = |name: &str| -> io::Result<Option<String>> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("has a \"{name}\" that is not a string"))),
        }
    };
    let access_token =
        string("access_token")?.ok_or_else(|| invalid("has no \"access_token\"".into()))?;
    let refresh_token = string("refresh_token")?;
    let scope = string("scope")?;
    let expires_at_unix_ms = match obj.get("expires_at_unix_ms") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|ms| unix_ms(*ms).is_some())
                .ok_or_else(|| {
                    invalid(
                        "has an \"expires_at_unix_ms\" that is not a time in milliseconds".into(),
                    )
                })?,
        ),
    };
    let record = Record {
        access_token,
        refresh_token,
        expires_at_unix_ms,
        scope,
    };
    record.to_tokens().validate().map_err(|which| {
        invalid(format!(
            "holds an invalid {which} (empty, over 16384 bytes, or not visible ASCII)"
        ))
    })?;
    Ok(record)
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| context(e, "could not open lock file", path))
}

/// True if `path` still names the file `file` has open.
fn is_still_at(file: &File, path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let open = file
            .metadata()
            .map_err(|e| context(e, "could not read lock file", path))?;
        match fs::metadata(path) {
            Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(context(e, "could not read lock file", path)),
        }
    }
    #[cfg(not(unix))]
    {
        // Windows does not let an open file be removed or replaced.
        let _ = (file, path);
        Ok(true)
    }
}

/// The handle to keep open while a version of the file is the one compared against: on Unix,
/// where it pins the inode number. Elsewhere there is no inode in [`FileId`], and on Windows an
/// open handle would keep a removed file's name taken until it is closed.
fn keep_open(file: File) -> Option<File> {
    if cfg!(unix) {
        Some(file)
    } else {
        None
    }
}

fn unlock(file: File) {
    // Closing the file releases the lock too; unlocking first just says so.
    let _ = file.unlock();
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(dir).and_then(|d| d.sync_all()) {
            Ok(()) => Ok(()),
            // Some file systems cannot fsync a directory; the rename is still atomic there.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            Err(e) => Err(context(e, "could not sync directory", dir)),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Adds what was being done, and to which path, to an OS error (keeping its kind).
fn context(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}
