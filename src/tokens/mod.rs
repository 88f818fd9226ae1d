//! [`Tokens`] and the secret newtypes that keep them out of logs.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::HeaderValue;

use crate::encoding::base64url_decode;
use crate::redacted::Redacted;

mod id_token;
mod serialize;
mod token_type;

pub use self::id_token::{IdTokenClaims, IdTokenError};
pub(crate) use self::token_type::TokenType;

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
secret_type!(
    /// An OpenID Connect ID token (OpenID Connect Core 1.0 §2): a JWT the token endpoint
    /// returns beside the access token, saying who logged in. Kept with the [`Tokens`]
    /// ([`Tokens::id_token`]) and never sent anywhere by tokengate. Its claims can be read,
    /// unverified, for display: [`IdToken::unverified_claims`].
    ///
    /// It usually holds personal data (an email address, a name): treat it as a secret.
    IdToken
);

/// The lifetime of an access token as given: relative (counted from when the client
/// receives it) or absolute.
#[derive(Clone, Copy)]
enum Expiry {
    In(Duration),
    At(SystemTime),
}

// `Tokens` is moved by value along the refresh path: at this size the moves stay inline
// (a few instructions each) rather than calls to `memcpy` (measured with callgrind).
const _: () = assert!(std::mem::size_of::<Tokens>() <= 120);

/// Which login a set of [`Tokens`] descends from (see [`Tokens::lineage`]): 64 random bits,
/// written as 16 lowercase hex digits. Not a secret: it grants nothing.
///
/// A store of your own keeps it beside the tokens (the `serde` form of [`Tokens`] does):
///
/// ```
/// use tokengate::{Lineage, Tokens};
///
/// let lineage = Lineage::parse("3f6c0a9e41d27b58").expect("16 hex digits");
/// let tokens = Tokens::new("access").with_lineage(lineage);
/// let kept = tokens.lineage().map(|l| l.to_string()); // what a store writes
/// assert_eq!(kept.as_deref(), Some("3f6c0a9e41d27b58"));
/// assert_eq!(Lineage::parse(&kept.unwrap()), tokens.lineage()); // and reads back
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lineage(std::num::NonZeroU64);

impl Lineage {
    /// A new lineage, from the operating system's random source.
    pub(crate) fn random() -> Lineage {
        let n = u64::from_le_bytes(crate::random::random_bytes());
        Lineage(std::num::NonZeroU64::new(n).unwrap_or(std::num::NonZeroU64::MIN))
    }

    /// Reads a lineage as [`Display`](fmt::Display) writes it: exactly 16 hex digits, not
    /// all zero. `None` otherwise.
    pub fn parse(s: &str) -> Option<Lineage> {
        // Digits only: `from_str_radix` would also take a sign.
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let n = u64::from_str_radix(s, 16).ok()?;
        std::num::NonZeroU64::new(n).map(Lineage)
    }

    /// The 16 lowercase hex digits it is written as (no formatting machinery: it is written
    /// with every record).
    pub(crate) fn to_hex(self) -> String {
        crate::encoding::hex(&self.0.get().to_be_bytes())
    }
}

impl fmt::Display for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lineage({self})")
    }
}

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
/// # Serialization
/// `Tokens` implements `serde::Serialize` and `Deserialize` (RFC 6749 §5.1 field names, an
/// absolute `expires_at_unix_ms` and `issued_at_unix_ms`), for a [`TokenStore`](crate::TokenStore)
/// of your own. **The output holds the tokens in clear**: keep it where you would keep a
/// password, never in a log.
///
/// # Expiry
/// `expires_in` is relative: it is turned into an absolute instant (with the client's clock)
/// when the tokens enter an [`AuthClient`](crate::AuthClient), and the tokens are stamped with
/// the instant they were issued ([`Tokens::issued_at`]). With neither `expires_in` nor
/// `expires_at`, and an access token that is a JWT, the `exp` claim is used (read, not verified).
///
/// The refresh window is computed from the whole lifetime (`expires_at - issued_at`), so
/// every process sharing a store refreshes at the same moment, however late it read the
/// tokens. For a lifetime in whole seconds the token is treated as expired one second early
/// (at most half the lifetime), because such servers count expiry in whole seconds
/// (`expires_in: 2` may mean 1.01 s); the refresh window starts `refresh_skew` before that,
/// clamped to a quarter of what is left of the lifetime: a 100 s token is refreshed after
/// 74.25 s, a 2 s one after 0.75 s.
#[derive(Clone)]
pub struct Tokens {
    access: AccessToken,
    refresh: Option<RefreshToken>,
    /// `expires_in` or `expires_at`, whichever was set last (one field: `Tokens` stays small
    /// enough to move without a `memcpy` call, see the size check below).
    expiry: Option<Expiry>,
    issued_at: Option<SystemTime>,
    /// A `Box<str>`, not a `String`, and the ID token boxed: the two take the 24 bytes the
    /// scope alone took, so `Tokens` stays within 120 bytes (the size check below).
    scope: Option<Box<str>>,
    /// The OpenID Connect ID token, if the server gave one (see [`Tokens::id_token`]).
    id_token: Option<Box<IdToken>>,
    /// Which login these tokens descend from (see [`Tokens::lineage`]). A `Copy` word: the
    /// clones and moves a refresh makes stay as cheap as without it (measured: the refresh
    /// path's instructions).
    lineage: Option<Lineage>,
    /// How the access token is presented (see [`Tokens::token_type`]). One byte.
    token_type: TokenType,
}

