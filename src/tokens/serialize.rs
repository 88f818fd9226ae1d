//! `Serialize`/`Deserialize` for [`Tokens`], for stores of your own (a database, a keychain).
//!
//! The shape is a token response of RFC 6749 §5.1 with an absolute expiry instead of the
//! relative `expires_in`, so a stored value stays right however long it is kept:
//!
//! ```json
//! {
//!   "access_token": "…",
//!   "token_type": "Bearer",
//!   "refresh_token": "…",
//!   "scope": "read write",
//!   "id_token": "…",
//!   "expires_at_unix_ms": 1767225600000,
//!   "issued_at_unix_ms": 1767222000000,
//!   "lineage": "9f0c41d27a3be658"
//! }
//! ```
//!
//! `token_type` is the type the token endpoint gave (see [`Tokens::token_type`]); one without
//! it reads as Bearer. `id_token` is the OpenID Connect ID token (see [`Tokens::id_token`]);
//! values written before it was kept read as without one. The other optional fields are left
//! out when unknown. `lineage` (see [`Tokens::lineage`]) is
//! the login the tokens descend from; a store that keeps it lets the client resolve a login
//! or logout it could not write at once. The times are the ones `FileStore` writes.

use std::time::SystemTime;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{TokenType, Tokens};
use crate::timing::{from_unix_ms, unix_ms_of};

/// The serialized form, borrowed for writing.
#[derive(Serialize)]
struct Out<'a> {
    access_token: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_at_unix_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lineage: Option<String>,
}

/// The serialized form, owned for reading. Unknown fields are ignored.
#[derive(Deserialize)]
struct In {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    expires_at_unix_ms: Option<u64>,
    #[serde(default)]
    issued_at_unix_ms: Option<u64>,
    #[serde(default)]
    lineage: Option<String>,
}

/// **The output holds the tokens in clear**: it is for a store you trust (a keychain, an
/// encrypted column), never for a log. A relative `expires_in` not yet turned into an absolute
/// expiry (tokens that never entered a client) is counted from the moment of serializing.
impl Serialize for Tokens {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (expires_at, issued_at) = self.absolute_times(SystemTime::now());
        Out {
            access_token: self.access.secret(),
            token_type: self.token_type.as_str(),
            refresh_token: self.refresh.as_ref().map(|r| r.secret()),
            scope: self.scope.as_deref(),
            id_token: self.id_token().map(|i| i.secret()),
            expires_at_unix_ms: expires_at.map(unix_ms_of),
            issued_at_unix_ms: issued_at.map(unix_ms_of),
            lineage: self.lineage.map(|l| l.to_hex()),
        }
        .serialize(serializer)
    }
}

