//! The authorization server as every flow talks to it: how the client authenticates
//! ([`ClientAuth`], [`Client`]), the one form POST all its requests go through (both grants,
//! the device flow's two requests and revocation), the token response parser, error codes
//! kept free of echoed secrets, and revocation (RFC 7009).

use std::fmt;
use std::time::Duration;

use ureq::Agent;

use super::oauth_error::{meaning, oauth_error, redact_code, said_in, Meaning, ServerSaid};
use super::{expires_in_field, json_object, string_field, tokens_from};
use crate::encoding::{base64_encode, form_body, form_encode_into};
use crate::error::RefreshError;
use crate::login::error::RevocationError;
use crate::tokens::{ClientSecret, TokenType, Tokens};
use crate::transport::{post_token_request, PostError, TokenResponse};
use crate::transport_error::TransportError;

const FORM: &str = "application/x-www-form-urlencoded";

/// How the client authenticates to the authorization server's endpoints (RFC 6749 §2.3):
/// token, device authorization and revocation alike. Set with
/// [`AuthServer::auth_method`](crate::AuthServer::auth_method).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// No client authentication; `client_id` (if set) goes in the form (public clients).
    None,
    /// HTTP Basic with the form-urlencoded id and secret (§2.3.1). The default when a secret is set.
    Basic,
    /// `client_id` and `client_secret` in the form body (§2.3.1, "NOT RECOMMENDED" but common).
    Post,
}

/// Client identity and authentication, shared by every request to the authorization server:
/// both grants, the device flow (`login/device.rs`) and revocation ([`revoke`], below).
#[derive(Clone, Default)]
pub(crate) struct Client {
    pub(crate) id: Option<String>,
    pub(crate) secret: Option<ClientSecret>,
    pub(crate) method: Option<ClientAuth>,
}

impl Client {
    fn method(&self) -> ClientAuth {
        self.method.unwrap_or(if self.secret.is_some() {
            ClientAuth::Basic
        } else {
            ClientAuth::None
        })
    }

    /// Adds the client's form fields to `form` and returns the `Authorization` header, if any.
    fn apply<'a>(&'a self, form: &mut Vec<(&'a str, &'a str)>) -> Option<String> {
        let id = self.id.as_deref();
        match self.method() {
            ClientAuth::None => {
                form.extend(id.map(|id| ("client_id", id)));
                None
            }
            ClientAuth::Post => {
                form.extend(id.map(|id| ("client_id", id)));
                form.extend(self.secret.as_ref().map(|s| ("client_secret", s.secret())));
                None
            }
            ClientAuth::Basic => {
                let mut pair = String::new();
                form_encode_into(&mut pair, id.unwrap_or(""));
                pair.push(':');
                form_encode_into(&mut pair, self.secret.as_ref().map_or("", |s| s.secret()));
                Some(format!("Basic {}", base64_encode(pair.as_bytes())))
            }
        }
    }

    /// POSTs `form` to `url` (an endpoint of the authorization server) with the client's
    /// authentication: its fields added to the form, or an `Authorization` header. Every
    /// request to the authorization server goes through here: both grants, the device flow's
    /// two requests and revocation. `timeout` as in [`post_token_request`].
    pub(crate) fn post_form<'a>(
        &'a self,
        agent: &Agent,
        url: &str,
        mut form: Vec<(&'a str, &'a str)>,
        timeout: Option<Duration>,
    ) -> Result<TokenResponse, PostError> {
        let auth = self.apply(&mut form);
        let body = form_body(form);
        post_token_request(agent, url, FORM, auth.as_deref(), body.as_bytes(), timeout)
    }

    /// The client secret, or `""`: for [`redact_echo`].
    pub(crate) fn secret_str(&self) -> &str {
        self.secret.as_ref().map_or("", |s| s.secret())
    }
}

/// Parameters the flows add to their requests besides their own (`audience` for Auth0,
/// `resource` for Microsoft Entra v1 and RFC 8707, …), in the order given; a name may repeat.
/// `Debug` shows the names only (a value could be a key).
#[derive(Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

