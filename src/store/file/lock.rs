//! The lock protocol: one holder per [`FileStore`](super::FileStore) in a process (threads and
//! clients sharing the store wait on a `Condvar`), one process at a time (an exclusive lock,
//! std [`File::lock`], on the sibling lock file). Lock order: the in-process `busy` flag, then
//! the lock file, then the store's `cache` mutex (briefly, to record a write).

use std::fs::{File, TryLockError};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fsio::{context, is_still_at, open_lock_file};
use super::Shared;
use crate::timing::deadline_after;

/// Longest pause between two attempts to take the lock file while another process holds it.
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(8);

/// The store's lock, held: the in-process `busy` flag is set and the lock file is locked.
/// Dropping it releases both and wakes the next thread of this process.
pub(super) struct Held {
    pub(super) shared: Arc<Shared>,
    file: Option<File>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            // Closing the file releases the lock too; unlocking first just says so.
            let _ = file.unlock();
        }
        let mut busy = self.shared.busy.lock();
        *busy = false;
        self.shared.freed.notify_one();
    }
}

/// Clears the in-process `busy` flag again if taking the lock file fails.
struct BusyGuard<'a>(&'a Shared);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock();
        *busy = false;
        self.0.freed.notify_one();
    }
}

/// Takes the store's lock, waiting at most `timeout` for other threads and processes.
pub(super) fn acquire(shared: &Arc<Shared>, timeout: Duration) -> io::Result<Held> {
    let deadline = deadline_after(timeout);
    {
        let mut busy = shared.busy.lock();
        while *busy {
            if shared.freed.wait_until(&mut busy, deadline).timed_out() && *busy {
                return Err(timed_out(shared, timeout));
            }
        }
        *busy = true;
    }
    let guard = BusyGuard(shared);
    let file = take_lock_file(shared, deadline, timeout)?;
    std::mem::forget(guard);
    Ok(Held {
        shared: Arc::clone(shared),
        file: Some(file),
    })
}

fn timed_out(shared: &Shared, timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "timed out after {timeout:?} waiting for the lock on {}",
            shared.lock_path.display()
        ),
    )
}

/// Opens the lock file and takes its exclusive lock, waiting at most until `deadline`.
fn take_lock_file(shared: &Shared, deadline: Instant, timeout: Duration) -> io::Result<File> {
    let path = &shared.lock_path;
    loop {
        let file = open_lock_file(path)?;
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(timed_out(shared, timeout));
                    }
                    std::thread::sleep(pause.min(deadline - now));
                    pause = (pause * 2).min(MAX_LOCK_PAUSE);
                }
                Err(TryLockError::Error(e)) => return Err(context(e, "could not lock", path)),
            }
        }
        // If the lock file was removed or replaced while we waited, our lock is on a file
        // nobody else will lock: take the lock again on the one that is there now.
        if is_still_at(&file, path)? {
            return Ok(file);
        }
        let _ = file.unlock();
        if Instant::now() >= deadline {
            return Err(timed_out(shared, timeout));
        }
    }
}
