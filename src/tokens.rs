//! [`Tokens`] and the secret newtypes that keep them out of logs.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::HeaderValue;

use crate::util::{base64url_decode, Redacted};

/// Longest token tokengate accepts, in bytes. Larger values are rejected as invalid.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Longest `expires_in` tokengate accepts: ten years. Anything above is treated as a broken server.
pub(crate) const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// `Debug` prints `[redacted]`; there is deliberately no `Display` and no `PartialEq`
        /// (comparing secrets is for constant-time code, not for `==`).
        #[derive(Clone)]
        pub struct $name(String);

        impl $name {
            /// Wraps a raw value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The raw secret.
            ///
            /// # Security
            /// Whatever you do with this string, do not log or print it.
            pub fn secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&Redacted).finish()
            }
        }
    };
}

secret_type!(
    /// An OAuth2 access token (the bearer credential sent to the API).
    AccessToken
);
secret_type!(
    /// An OAuth2 refresh token (sent only to the token endpoint).
    RefreshToken
);
secret_type!(
    /// A client secret (sent only to the token endpoint).
    ClientSecret
);

/// An access token, an optional refresh token and what is known about their expiry.
///
/// ```
/// use std::time::Duration;
/// use tokengate::Tokens;
///
/// let t = Tokens::new("access").with_refresh_token("refresh").with_expires_in(Duration::from_secs(3600));
/// assert_eq!(format!("{t:?}").contains("access\""), false); // secrets are redacted
/// ```
///
/// # Expiry
/// `expires_in` is relative: it is turned into an absolute instant (with the client's clock)
/// when the tokens enter an [`AuthClient`](crate::AuthClient). With neither `expires_in` nor
/// `expires_at`, and an access token that is a JWT, the `exp` claim is used (read, not verified).
#[derive(Clone)]
pub struct Tokens {
    access: AccessToken,
    refresh: Option<RefreshToken>,
    expires_in: Option<Duration>,
    expires_at: Option<SystemTime>,
    scope: Option<String>,
}

impl Tokens {
    /// Tokens with just an access token.
    pub fn new(access_token: impl Into<String>) -> Self {
        Tokens {
            access: AccessToken::new(access_token),
            refresh: None,
            expires_in: None,
            expires_at: None,
            scope: None,
        }
    }

    /// Sets the refresh token.
    #[must_use]
    pub fn with_refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.refresh = Some(RefreshToken::new(refresh_token));
        self
    }

    /// Sets the lifetime of the access token, counted from when the client receives the tokens.
    #[must_use]
    pub fn with_expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = Some(expires_in);
        self.expires_at = None;
        self
    }

    /// Sets the absolute expiry of the access token.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self.expires_in = None;
        self
    }

    /// Sets the granted scope (informational).
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access
    }

    /// The refresh token, if any.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh.as_ref()
    }

    /// The relative lifetime, if it was given and not yet turned into [`Tokens::expires_at`].
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// The absolute expiry, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The granted scope, if the server said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Replaces a missing refresh token with `previous` (RFC 6749 §6: the server may keep the old one).
    pub(crate) fn keep_refresh_token(mut self, previous: Option<&RefreshToken>) -> Self {
        if self.refresh.is_none() {
            self.refresh = previous.cloned();
        }
        self
    }

    /// The same tokens with no refresh token.
    pub(crate) fn without_refresh_token(mut self) -> Self {
        self.refresh = None;
        self
    }

    /// Checks that both tokens can travel in an HTTP header or form: 1 to 16 KiB of visible ASCII.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        check_token(self.access.secret()).map_err(|_| "access token")?;
        if let Some(r) = &self.refresh {
            check_token(r.secret()).map_err(|_| "refresh token")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &self.access)
            .field("refresh_token", &self.refresh)
            .field("expires_in", &self.expires_in)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

fn check_token(s: &str) -> Result<(), ()> {
    if s.is_empty() || s.len() > MAX_TOKEN_LEN || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(());
    }
    Ok(())
}

/// Tokens as the client holds them: stamped with an absolute expiry, with the
/// `Authorization` header value built once (cloning it does not allocate).
pub(crate) struct Current {
    pub(crate) tokens: Tokens,
    pub(crate) header: HeaderValue,
    /// When the access token stops being valid, if known.
    pub(crate) expires_at: Option<SystemTime>,
    /// When a proactive refresh should start: `expires_at` minus the clamped skew.
    pub(crate) refresh_at: Option<SystemTime>,
}

impl Current {
    /// Stamps `tokens` at `now`. `skew` is clamped to a quarter of the token's lifetime, so a
    /// short-lived token is refreshed at 75% of its life instead of on every request.
    pub(crate) fn new(
        mut tokens: Tokens,
        now: SystemTime,
        skew: Duration,
    ) -> Result<Current, &'static str> {
        tokens.validate()?;
        let mut header = HeaderValue::try_from(format!("Bearer {}", tokens.access.secret()))
            .map_err(|_| "access token")?;
        header.set_sensitive(true);

