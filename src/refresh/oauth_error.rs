//! What an authorization server's OAuth `error` answer means: one table for every grant, the
//! device flow and revocation.
//!
//! RFC 6749 §5.2 sends errors with status 400 (401 for `invalid_client`); GitHub sends them
//! with 200 ("Troubleshooting the device flow" and "Refreshing user access tokens": 200 with
//! `{"error":"authorization_pending"}` or `{"error":"bad_refresh_token"}`). So an answer whose
//! body is a JSON object with a string `error` is an error whatever its status (2xx or 4xx; a
//! 5xx or 429 is the server in trouble, never a verdict on the session), and the code decides.
//! The device flow alone reads a 429 that says `slow_down` or `authorization_pending` (Auth0
//! answers `slow_down` with 429): [`polling_code`].

use super::json_object;

/// What an OAuth `error` code means for the flow that received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// The refresh token (or device code, or grant) is dead: the user must log in again.
    SessionOver,
    /// Device flow: the user has not answered yet; poll again (RFC 8628 §3.5).
    Pending,
    /// Device flow: poll again, 5 s slower (RFC 8628 §3.5).
    SlowDown,
    /// Device flow: the user said no (RFC 8628 §3.5).
    Denied,
    /// Device flow: the device code expired (RFC 8628 §3.5).
    Expired,
    /// Anything else (`invalid_client`, `invalid_scope`, `unauthorized_client`, …): the
    /// request or the client's configuration is wrong; the session is not over.
    Refused,
}

/// The table. A code not in it is [`Meaning::Refused`].
const CODES: &[(&str, Meaning)] = &[
    // RFC 6749 §5.2: the refresh token (or code) is invalid, expired, revoked.
    ("invalid_grant", Meaning::SessionOver),
    // GitHub ("Refreshing user access tokens"): an invalid or expired refresh token, with 200.
    ("bad_refresh_token", Meaning::SessionOver),
    // OpenID Connect Core §3.1.2.6, Microsoft Entra on refresh (e.g. AADSTS50076, MFA now
    // required): only a new interactive login helps.
    ("interaction_required", Meaning::SessionOver),
    ("login_required", Meaning::SessionOver),
    ("consent_required", Meaning::SessionOver),
    // RFC 8628 §3.5 (GitHub sends them with 200).
    ("authorization_pending", Meaning::Pending),
    ("slow_down", Meaning::SlowDown),
    ("access_denied", Meaning::Denied),
    ("expired_token", Meaning::Expired),
    // Microsoft Entra's device flow ("v2-oauth2-device-code", "Expected errors"): "The end
    // user denied the authorization request", its name for access_denied.
    ("authorization_declined", Meaning::Denied),
];

/// What `code` (already sanitized) means.
pub(crate) fn meaning(code: &str) -> Meaning {
    CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(Meaning::Refused, |(_, m)| *m)
}

/// For the device flow's polls: the code of a 429 answer that only says how to poll
/// (`slow_down`, `authorization_pending`), which is then read as that code, not as a server in
/// trouble. Auth0 answers `slow_down` with 429 ("Call your API using the device authorization
/// flow").
pub(crate) fn polling_code(status: u16, body: &[u8]) -> Option<ServerSaid> {
    let said = (status == 429).then(|| oauth_error(body)).flatten()?;
    matches!(meaning(&said.code), Meaning::Pending | Meaning::SlowDown).then_some(said)
}

/// An OAuth error answer: the code (only characters RFC 6749 §5.2 allows, at most 64) and the
/// description (see [`sanitize_description`]), before any redaction of echoed secrets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ServerSaid {
    pub(crate) code: String,
    pub(crate) description: Option<String>,
}

/// The OAuth error in `body`, if it is a JSON object with a non-empty string `error` and no
/// string `access_token` (an answer with a token is a success, whatever else it says: its
/// rotated refresh token must not be lost).
pub(crate) fn oauth_error(body: &[u8]) -> Option<ServerSaid> {
    said_in(&json_object(body).ok()?)
}

/// [`oauth_error`], for a body already read as a JSON object.
pub(crate) fn said_in(map: &serde_json::Map<String, serde_json::Value>) -> Option<ServerSaid> {
    if map.get("access_token").is_some_and(|t| t.is_string()) {
        return None;
    }
    let code = sanitize_code(map.get("error")?.as_str()?);
    if code.is_empty() {
        return None;
    }
    let description = map
        .get("error_description")
        .and_then(|d| d.as_str())
        .map(sanitize_description)
        .filter(|d| !d.is_empty());
    Some(ServerSaid { code, description })
}

/// Keeps only the characters RFC 6749 §5.2 allows in `error`, at most 64 of them, so a hostile
/// server cannot smuggle control characters (or a long echo of a token) into our errors.
/// An echo of a credential is hidden by [`redact_code`].
pub(crate) fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        .take(64)
        .collect()
}

/// Longest `error_description` kept, in characters (Entra's AADSTS messages, with their trace
/// and correlation ids, run to about 300).
pub(crate) const DESCRIPTION_LIMIT: usize = 400;

