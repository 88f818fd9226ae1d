//! [`TokenType`]: how an access token is presented to the API, and the one place its
//! `Authorization` value is built.

use ureq::http::HeaderValue;

use super::AccessToken;

/// The type of an access token (RFC 6749 §7.1), as the token endpoint gave it: how the token
/// is presented to the API. Bearer (RFC 6750) is the only type tokengate accepts today; a
/// token response, a stored record or a serialized [`Tokens`](super::Tokens) of another type
/// is refused. Another scheme (a DPoP-bound token, RFC 9449) would be a variant here, with
/// its header built in [`TokenType::header`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum TokenType {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    #[default]
    Bearer,
}

impl TokenType {
    /// Reads a `token_type` as a token response, a record or the `serde` form spells it:
    /// compared without regard to case (RFC 6749 §5.1). `None` for a type tokengate cannot
    /// present.
    pub(crate) fn parse(s: &str) -> Option<TokenType> {
        s.eq_ignore_ascii_case("bearer")
            .then_some(TokenType::Bearer)
    }

    /// As records and the `serde` form write it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenType::Bearer => "Bearer",
        }
    }

    /// The `Authorization` value that presents `access`: built once, when tokens are stamped,
    /// and marked sensitive. `None` if it cannot be a header value. One allocation of the
    /// exact size (no formatting machinery: it runs on every refresh).
    pub(crate) fn header(self, access: &AccessToken) -> Option<HeaderValue> {
        // The authentication scheme is spelled as the type is written (RFC 6750 §2.1,
        // RFC 9449 §7.1).
        let scheme = self.as_str();
        let secret = access.secret();
        let mut text = String::with_capacity(scheme.len() + 1 + secret.len());
        text.push_str(scheme);
        text.push(' ');
        text.push_str(secret);
        let mut value = HeaderValue::try_from(text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_in_any_case_is_the_only_type_and_its_header_is_sensitive() {
        for s in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(TokenType::parse(s), Some(TokenType::Bearer), "{s}");
        }
        for s in ["", "mac", "DPoP", "Bearer ", "N_A"] {
            assert_eq!(TokenType::parse(s), None, "{s}");
        }
        assert_eq!(TokenType::default(), TokenType::Bearer);
        assert_eq!(TokenType::Bearer.as_str(), "Bearer");
        let header = TokenType::Bearer.header(&AccessToken::new("abc")).unwrap();
        assert_eq!(header, "Bearer abc");
        assert!(header.is_sensitive());
        assert!(TokenType::Bearer
            .header(&AccessToken::new("a\r\nb"))
            .is_none());
    }
}
