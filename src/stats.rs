//! [`Stats`]: counters of what the client did, kept in atomics (no lock on the request path).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a client's counters, from [`AuthClient::stats`](crate::AuthClient::stats).
/// Counters start at zero when the client is built and only grow; clones of a client share
/// them. Each is read on its own, so a snapshot taken while requests run may mix instants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests sent to the network: every attempt of the client's own requests (to any
    /// origin), so retries, replays after a refresh and redirects followed each count once;
    /// and the requests its [middleware](crate::TokenMiddleware) put the token on (requests
    /// the middleware lets pass untouched, to other origins, are not counted). Requests
    /// refused before sending do not count.
    pub requests: u64,
    /// 401 answers to requests that carried the client's token, through its own requests and
    /// its middleware alike: each counts once, whatever its `WWW-Authenticate` challenge
    /// says. That is a rejected token (`invalid_token`, any other error or none: refreshed
    /// through the gate, or final, and reported as an [`Event::Unauthorized`](crate::Event::Unauthorized)),
    /// and also `insufficient_scope` and `invalid_request`, which make no refresh. A 403 is
    /// not counted, nor a 401 to a request that carried no token (another origin, a request
    /// sent without auth).
    pub unauthorized: u64,
    /// Refreshes this client led that got new tokens from the token endpoint.
    pub refreshes: u64,
    /// Refreshes this client led that failed (an error or a panic of the refresher); the
    /// session went on.
    pub refresh_failures: u64,
    /// Tokens adopted from a shared store instead of refreshing (another process's refresh,
    /// login or logout).
    pub adopted: u64,
    /// Calls that waited for another thread's refresh instead of making their own.
    pub waited: u64,
    /// Retries after a failed attempt (API or token endpoint).
    pub retries: u64,
    /// Sessions that ended (the refresh token was rejected, or expired tokens could not be
    /// refreshed).
    pub session_expiries: u64,
}

/// The live counters. Aligned to its own cache lines, so the request path's increments do
/// not slow down reads of the fields next to it.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) adopted: AtomicU64,
    pub(crate) waited: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) session_expiries: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Relaxed),
            unauthorized: self.unauthorized.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_failures: self.refresh_failures.load(Relaxed),
            adopted: self.adopted.load(Relaxed),
            waited: self.waited.load(Relaxed),
            retries: self.retries.load(Relaxed),
            session_expiries: self.session_expiries.load(Relaxed),
        }
    }
}