/// An `error_description` fit to print: control and bidirectional-override characters become
/// spaces, runs of spaces one space, cut at [`DESCRIPTION_LIMIT`] characters (with `…`).
/// Unlike the code, any other Unicode is kept (servers localize their messages).
pub(crate) fn sanitize_description(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{fff9}'..='\u{fffb}'
            )
    };
    let mut out = String::new();
    let mut chars = 0;
    for word in text
        .split(|c: char| c.is_whitespace() || unsafe_char(c))
        .filter(|w| !w.is_empty())
    {
        let sep = usize::from(!out.is_empty());
        let len = word.chars().count();
        if chars + sep + len > DESCRIPTION_LIMIT {
            let room = DESCRIPTION_LIMIT.saturating_sub(chars + sep);
            if sep == 1 && room > 0 {
                out.push(' ');
            }
            out.extend(word.chars().take(room));
            out.push('…');
            break;
        }
        if sep == 1 {
            out.push(' ');
        }
        out.push_str(word);
        chars += sep + len;
    }
    out
}

/// `text`, or `[redacted]` if it echoes one of `secrets`: a broken or hostile server repeating
/// the refresh token, device code or client secret it was sent, which must not reach our
/// errors and logs. Sharing 8 consecutive bytes with a secret (or all of a shorter one)
/// counts: the sanitizers may have cut the echo short.
pub(crate) fn redact_code(text: String, secrets: &[&str]) -> String {
    const WINDOW: usize = 8;
    let echoes = |secret: &str| {
        if secret.len() <= WINDOW {
            return !secret.is_empty() && text.contains(secret);
        }
        text.as_bytes()
            .windows(WINDOW)
            .any(|w| secret.as_bytes().windows(WINDOW).any(|s| s == w))
    };
    if secrets.iter().any(|s| echoes(s)) {
        "[redacted]".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        for (code, m) in [
            ("invalid_grant", Meaning::SessionOver),
            ("bad_refresh_token", Meaning::SessionOver),
            ("interaction_required", Meaning::SessionOver),
            ("authorization_pending", Meaning::Pending),
            ("slow_down", Meaning::SlowDown),
            ("access_denied", Meaning::Denied),
            ("authorization_declined", Meaning::Denied),
            ("expired_token", Meaning::Expired),
            ("bad_verification_code", Meaning::Refused),
            ("invalid_client", Meaning::Refused),
            ("incorrect_client_credentials", Meaning::Refused),
            ("INVALID_GRANT", Meaning::Refused),
        ] {
            assert_eq!(meaning(code), m, "{code}");
        }
    }

    #[test]
    fn a_429_is_read_for_polling_only_when_it_says_how_to_poll() {
        let code = |status, body: &str| polling_code(status, body.as_bytes()).map(|s| s.code);
        assert_eq!(
            code(429, r#"{"error":"slow_down"}"#).as_deref(),
            Some("slow_down")
        );
        assert_eq!(
            code(429, r#"{"error":"authorization_pending"}"#).as_deref(),
            Some("authorization_pending")
        );
        assert_eq!(code(429, r#"{"error":"invalid_grant"}"#), None);
        assert_eq!(code(429, "Too Many Requests"), None);
        assert_eq!(code(503, r#"{"error":"slow_down"}"#), None);
    }

    #[test]
    fn reads_the_error_whatever_else_is_there() {
        let said = oauth_error(
            br#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired.","error_uri":"https://docs.github.com"}"#,
        )
        .unwrap();
        assert_eq!(said.code, "bad_refresh_token");
        assert_eq!(
            said.description.as_deref(),
            Some("The refresh token passed is incorrect or expired.")
        );
        for body in [
            &br#"{"access_token":"a"}"#[..],
            br#"{"error":7}"#,
            br#"{"error":""}"#,
            br#"{"error":"\u0001"}"#,
            br#"{"access_token":"a","refresh_token":"r2","error":"invalid_grant"}"#,
            b"<html>",
            b"[]",
        ] {
            assert_eq!(oauth_error(body), None, "{}", String::from_utf8_lossy(body));
        }
        let said = oauth_error(br#"{"error":"x","error_description":7}"#).unwrap();
        assert_eq!(said.description, None);
    }

    #[test]
    fn descriptions_are_printable_and_bounded() {
        assert_eq!(
            sanitize_description(
                "AADSTS70008:\r\n  The provided\tgrant has expired.\u{1b}[2J\u{202e}x"
            ),
            "AADSTS70008: The provided grant has expired. [2J x"
        );
        assert_eq!(
            sanitize_description("Jeton expiré — réessayez"),
            "Jeton expiré — réessayez"
        );
        let long = "word ".repeat(200);
        let cut = sanitize_description(&long);
        assert!(cut.chars().count() <= DESCRIPTION_LIMIT + 1, "{cut}");
        assert!(cut.chars().count() > DESCRIPTION_LIMIT - 5, "{cut}");
        assert!(cut.ends_with('…'));
        let one = "x".repeat(1000);
        assert_eq!(
            sanitize_description(&one).chars().count(),
            DESCRIPTION_LIMIT + 1
        );
        assert_eq!(sanitize_description(" \n "), "");
    }

    #[test]
    fn echoes_of_secrets_are_redacted() {
        assert_eq!(
            redact_code(
                "refresh token rt-0123456789abcdef is unknown".into(),
                &["rt-0123456789abcdef", ""]
            ),
            "[redacted]"
        );
        for echo in [
            "rt-0123456789abcdef",
            "invalid_request rt-0123456789abcdef",
            "bad token: rt-0123456", // cut short
            "s3cret",
        ] {
            assert_eq!(
                redact_code(echo.into(), &["rt-0123456789abcdef", "s3cret"]),
                "[redacted]",
                "{echo}"
            );
        }
        assert_eq!(redact_code("invalid_scope".into(), &[""]), "invalid_scope");
    }
}