impl Tokens {
    /// Tokens with just an access token.
    pub fn new(access_token: impl Into<String>) -> Self {
        Tokens {
            access: AccessToken::new(access_token),
            refresh: None,
            expiry: None,
            issued_at: None,
            scope: None,
            id_token: None,
            lineage: None,
            token_type: TokenType::Bearer,
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
        self.expiry = Some(Expiry::In(expires_in));
        self
    }

    /// Sets the absolute expiry of the access token.
    #[must_use]
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expiry = Some(Expiry::At(expires_at));
        self
    }

    /// Sets when the access token was issued, which with an absolute expiry
    /// ([`Tokens::with_expires_at`]) gives its lifetime (and so the refresh window). Ignored
    /// with [`Tokens::with_expires_in`], whose lifetime starts when the tokens enter the
    /// client. Defaults to that moment (for a JWT access token without an explicit expiry,
    /// its `iat` claim).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use tokengate::{AuthClient, Tokens};
    ///
    /// let issued = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let with = |t: Tokens| AuthClient::builder("https://api.example.com/").tokens(t).build();
    /// let absolute = with(Tokens::new("a")
    ///     .with_issued_at(issued)
    ///     .with_expires_at(issued + Duration::from_secs(3600)))?;
    /// assert_eq!(absolute.tokens().unwrap().issued_at(), Some(issued));
    /// let relative = with(Tokens::new("a")
    ///     .with_issued_at(issued)
    ///     .with_expires_in(Duration::from_secs(3600)))?;
    /// assert_ne!(relative.tokens().unwrap().issued_at(), Some(issued)); // counted from now
    /// # Ok::<(), tokengate::Error>(())
    /// ```
    #[must_use]
    pub fn with_issued_at(mut self, issued_at: SystemTime) -> Self {
        self.issued_at = Some(issued_at);
        self
    }