        let (expires_at, lifetime) = match (tokens.expires_at, tokens.expires_in) {
            (Some(at), _) => (Some(at), at.duration_since(now).ok()),
            (None, Some(d)) => (now.checked_add(d), Some(d)),
            (None, None) => match jwt_expiry(tokens.access.secret()) {
                Some((exp, iat)) => {
                    let life = iat.unwrap_or(now);
                    (Some(exp), exp.duration_since(life).ok())
                }
                None => (None, None),
            },
        };
        tokens.expires_at = expires_at;
        tokens.expires_in = None;
        let skew = skew.min(lifetime.unwrap_or(Duration::ZERO) / 4);
        let refresh_at = expires_at.map(|at| at.checked_sub(skew).unwrap_or(at));
        Ok(Current {
            tokens,
            header,
            expires_at,
            refresh_at,
        })
    }

    /// True once the access token is past its expiry.
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// True once the access token is inside its refresh window (or expired).
    pub(crate) fn wants_refresh(&self, now: SystemTime) -> bool {
        self.refresh_at.is_some_and(|at| now >= at)
    }
}

/// Reads `exp` (and `iat`) from a JWT's payload without verifying anything.
/// Any token that is not a well-formed JWT simply has no expiry.
pub(crate) fn jwt_expiry(token: &str) -> Option<(SystemTime, Option<SystemTime>)> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = base64url_decode(payload)?;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<f64>,
        iat: Option<f64>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let at = |secs: f64| -> Option<SystemTime> {
        if !(0.0..=1e11).contains(&secs) {
            return None;
        }
        UNIX_EPOCH.checked_add(Duration::from_secs_f64(secs))
    };
    Some((at(claims.exp?)?, claims.iat.and_then(at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::base64_encode;

    fn jwt(payload: &str) -> String {
        let b64 = |s: &str| {
            base64_encode(s.as_bytes())
                .trim_end_matches('=')
                .replace('+', "-")
                .replace('/', "_")
        };
        format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(payload))
    }

    #[test]
    fn debug_never_shows_secrets() {
        let t = Tokens::new("acc-SECRET")
            .with_refresh_token("ref-SECRET")
            .with_scope("read");
        let s = format!(
            "{t:?} {:?} {:?}",
            t.access_token(),
            ClientSecret::new("cs-SECRET")
        );
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("[redacted]") && s.contains("read"), "{s}");
    }

    #[test]
    fn invalid_token_characters_are_rejected() {
        for bad in ["", "a b", "a\r\nX-Evil: 1", "a\0b", "tab\t", "é"] {
            assert!(Tokens::new(bad).validate().is_err(), "{bad:?}");
        }
        assert!(Tokens::new("ok")
            .with_refresh_token("r\n")
            .validate()
            .is_err());
        assert!(Tokens::new("a-._~+/=").validate().is_ok());
        assert!(Tokens::new("x".repeat(MAX_TOKEN_LEN + 1))
            .validate()
            .is_err());
    }

    #[test]
    fn expires_in_is_stamped_and_skew_clamped_to_a_quarter_of_lifetime() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = Current::new(
            Tokens::new("a").with_expires_in(Duration::from_secs(3600)),
            now,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.expires_at, Some(now + Duration::from_secs(3600)));
        assert_eq!(c.refresh_at, Some(now + Duration::from_secs(3570)));
        assert!(c.header.is_sensitive());

        // A 2 s token with a 30 s skew refreshes at 1.5 s, not on every request.
        let c = Current::new(
            Tokens::new("a").with_expires_in(Duration::from_secs(2)),
            now,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.refresh_at, Some(now + Duration::from_millis(1500)));
        assert!(!c.wants_refresh(now + Duration::from_millis(1499)));
        assert!(c.wants_refresh(now + Duration::from_millis(1500)));
        assert!(!c.is_expired(now + Duration::from_millis(1999)));
        assert!(c.is_expired(now + Duration::from_secs(2)));
    }

    #[test]
    fn absurd_expires_in_does_not_overflow() {
        let c = Current::new(
            Tokens::new("a").with_expires_in(Duration::MAX),
            SystemTime::now(),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.expires_at, None);
    }

    #[test]
    fn jwt_exp_is_read_without_verification() {
        let token = jwt(r#"{"exp":2000000000,"iat":1999999000,"sub":"x"}"#);
        let (exp, iat) = jwt_expiry(&token).unwrap();
        assert_eq!(exp, UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        assert_eq!(iat, Some(UNIX_EPOCH + Duration::from_secs(1_999_999_000)));
        let now = UNIX_EPOCH + Duration::from_secs(1_999_999_500);
        let c = Current::new(Tokens::new(token), now, Duration::from_secs(600)).unwrap();
        // lifetime 1000 s → skew clamped to 250 s
        assert_eq!(
            c.refresh_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_999_999_750))
        );

        for not_jwt in [
            "opaque",
            "a.b",
            "a.b.c.d",
            &jwt(r#"{"exp":-5}"#),
            &jwt("[1]"),
        ] {
            assert!(jwt_expiry(not_jwt).is_none(), "{not_jwt}");
        }
        // explicit expiry wins over the claim
        let c = Current::new(
            Tokens::new(jwt(r#"{"exp":2000000000}"#)).with_expires_in(Duration::from_secs(10)),
            now,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(c.expires_at, Some(now + Duration::from_secs(10)));
    }
}
