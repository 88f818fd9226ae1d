//! The public test kit, `tokengate::testing`: a server starts and stops cleanly (threads
//! joined, port closed) and many run side by side; it keeps a real authorization server's
//! rules (client authentication, rotation and reuse detection, device and browser logins,
//! revocation, the protected API's answers); every scripted fault is played as documented;
//! the journal counts exactly and never shows a secret; its HTTP server survives bad input.
//!
//! These tests talk to the kit both through tokengate (as its users will) and with raw
//! requests (to see the wire), on loopback only, with no proxy.

#[path = "../harness/mod.rs"]
mod harness;

mod faults;
mod http;
mod journal;
mod lifecycle;
mod rules;

use serde_json::Value;
use tokengate::ureq;

/// A client of `server`'s API, as a user who just logged in (`at-1`/`rt-1` on a fresh
/// server), refreshing through the server's refresh grant.
pub fn logged_in(server: &tokengate::testing::TestServer) -> tokengate::AuthClient {
    tokengate::AuthClient::builder(server.api_url())
        .tokens(server.login())
        .refresher(server.auth_server().refresh_grant())
        .build()
        .unwrap()
}

/// An agent that ignores environment proxies and returns every status as a response.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// POSTs `form` to `url` with no client authentication header: status, headers, JSON body
/// (`Value::Null` when the body is not JSON).
pub fn post(url: &str, form: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap, Value) {
    answer(agent().post(url).send_form(form.iter().copied()))
}

/// As [`post`], with HTTP Basic credentials.
pub fn post_basic(
    url: &str,
    user: &str,
    password: &str,
    form: &[(&str, &str)],
) -> (u16, ureq::http::HeaderMap, Value) {
    let credentials = harness::fixtures::base64(format!("{user}:{password}").as_bytes());
    let req = agent()
        .post(url)
        .header("authorization", format!("Basic {credentials}"));
    answer(req.send_form(form.iter().copied()))
}

pub fn answer(
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, ureq::http::HeaderMap, Value) {
    let mut resp = resp.expect("the kit answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A refresh_token grant as the default confidential client, in the form.
pub fn refresh(url: &str, refresh_token: &str) -> (u16, ureq::http::HeaderMap, Value) {
    post(
        url,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", tokengate::testing::CLIENT_ID),
            ("client_secret", tokengate::testing::CLIENT_SECRET),
        ],
    )
}
