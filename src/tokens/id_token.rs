//! Reading an [`IdToken`]'s claims for display, unverified: [`IdToken::unverified_claims`].

use std::fmt;

use serde_json::{Map, Value};

use super::{IdToken, MAX_TOKEN_LEN};
use crate::encoding::base64url_decode;

/// Why [`IdToken::unverified_claims`] could not read an ID token. The message never quotes
/// the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// Longer than 16384 bytes, the longest token tokengate accepts.
    #[error("id_token is longer than 16384 bytes")]
    TooLong,
    /// Not three segments separated by dots (a signed JWT, RFC 7515 compact form). An
    /// encrypted ID token (JWE, five segments) is not decrypted and reported as this.
    #[error("id_token is not a signed JWT (three segments separated by dots)")]
    NotAJwt,
    /// The payload (the middle segment) is not base64url (RFC 4648 §5).
    #[error("id_token payload is not base64url")]
    NotBase64url,
    /// The payload is not a JSON object.
    #[error("id_token payload is not a JSON object")]
    NotAJsonObject,
}

/// The claims of an [`IdToken`], as [`IdToken::unverified_claims`] read them: **not
/// verified**, for display only (see there). Each accessor gives the claim when it is a
/// string, `None` when it is absent or of another type.
///
/// `Debug` prints only which of the four claims are present, not their values (personal
/// data).
#[derive(Clone)]
pub struct IdTokenClaims {
    claims: Map<String, Value>,
}

impl IdTokenClaims {
    fn string(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// `sub`: the user's identifier at the issuer.
    pub fn sub(&self) -> Option<&str> {
        self.string("sub")
    }

    /// `email`: the user's email address (OpenID Connect Core §5.1). Whether the issuer
    /// verified it (`email_verified`) is not looked at.
    pub fn email(&self) -> Option<&str> {
        self.string("email")
    }

    /// `preferred_username`: the name the user goes by at the issuer (§5.1); not unique, not
    /// stable.
    pub fn preferred_username(&self) -> Option<&str> {
        self.string("preferred_username")
    }

    /// `name`: the user's full name, for display (§5.1).
    pub fn name(&self) -> Option<&str> {
        self.string("name")
    }
}

impl fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let has = |name| self.string(name).is_some();
        f.debug_struct("IdTokenClaims")
            .field("sub", &has("sub"))
            .field("email", &has("email"))
            .field("preferred_username", &has("preferred_username"))
            .field("name", &has("name"))
            .finish()
    }
}