/// Names the flows send themselves (or that authenticate the client): never extra, in any
/// case (some servers read form keys case-insensitively).
const RESERVED: &[&str] = &[
    "grant_type",
    "refresh_token",
    "device_code",
    "code",
    "code_verifier",
    "redirect_uri",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Why an extra parameter cannot be sent, for `Error::Config`.
pub(crate) const RESERVED_PARAM: &str =
    "an extra parameter needs a name without spaces or control characters, and not one \
     tokengate sends itself, in any case (grant_type, refresh_token, device_code, code, code_verifier, redirect_uri, client_id, \
     client_secret, client_assertion, client_assertion_type, scope, response_type, state, \
     code_challenge, code_challenge_method: set the scope with scope())";

impl Params {
    pub(crate) fn push(&mut self, name: String, value: String) {
        self.0.push((name, value));
    }

    /// `Some(RESERVED_PARAM)` if a name is empty, holds a space or control character, or is
    /// reserved (in any case).
    pub(crate) fn problem(&self) -> Option<&'static str> {
        let bad = |name: &str| {
            name.is_empty()
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
                || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
        };
        self.0
            .iter()
            .any(|(name, _)| bad(name))
            .then_some(RESERVED_PARAM)
    }

    /// Adds them to `form`.
    pub(crate) fn add_to<'a>(&'a self, form: &mut Vec<(&'a str, &'a str)>) {
        form.extend(self.0.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("method", &self.method())
            .finish()
    }
}

/// The error an authorization server's answer is, if it is one: an OAuth `error` whatever the
/// status (GitHub answers errors with 200), unless the status is 5xx or 429 (the server in
/// trouble, never a verdict on the session; a refresh is retried after its `Retry-After`);
/// or any status but 2xx. What a code means is decided in one table (`oauth_error.rs`). Used
/// for the grants, the device flow's two endpoints and revocation. (The device flow's polls
/// read a 429 that says how to poll themselves: `oauth_error::polling_code`.)
pub(crate) fn error_of(resp: &TokenResponse) -> Option<RefreshError> {
    let verdict_status = matches!(resp.status, 200..=299 | 400..=428 | 430..=499);
    if let Some(said) = verdict_status.then(|| oauth_error(&resp.body)).flatten() {
        return Some(RefreshError::from_server(resp.status, said));
    }
    (!(200..=299).contains(&resp.status)).then(|| resp.unexpected())
}

/// Interprets a token endpoint's answer (RFC 6749 §5.1 success, §5.2 error; see [`error_of`]).
pub(crate) fn parse(resp: &TokenResponse, previous: &Tokens) -> Result<Tokens, RefreshError> {
    if !(200..=299).contains(&resp.status) {
        return Err(error_of(resp).unwrap_or_else(|| resp.unexpected()));
    }
    // A 2xx body is read once, for an OAuth error (as `error_of` would) and for the tokens.
    let map = json_object(&resp.body)?;
    if let Some(said) = said_in(&map) {
        return Err(RefreshError::from_server(resp.status, said));
    }
    let access = string_field(&map, "access_token", "access_token is not a string")?
        .ok_or(RefreshError::InvalidResponse("missing access_token"))?;
    // Kept with the tokens; Bearer when absent (RFC 6749 §5.1 requires it, servers
    // omit it), the only type accepted.
    let token_type = match string_field(&map, "token_type", "token_type is not a string")? {
        None => TokenType::Bearer,
        Some(tt) => {
            TokenType::parse(tt).ok_or(RefreshError::InvalidResponse("token_type is not bearer"))?
        }
    };
    let refresh = string_field(&map, "refresh_token", "refresh_token is not a string")?;
    let scope = string_field(&map, "scope", "scope is not a string")?;
    let expires_in = expires_in_field(&map, "expires_in")?;
    let id_token = string_field(&map, "id_token", "id_token is not a string")?;
    tokens_from(access, refresh, id_token, expires_in, scope, previous)
        .map(|t| t.with_token_type(token_type))
}

impl RefreshError {
    /// The error for an OAuth error answer, classified by its code (one table, `oauth_error.rs`).
    pub(crate) fn from_server(status: u16, said: ServerSaid) -> RefreshError {
        match meaning(&said.code) {
            Meaning::SessionOver => RefreshError::InvalidGrant {
                status,
                error: Some(said.code),
                description: said.description,
            },
            _ => RefreshError::OAuth {
                status,
                error: said.code,
                description: said.description,
            },
        }
    }

    /// The inverse of [`RefreshError::from_server`]: the status, code and description of an
    /// OAuth error answer, or the error itself if it is not one.
    pub(crate) fn into_server_said(self) -> Result<(u16, ServerSaid), RefreshError> {
        match self {
            RefreshError::OAuth {
                status,
                error,
                description,
            }
            | RefreshError::InvalidGrant {
                status,
                error: Some(error),
                description,
            } => Ok((
                status,
                ServerSaid {
                    code: error,
                    description,
                },
            )),
            e => Err(e),
        }
    }
}

/// Hides an `error` code or description that echoes one of `secrets` (a broken or hostile
/// server repeating the refresh token or client secret it was sent), so it cannot reach our
/// errors and logs; see [`redact_code`].
pub(crate) fn redact_echo(err: RefreshError, secrets: &[&str]) -> RefreshError {
    let hide = |d: Option<String>| d.map(|d| redact_code(d, secrets));
    match err {
        RefreshError::OAuth {
            status,
            error,
            description,
        } => RefreshError::OAuth {
            status,
            error: redact_code(error, secrets),
            description: hide(description),
        },
        RefreshError::InvalidGrant {
            status,
            error,
            description,
        } => RefreshError::InvalidGrant {
            status,
            error,
            description: hide(description),
        },
        e => e,
    }
}

