//! Every server a test talks to, all on loopback:
//!
//! | file | server |
//! |---|---|
//! | `token.rs` | [`TokenServer`]: OAuth2 token endpoint and API, rotating refresh tokens, reuse revokes the session |
//! | `login.rs` | `LoginServer`: a `TokenServer` with discovery, device authorization and revocation endpoints |
//! | `api.rs` | [`Api`]: a scripted API that records every request byte for byte |
//! | `raw.rs` | `RawServer`: HTTP/1.1 on raw TCP, for resets mid-body, bytes that are not UTF-8, silence |
//! | `faults.rs` | `FaultServer`: the stress test's token server and API, faults on a fixed schedule |
//! | `tls.rs` | `TlsServer`: HTTPS and plain HTTP on one port (certificates in `tls/`) |
//! | `redis.rs` | `RedisServer`: a real `redis-server`, a RESP client, a proxy that loses replies |

pub mod api;
pub mod faults;
pub mod login;
pub mod raw;
pub mod redis;
pub mod tls;
pub mod token;

// Re-exported for short imports; each test binary uses a different subset.
#[allow(unused_imports)]
pub use api::Api;
#[allow(unused_imports)]
pub use token::{form, State, TokenServer};

use httpmock::HttpMockResponse;

/// An httpmock answer with a JSON body: `body` is JSON text or a `serde_json::Value`.
pub fn json(status: u16, body: impl std::fmt::Display) -> HttpMockResponse {
    HttpMockResponse::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}
