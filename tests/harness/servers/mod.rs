//! Every server a test talks to, all on loopback:
//!
//! | file | server |
//! |---|---|
//! | `token.rs` | [`TokenServer`]: the public test kit's `TestServer` (token, device, revocation endpoints and API, rotating refresh tokens, reuse revokes the login), plus a JSON refresh endpoint |
//! | `api.rs` | [`Api`]: a scripted API that records every request byte for byte |
//! | `raw.rs` | `RawServer`: HTTP/1.1 on raw TCP, for resets mid-body, bytes that are not UTF-8, silence; `forwarding`: a front that sees (or acts on) each request before the kit does |
//! | `faults.rs` | `FaultServer`: the stress test's token server and API, faults on a fixed schedule |
//! | `tls.rs` | `TlsServer`: HTTPS and plain HTTP on one port (certificates in `tls/`) |
//! | `redis.rs` | `RedisServer`: a real `redis-server`, a RESP client, a proxy that loses replies |

pub mod api;
pub mod faults;
pub mod raw;
pub mod redis;
pub mod tls;
pub mod token;

// Re-exported for short imports; each test binary uses a different subset.
#[allow(unused_imports)]
pub use api::Api;
#[allow(unused_imports)]
pub use token::TokenServer;

use std::collections::HashMap;

use httpmock::HttpMockResponse;

/// An httpmock answer with a JSON body: `body` is JSON text or a `serde_json::Value`.
pub fn json(status: u16, body: impl std::fmt::Display) -> HttpMockResponse {
    HttpMockResponse::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// The parameters of an `application/x-www-form-urlencoded` body.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
