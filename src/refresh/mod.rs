//! How tokens are renewed: the [`Refresh`] trait and the built-in strategies.

mod client;
mod json;
mod oauth2;
mod oauth_error;

/// For `crate::__fuzz`.
pub(crate) use client::parse as parse_oauth2_response;
/// For the login flows (`crate::login`), which talk to the same authorization server.
pub(crate) use client::{error_of, parse, redact_echo, Client, Params};
pub use client::{ClientAuth, REVOCATION_TIMEOUT};
pub use json::JsonRefresh;
pub use oauth2::{ClientCredentials, OAuth2Refresh};
pub(crate) use oauth_error::{
    meaning, polling_code, redact_code, sanitize_code, sanitize_description, Meaning,
};

use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

use crate::error::RefreshError;
use crate::login::error::RevocationError;
use crate::tokens::{Tokens, MAX_EXPIRES_IN};

/// A way to get new tokens. tokengate calls it from at most one thread at a time per client
/// (the refresh gate), with no lock of the client held; with a shared store
/// ([`FileStore`](crate::FileStore)), while the thread holds the store's lock, so that no other
/// process refreshes at the same time.
///
/// Implemented by [`OAuth2Refresh`], [`JsonRefresh`], [`ClientCredentials`] and by any closure
/// `Fn(&ureq::Agent, &Tokens) -> Result<Tokens, RefreshError>`:
///
/// ```
/// use tokengate::{RefreshError, Tokens};
///
/// let refresher = |agent: &ureq::Agent, current: &Tokens| -> Result<Tokens, RefreshError> {
///     // call your endpoint with `agent` (the token-endpoint agent) …
///     let _ = (agent, current);
///     Ok(Tokens::new("new-access"))
/// };
/// # fn takes(_: impl tokengate::Refresh) {}
/// takes(refresher);
/// ```
///
/// The closure is `Fn`, not `FnOnce` or `FnMut`: it is called once per expiry for the life of
/// the client, from whichever thread leads the refresh, so it must be shareable across threads.
///
/// Return [`RefreshError::terminal`] (or `InvalidGrant`) when the session is over, and any
/// other error when it is worth trying again later. A returned `Tokens` without a refresh
/// token keeps the previous one, and likewise without an ID token ([`Tokens::id_token`]).
pub trait Refresh: Send + Sync + 'static {
    /// Obtains new tokens. `agent` is the token-endpoint agent; `current` the tokens being replaced.
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError>;

    /// True if this strategy can obtain tokens with none to start from (client credentials).
    /// Then a client without tokens acquires them on its first request, and `current` is a
    /// placeholder. Defaults to false.
    fn acquires_without_tokens(&self) -> bool {
        false
    }

    /// Whether a refresh of `current` can succeed at all. The built-in refresh-token grants
    /// ([`OAuth2Refresh`], [`JsonRefresh`]) answer false when `current` has no refresh token:
    /// the client then makes no refresh call; it uses the access token until it expires (or
    /// draws a 401), and only then ends the session, once. Defaults to true.
    fn can_refresh(&self, current: &Tokens) -> bool {
        let _ = current;
        true
    }

    /// The token endpoint's URL, if the strategy has one, so `build()` can check it
    /// (it must parse, and be `https` unless loopback or opted in). Defaults to `None`.
    fn endpoint(&self) -> Option<&str> {
        None
    }

    /// Revokes the session of `tokens` at the server (RFC 7009), for
    /// [`AuthClient::logout`](crate::AuthClient::logout), which calls it after the tokens were
    /// cleared locally. `agent` is the token-endpoint agent. Returns `None` when the strategy
    /// cannot revoke (no revocation endpoint): the logout is then local only. Defaults to `None`.
    ///
    /// [`OAuth2Refresh`] from an [`AuthServer`](crate::AuthServer) with a
    /// [revocation URL](crate::AuthServer::revocation_url) revokes the refresh token (or,
    /// without one, the access token) with the same client authentication as its refreshes,
    /// within [`REVOCATION_TIMEOUT`](crate::login::REVOCATION_TIMEOUT).
    fn revoke(&self, agent: &Agent, tokens: &Tokens) -> Option<Result<(), RevocationError>> {
        let _ = (agent, tokens);
        None
    }

    /// The revocation endpoint's URL, if the strategy has one, so `build()` can check it like
    /// [`Refresh::endpoint`]. Defaults to `None`.
    fn revocation_endpoint(&self) -> Option<&str> {
        None
    }

    /// Why the strategy is configured so that it cannot work, for `build()` to report as
    /// [`Error::Config`](crate::Error::Config) (the built-in grants: a refused extra parameter).
    #[doc(hidden)]
    fn config_problem(&self) -> Option<&'static str> {
        None
    }
}

impl<F> Refresh for F
where
    F: Fn(&Agent, &Tokens) -> Result<Tokens, RefreshError> + Send + Sync + 'static,
{
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError> {
        self(agent, current)
    }
}

/// Reads a JSON body that must be an object. The body itself is never quoted in the error.
pub(crate) fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, RefreshError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RefreshError::InvalidResponse("JSON is not an object")),
        Err(_) => Err(RefreshError::InvalidResponse("body is not JSON")),
    }
}

/// A string field; `Ok(None)` when absent or null, an error when present with another type.
pub(crate) fn string_field<'a>(
    map: &'a serde_json::Map<String, Value>,
    name: &str,
    what: &'static str,
) -> Result<Option<&'a str>, RefreshError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RefreshError::InvalidResponse(what)),
    }
}

