//! The clients a [`TestServer`](super::TestServer) knows, and how a request proves it is one
//! (RFC 6749 §2.3).

use std::collections::HashMap;
use std::fmt;

use super::journal::ClientAuthUsed;
use super::rules::Refusal;
use crate::encoding::{base64_decode, form_component};
use crate::http_server::{Reply, Request};
use crate::tokens::ClientSecret;

/// The confidential client every server knows unless [`TestServerBuilder::client`](super::TestServerBuilder::client) names
/// others: id `test-app`, secret [`CLIENT_SECRET`].
pub const CLIENT_ID: &str = "test-app";
/// The secret of [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "test-secret";
/// The public client (no secret) every server knows unless [`TestServerBuilder::client`](super::TestServerBuilder::client)
/// names others.
pub const PUBLIC_CLIENT_ID: &str = "public-app";

/// A client the server knows. `Debug` hides the secret.
#[derive(Clone)]
pub struct TestClient {
    pub(crate) id: String,
    pub(crate) secret: Option<ClientSecret>,
}

impl TestClient {
    /// A confidential client: it must authenticate with `secret`, by HTTP Basic
    /// (`client_secret_basic`) or in the form (`client_secret_post`), either accepted.
    pub fn confidential(id: impl Into<String>, secret: impl Into<String>) -> TestClient {
        TestClient {
            id: id.into(),
            secret: Some(ClientSecret::new(secret)),
        }
    }

    /// A public client (RFC 6749 §2.1): it sends its `client_id` and no secret.
    pub fn public(id: impl Into<String>) -> TestClient {
        TestClient {
            id: id.into(),
            secret: None,
        }
    }
}

impl fmt::Debug for TestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClient")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// How a request claims to authenticate, before any check: for the journal, read from the
/// same [`Authorization`] that [`authenticate`] checks (a Basic header that cannot be
/// decoded names no client).
pub(crate) fn claimed(
    auth: &Authorization,
    form: &HashMap<String, String>,
) -> (Option<String>, ClientAuthUsed) {
    match auth {
        Authorization::Basic(credentials) => (
            credentials.as_ref().map(|(id, _)| id.clone()),
            ClientAuthUsed::Basic,
        ),
        Authorization::Other => (form.get("client_id").cloned(), ClientAuthUsed::OtherScheme),
        Authorization::None if form.contains_key("client_secret") => {
            (form.get("client_id").cloned(), ClientAuthUsed::Post)
        }
        Authorization::None => (form.get("client_id").cloned(), ClientAuthUsed::None),
    }
}

/// A request's `Authorization` header, as client authentication reads it: decoded once per
/// request, for the journal ([`claimed`]) and the check ([`authenticate`]) alike.
pub(crate) enum Authorization {
    None,
    /// Basic: the id and secret, each form-urlencoded before base64 (RFC 6749 §2.3.1);
    /// `None` if it cannot be decoded.
    Basic(Option<(String, String)>),
    /// Any other scheme (a bearer token sent to the token endpoint, say).
    Other,
}

impl Authorization {
    pub fn of(req: &Request) -> Authorization {
        let Some(value) = req.header("authorization") else {
            return Authorization::None;
        };
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("basic") {
            return Authorization::Other;
        }
        let decoded = base64_decode(rest.trim()).and_then(|b| String::from_utf8(b).ok());
        Authorization::Basic(decoded.and_then(|d| {
            let (id, secret) = d.split_once(':')?;
            Some((
                form_component(id.as_bytes()),
                form_component(secret.as_bytes()),
            ))
        }))
    }
}

/// Why a client is not authenticated: the refusal, and whether to challenge Basic.
pub(crate) struct AuthFailure {
    pub refusal: Refusal,
    basic_used: bool,
}

impl AuthFailure {
    fn invalid_client(basic_used: bool) -> AuthFailure {
        let refusal = Refusal {
            status: 401,
            error: "invalid_client",
            description: "client authentication failed",
        };
        AuthFailure {
            refusal,
            basic_used,
        }
    }

    fn invalid_request(description: &'static str) -> AuthFailure {
        let refusal = Refusal {
            status: 400,
            error: "invalid_request",
            description,
        };
        AuthFailure {
            refusal,
            basic_used: false,
        }
    }

    /// The answer: the refusal, challenged after a failed Basic authentication (RFC 6749
    /// §5.2).
    pub fn reply(&self) -> Reply {
        let r = self.refusal;
        let reply = Reply::oauth_error(r.status, r.error, r.description);
        if self.basic_used && r.status == 401 {
            let challenge = "Basic realm=\"tokengate-testing\"".to_owned();
            reply.with_header("www-authenticate", challenge)
        } else {
            reply
        }
    }
}

/// Authenticates the client of a token, device or revocation request (RFC 6749 §2.3):
/// Basic or the form for a confidential client, its `client_id` alone for a public one.
pub(crate) fn authenticate(
    clients: &[TestClient],
    auth: &Authorization,
    form: &HashMap<String, String>,
) -> Result<String, AuthFailure> {
    let (id, secret, basic_used) = match auth {
        Authorization::Basic(_) if form.contains_key("client_secret") => {
            return Err(AuthFailure::invalid_request(
                "more than one client authentication",
            ));
        }
        Authorization::Basic(Some((id, secret))) => (id.clone(), Some(secret.clone()), true),
        Authorization::Basic(None) => return Err(AuthFailure::invalid_client(true)),
        Authorization::Other => return Err(AuthFailure::invalid_client(false)),
        Authorization::None => match form.get("client_id") {
            Some(id) => (id.clone(), form.get("client_secret").cloned(), false),
            None => return Err(AuthFailure::invalid_client(false)),
        },
    };
    if form.get("client_id").is_some_and(|f| *f != id) {
        let why = "client_id differs from the authenticated client";
        return Err(AuthFailure::invalid_request(why));
    }
    let known = clients.iter().find(|c| c.id == id);
    let ok = match (known.map(|c| &c.secret), &secret) {
        (Some(Some(expected)), Some(given)) => expected.secret() == given,
        (Some(None), None) => true,
        _ => false,
    };
    if ok {
        Ok(id)
    } else {
        Err(AuthFailure::invalid_client(basic_used))
    }
}
