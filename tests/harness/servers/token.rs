//! [`TokenServer`]: the public test kit's [`TestServer`] (`tokengate::testing`), with the
//! little tokengate's own tests add to it.
//!
//! The kit is the authorization server and the API: rotating refresh tokens (reuse of a
//! rotated one revokes that login), tokens named `at-N`/`rt-N` by generation, a journal of
//! every call, scripted faults. A `TokenServer` derefs to it, so tests call the kit's own
//! methods (`login`, `refreshes`, `revoke_access_tokens`, `token_calls`, `is_active`, …);
//! here are only the constructors the tests use, their clients, and an endpoint the kit
//! does not have, on a side server started on first use:
//!
//! | path | what |
//! |---|---|
//! | `POST /json/refresh` | a JSON refresh endpoint (`{"refreshToken"}` in, `{"accessToken", "refreshToken"}` out) for `JsonRefresh`, rotating through [`TestServer::refresh`] |
//!
//! Only loopback. Clients built here never use environment proxies.

use std::ops::Deref;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokengate::testing::{Grant, TestServer, TestServerBuilder, CLIENT_ID, CLIENT_SECRET};
use tokengate::{AuthClient, AuthClientBuilder, AuthServer, OAuth2Refresh};

use super::raw::{self, Action, RawRequest};

pub struct TokenServer {
    /// The kit's server, reached through `Deref`. In an `Arc` only so that the side server
    /// can hold a `Weak` to it: dropping the `TokenServer` stops the kit at once.
    server: Arc<TestServer>,
    /// `/json/refresh`, started by the first `json_url`.
    side: OnceLock<raw::RawServer>,
}

impl Deref for TokenServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl TokenServer {
    /// A server whose access tokens live an hour (expiry is then driven by the test).
    pub fn start() -> Self {
        Self::of(TestServer::builder())
    }

    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self::of(TestServer::builder().access_token_lifetime(lifetime))
    }

    /// A server whose token endpoint answers `token_delay` after it applied the grant (a
    /// refresh rotates when the request arrives), as a real server does: a client that stops
    /// listening meanwhile has lost the new tokens.
    pub fn with_lifetime_and_delay(lifetime: Duration, token_delay: Duration) -> Self {
        Self::of(
            TestServer::builder()
                .access_token_lifetime(lifetime)
                .token_delay(token_delay),
        )
    }

    /// The server `builder` starts.
    pub fn of(builder: TestServerBuilder) -> Self {
        TokenServer {
            server: Arc::new(builder.start().expect("a test server on 127.0.0.1")),
            side: OnceLock::new(),
        }
    }

    /// The OAuth2 refresher for this server's token endpoint: client `test-app` with its
    /// client secret, and no revocation endpoint (a logout stays local; the kit's
    /// `auth_server()` names one).
    pub fn refresher(&self) -> OAuth2Refresh {
        refresher_at(self.token_url())
    }

    /// A client builder for this server: its [`refresher`](Self::refresher), no proxy.
    pub fn client_builder(&self) -> AuthClientBuilder {
        AuthClient::builder(self.api_url())
            .proxy(None)
            .refresher(self.refresher())
    }

    /// [`client_builder`](Self::client_builder) of the server whose `base_url()` is
    /// `base_url`, for a child process, which has only that.
    pub fn client_builder_at(base_url: &str) -> AuthClientBuilder {
        AuthClient::builder(format!("{base_url}/api/"))
            .proxy(None)
            .refresher(refresher_at(format!("{base_url}/oauth/token")))
    }

    /// The JSON refresh endpoint (for `JsonRefresh`, which sends no client): rotates like the
    /// token endpoint, through [`TestServer::refresh`] (as the client the token was issued
    /// to); a refused refresh token is answered 401 `{"message": …}`.
    pub fn json_url(&self) -> String {
        self.side().url("/json/refresh")
    }

    fn side(&self) -> &raw::RawServer {
        self.side.get_or_init(|| {
            let kit = Arc::downgrade(&self.server);
            raw::RawServer::start(move |req| side_endpoint(&kit, req))
        })
    }

    /// The generation N of the `rt-N` each refresh_token grant call presented, in arrival
    /// order (`None` for a token this server never issued; a call a fault answered names the
    /// one it presented too).
    pub fn presented(&self) -> Vec<Option<u64>> {
        self.token_calls()
            .iter()
            .filter(|c| c.grant == Grant::RefreshToken)
            .map(|c| c.presented)
            .collect()
    }

    /// Asserts that every refresh call presented a generation at least ¾ of `lifetime`
    /// (less a slack of 5 ms for the clients' whole-millisecond wall-clock stamps against
    /// this server's monotonic clock) after the server issued it. A client refreshes
    /// generation g at ¾ of its lifetime after it was issued (every process computes the
    /// window from the stored issue time), or later when the API rejects it, and g was
    /// issued after it was minted: a second refresh of one expiry, or a process that ignored
    /// the stored issue time, would present a generation before it was due.
    pub fn assert_no_generation_refreshed_before_due(&self, lifetime: Duration) {
        let due = lifetime * 3 / 4 - Duration::from_millis(5);
        let calls = self.token_calls();
        let refreshes = calls.iter().filter(|c| c.grant == Grant::RefreshToken);
        assert!(calls.iter().any(|c| c.grant == Grant::RefreshToken));
        for call in refreshes {
            let g = call
                .presented
                .expect("only our refresh tokens are presented");
            let issued = self.issued_at(g).expect("an issued generation");
            assert!(
                call.arrived >= issued + due,
                "generation {g} was refreshed {:?} after it was issued (due after {due:?})",
                call.arrived - issued
            );
        }
    }
}

/// The refresh grant at `token_url` as the kit's confidential client.
fn refresher_at(token_url: String) -> OAuth2Refresh {
    AuthServer::new(token_url)
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .refresh_grant()
}

/// The side server's endpoints, for the kit `kit` (gone once the `TokenServer` is dropped).
fn side_endpoint(kit: &Weak<TestServer>, req: &RawRequest) -> Action {
    let Some(kit) = kit.upgrade() else {
        return Action::Close;
    };
    let json = |status: u16, body: serde_json::Value| {
        Action::Respond(
            status,
            vec![b"content-type: application/json".to_vec()],
            body.to_string().into_bytes(),
        )
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/json/refresh") => {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let presented = body["refreshToken"].as_str().unwrap_or_default();
            match kit.refresh(presented) {
                Ok(tokens) => json(
                    200,
                    serde_json::json!({
                        "accessToken": tokens.access_token().secret(),
                        "refreshToken": tokens.refresh_token().map(|r| r.secret()),
                    }),
                ),
                Err(_) => json(401, serde_json::json!({"message": "refresh token expired"})),
            }
        }
        _ => json(404, serde_json::json!({"error": "not_found"})),
    }
}