    /// Sets the granted scope (informational).
    #[must_use]
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into().into_boxed_str());
        self
    }

    /// Sets the OpenID Connect ID token (see [`Tokens::id_token`]): for tokens of a login
    /// made outside tokengate, or a [`TokenStore`](crate::TokenStore) of your own (the `serde`
    /// form keeps it).
    #[must_use]
    pub fn with_id_token(mut self, id_token: impl Into<String>) -> Self {
        self.id_token = Some(Box::new(IdToken::new(id_token)));
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
        match self.expiry {
            Some(Expiry::In(d)) => Some(d),
            _ => None,
        }
    }

    /// The absolute expiry, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        match self.expiry {
            Some(Expiry::At(t)) => Some(t),
            _ => None,
        }
    }

    /// The absolute expiry and issue time as a store keeps them, at `now`: a relative
    /// `expires_in` not yet turned into an absolute expiry (tokens that never entered a
    /// client) is counted from `now`, which is then their issue time.
    pub(crate) fn absolute_times(
        &self,
        now: SystemTime,
    ) -> (Option<SystemTime>, Option<SystemTime>) {
        match self.expiry {
            Some(Expiry::In(d)) => (now.checked_add(d), Some(now)),
            _ => (self.expires_at(), self.issued_at),
        }
    }

    /// When the access token was issued, if known (always known once a client holds it).
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// The granted scope, if the server said.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The OpenID Connect ID token, if the token endpoint gave one (a login with the `openid`
    /// scope), for saying who is logged in ([`IdToken::unverified_claims`]). A refresh whose
    /// response has none keeps the previous one (OpenID Connect Core 1.0 §12.2: the response
    /// to a refresh may leave it out), as it keeps the refresh token; a refresh that returns
    /// one replaces it. `FileStore`, `RedisStore` and the `serde` form keep it with the
    /// tokens; records written before it was kept read as without one.
    ///
    /// ```
    /// use tokengate::Tokens;
    ///
    /// let t = Tokens::new("access").with_id_token("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.");
    /// assert_eq!(t.id_token().unwrap().unverified_claims()?.sub(), Some("1"));
    /// # Ok::<(), tokengate::IdTokenError>(())
    /// ```
    pub fn id_token(&self) -> Option<&IdToken> {
        self.id_token.as_deref()
    }

    /// Which login these tokens descend from: a random id the client gives every login
    /// ([`AuthClient::set_tokens`](crate::AuthClient::set_tokens), tokens given to the
    /// builder, a client-credentials acquisition) and that every refresh of it keeps. A
    /// shared store keeps it with the tokens, so that a login or logout that could not be
    /// written at once is later written over its own session only, never over a newer login
    /// made elsewhere. `None` for tokens that never entered a client, and for records
    /// written before lineages existed.
    pub fn lineage(&self) -> Option<Lineage> {
        self.lineage
    }

    /// The token type (RFC 6749 §7.1) the access token was issued as, spelled as tokengate
    /// writes it: `"Bearer"`, the only type it accepts today (a token response of another
    /// type is refused; one without `token_type` is taken as Bearer). Stores keep it with the
    /// tokens (the `serde` form does); records written before it was kept read as Bearer.
    pub fn token_type(&self) -> &str {
        self.token_type.as_str()
    }

    /// The token type, for the code that keeps or presents it.
    pub(crate) fn kind(&self) -> TokenType {
        self.token_type
    }

    /// Sets the token type, as a token response or a stored record gave it.
    pub(crate) fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// Sets the lineage: for a [`TokenStore`](crate::TokenStore) of your own that keeps it
    /// (the `serde` form does). A client replaces it on a login.
    #[must_use]
    pub fn with_lineage(mut self, lineage: Lineage) -> Self {
        self.lineage = Some(lineage);
        self
    }

    /// Replaces a missing refresh token and ID token with `previous`'s (RFC 6749 §6 and
    /// OpenID Connect Core §12.2: a refresh response may leave them out), and takes the
    /// lineage of the tokens refreshed: a refresh continues a login.
    pub(crate) fn continuing(self, previous: &Tokens) -> Self {
        let mut t = self.keep_previous(previous);
        t.lineage = previous.lineage;
        t
    }

    /// Replaces a missing refresh token and ID token with `previous`'s (RFC 6749 §6, OpenID
    /// Connect Core §12.2: the server may keep the old ones).
    pub(crate) fn keep_previous(mut self, previous: &Tokens) -> Self {
        if self.refresh.is_none() {
            self.refresh.clone_from(&previous.refresh);
        }
        if self.id_token.is_none() {
            self.id_token.clone_from(&previous.id_token);
        }
        self
    }

    /// The same tokens as a new login: a fresh lineage.
    pub(crate) fn new_lineage(mut self) -> Self {
        self.lineage = Some(Lineage::random());
        self
    }

    /// The same tokens with no refresh token.
    pub(crate) fn without_refresh_token(mut self) -> Self {
        self.refresh = None;
        self
    }

    /// Checks that the tokens can travel in an HTTP header or form: 1 to 16 KiB of visible
    /// ASCII. The ID token, which tokengate never sends, is held to the same rule (a JWT is
    /// base64url and dots).
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        check_token(self.access.secret()).map_err(|_| "access token")?;
        if let Some(r) = &self.refresh {
            check_token(r.secret()).map_err(|_| "refresh token")?;
        }
        if let Some(i) = &self.id_token {
            check_token(i.secret()).map_err(|_| "id token")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &self.access)
            .field("refresh_token", &self.refresh)
            .field("expires_in", &self.expires_in())
            .field("expires_at", &self.expires_at())
            .field("issued_at", &self.issued_at)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token)
            .field("lineage", &self.lineage)
            .field("token_type", &self.token_type)
            .finish()
    }
}

