//! What a device login's wait reports ([`DeviceProgress`]) and how another thread ends it
//! ([`DeviceCancel`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::retry::Sleeper;

/// Where a device login's wait is, reported to the callback of
/// [`DeviceAuthorization::wait_with`](super::DeviceAuthorization::wait_with) before each wait
/// between polls. Holds no secret (no device code, no token).
///
/// `remaining` is always the time left before the device code expires, on the flow's
/// [clock](super::DeviceFlow::clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceProgress {
    /// The user has not approved yet (before the first poll, and after each
    /// `authorization_pending`): the next poll comes in `next_poll`.
    Waiting {
        /// Time left before the code expires.
        remaining: Duration,
        /// The wait before the next poll: the interval, cut to `remaining`.
        next_poll: Duration,
    },
    /// The server said `slow_down`: polls are now `interval` apart (5 s more than before).
    SlowDown {
        /// The new polling interval.
        interval: Duration,
        /// Time left before the code expires.
        remaining: Duration,
    },
    /// A poll failed in a way that may pass (the server unreachable, a timeout, 5xx or 429):
    /// the interval doubled, and the wait goes on until three fail in a row.
    Retrying {
        /// Failed polls in a row (1 or 2: the third ends the wait).
        failed_polls: u32,
        /// The wait before the next poll: the doubled interval, cut to `remaining`.
        next_poll: Duration,
        /// Time left before the code expires.
        remaining: Duration,
    },
}

/// Cancels a device login's wait, from any thread: got from
/// [`DeviceAuthorization::canceller`](super::DeviceAuthorization::canceller), cloned freely.
/// For Ctrl-C, call it from a handler that runs on a thread (as the `ctrlc` crate's and
/// `signal-hook`'s iterator do), never inside a raw signal handler: it takes a lock.
///
/// After [`cancel`](DeviceCancel::cancel), the wait returns
/// [`DeviceError::Cancelled`](super::DeviceError::Cancelled): at once when it is between
/// polls with the default sleeper (with a [`Sleeper`](super::DeviceFlow::sleeper) of your
/// own, once its current sleep returns), after the answer when a poll is on the wire (that
/// poll is not cut: it lasts at most the agent's timeout, and if it brings the tokens they
/// are returned). Cancelling before the wait starts makes it return without a poll;
/// cancelling after it returned does nothing.
///
/// ```no_run
/// # fn main() -> Result<(), tokengate::Error> {
/// # let flow = tokengate::AuthServer::new("https://a/token").device_authorization_url("https://a/device").device_flow()?;
/// let pending = flow.start()?;
/// let cancel = pending.canceller();
/// std::thread::spawn(move || {
///     let mut line = String::new();
///     if std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
///         cancel.cancel(); // Enter pressed: give up
///     }
/// });
/// let tokens = pending.wait()?; // Err(Error::Device(DeviceError::Cancelled)) after a cancel
/// # let _ = tokens; Ok(()) }
/// ```
#[derive(Clone)]
pub struct DeviceCancel(Arc<Flag>);

/// The cancelled flag, and the wait between polls that a cancel wakes.
#[derive(Default)]
struct Flag {
    cancelled: Mutex<bool>,
    woken: Condvar,
}

impl DeviceCancel {
    pub(super) fn new() -> Self {
        DeviceCancel(Arc::default())
    }

    /// Cancels the wait (and any later one of the same login). Idempotent; never blocks
    /// beyond a short lock.
    pub fn cancel(&self) {
        let mut cancelled = self.0.cancelled.lock();
        *cancelled = true;
        self.0.woken.notify_all();
    }

    /// True once [`cancel`](DeviceCancel::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.0.cancelled.lock()
    }

    /// Waits `d` between polls; true if cancelled (before, during or at the end of it).
    /// Without a `sleeper`, on the condition variable a cancel wakes at once; with one, its
    /// whole sleep, with the flag read before and after.
    pub(super) fn pause(&self, sleeper: Option<&dyn Sleeper>, d: Duration) -> bool {
        match sleeper {
            Some(sleeper) => {
                if self.is_cancelled() {
                    return true;
                }
                sleeper.sleep(d);
                self.is_cancelled()
            }
            None => {
                let mut cancelled = self.0.cancelled.lock();
                self.0.woken.wait_while_for(&mut cancelled, |c| !*c, d);
                *cancelled
            }
        }
    }
}

impl fmt::Debug for DeviceCancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_before_a_pause_ends_it_without_sleeping() {
        struct Never;
        impl Sleeper for Never {
            fn sleep(&self, _: Duration) {
                panic!("slept after a cancel");
            }
        }
        let cancel = DeviceCancel::new();
        assert!(!cancel.is_cancelled());
        assert_eq!(format!("{cancel:?}"), "DeviceCancel { cancelled: false }");
        cancel.clone().cancel();
        assert!(cancel.is_cancelled());
        assert!(cancel.pause(Some(&Never), Duration::from_secs(5)));
        // A day: only a bug waits it out.
        assert!(cancel.pause(None, Duration::from_secs(86_400)));
    }
}
