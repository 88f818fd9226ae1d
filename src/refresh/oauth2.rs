//! RFC 6749 grants: refresh_token (§6) and client_credentials (§4.4).

use std::fmt;
use std::time::Duration;

use ureq::Agent;

use super::{expires_in_field, json_object, string_field, tokens_from, Refresh};
use crate::error::RefreshError;
use crate::login::{revoke, RevocationError};
use crate::tokens::{ClientSecret, Tokens};
use crate::transport::{post_token_request, PostError, TokenResponse};
use crate::util::{base64_encode, form_body, form_encode_into, EndpointUrl};

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
/// both grants here, the device flow (`login/device.rs`) and revocation (`login/revoke.rs`).
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

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("method", &self.method())
            .finish()
    }
}

/// Interprets a token endpoint's answer (RFC 6749 §5.1 success, §5.2 error).
pub(crate) fn parse(resp: &TokenResponse, previous: &Tokens) -> Result<Tokens, RefreshError> {
    match resp.status {
        200..=299 => {
            let map = json_object(&resp.body)?;
            let access = string_field(&map, "access_token", "access_token is not a string")?
                .ok_or(RefreshError::InvalidResponse("missing access_token"))?;
            if let Some(tt) = string_field(&map, "token_type", "token_type is not a string")? {
                if !tt.eq_ignore_ascii_case("bearer") {
                    return Err(RefreshError::InvalidResponse("token_type is not bearer"));
                }
            }
            let refresh = string_field(&map, "refresh_token", "refresh_token is not a string")?;
            let scope = string_field(&map, "scope", "scope is not a string")?;
            let expires_in = expires_in_field(&map, "expires_in")?;
            tokens_from(access, refresh, expires_in, scope, previous)
        }
        400 | 401 => {
            let code = json_object(&resp.body)
                .ok()
                .and_then(|m| m.get("error").and_then(|e| e.as_str()).map(sanitize_code));
            match code {
                Some(c) if c == "invalid_grant" => Err(RefreshError::InvalidGrant {
                    status: resp.status,
                    error: Some(c),
                }),
                Some(c) => Err(RefreshError::OAuth {
                    status: resp.status,
                    error: c,
                }),
                None => Err(resp.unexpected()),
            }
        }
        _ => Err(resp.unexpected()),
    }
}

/// Keeps only the characters RFC 6749 §5.2 allows in `error`, at most 64 of them, so a hostile
/// server cannot smuggle control characters (or a long echo of a token) into our errors.
/// An echo of a credential is hidden by [`redact_echo`].
pub(crate) fn sanitize_code(code: &str) -> String {
    code.chars()
        .filter(|c| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        .take(64)
        .collect()
}

/// Hides an `error` code that echoes one of `secrets` (a broken or hostile server repeating
/// the refresh token or client secret it was sent), so it cannot reach our errors and logs.
/// A code sharing 8 consecutive characters with a secret (or all of a shorter one) counts:
/// `sanitize_code` may have cut the echo short.
pub(crate) fn redact_echo(err: RefreshError, secrets: &[&str]) -> RefreshError {
    match err {
        RefreshError::OAuth { status, error } => RefreshError::OAuth {
            status,
            error: redact_code(error, secrets),
        },
        e => e,
    }
}

/// `code`, or `[redacted]` if it echoes one of `secrets` (see [`redact_echo`]).
pub(crate) fn redact_code(code: String, secrets: &[&str]) -> String {
    const WINDOW: usize = 8;
    let echoes = |secret: &str| {
        if secret.len() <= WINDOW {
            return !secret.is_empty() && code.contains(secret);
        }
        code.as_bytes()
            .windows(WINDOW)
            .any(|w| secret.as_bytes().windows(WINDOW).any(|s| s == w))
    };
    if secrets.iter().any(|s| echoes(s)) {
        "[redacted]".into()
    } else {
        code
    }
}

/// The RFC 6749 §6 `refresh_token` grant, built by
/// [`AuthServer::refresh_grant`](crate::AuthServer::refresh_grant) with the server's client
/// identity, token endpoint and revocation endpoint (if any).
///
/// ```
/// use tokengate::{AuthServer, ClientAuth};
/// let r = AuthServer::new("https://auth.example.com/oauth/token")
///     .client_id("my-app")
///     .client_secret("s3cret")          // HTTP Basic by default once a secret is set
///     .auth_method(ClientAuth::Post)    // … or in the form body
///     .refresh_grant()
///     .scope("read write");
/// assert!(!format!("{r:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug)]
pub struct OAuth2Refresh {
    url: EndpointUrl,
    revocation_url: Option<EndpointUrl>,
    client: Client,
    scope: Option<String>,
}

impl OAuth2Refresh {
    /// For [`AuthServer::refresh_grant`](crate::AuthServer::refresh_grant).
    pub(crate) fn from_server(
        url: EndpointUrl,
        revocation_url: Option<EndpointUrl>,
        client: Client,
    ) -> Self {
        OAuth2Refresh {
            url,
            revocation_url,
            client,
            scope: None,
        }
    }

    /// Requests this scope on refresh. Defaults to none (the server keeps the original scope).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

impl Refresh for OAuth2Refresh {
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError> {
        let rt = current
            .refresh_token()
            .ok_or(RefreshError::NoRefreshToken)?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", rt.secret()),
        ];
        form.extend(self.scope.as_deref().map(|s| ("scope", s)));
        let resp = self.client.post_form(agent, &self.url.0, form, None)?;
        let secrets = [
            rt.secret(),
            current.access_token().secret(),
            self.client.secret_str(),
        ];
        parse(&resp, current).map_err(|e| redact_echo(e, &secrets))
    }

    fn can_refresh(&self, current: &Tokens) -> bool {
        current.refresh_token().is_some()
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.url.0)
    }

    fn revoke(&self, agent: &Agent, tokens: &Tokens) -> Option<Result<(), RevocationError>> {
        let url = self.revocation_url.as_ref()?;
        let (token, hint) = match tokens.refresh_token() {
            Some(rt) => (rt.secret(), "refresh_token"),
            None => (tokens.access_token().secret(), "access_token"),
        };
        Some(revoke(agent, &url.0, &self.client, token, hint))
    }

    fn revocation_endpoint(&self) -> Option<&str> {
        self.revocation_url.as_ref().map(|u| u.0.as_str())
    }
}

