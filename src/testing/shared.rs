//! What a server's threads and its [`TestServer`](super::TestServer) handle share.

use std::time::Duration;

use parking_lot::Mutex;

use super::clients::TestClient;
use super::faults::Queue;
use super::journal::Journal;
use super::rules::Rules;

/// What a [`TestServer`] was built with; fixed for its life.
#[derive(Debug)]
pub(crate) struct Config {
    pub token_delay: Duration,
    pub clients: Vec<TestClient>,
    pub device_interval: Option<u64>,
    /// Paths (prefixes) of the API that need a scope: `(prefix, scope)`.
    pub scopes: Vec<(String, String)>,
}

/// Everything mutable, under one lock: `Shared::state`.
#[derive(Debug)]
pub(crate) struct State {
    pub rules: Rules,
    pub journal: Journal,
    pub token_faults: Queue,
    pub revocation_faults: Queue,
    pub api_faults: Queue,
    /// The next this many authorizations are denied by the user.
    pub denials: usize,
}

/// What the server's threads and the [`TestServer`] handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `http://127.0.0.1:PORT`, the issuer.
    pub base: String,
    pub config: Config,
    /// The one lock: held only to read or change state, never across a sleep or I/O.
    pub state: Mutex<State>,
}
