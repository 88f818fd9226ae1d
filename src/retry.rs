//! Retries: which failures are retried, how long to wait, and the injectable sleep.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::{HeaderMap, Method, StatusCode};
use ureq::Timeout;

use crate::event::Event;
use crate::hooks::Hooks;

/// When and how failed requests are retried, for API calls and token-endpoint calls alike.
///
/// | setting | default |
/// |---|---|
/// | retries after the first attempt | 3 |
/// | backoff | exponential, full jitter: a random wait in `[0, min(cap, base × 2ⁿ)]` |
/// | base | 200 ms |
/// | cap (also the most a `Retry-After` is honoured) | 10 s |
/// | non-idempotent methods (POST, PATCH) on 502/503/504/429, timeouts and resets | not retried |
///
/// What is retried:
/// - a connection that could not be made (resolve or connect failure or timeout): nothing was
///   sent, so any method is retried;
/// - 502, 503, 504, 429, timeouts after connecting and connection resets: only for idempotent
///   methods (GET, HEAD, PUT, DELETE, OPTIONS, TRACE), unless the client or the request opts in
///   ([`RetryPolicy::retry_non_idempotent`], [`RequestBuilder::retry_non_idempotent`](crate::RequestBuilder::retry_non_idempotent)).
///   A `Retry-After` (seconds or HTTP date) is honoured up to the cap.
///
/// A request with a streamed body ([`RequestBuilder::send_reader`](crate::RequestBuilder::send_reader))
/// is never retried nor replayed after a 401.
///
/// The token endpoint's refresh POST is retried only where the server cannot have used the
/// refresh token: connect failures, 503 and 429. (Retrying after a reset could present a
/// refresh token the server already rotated, which a strict server treats as theft.)
///
/// One call makes at most `2 + max_retries + max_redirects` requests: the first, the
/// retries, one replay after a refresh, and the redirects followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    base: Duration,
    cap: Duration,
    non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// Most retries a policy may allow; `build()` rejects more.
    pub const MAX_RETRIES: u32 = 10;

    /// The default policy (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Retries after the first attempt. Defaults to 3; at most [`Self::MAX_RETRIES`].
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The first backoff's upper bound. Defaults to 200 ms.
    #[must_use]
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base = d;
        self
    }

    /// The longest wait between attempts, also for `Retry-After`. Defaults to 10 s.
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.cap = d;
        self
    }

    /// Also retry POST and PATCH on 502/503/504/429, timeouts and resets. Defaults to false.
    #[must_use]
    pub fn retry_non_idempotent(mut self, allow: bool) -> Self {
        self.non_idempotent = allow;
        self
    }

    /// The number of retries allowed.
    pub fn retries(&self) -> u32 {
        self.max_retries
    }

    /// The longest wait between two attempts.
    pub(crate) fn max_delay_value(&self) -> Duration {
        self.cap
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.max_retries > Self::MAX_RETRIES {
            return Err("RetryPolicy allows at most 10 retries");
        }
        if self.base > self.cap {
            return Err("RetryPolicy base delay is larger than its max delay");
        }
        Ok(())
    }

    /// The wait before retry number `retry` (0-based): `Retry-After` if given (capped), else a
    /// full-jitter exponential backoff. Cannot overflow.
    pub(crate) fn delay(&self, retry: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.cap);
        }
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let ceiling = self
            .base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random % nanos.saturating_add(1))
    }

    pub(crate) fn allows_non_idempotent(&self) -> bool {
        self.non_idempotent
    }
}

/// Waits between retries. Defaults to [`std::thread::sleep`]; inject your own to make backoff
/// tests exact and instant ([`ManualClock`](crate::time::ManualClock) implements it by advancing itself).
pub trait Sleeper: Send + Sync + 'static {
    /// Blocks the calling thread for `d` (or pretends to).
    fn sleep(&self, d: Duration);
}

/// [`std::thread::sleep`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

impl<S: Sleeper> Sleeper for std::sync::Arc<S> {
    fn sleep(&self, d: Duration) {
        (**self).sleep(d)
    }
}

impl fmt::Debug for dyn Sleeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sleeper")
    }
}

/// How often a backoff checks whether it should stop early (its refresh lost the store's
/// lock, or the client closed).
pub(crate) const STOP_CHECK_EVERY: Duration = Duration::from_millis(20);

/// The waits between retries: the policy, and what sleeps them (`None`: `std::thread::sleep`
/// in slices of [`STOP_CHECK_EVERY`], so a backoff can stop early; a user's [`Sleeper`]
/// sleeps each whole delay in one call).
#[derive(Default)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    sleeper: Option<Box<dyn Sleeper>>,
}

impl Backoff {
    /// The retry policy.
    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Sets the retry policy.
    pub(crate) fn set_policy(&mut self, policy: RetryPolicy) {
        self.policy = policy;
    }

    /// Sets what sleeps the delays.
    pub(crate) fn set_sleeper(&mut self, sleeper: Box<dyn Sleeper>) {
        self.sleeper = Some(sleeper);
    }