impl IdToken {
    /// Decodes the token's payload (its claims) **without verifying anything**.
    ///
    /// # Security
    /// **For display only** ("logged in as alice@example.com"): the signature, the issuer
    /// (`iss`), the audience (`aud`), the expiry (`exp`) and the nonce are **not checked**,
    /// so the claims may be forged, meant for another client, or stale. **Never use them for
    /// authorization** or to decide who the user is for anything that matters: that takes a
    /// JWT library that verifies the signature against the issuer's keys. tokengate received
    /// the token from the token endpoint over the connection it trusts, and does no more.
    ///
    /// ```
    /// use tokengate::Tokens;
    ///
    /// // {"alg":"none"} . {"sub":"248289761001","email":"alice@example.com"} . (no signature)
    /// let t = Tokens::new("access").with_id_token(
    ///     "eyJhbGciOiJub25lIn0.eyJzdWIiOiIyNDgyODk3NjEwMDEiLCJlbWFpbCI6ImFsaWNlQGV4YW1wbGUuY29tIn0.",
    /// );
    /// if let Some(id) = t.id_token() {
    ///     let claims = id.unverified_claims()?;
    ///     let who = claims.email().or(claims.preferred_username()).or(claims.sub());
    ///     assert_eq!(who, Some("alice@example.com"));
    /// }
    /// # Ok::<(), tokengate::IdTokenError>(())
    /// ```
    ///
    /// # Errors
    /// An [`IdTokenError`] when the token is longer than 16384 bytes, is not three segments
    /// separated by dots, or its payload is not base64url or not a JSON object. Never panics.
    pub fn unverified_claims(&self) -> Result<IdTokenClaims, IdTokenError> {
        let token = self.secret();
        if token.len() > MAX_TOKEN_LEN {
            return Err(IdTokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(_header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdTokenError::NotAJwt);
        };
        let bytes = base64url_decode(payload).ok_or(IdTokenError::NotBase64url)?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(claims)) => Ok(IdTokenClaims { claims }),
            _ => Err(IdTokenError::NotAJsonObject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::base64_encode;

    fn b64url(bytes: &[u8]) -> String {
        base64_encode(bytes)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    }

    fn jwt(payload: &str) -> IdToken {
        IdToken::new(format!(
            "{}.{}.c2ln",
            b64url(br#"{"alg":"RS256"}"#),
            b64url(payload.as_bytes())
        ))
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let c = jwt(r#"{"sub":"42","email":"alice@example.com","preferred_username":"alice","name":"Alice A.","email_verified":true}"#)
            .unverified_claims()
            .unwrap();
        assert_eq!(c.sub(), Some("42"));
        assert_eq!(c.email(), Some("alice@example.com"));
        assert_eq!(c.preferred_username(), Some("alice"));
        assert_eq!(c.name(), Some("Alice A."));
        // Absent, or not a string: None.
        let c = jwt(r#"{"sub":42,"email":null,"name":["a"]}"#)
            .unverified_claims()
            .unwrap();
        assert_eq!((c.sub(), c.email(), c.name()), (None, None, None));
        assert_eq!(c.preferred_username(), None);
        // Padded base64url and an empty signature (an unsecured JWT) are read too.
        let padded = IdToken::new(format!("e30.{}.", base64_encode(br#"{"sub":"p"}"#)));
        assert_eq!(padded.unverified_claims().unwrap().sub(), Some("p"));
    }

    /// Hostile and broken tokens give a typed error, never a panic, and the error (and the
    /// claims' `Debug`) quotes nothing of the token.
    #[test]
    fn malformed_tokens_are_typed_errors_that_quote_nothing() {
        let huge_payload = format!("{{\"sub\":\"{}\"}}", "S".repeat(MAX_TOKEN_LEN));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let cases: Vec<(IdToken, IdTokenError)> = vec![
            (IdToken::new(""), IdTokenError::NotAJwt),
            (IdToken::new("SECRET"), IdTokenError::NotAJwt),
            (IdToken::new("SECRET.e30"), IdTokenError::NotAJwt),
            (IdToken::new("a.e30.c.d.e"), IdTokenError::NotAJwt), // JWE: five segments
            (IdToken::new("a.e30.c."), IdTokenError::NotAJwt),
            (IdToken::new("a.SECRET+/.c"), IdTokenError::NotBase64url),
            (IdToken::new("a.e30x1.c"), IdTokenError::NotBase64url), // impossible length
            (IdToken::new("a.é.c"), IdTokenError::NotBase64url),
            (IdToken::new("a..c"), IdTokenError::NotAJsonObject), // empty payload
            (jwt("[1,2]"), IdTokenError::NotAJsonObject),
            (jwt(r#""SECRET""#), IdTokenError::NotAJsonObject),
            (jwt("null"), IdTokenError::NotAJsonObject),
            (jwt("{\"sub\":"), IdTokenError::NotAJsonObject),
            (
                IdToken::new(format!("a.{}.c", b64url(&[0xff, 0xfe, b'{', b'}']))),
                IdTokenError::NotAJsonObject,
            ),
            (jwt(&deep[..12_000]), IdTokenError::NotAJsonObject), // nesting past serde's limit
            (jwt(&huge_payload), IdTokenError::TooLong),
            (
                IdToken::new("S".repeat(10 * 1024 * 1024)),
                IdTokenError::TooLong,
            ),
        ];
        for (token, expected) in cases {
            let e = token.unverified_claims().unwrap_err();
            assert_eq!(e, expected, "{:.40}", token.secret());
            let text = format!("{e} {e:?}");
            assert!(!text.contains("SECRET") && !text.contains("SSS"), "{text}");
        }
        let c = jwt(r#"{"sub":"SECRET-sub","email":"SECRET@example.com"}"#)
            .unverified_claims()
            .unwrap();
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(
            debug.contains("email: true") && debug.contains("name: false"),
            "{debug}"
        );
    }
}
