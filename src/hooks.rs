//! [`Hooks`]: what the client tells the outside about what it did. The listeners set on the
//! builder, the [`Stats`] counters and the `log` records, behind one [`Hooks::report`] that
//! counts, logs and emits each [`Event`] the same way wherever it happens.

use std::fmt;
use std::sync::atomic::AtomicU64;

use crate::event::Event;
use crate::logging::TARGET;
use crate::stats::{Counters, Stats};

/// A listener for the end of a session.
pub(crate) type Listener = Box<dyn Fn() + Send + Sync>;
/// A listener for every [`Event`].
pub(crate) type EventListener = Box<dyn Fn(&Event) + Send + Sync>;

/// Something counted that has no event of its own.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Tally {
    /// A request sent to the network.
    Request,
    /// A 401 to the client's token that needs no refresh (`insufficient_scope`,
    /// `invalid_request`): a status, not an [`Event::Unauthorized`].
    PlainUnauthorized,
    /// A refresher that panicked (its thread unwinds; no event is reported).
    PanickedRefresh,
}

/// The listeners and counters of one client. Written once by `build()`, except the counters
/// (atomics, bumped with no lock held).
pub(crate) struct Hooks {
    on_session_expired: Option<Listener>,
    on_event: Option<EventListener>,
    stats: Counters,
}

impl Hooks {
    pub(crate) fn new(
        on_session_expired: Option<Listener>,
        on_event: Option<EventListener>,
    ) -> Self {
        Hooks {
            on_session_expired,
            on_event,
            stats: Counters::default(),
        }
    }

    /// Reports `event`: bumps its counter (if it has one), writes `message` to the log at the
    /// event's level, then calls the event listener (and, for
    /// [`Event::SessionExpired`], the session listener). No lock of the client is held.
    pub(crate) fn report(&self, event: Event, message: fmt::Arguments<'_>) {
        if let Some(counter) = self.counter_of(&event) {
            Counters::bump(counter);
        }
        log::log!(target: TARGET, level_of(&event), "{message}");
        if let Some(listener) = &self.on_event {
            listener(&event);
        }
        if event == Event::SessionExpired {
            if let Some(listener) = &self.on_session_expired {
                listener();
            }
        }
    }

    /// Counts something that has no event.
    #[inline]
    pub(crate) fn tally(&self, what: Tally) {
        Counters::bump(match what {
            Tally::Request => &self.stats.requests,
            Tally::PlainUnauthorized => &self.stats.unauthorized,
            Tally::PanickedRefresh => &self.stats.refresh_failures,
        });
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    fn counter_of(&self, event: &Event) -> Option<&AtomicU64> {
        let s = &self.stats;
        match event {
            Event::Unauthorized { .. } => Some(&s.unauthorized),
            Event::Refreshed { .. } => Some(&s.refreshes),
            Event::RefreshFailed { .. } => Some(&s.refresh_failures),
            Event::Waited { .. } => Some(&s.waited),
            Event::Retrying { .. } => Some(&s.retries),
            Event::SessionExpired => Some(&s.session_expiries),
            Event::Adopted { .. } => Some(&s.adopted),
            Event::RefreshStarted { .. }
            | Event::Superseded { .. }
            | Event::StoreFailed { .. }
            | Event::RevocationFailed { .. } => None,
        }
    }
}

/// The level of an event's log record (the table in the crate docs, "Logging and secrets").
fn level_of(event: &Event) -> log::Level {
    match event {
        Event::Unauthorized { .. }
        | Event::RefreshStarted { .. }
        | Event::Refreshed { .. }
        | Event::Waited { .. }
        | Event::Retrying { .. } => log::Level::Debug,
        Event::SessionExpired | Event::Adopted { .. } => log::Level::Info,
        Event::RefreshFailed { .. }
        | Event::Superseded { .. }
        | Event::StoreFailed { .. }
        | Event::RevocationFailed { .. } => log::Level::Warn,
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_session_expired", &self.on_session_expired.is_some())
            .field("on_event", &self.on_event.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}