fn check_token(s: &str) -> Result<(), ()> {
    if s.is_empty() || s.len() > MAX_TOKEN_LEN || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(());
    }
    Ok(())
}

/// Longest margin kept for servers that count expiry in whole seconds.
const EXPIRY_GRAIN: Duration = Duration::from_secs(1);

/// Tokens as the client holds them: stamped with an absolute expiry and issue time, with the
/// `Authorization` header value built once, from the token type ([`TokenType::header`]);
/// cloning it does not allocate.
pub(crate) struct Current {
    pub(crate) tokens: Tokens,
    pub(crate) header: HeaderValue,
    /// From when the access token is treated as expired (a refresh blocks): its expiry minus
    /// the whole-second margin.
    pub(crate) stale_at: Option<SystemTime>,
    /// When a proactive refresh should start: `stale_at` minus the clamped skew.
    pub(crate) refresh_at: Option<SystemTime>,
}

impl Current {
    /// Stamps `tokens` at `now`: a relative `expires_in` becomes `expires_at`, a missing
    /// `issued_at` becomes `now` (or the JWT's `iat`). The lifetime `expires_at - issued_at`
    /// gives the refresh window: `skew` clamped to a quarter of the lifetime, plus, for a
    /// lifetime in whole seconds, a margin of one second (at most half the lifetime) for
    /// servers counting in whole seconds. A 2 s token is refreshed after 0.75 s and treated as
    /// expired after 1 s, not on every request; a 400 ms one is refreshed after 300 ms.
    pub(crate) fn new(
        mut tokens: Tokens,
        now: SystemTime,
        skew: Duration,
    ) -> Result<Current, &'static str> {
        tokens.validate()?;
        let header = tokens
            .token_type
            .header(&tokens.access)
            .ok_or("access token")?;

