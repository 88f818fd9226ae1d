//! The login's two secrets: the PKCE verifier (RFC 7636) and the `state` (RFC 6749 §10.12),
//! each 32 bytes from the operating system's cryptographic source.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::encoding::base64url_encode;
use crate::login::error::BrowserError;
use crate::redacted::Redacted;

/// One login's verifier and state, and the challenge sent for the verifier. `Debug` hides
/// all three.
pub(crate) struct Pkce {
    /// 43 base64url characters (32 random bytes): sent only to the token endpoint.
    verifier: String,
    /// 43 base64url characters (32 random bytes): in the authorization URL, and back.
    state: String,
    /// `BASE64URL(SHA256(verifier))`.
    challenge: String,
}

impl Pkce {
    /// A new verifier and state, from the OS's cryptographic source (`getrandom`, which
    /// ring, under ureq's rustls, already uses): no fallback.
    ///
    /// # Errors
    /// [`BrowserError::Randomness`] when the OS source fails.
    pub(crate) fn new() -> Result<Pkce, BrowserError> {
        let mut bytes = [0u8; 64];
        getrandom::getrandom(&mut bytes).map_err(|_| BrowserError::Randomness)?;
        let verifier = base64url_encode(&bytes[..32]);
        let state = base64url_encode(&bytes[32..]);
        let challenge = challenge_s256(&verifier);
        Ok(Pkce {
            verifier,
            state,
            challenge,
        })
    }

    pub(crate) fn verifier(&self) -> &str {
        &self.verifier
    }

    pub(crate) fn state(&self) -> &str {
        &self.state
    }

    pub(crate) fn challenge(&self) -> &str {
        &self.challenge
    }

    /// True when `given` is this login's state, compared in constant time (a callback's
    /// timing says nothing about how much of a guessed state was right).
    pub(crate) fn state_matches(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(self.state.as_bytes())))
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("verifier", &Redacted)
            .field("state", &Redacted)
            .finish_non_exhaustive()
    }
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2): the `S256` challenge. The test kit's
/// server checks exchanges with the same function.
pub(crate) fn challenge_s256(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64url_encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example_challenge() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifier_and_state_are_43_unreserved_characters_and_differ() {
        let (a, b) = (Pkce::new().unwrap(), Pkce::new().unwrap());
        for s in [a.verifier(), a.state(), a.challenge()] {
            assert_eq!(s.len(), 43);
            assert!(s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        }
        assert_ne!(a.verifier(), a.state());
        assert_ne!(a.verifier(), b.verifier());
        assert_ne!(a.state(), b.state());
        assert_eq!(a.challenge(), challenge_s256(a.verifier()));
    }

    #[test]
    fn state_compares_whole() {
        let p = Pkce::new().unwrap();
        let state = p.state().to_owned();
        assert!(p.state_matches(Some(&state)));
        assert!(!p.state_matches(Some(&state[..42])));
        assert!(!p.state_matches(Some(&format!("{state}x"))));
        assert!(!p.state_matches(Some("")));
        assert!(!p.state_matches(None));
        let debug = format!("{p:?}");
        assert!(!debug.contains(&state) && !debug.contains(p.verifier()));
    }
}
