//! The token file's I/O: opening without following symlinks or blocking on a FIFO, refusing
//! files and directories other users could read or write, atomic replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::store::record::MAX_RECORD_LEN;

/// What identifies one version of the file: which file (device and inode on Unix, where a
/// rename always brings a new inode) and its size and modification time (an in-place edit).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileId {
    pub(super) fn of(meta: &fs::Metadata) -> FileId {
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

/// Adds what was being done, and to which path, to an OS error (keeping its kind).
pub(super) fn context(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// `lstat` of `path`: `None` if there is nothing there. A symlink is reported as itself.
pub(super) fn stat(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(context(e, "could not read token file", path)),
    }
}

/// Opening flags shared by every file of the store: never follow a symlink planted at the
/// path, never block opening a FIFO or device planted there.
fn no_follow(options: &mut OpenOptions) {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
    #[cfg(not(unix))]
    let _ = options;
}

/// Turns "it is a symlink" (`ELOOP` from `O_NOFOLLOW`) into a clear error.
fn open_error(e: io::Error, what: &str, path: &Path) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} {} is a symbolic link: refusing to follow it",
                path.display()
            ),
        );
    }
    context(e, &format!("could not open {what}"), path)
}

/// Checks that `meta` is a regular file no other user can read or write.
fn check_private_file(meta: &fs::Metadata, what: &str, path: &Path) -> io::Result<()> {
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {} is not a regular file", path.display()),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o066 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{what} {} has mode {mode:04o}: other users can read or write it \
                     (run `chmod 600` on it)",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks that no other user can write into `dir` (and so replace the token file): like ssh's
/// StrictModes, a group- or world-writable directory is refused. A usual `0755` or `0700`
/// directory is fine.
pub(super) fn check_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(dir).map_err(|e| context(e, "could not read directory", dir))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "token directory {} has mode {mode:04o}: other users can write to it \
                     (run `chmod go-w` on it, or keep the tokens in a private directory)",
                    dir.display()
                ),
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Opens the token file for reading: `None` if there is none. Refuses a symlink, anything that
/// is not a regular file, and a file other users can read or write.
pub(super) fn open_token_file(path: &Path) -> io::Result<Option<(File, fs::Metadata)>> {
    let mut options = OpenOptions::new();
    options.read(true);
    no_follow(&mut options);
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(e, "token file", path)),
    };
    let meta = file
        .metadata()
        .map_err(|e| context(e, "could not read token file", path))?;
    check_private_file(&meta, "token file", path)?;
    Ok(Some((file, meta)))
}

/// Reads an open token file, at most one byte more than [`MAX_RECORD_LEN`].
pub(super) fn read_all(file: &File, path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| context(e, "could not read token file", path))?;
    Ok(bytes)
}

/// Opens (creating, mode `0600`) the lock file. Refuses a symlink or a non-regular file.
pub(super) fn open_lock_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    no_follow(&mut options);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(path)
        .map_err(|e| open_error(e, "lock file", path))?;
    let meta = file
        .metadata()
        .map_err(|e| context(e, "could not read lock file", path))?;
    check_private_file(&meta, "lock file", path)?;
    Ok(file)
}

/// True if `path` still names the file `file` has open.
pub(super) fn is_still_at(file: &File, path: &Path) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let open = file
            .metadata()
            .map_err(|e| context(e, "could not read lock file", path))?;
        match fs::symlink_metadata(path) {
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

/// temp file → write → fsync → rename over `path` → fsync of `dir`. Returns the written
/// file (still open). `tmp` is created anew (`O_EXCL`: a symlink planted there is refused).
pub(super) fn write_atomically(
    path: &Path,
    tmp: &Path,
    dir: &Path,
    bytes: &[u8],
) -> io::Result<File> {
    // A leftover of a write that was killed.
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e, "could not remove stale temporary file", tmp)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    no_follow(&mut options);
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
        fs::rename(tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(context(e, "could not write token file", path));
    }
    sync_dir(dir);
    Ok(file)
}

/// Removes the token file (no file is fine) and makes the removal durable.
pub(super) fn remove(path: &Path, dir: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(dir);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(context(e, "could not remove token file", path)),
    }
}

/// Makes a rename or removal in `dir` durable, as far as it can. A failure is not an error
/// of the write: the rename (or removal) is done and every process sees it, and reporting the
/// write as failed would make the client treat tokens the others may already use as unsaved
/// (an unsaved login or logout is written again over whatever comes after it). Some file
/// systems cannot fsync a directory at all.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
}

/// The handle to keep open while a version of the file is the one compared against: on Unix,
/// where it pins the inode number (a file replaced twice could otherwise look unchanged).
/// Elsewhere there is no inode in [`FileId`], and on Windows an open handle would keep a
/// removed file's name taken until it is closed.
pub(super) fn keep_open(file: File) -> Option<File> {
    if cfg!(unix) {
        Some(file)
    } else {
        None
    }
}
