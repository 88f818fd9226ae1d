//! The clients a [`TestServer`](super::TestServer) knows, and how a request proves it is one
//! (RFC 6749 §2.3).

use std::collections::HashMap;
use std::fmt;

use super::http::{Reply, Request};
use super::journal::ClientAuthUsed;
use crate::encoding::{base64_decode, form_decode};
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

/// The client a request claims to be and how, before any check: for the journal.
pub(crate) fn claimed(
    req: &Request,
    form: &HashMap<String, String>,
) -> (Option<String>, ClientAuthUsed) {
    if let Some((id, _)) = basic(req) {
        return (Some(id), ClientAuthUsed::Basic);
    }
    let how = if form.contains_key("client_secret") {
        ClientAuthUsed::Post
    } else {
        ClientAuthUsed::None
    };
    (form.get("client_id").cloned(), how)
}

/// HTTP Basic credentials: id and secret, each form-urlencoded (RFC 6749 §2.3.1).
fn basic(req: &Request) -> Option<(String, String)> {
    let value = req.header("authorization")?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(rest.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let mut pairs = form_decode(format!("i={id}&s={secret}").as_bytes()).into_iter();
    Some((pairs.next()?.1, pairs.next()?.1))
}

/// Authenticates the client of a token, device or revocation request (RFC 6749 §2.3).
pub(crate) fn authenticate(
    clients: &[TestClient],
    req: &Request,
    form: &HashMap<String, String>,
) -> Result<String, Reply> {
    let invalid = |basic_used: bool| {
        let reply = Reply::oauth_error(401, "invalid_client", "client authentication failed");
        if basic_used {
            // RFC 6749 §5.2: a failed Basic authentication is challenged.
            let challenge = "Basic realm=\"tokengate-testing\"".to_owned();
            reply.with_header("www-authenticate", challenge)
        } else {
            reply
        }
    };
    let (id, secret, basic_used) = match basic(req) {
        Some(_) if form.contains_key("client_secret") => {
            return Err(Reply::oauth_error(
                400,
                "invalid_request",
                "more than one client authentication",
            ));
        }
        Some((id, secret)) => (id, Some(secret), true),
        None if req.header("authorization").is_some() => return Err(invalid(true)),
        None => match form.get("client_id") {
            Some(id) => (id.clone(), form.get("client_secret").cloned(), false),
            None => return Err(invalid(false)),
        },
    };
    if form.get("client_id").is_some_and(|f| *f != id) {
        return Err(Reply::oauth_error(
            400,
            "invalid_request",
            "client_id differs from the authenticated client",
        ));
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
        Err(invalid(basic_used))
    }
}
