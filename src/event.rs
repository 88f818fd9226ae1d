//! Observability without logging: events the client reports to an optional listener.

/// Something the client did, reported to the listener set with
/// [`AuthClientBuilder::on_event`](crate::AuthClientBuilder::on_event).
///
/// Events are delivered synchronously on the thread where they happen (so
/// `std::thread::current()` tells which thread), with no lock of the client held. They carry
/// no secrets. `RefreshStarted`, and `Retrying` for the token endpoint, are reported by the
/// thread leading a refresh while it runs (with a shared store, while it holds the store's
/// lock): from those, a call back into the client that needs a refresh or a store write
/// returns [`Error::Reentrant`](crate::Error::Reentrant) at once. So is `StoreFailed` for a
/// login or logout, reported from inside `set_tokens`/`clear_tokens`/`logout`. The others are
/// reported after the refresh, when the client may be called freely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The API rejected the token of `generation`: it answered 401 to a request that carried
    /// it, with a challenge other than `insufficient_scope` or `invalid_request` (those make
    /// no refresh and no event; [`Stats::unauthorized`](crate::Stats::unauthorized) counts
    /// every 401).
    Unauthorized {
        /// The token generation the request carried.
        generation: u64,
    },
    /// This thread is about to call the refresher for tokens of `generation`.
    RefreshStarted {
        /// Why.
        reason: RefreshReason,
        /// The generation being replaced.
        generation: u64,
    },
    /// The refresh this thread ran installed tokens of `generation`.
    Refreshed {
        /// The new generation.
        generation: u64,
    },
    /// The refresh this thread ran failed; the session continues.
    RefreshFailed {
        /// The generation that could not be replaced.
        generation: u64,
    },
    /// This thread waited for another thread's refresh instead of refreshing itself.
    Waited {
        /// The generation it was waiting to see replaced.
        generation: u64,
    },
    /// A failed attempt (API or token endpoint) will be retried after `delay`.
    Retrying {
        /// 1 for the first retry.
        retry: u32,
        /// How long the client waits first.
        delay: std::time::Duration,
    },
    /// The token endpoint ended the session (or the tokens expired with no way to refresh
    /// them); tokens were cleared. Reported once per expiry.
    SessionExpired,
    /// Tokens another process (or another client of the same store) stored were adopted: its
    /// refresh, login or logout. `generation` is the generation they now have here.
    Adopted {
        /// The new generation.
        generation: u64,
    },
    /// A login or logout of this client that could not be written to a shared store was
    /// dropped: meanwhile another login (in another process or machine) replaced the session
    /// it applied to, or the login it made was logged out there. The record the store holds
    /// was adopted, as `generation`.
    Superseded {
        /// The generation adopted.
        generation: u64,
    },
    /// The store failed to save tokens of `generation` (they are in use in memory). The
    /// write is retried on a later request (reported again if it fails again) and, for a
    /// refresh written to a shared store, by a thread that keeps the store's lock meanwhile
    /// (its tries are logged at debug, not reported); [`AuthClient::close`](crate::AuthClient::close)
    /// reports one that never succeeded.
    StoreFailed {
        /// The generation that could not be saved.
        generation: u64,
    },
    /// [`AuthClient::logout`](crate::AuthClient::logout) cleared the tokens of `generation`
    /// locally, but revoking them at the server failed (the call returns
    /// [`Error::RevocationFailed`](crate::Error::RevocationFailed) with the cause, unless
    /// clearing the store failed too: it then returns [`Error::Store`](crate::Error::Store),
    /// and this event is the only report of the failed revocation).
    RevocationFailed {
        /// The generation that was logged out.
        generation: u64,
    },
}

/// Why a refresh started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshReason {
    /// The API answered 401.
    Unauthorized,
    /// The access token was past its expiry.
    Expired,
    /// The access token entered its refresh window: refresh-ahead, in the background for a
    /// request, waited for by [`AuthClient::access_token`](crate::AuthClient::access_token).
    Proactive,
    /// [`AuthClient::force_refresh`](crate::AuthClient::force_refresh) asked for it.
    Forced,
    /// There were no tokens and the strategy can acquire some (client credentials).
    Acquire,
}
