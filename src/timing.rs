//! Time arithmetic that cannot overflow: Unix milliseconds (as stores keep absolute times)
//! and deadlines on the monotonic clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, as stores keep absolute times; before 1970 is long past,
/// and 0 says the same.
pub(crate) fn unix_ms_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `ms` milliseconds after the Unix epoch, if the platform can represent it.
pub(crate) fn from_unix_ms(ms: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

/// The instant `d` from now, or a year from now if that is beyond what `Instant` can hold
/// (a timeout of `Duration::MAX` means "no limit").
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_beyond_the_clock_is_a_year_away() {
        let before = Instant::now();
        let deadline = deadline_after(Duration::MAX);
        assert!(deadline >= before + Duration::from_secs(86_400 * 365));
        assert!(
            deadline_after(Duration::from_secs(60)) <= Instant::now() + Duration::from_secs(60)
        );
    }
}
