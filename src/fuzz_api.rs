//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which replays
//! their corpus in every `cargo test`. **Not part of the API**: hidden, and may change in any
//! release.
//!
//! Each function takes the fuzzer's raw bytes, runs one parser on them the way the client
//! does, and checks what that parser promises. It panics only if a promise is broken: a
//! panic inside the parser, or a result out of bounds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::challenge::parse_bearer;
use crate::refresh::{parse_oauth2_response, JsonRefresh};
use crate::tokens::{jwt_expiry as read_jwt_expiry, Current, Tokens, MAX_EXPIRES_IN};
use crate::transport::TokenResponse;

/// Statuses a token endpoint's answer is tried with; the first input byte picks one.
const STATUSES: [u16; 16] = [
    200, 200, 200, 200, 201, 204, 299, 400, 400, 401, 401, 403, 429, 500, 503, 302,
];

/// Latest instant a JWT claim may name (`1e11` seconds after the epoch, year 5138).
const MAX_CLAIM: Duration = Duration::from_secs(100_000_000_000);

/// A token endpoint's answer. Byte 0 picks the parser (bit 0: OAuth2 or [`JsonRefresh`] with
/// its default field names) and the status (bits 1-4); the rest is the body. A success must
/// yield tokens that can travel in a header with a sane lifetime, which the client then
/// stamps (reading a JWT's `exp`), keeping the previous refresh token and ID token when the
/// body has none; the ID token's claims are read (unverified) without a panic. An error's
/// text must be short and free of control characters whatever the body, so it can never
/// echo a token or smuggle a line break into a log.
pub fn token_response(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let status = STATUSES[usize::from(selector >> 1) % STATUSES.len()];
    let resp = TokenResponse {
        status,
        retry_after: None,
        body: body.to_vec(),
    };
    let previous = Tokens::new("previous-access")
        .with_refresh_token("previous-refresh")
        .with_id_token("previous.id.token");
    let result = if selector & 1 == 0 {
        parse_oauth2_response(&resp, &previous)
    } else {
        JsonRefresh::new("https://auth.example/refresh").parse(&resp, &previous)
    };
    match result {
        Ok(tokens) => {
            assert!((200..300).contains(&status), "success from status {status}");
            assert!(tokens.validate().is_ok(), "unusable tokens accepted");
            assert!(tokens.refresh_token().is_some(), "refresh token dropped");
            let id_token = tokens.id_token().expect("id token dropped");
            if let Err(e) = id_token.unverified_claims() {
                check_error_text(&e);
            }
            assert!(tokens.expires_in().is_none_or(|d| d <= MAX_EXPIRES_IN));
            let now = SystemTime::now();
            let current = Current::new(tokens, now, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("validated tokens rejected: {e}"));
            check_current(&current);
        }
        Err(e) => check_error_text(&e),
    }
}

/// An error's text is short and free of control characters.
fn check_error_text(e: &(impl std::fmt::Display + std::fmt::Debug)) {
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(text.len() <= 256, "error text of {} bytes", text.len());
        assert!(
            !text.chars().any(char::is_control),
            "control character in {text:?}"
        );
    }
}

/// A `WWW-Authenticate` header value (lossy UTF-8). A Bearer challenge may only be found in
/// a value of at most 8 KiB, and the `error` and `scope` kept must be short printable ASCII.
pub fn www_authenticate(data: &[u8]) {
    let header = String::from_utf8_lossy(data);
    if let Some(c) = parse_bearer(&header) {
        assert!(
            header.len() <= 8 * 1024,
            "parsed a {} byte header",
            header.len()
        );
        for v in [&c.error, &c.scope].into_iter().flatten() {
            assert!(v.len() <= 256, "kept a {} byte value", v.len());
            assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "kept {v:?}");
        }
    }
}

/// An access token (lossy UTF-8) read for a JWT `exp`/`iat`, then stamped as the client does
/// when the token can travel in a header. Claims must be sane instants, and the refresh
/// point never after the expiry.
pub fn jwt_expiry(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    if let Some((exp, iat)) = read_jwt_expiry(&token) {
        assert_eq!(token.split('.').count(), 3, "not a JWT");
        for t in std::iter::once(exp).chain(iat) {
            assert!(t <= UNIX_EPOCH + MAX_CLAIM, "claim out of range");
        }
    }
    let tokens = Tokens::new(token.into_owned());
    if tokens.validate().is_ok() {
        let current = Current::new(tokens, SystemTime::now(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("validated token rejected: {e}"));
        check_current(&current);
    }
}

fn check_current(c: &Current) {
    match (c.refresh_at, c.stale_at, c.tokens.expires_at()) {
        (Some(r), Some(s), Some(e)) => {
            assert!(r <= s, "refresh point after the stale point");
            assert!(s <= e, "stale point after expiry");
        }
        (None, None, None) => {}
        other => panic!("refresh point and expiry disagree: {other:?}"),
    }
}