/// `expires_in` as a number of seconds or a string of digits; negative, fractional nonsense,
/// or more than ten years is an error.
pub(crate) fn expires_in_field(
    map: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<Duration>, RefreshError> {
    const BAD: RefreshError =
        RefreshError::InvalidResponse("expires_in is not a sane number of seconds");
    let secs = match map.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or(BAD)?,
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| BAD)?,
        Some(_) => return Err(BAD),
    };
    if !secs.is_finite() || secs < 0.0 || secs > MAX_EXPIRES_IN.as_secs_f64() {
        return Err(BAD);
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// Builds `Tokens` from the parts of a success response and checks the token characters. A
/// missing refresh token or ID token is `previous`'s (RFC 6749 §6, OpenID Connect Core §12.2).
fn tokens_from(
    access: &str,
    refresh: Option<&str>,
    id_token: Option<&str>,
    expires_in: Option<Duration>,
    scope: Option<&str>,
    previous: &Tokens,
) -> Result<Tokens, RefreshError> {
    let mut t = Tokens::new(access);
    if let Some(r) = refresh {
        t = t.with_refresh_token(r);
    }
    if let Some(d) = expires_in {
        t = t.with_expires_in(d);
    }
    if let Some(s) = scope {
        t = t.with_scope(s);
    }
    if let Some(i) = id_token {
        t = t.with_id_token(i);
    }
    let t = t.keep_previous(previous);
    t.validate().map_err(|_| {
        RefreshError::InvalidResponse("token is empty, too long or has invalid characters")
    })?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TokenResponse;

    fn ok(body: &str) -> TokenResponse {
        TokenResponse {
            status: 200,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    /// Issue 25: a token response's `id_token` is kept with the tokens (it was dropped); a
    /// refresh response without one keeps the previous one (OpenID Connect Core §12.2), one
    /// with one replaces it; a login (no previous tokens) without one has none.
    #[test]
    fn the_id_token_is_kept_and_a_refresh_without_one_keeps_the_previous() {
        let login = parse(
            &ok(r#"{"access_token":"a1","refresh_token":"r1","id_token":"h.p1.s"}"#),
            &Tokens::new("-"),
        )
        .unwrap();
        assert_eq!(login.id_token().map(|i| i.secret()), Some("h.p1.s"));

        let refreshed = parse(&ok(r#"{"access_token":"a2"}"#), &login).unwrap();
        assert_eq!(refreshed.access_token().secret(), "a2");
        assert_eq!(refreshed.refresh_token().map(|r| r.secret()), Some("r1"));
        assert_eq!(refreshed.id_token().map(|i| i.secret()), Some("h.p1.s"));
        let refreshed = parse(&ok(r#"{"access_token":"a3","id_token":null}"#), &refreshed).unwrap();
        assert_eq!(refreshed.id_token().map(|i| i.secret()), Some("h.p1.s"));

        let replaced = parse(
            &ok(r#"{"access_token":"a4","id_token":"h.p2.s"}"#),
            &refreshed,
        )
        .unwrap();
        assert_eq!(replaced.id_token().map(|i| i.secret()), Some("h.p2.s"));

        let none = parse(&ok(r#"{"access_token":"a1"}"#), &Tokens::new("-")).unwrap();
        assert!(none.id_token().is_none());

        // A closure strategy's answer without one (the client's `continuing`) keeps it too.
        let kept = Tokens::new("a5").continuing(&replaced);
        assert_eq!(kept.id_token().map(|i| i.secret()), Some("h.p2.s"));
        let own = Tokens::new("a6")
            .with_id_token("h.p3.s")
            .continuing(&replaced);
        assert_eq!(own.id_token().map(|i| i.secret()), Some("h.p3.s"));
    }

    /// An `id_token` of another type than string, or one that breaks the token rule (empty,
    /// over 16 KiB, not visible ASCII), makes the response invalid, quoting nothing.
    #[test]
    fn a_bad_id_token_is_an_invalid_response() {
        let prev = Tokens::new("old").with_id_token("h.p.s");
        let long = format!(
            r#"{{"access_token":"a","id_token":"{}"}}"#,
            "S".repeat(16 * 1024 + 1)
        );
        for body in [
            r#"{"access_token":"a","id_token":7}"#,
            r#"{"access_token":"a","id_token":{"sub":"SECRET"}}"#,
            r#"{"access_token":"a","id_token":["SECRET"]}"#,
            r#"{"access_token":"a","id_token":""}"#,
            r#"{"access_token":"a","id_token":"SECRET with space"}"#,
            r#"{"access_token":"a","id_token":"SECRET\r\nX: y"}"#,
            &long,
        ] {
            let e = parse(&ok(body), &prev).unwrap_err();
            assert!(
                matches!(e, RefreshError::InvalidResponse(_)),
                "{body:.60}: {e:?}"
            );
            let text = format!("{e} {e:?}");
            assert!(!text.contains("SECRET") && !text.contains("SSS"), "{text}");
        }
        // 16 KiB exactly is accepted.
        let max = format!(
            r#"{{"access_token":"a","id_token":"{}"}}"#,
            "i".repeat(16 * 1024)
        );
        let t = parse(&ok(&max), &prev).unwrap();
        assert_eq!(t.id_token().unwrap().secret().len(), 16 * 1024);
    }
}