/// The RFC 6749 §4.4 `client_credentials` grant, for machine clients with no refresh token:
/// a token is acquired on the first request and re-acquired when it expires or draws a 401.
/// Built by [`AuthServer::client_credentials`](crate::AuthServer::client_credentials) with the
/// server's client identity and token endpoint.
///
/// ```
/// use tokengate::AuthServer;
/// let cc = AuthServer::new("https://auth.example.com/oauth/token")
///     .client_id("svc")
///     .client_secret("s3cret")          // HTTP Basic by default
///     .client_credentials()
///     .scope("reports:read");
/// # let _ = cc;
/// ```
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    url: EndpointUrl,
    client: Client,
    scope: Option<String>,
}

impl ClientCredentials {
    /// For [`AuthServer::client_credentials`](crate::AuthServer::client_credentials).
    pub(crate) fn from_server(url: EndpointUrl, client: Client) -> Self {
        ClientCredentials {
            url,
            client,
            scope: None,
        }
    }

    /// Requests this scope. Defaults to none.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

impl Refresh for ClientCredentials {
    fn refresh(&self, agent: &Agent, current: &Tokens) -> Result<Tokens, RefreshError> {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(self.scope.as_deref().map(|s| ("scope", s)));
        let resp = self.client.post_form(agent, &self.url.0, form, None)?;
        // §4.4.3: a refresh token SHOULD NOT be included; one that is, is dropped (this grant
        // re-acquires instead of refreshing, and nothing would ever send it).
        let secret = self.client.secret_str();
        let tokens = parse(&resp, &Tokens::new("-")).map_err(|e| redact_echo(e, &[secret]))?;
        let _ = current;
        Ok(tokens.without_refresh_token())
    }

    fn acquires_without_tokens(&self) -> bool {
        true
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.url.0)
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
    fn error_codes_echoing_a_secret_are_redacted() {
        let secrets = ["rt-0123456789abcdef", "s3cret"];
        let oauth = |error: &str| RefreshError::OAuth {
            status: 400,
            error: error.into(),
        };
        for echo in [
            "rt-0123456789abcdef",
            "invalid_request rt-0123456789abcdef",
            "bad token: rt-0123456", // cut short
            "s3cret",
        ] {
            let e = redact_echo(oauth(echo), &secrets);
            assert!(
                matches!(&e, RefreshError::OAuth { error, .. } if error == "[redacted]"),
                "{echo}: {e:?}"
            );
        }
        let e = redact_echo(oauth("invalid_client"), &secrets);
        assert!(matches!(&e, RefreshError::OAuth { error, .. } if error == "invalid_client"));
        let e = redact_echo(oauth("invalid_scope"), &[""]);
        assert!(matches!(&e, RefreshError::OAuth { error, .. } if error == "invalid_scope"));
    }
}