    /// Waits before retry number `retry` (0-based) per the policy and `retry_after`, reporting
    /// it first as [`Event::Retrying`], with the log record `describe` writes given the delay;
    /// cut short once `stop` says so (checked every [`STOP_CHECK_EVERY`]; a user's
    /// [`Sleeper`] sleeps the whole delay in one call).
    pub(crate) fn wait(
        &self,
        hooks: &Hooks,
        retry: u32,
        retry_after: Option<Duration>,
        describe: impl Fn(&mut fmt::Formatter<'_>, Duration) -> fmt::Result,
        stop: &dyn Fn() -> bool,
    ) {
        let delay = self.policy.delay(retry, retry_after, random());
        hooks.report(
            Event::Retrying {
                retry: retry + 1,
                delay,
            },
            format_args!("{}", Describe(describe, delay)),
        );
        match &self.sleeper {
            Some(sleeper) => sleeper.sleep(delay),
            None => {
                let end = crate::timing::deadline_after(delay);
                loop {
                    let now = std::time::Instant::now();
                    if now >= end || stop() {
                        return;
                    }
                    std::thread::sleep((end - now).min(STOP_CHECK_EVERY));
                }
            }
        }
    }
}

/// Writes a log record with a closure (given the value it needs).
struct Describe<F, T>(F, T);

impl<F: Fn(&mut fmt::Formatter<'_>, T) -> fmt::Result, T: Copy> fmt::Display for Describe<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f, self.1)
    }
}

/// A random number for jitter (from std's randomly keyed hasher; no extra dependency).
pub(crate) fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

/// Idempotent methods (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// A transport error that happened before anything was sent: safe to retry for any method.
pub(crate) fn nothing_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Timeout(t) => matches!(t, Timeout::Resolve | Timeout::Connect),
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable | ErrorKind::NotConnected
        ),
        _ => false,
    }
}

/// A transport error after the request may have reached the server: retried only for
/// idempotent methods.
pub(crate) fn transient_after_send(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe
                | ErrorKind::TimedOut
                | ErrorKind::Interrupted
        ),
        _ => false,
    }
}

/// Statuses retried for idempotent requests.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` as a delay from `now`: delta-seconds or an IMF-fixdate (RFC 9110 §10.2.3).
/// Anything else (or a date in the past) is `None`/zero.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers
        .get(ureq::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    let (_, rest) = s.split_once(", ")?;
    let mut it = rest.split(' ');
    let day: u32 = it.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mon = it.next()?;
    let month = MONTHS.iter().position(|m| *m == mon)? as u32 + 1;
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || it.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * i64::from(mo) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(sec);
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_jittered_and_cannot_overflow() {
        let p = RetryPolicy::default();
        for retry in [0, 1, 2, 5, 31, 32, 1000, u32::MAX] {
            for random in [0, 1, 12345, u64::MAX] {
                assert!(p.delay(retry, None, random) <= Duration::from_secs(10));
            }
        }
        // ceiling doubles: 200, 400, 800 ms
        assert_eq!(
            p.delay(0, None, u64::MAX),
            Duration::from_nanos(u64::MAX % 200_000_001)
        );
        assert!(p.delay(2, None, 800_000_000) == Duration::from_millis(800));
        assert_eq!(p.delay(1, None, 0), Duration::ZERO);
        // Retry-After honoured up to the cap
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3)), 7),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600)), 7),
            Duration::from_secs(10)
        );
        let huge = RetryPolicy::new()
            .base_delay(Duration::MAX)
            .max_delay(Duration::MAX);
        assert!(huge.delay(40, None, 5) <= Duration::MAX);
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert!(RetryPolicy::new().max_retries(11).validate().is_err());
        assert!(RetryPolicy::new()
            .base_delay(Duration::from_secs(20))
            .validate()
            .is_err());
        assert!(RetryPolicy::none().validate().is_ok());
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_709_164_800
        );
        // A leap second is a valid time.
        let t = parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_483_228_800
        );
        // Each is wrong in exactly one way, so each check is needed on its own.
        for bad in [
            "",
            "soon",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:37 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun, 06 Nov 10000 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 GMT later",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "x, 1 Jan 1 0:0:0 GMT GMT",
        ] {
            assert!(parse_http_date(bad).is_none(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", "120".parse().unwrap());
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(120))
        );
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:57 GMT".parse().unwrap(),
        );
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(20)));
        h.insert(
            "retry-after",
            ureq::http::HeaderValue::from_bytes(b"\xff1").unwrap(),
        );
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn classification() {
        assert!(nothing_sent(&ureq::Error::HostNotFound));
        assert!(nothing_sent(&ureq::Error::Timeout(Timeout::Connect)));
        assert!(!nothing_sent(&ureq::Error::Timeout(Timeout::RecvResponse)));
        assert!(transient_after_send(&ureq::Error::Timeout(
            Timeout::RecvResponse
        )));
        assert!(transient_after_send(&ureq::Error::Io(
            ErrorKind::ConnectionReset.into()
        )));
        assert!(!transient_after_send(&ureq::Error::BadUri("x".into())));
        assert!(is_idempotent(&Method::PUT) && !is_idempotent(&Method::POST));
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