        let (expires_at, issued_at) = match (tokens.expires_at(), tokens.expires_in()) {
            (Some(at), _) => (Some(at), tokens.issued_at.unwrap_or(now)),
            // A relative lifetime starts now, whatever issue time came with it.
            (None, Some(d)) => (now.checked_add(d), now),
            (None, None) => match jwt_expiry(tokens.access.secret()) {
                Some((exp, iat)) => (Some(exp), tokens.issued_at.or(iat).unwrap_or(now)),
                None => (None, tokens.issued_at.unwrap_or(now)),
            },
        };
        tokens.expiry = expires_at.map(Expiry::At);
        tokens.issued_at = Some(issued_at);
        let lifetime = expires_at
            .and_then(|at| at.duration_since(issued_at).ok())
            .unwrap_or(Duration::ZERO);
        // A lifetime in whole seconds comes from a server that may count whole seconds.
        let grain = if lifetime.subsec_nanos() == 0 {
            EXPIRY_GRAIN.min(lifetime / 2)
        } else {
            Duration::ZERO
        };
        let window = skew.min((lifetime - grain) / 4);
        let stale_at = expires_at.map(|at| at.checked_sub(grain).unwrap_or(at));
        let refresh_at = stale_at.map(|at| at.checked_sub(window).unwrap_or(at));
        Ok(Current {
            tokens,
            header,
            stale_at,
            refresh_at,
        })
    }

    /// True once the access token is (treated as) expired: a request must wait for new tokens.
    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.stale_at.is_some_and(|at| now >= at)
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
    use crate::encoding::base64_encode;

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

    /// Issue 25: the ID token is redacted in `Debug` (of `Tokens` and of `IdToken`) and held
    /// to the token rule (1 to 16 KiB of visible ASCII).
    #[test]
    fn the_id_token_is_redacted_and_validated() {
        let t = Tokens::new("acc").with_id_token("idt-SECRET.payload.sig");
        let s = format!("{t:?} {t:#?} {:?}", t.id_token().unwrap());
        assert!(!s.contains("SECRET"), "{s}");
        assert!(
            s.contains("id_token: Some(IdToken([redacted]))") && s.contains("IdToken([redacted])"),
            "{s}"
        );
        assert_eq!(t.id_token().unwrap().secret(), "idt-SECRET.payload.sig");
        assert!(t.validate().is_ok());
        assert!(Tokens::new("a")
            .with_id_token("i".repeat(MAX_TOKEN_LEN))
            .validate()
            .is_ok());
        for bad in [
            String::new(),
            "a b".into(),
            "a\r\nb".into(),
            "é".into(),
            "i".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(
                Tokens::new("a").with_id_token(bad.clone()).validate(),
                Err("id token"),
                "{bad:.20}"
            );
        }
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
        assert_eq!(c.tokens.expires_at(), Some(now + Duration::from_secs(3600)));
        assert_eq!(c.tokens.issued_at(), Some(now));
        // 30 s of skew and 1 s for servers that count in whole seconds.
        assert_eq!(c.refresh_at, Some(now + Duration::from_secs(3569)));
        assert_eq!(c.stale_at, Some(now + Duration::from_secs(3599)));
        assert!(c.header.is_sensitive());

        // A 2 s token (which a server counting whole seconds may end after 1.01 s) with a 30 s
        // skew: refreshed at 0.75 s, expired at 1 s, never refreshed on every request.
        let c = Current::new(
            Tokens::new("a").with_expires_in(Duration::from_secs(2)),
            now,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.refresh_at, Some(now + Duration::from_millis(750)));
        assert!(!c.wants_refresh(now + Duration::from_millis(749)));
        assert!(c.wants_refresh(now + Duration::from_millis(750)));
        assert!(!c.is_expired(now + Duration::from_millis(999)));
        assert!(c.is_expired(now + Duration::from_secs(1)));

        // A lifetime that is not whole seconds comes from a precise server: no margin.
        let c = Current::new(
            Tokens::new("a").with_expires_in(Duration::from_millis(400)),
            now,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.refresh_at, Some(now + Duration::from_millis(300)));
        assert_eq!(c.stale_at, Some(now + Duration::from_millis(400)));
    }

    #[test]
    fn the_window_comes_from_the_whole_lifetime_not_the_time_left() {
        // A second process reads tokens issued 50 s ago, living 100 s: it refreshes when the
        // process that received them does (at 99 - 99/4 = 74.25 s), not 25% of the 50 s left.
        let issued = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stored = Tokens::new("a")
            .with_expires_at(issued + Duration::from_secs(100))
            .with_issued_at(issued);
        let first = Current::new(stored.clone(), issued, Duration::from_secs(600)).unwrap();
        let late = Current::new(
            stored,
            issued + Duration::from_secs(50),
            Duration::from_secs(600),
        )
        .unwrap();
        assert_eq!(
            first.refresh_at,
            Some(issued + Duration::from_millis(74_250))
        );
        assert_eq!(late.refresh_at, first.refresh_at);
        assert_eq!(late.stale_at, first.stale_at);
    }

    #[test]
    fn absurd_expires_in_does_not_overflow() {
        let c = Current::new(
            Tokens::new("a").with_expires_in(Duration::MAX),
            SystemTime::now(),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(c.tokens.expires_at(), None);
    }

    #[test]
    fn jwt_exp_is_read_without_verification() {
        let token = jwt(r#"{"exp":2000000000,"iat":1999999000,"sub":"x"}"#);
        let (exp, iat) = jwt_expiry(&token).unwrap();
        assert_eq!(exp, UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        assert_eq!(iat, Some(UNIX_EPOCH + Duration::from_secs(1_999_999_000)));
        let now = UNIX_EPOCH + Duration::from_secs(1_999_999_500);
        let c = Current::new(Tokens::new(token), now, Duration::from_secs(600)).unwrap();
        // lifetime 1000 s (from iat) → skew clamped to (1000 - 1) / 4 s, 1 s whole-second margin
        assert_eq!(
            c.refresh_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_999_999_749_250))
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
        assert_eq!(c.tokens.expires_at(), Some(now + Duration::from_secs(10)));
    }

    /// A lineage reads back as it is written: 16 hex digits; anything else (length, digits,
    /// all zero) is refused.
    #[test]
    fn lineages_round_trip_as_16_hex_digits() {
        for _ in 0..100 {
            let l = Lineage::random();
            let text = l.to_string();
            assert_eq!(text.len(), 16, "{text}");
            assert_eq!(Lineage::parse(&text), Some(l));
            assert_eq!(Lineage::parse(&text.to_uppercase()), Some(l));
        }
        assert_eq!(
            Lineage::parse("000000000000000f").unwrap().to_string(),
            "000000000000000f"
        );
        for bad in [
            "",
            "0123",
            "0123456789abcdefa",
            "0123456789abcdeg",
            "0000000000000000",
            "+123456789abcdef",
        ] {
            assert_eq!(Lineage::parse(bad), None, "{bad:?}");
        }
        assert_ne!(Lineage::random(), Lineage::random());
    }
}
