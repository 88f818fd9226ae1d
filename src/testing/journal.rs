//! What the server saw: one entry per call of its endpoints, and the counters tests assert
//! on. Entries name tokens by generation (the N of `at-N`/`rt-N`), never by value.

use std::time::Instant;

use super::faults::Fault;

/// The grant a token-endpoint call asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// `refresh_token` (RFC 6749 §6).
    RefreshToken,
    /// `client_credentials` (RFC 6749 §4.4).
    ClientCredentials,
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4).
    DeviceCode,
    /// `authorization_code` (RFC 6749 §4.1.3).
    AuthorizationCode,
    /// Any other `grant_type` (answered `unsupported_grant_type`), or none.
    Other(Option<String>),
}

impl Grant {
    pub(crate) fn of(grant_type: Option<&str>) -> Grant {
        match grant_type {
            Some("refresh_token") => Grant::RefreshToken,
            Some("client_credentials") => Grant::ClientCredentials,
            Some("urn:ietf:params:oauth:grant-type:device_code") => Grant::DeviceCode,
            Some("authorization_code") => Grant::AuthorizationCode,
            other => Grant::Other(other.map(str::to_owned)),
        }
    }
}

/// How the server answered a call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Tokens were issued: generation N (`at-N`, and `rt-N` when a refresh token was issued).
    Issued(u64),
    /// An OAuth error: its HTTP status and `error` code.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The OAuth `error` code.
        error: String,
    },
    /// A scripted fault replaced the answer (the call was not handled).
    Faulted(Fault),
    /// Not answered yet: the call is waiting out a scripted delay before it is handled.
    InFlight,
}

/// One call of the token endpoint, as the server saw and answered it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenCall {
    /// When it arrived.
    pub arrived: Instant,
    /// The grant it asked for.
    pub grant: Grant,
    /// The client it authenticated as (or claimed to be), if any.
    pub client_id: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuthUsed,
    /// The generation N of the refresh token `rt-N` it presented, if it presented one this
    /// server issued.
    pub presented: Option<u64>,
    /// The `scope` it asked for, if any.
    pub scope: Option<String>,
    /// It presented a refresh token that an earlier call had presented already. Only calls the
    /// grant looked at count: not those a fault answered first, whose client failed to
    /// authenticate, or that sent a parameter twice.
    pub presented_twice: bool,
    /// It presented a rotated refresh token: reuse, so the server revoked that login.
    pub reuse: bool,
    /// How it was answered.
    pub outcome: Outcome,
    /// The scripted fault played on it, if any (also for faults played after the grant was
    /// applied, [`Fault::DelayAfter`] and [`Fault::DropAfterGrant`], whose outcome is the grant's).
    pub fault: Option<Fault>,
}

/// How a client authenticated at the token, device or revocation endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuthUsed {
    /// HTTP Basic (`client_secret_basic`, RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` in the form (`client_secret_post`).
    Post,
    /// `client_id` only: a public client.
    None,
    /// An `Authorization` header of another scheme (a bearer token, say): refused with
    /// `invalid_client`.
    OtherScheme,
}

/// One call of the protected API.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiCall {
    /// When it arrived.
    pub arrived: Instant,
    /// The method.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The status answered; 0 while not answered yet or when the connection was dropped.
    pub status: u16,
    /// The generation N of the `at-N` it carried, if it carried one this server issued.
    pub generation: Option<u64>,
    /// The access token it carried was this server's and past its lifetime.
    pub expired: bool,
    /// Its `x-request-id` header, if any (to follow one request's retries).
    pub request_id: Option<String>,
    /// Its body's length.
    pub body_len: usize,
}

/// One call of the revocation endpoint (RFC 7009).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RevocationCall {
    /// When it arrived.
    pub arrived: Instant,
    /// The client it authenticated as (or claimed to be), if any.
    pub client_id: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuthUsed,
    /// The generation N of the `at-N` or `rt-N` it revoked, if it was one this server issued.
    pub generation: Option<u64>,
    /// Whether that token was a refresh token (`rt-N`).
    pub refresh_token: bool,
    /// Its `token_type_hint`, if any.
    pub hint: Option<String>,
    /// The status answered: 200 for a token of the client's own or an unknown one (RFC 7009
    /// §2.2), 400 for another client's; 0 while not answered yet or when the connection was
    /// dropped.
    pub status: u16,
    /// The scripted fault played on it, if any.
    pub fault: Option<Fault>,
}

/// One call of the device authorization endpoint (RFC 8628 §3.1).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeviceAuthorizationCall {
    /// When it arrived.
    pub arrived: Instant,
    /// The client it authenticated as (or claimed to be), if any.
    pub client_id: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuthUsed,
    /// The `scope` it asked for, if any.
    pub scope: Option<String>,
    /// The user code it was given (a user code is shown to the user: not a secret), if any.
    pub user_code: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// Every counter of a [`TestServer`](super::TestServer) at one moment, taken under one lock
/// (so they agree with each other). Also served as JSON at
/// [`counters_url`](super::TestServer::counters_url), for a test's child processes; it
/// deserializes back with serde.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// Calls of the token endpoint (every grant and outcome), and of
    /// [`TestServer::refresh`](super::TestServer::refresh).
    pub token_requests: u64,
    /// Calls of the refresh_token grant, whatever their outcome (faulted ones too).
    pub refreshes: u64,
    /// Refresh calls that presented a rotated refresh token (each revoked its login).
    pub reuse_detected: u64,
    /// Refresh calls that presented a refresh token an earlier call had presented (only calls
    /// the grant looked at: see [`TokenCall::presented_twice`]).
    pub presented_twice: u64,
    /// Calls of the device authorization endpoint.
    pub device_authorizations: u64,
    /// Calls of the revocation endpoint.
    pub revocations: u64,
    /// Calls of the API.
    pub api_requests: u64,
    /// API calls answered 401.
    pub api_401s: u64,
    /// API calls answered 403 (`insufficient_scope`, or asked for at `/api/status/403`).
    pub api_403s: u64,
    /// Generations issued: the N of the last `at-N` (0 before the first).
    pub issued: u64,
}

/// Every call. Guarded by `Shared::state` (see `server.rs`).
#[derive(Debug, Default)]
pub(crate) struct Journal {
    pub token_calls: Vec<TokenCall>,
    pub api_calls: Vec<ApiCall>,
    pub revocations: Vec<RevocationCall>,
    pub device_authorizations: Vec<DeviceAuthorizationCall>,
}

impl Journal {
    /// The counters, with `issued` generations issued so far.
    pub fn counters(&self, issued: u64) -> Counters {
        let token = |keep: fn(&TokenCall) -> bool| {
            self.token_calls.iter().filter(|c| keep(c)).count() as u64
        };
        let api = |status: u16| self.api_calls.iter().filter(|c| c.status == status).count() as u64;
        Counters {
            token_requests: self.token_calls.len() as u64,
            refreshes: token(|c| c.grant == Grant::RefreshToken),
            reuse_detected: token(|c| c.reuse),
            presented_twice: token(|c| c.presented_twice),
            device_authorizations: self.device_authorizations.len() as u64,
            revocations: self.revocations.len() as u64,
            api_requests: self.api_calls.len() as u64,
            api_401s: api(401),
            api_403s: api(403),
            issued,
        }
    }
}