/// Checks what it reads: a `token_type` other than Bearer, a token (the ID token too) that
/// cannot travel in a header (empty, over 16 KiB, not visible ASCII) or a time out of range is an error, whose
/// message never quotes a value.
impl<'de> Deserialize<'de> for Tokens {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let i = In::deserialize(deserializer)?;
        let token_type = match i.token_type.as_deref() {
            None => TokenType::Bearer,
            Some(t) => {
                TokenType::parse(t).ok_or_else(|| D::Error::custom("token_type is not Bearer"))?
            }
        };
        let time = |ms: Option<u64>, what: &str| -> Result<Option<SystemTime>, D::Error> {
            ms.map(|ms| {
                from_unix_ms(ms).ok_or_else(|| D::Error::custom(format!("{what} is out of range")))
            })
            .transpose()
        };
        let mut t = Tokens::new(i.access_token).with_token_type(token_type);
        t.refresh = i.refresh_token.map(super::RefreshToken::new);
        t.scope = i.scope.map(String::into_boxed_str);
        t.id_token = i.id_token.map(|i| Box::new(super::IdToken::new(i)));
        t.expiry = time(i.expires_at_unix_ms, "expires_at_unix_ms")?.map(super::Expiry::At);
        t.issued_at = time(i.issued_at_unix_ms, "issued_at_unix_ms")?;
        t.lineage = i
            .lineage
            .map(|l| super::Lineage::parse(&l).ok_or_else(|| D::Error::custom("invalid lineage")))
            .transpose()?;
        t.validate().map_err(|which| {
            D::Error::custom(format!(
                "invalid {which}: tokens must be 1 to 16384 bytes of visible ASCII"
            ))
        })?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn round_trips_with_rfc_6749_names_and_absolute_times() {
        let issued = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let t = Tokens::new("acc")
            .with_refresh_token("ref")
            .with_scope("read write")
            .with_expires_at(issued + Duration::from_secs(3600))
            .with_issued_at(issued);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "access_token": "acc",
                "token_type": "Bearer",
                "refresh_token": "ref",
                "scope": "read write",
                "expires_at_unix_ms": 1_700_003_600_123u64,
                "issued_at_unix_ms": 1_700_000_000_123u64,
            })
        );
        let back: Tokens = serde_json::from_value(json).unwrap();
        assert_eq!(back.access_token().secret(), "acc");
        assert_eq!(back.refresh_token().unwrap().secret(), "ref");
        assert_eq!(back.scope(), Some("read write"));
        assert_eq!(back.expires_at(), t.expires_at());
        assert_eq!(back.issued_at(), Some(issued));

        assert_eq!(back.token_type(), "Bearer");

        // Only the access token is required (no token type is Bearer); unknown fields are
        // ignored; the type is read in any spelling.
        let back: Tokens =
            serde_json::from_str(r#"{"access_token":"a","expires_in":60,"x":[1]}"#).unwrap();
        assert!(back.expires_at().is_none() && back.refresh_token().is_none());
        assert_eq!(back.kind(), TokenType::Bearer);
        let back: Tokens =
            serde_json::from_str(r#"{"access_token":"a","token_type":"bearer"}"#).unwrap();
        assert_eq!(back.kind(), TokenType::Bearer);
    }

    /// Issue 25: the ID token is kept in the `serde` form; a value written before it was
    /// kept reads as without one; a bad one is an error that quotes nothing.
    #[test]
    fn the_id_token_round_trips_and_values_without_it_still_read() {
        let t = Tokens::new("acc").with_id_token("h.p.s");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["id_token"], "h.p.s", "{json}");
        let back: Tokens = serde_json::from_value(json).unwrap();
        assert_eq!(back.id_token().map(|i| i.secret()), Some("h.p.s"));

        let without = serde_json::to_value(Tokens::new("acc")).unwrap();
        assert!(without.get("id_token").is_none(), "{without}");
        // As written before the ID token was kept.
        let old = r#"{"access_token":"acc","token_type":"Bearer","refresh_token":"ref","expires_at_unix_ms":1700003600123,"issued_at_unix_ms":1700000000123,"lineage":"3f6c0a9e41d27b58"}"#;
        let back: Tokens = serde_json::from_str(old).unwrap();
        assert!(back.id_token().is_none());
        assert_eq!(back.refresh_token().unwrap().secret(), "ref");

        for bad in [
            r#"{"access_token":"a","id_token":"SECRET with space"}"#,
            r#"{"access_token":"a","id_token":""}"#,
        ] {
            let e = serde_json::from_str::<Tokens>(bad).unwrap_err().to_string();
            assert!(e.contains("invalid id token"), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn a_relative_lifetime_is_stored_as_an_absolute_expiry() {
        let before = SystemTime::now();
        let t = Tokens::new("a").with_expires_in(Duration::from_secs(60));
        let back: Tokens = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        let at = back.expires_at().unwrap();
        assert!(at >= before + Duration::from_secs(59), "{at:?}");
        assert!(at <= SystemTime::now() + Duration::from_secs(60), "{at:?}");
        assert!(back.expires_in().is_none());
    }

    #[test]
    fn bad_values_are_errors_that_quote_nothing() {
        for (json, expected) in [
            (
                r#"{"access_token":"SECRET with space"}"#,
                "invalid access token",
            ),
            (
                r#"{"access_token":"a","refresh_token":""}"#,
                "invalid refresh token",
            ),
            (r#"{"access_token":"a","token_type":"mac"}"#, "not Bearer"),
            (
                r#"{"access_token":"a","expires_at_unix_ms":-1}"#,
                "expected u64",
            ),
            (r#"{"refresh_token":"SECRET"}"#, "access_token"),
        ] {
            let e = serde_json::from_str::<Tokens>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{json}: {e}");
            assert!(!e.contains("SECRET"), "{json}: {e}");
        }
    }
}