/// Whole-call timeout of a revocation request: logout is best effort and should not hang.
/// An agent with a shorter whole-call timeout keeps its own.
pub const REVOCATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Revokes `token` at `url` (RFC 7009 §2.1) with the client's authentication, through the
/// same form POST as the grants, within [`REVOCATION_TIMEOUT`] (or the agent's shorter
/// whole-call timeout). `hint` is the `token_type_hint` (`refresh_token` or `access_token`).
pub(crate) fn revoke(
    agent: &Agent,
    url: &str,
    client: &Client,
    token: &str,
    hint: &str,
) -> Result<(), RevocationError> {
    let form = vec![("token", token), ("token_type_hint", hint)];
    let timeout = match agent.config().timeouts().global {
        Some(t) if t < REVOCATION_TIMEOUT => t,
        _ => REVOCATION_TIMEOUT,
    };
    let resp = match client.post_form(agent, url, form, Some(timeout)) {
        Ok(resp) => resp,
        // The body is read (bounded) so the connection can be reused, and for the error code;
        // one that cannot be read leaves the status to decide.
        Err(PostError::Body { status, .. } | PostError::TooLarge { status }) => TokenResponse {
            status,
            retry_after: None,
            body: Vec::new(),
        },
        Err(PostError::Send(e)) => return Err(RevocationError::Transport(e)),
        Err(PostError::Credentials(e)) => {
            // Not sent: no proxy to name.
            let e = TransportError::new(ureq::Error::Http(e), None);
            return Err(RevocationError::Transport(e));
        }
    };
    // §2.2: 200 also for a token that was already invalid.
    let secrets = [token, client.secret_str()];
    let Some(e) = error_of(&resp) else {
        return Ok(());
    };
    match redact_echo(e, &secrets).into_server_said() {
        Ok((status, said)) => Err(RevocationError::OAuth {
            status,
            error: said.code,
            description: said.description,
        }),
        Err(_) => Err(RevocationError::Status(resp.status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> TokenResponse {
        TokenResponse {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let c = Client {
            id: Some("my app".into()),
            secret: Some(ClientSecret::new("s:e/c")),
            method: None,
        };
        let mut form = vec![];
        let header = c.apply(&mut form).unwrap();
        assert!(form.is_empty());
        assert_eq!(
            header,
            format!("Basic {}", base64_encode(b"my+app:s%3Ae%2Fc"))
        );
    }

    #[test]
    fn parses_success_and_keeps_old_refresh_token() {
        let prev = Tokens::new("old").with_refresh_token("r1");
        let t = parse(
            &resp(
                200,
                r#"{"access_token":"a2","token_type":"Bearer","expires_in":60,"scope":"x"}"#,
            ),
            &prev,
        )
        .unwrap();
        assert_eq!(t.access_token().secret(), "a2");
        assert_eq!(t.refresh_token().unwrap().secret(), "r1");
        assert_eq!(t.expires_in(), Some(std::time::Duration::from_secs(60)));
        assert_eq!(t.scope(), Some("x"));
        let t = parse(
            &resp(
                200,
                r#"{"access_token":"a3","refresh_token":"r2","expires_in":"30"}"#,
            ),
            &prev,
        )
        .unwrap();
        assert_eq!(t.refresh_token().unwrap().secret(), "r2");

        // The token type is kept as given, in any spelling; Bearer when absent.
        for body in [
            r#"{"access_token":"a","token_type":"bearer"}"#,
            r#"{"access_token":"a","token_type":"BEARER"}"#,
            r#"{"access_token":"a"}"#,
        ] {
            let t = parse(&resp(200, body), &prev).unwrap();
            assert_eq!(t.kind(), TokenType::Bearer, "{body}");
            assert_eq!(t.token_type(), "Bearer", "{body}");
        }
    }

    #[test]
    fn rejects_hostile_success_bodies() {
        let prev = Tokens::new("old");
        for body in [
            "<html>oops</html>",
            "[]",
            r#"{"token_type":"bearer"}"#,
            r#"{"access_token":7}"#,
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"access_token":"a","expires_in":-1}"#,
            r#"{"access_token":"a","expires_in":1e300}"#,
            r#"{"access_token":"a","expires_in":"soon"}"#,
            r#"{"access_token":"a\r\nX: y"}"#,
            r#"{"access_token":""}"#,
        ] {
            let err = parse(&resp(200, body), &prev).unwrap_err();
            assert!(
                matches!(err, RefreshError::InvalidResponse(_)),
                "{body}: {err:?}"
            );
            assert!(!err.to_string().contains("oops"));
        }
    }

    #[test]
    fn classifies_errors() {
        let prev = Tokens::new("old");
        let e = parse(
            &resp(400, r#"{"error":"invalid_grant","error_description":"x"}"#),
            &prev,
        )
        .unwrap_err();
        assert!(e.is_terminal(), "{e:?}");
        let e = parse(&resp(401, r#"{"error":"invalid_client\r\n"}"#), &prev).unwrap_err();
        assert!(
            matches!(&e, RefreshError::OAuth { error, .. } if error == "invalid_client"),
            "{e:?}"
        );
        assert!(!e.is_terminal());
        for status in [400, 429, 500, 503] {
            let e = parse(&resp(status, "not json"), &prev).unwrap_err();
            assert!(
                matches!(e, RefreshError::Status { .. }) && !e.is_terminal(),
                "{e:?}"
            );
        }
    }

    #[test]
    fn an_oauth_error_is_an_error_whatever_its_status() {
        let prev = Tokens::new("old").with_refresh_token("r");
        // GitHub: a dead refresh token is 200 {"error":"bad_refresh_token"}; it ends the session.
        let e = parse(
            &resp(
                200,
                r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#,
            ),
            &prev,
        )
        .unwrap_err();
        assert!(e.is_terminal(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the refresh token was rejected (200, bad_refresh_token: The refresh token passed is incorrect or expired.)"
        );
        // 200 with another code: an error that keeps the session, the description kept.
        let e = parse(
            &resp(200, r#"{"error":"incorrect_client_credentials","error_description":"The client_id and/or client_secret passed are incorrect."}"#),
            &prev,
        )
        .unwrap_err();
        assert!(!e.is_terminal(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the token endpoint answered 200 with error incorrect_client_credentials: The client_id and/or client_secret passed are incorrect."
        );
        // 403 with invalid_grant: the code decides, not the status.
        assert!(parse(&resp(403, r#"{"error":"invalid_grant"}"#), &prev)
            .unwrap_err()
            .is_terminal());
        // A 5xx or 429 is never a verdict on the session, whatever its body says.
        for status in [429, 500, 503] {
            let e = parse(&resp(status, r#"{"error":"invalid_grant"}"#), &prev).unwrap_err();
            assert!(matches!(e, RefreshError::Status { .. }), "{status}: {e:?}");
        }
    }

    #[test]
    fn an_answer_with_an_access_token_is_a_success_whatever_else_it_says() {
        let prev = Tokens::new("old").with_refresh_token("r1");
        let t = parse(
            &resp(
                200,
                r#"{"access_token":"a2","refresh_token":"r2","error":"invalid_grant"}"#,
            ),
            &prev,
        )
        .unwrap();
        assert_eq!(t.refresh_token().unwrap().secret(), "r2");
    }

    #[test]
    fn reserved_parameter_names_are_refused_in_any_case_and_spelling() {
        let with = |name: &str| {
            let mut p = Params::default();
            p.push("audience".into(), "https://api".into());
            p.push(name.into(), "x".into());
            p.problem()
        };
        for name in [
            "scope",
            "Scope",
            "GRANT_TYPE",
            "Client_Id",
            " scope",
            "scope ",
            "",
            "a\nb",
            "a b",
        ] {
            assert_eq!(with(name), Some(RESERVED_PARAM), "{name:?}");
        }
        for name in ["resource", "audience", "prompt", "scopes"] {
            assert_eq!(with(name), None, "{name:?}");
        }
    }

    #[test]
    fn error_codes_and_descriptions_echoing_a_secret_are_redacted() {
        let secrets = ["rt-0123456789abcdef", "s3cret"];
        let oauth = |error: &str| RefreshError::OAuth {
            status: 400,
            error: error.into(),
            description: Some(format!("about {error}")),
        };
        for echo in ["invalid_request rt-0123456789abcdef", "s3cret"] {
            let e = redact_echo(oauth(echo), &secrets);
            assert!(
                matches!(&e, RefreshError::OAuth { error, description: Some(d), .. }
                    if error == "[redacted]" && d == "[redacted]"),
                "{echo}: {e:?}"
            );
        }
        let e = redact_echo(oauth("invalid_client"), &secrets);
        assert!(matches!(&e, RefreshError::OAuth { error, .. } if error == "invalid_client"));
        let e = redact_echo(
            RefreshError::InvalidGrant {
                status: 400,
                error: Some("invalid_grant".into()),
                description: Some("token s3cret is revoked".into()),
            },
            &secrets,
        );
        assert_eq!(
            e.to_string(),
            "the refresh token was rejected (400, invalid_grant: [redacted])"
        );
    }
}
