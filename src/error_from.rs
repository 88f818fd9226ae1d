//! `From` impls into [`Error`], so `?` carries the errors a program meets beside tokengate's
//! own calls (ureq's, reading a response body; an ID token's) into a `Result<_, Error>`.

use crate::error::Error;
use crate::tokens::IdTokenError;
use crate::transport_error::TransportError;
use crate::url::Origin;

/// For `?` on ureq's errors: reading a response body (`resp.body_mut().read_to_string()?`),
/// or a call of ureq itself (an agent with [`TokenMiddleware`](crate::TokenMiddleware)).
///
/// | ureq's error | becomes |
/// |---|---|
/// | `StatusCode(401)` | [`Error::Unauthorized`] |
/// | `StatusCode(n)` | [`Error::StatusCode`]`(n)` |
/// | `Json(e)` (`read_json` on a body that is not the JSON asked for) | [`Error::Json`], without the value serde_json quotes; a connection that broke mid-body: as that transport error |
/// | `Other` holding a [`tokengate::Error`](Error) (what [`TokenMiddleware`](crate::TokenMiddleware) fails with) | that error |
/// | anything else | [`Error::Http`]: a [`TransportError`] naming no proxy (none is known here) |
///
/// A 401 through [`TokenMiddleware`](crate::TokenMiddleware) becomes [`Error::Unauthorized`]
/// like any other; the middleware has refreshed the token by then, so sending the request
/// once more carries the new one.
///
/// What the message shows: ureq's messages hold no request header and no body (a body read
/// as JSON: see the `Json` row). Two quote
/// the request's URL (`BadUri`, `RequireHttpsOnly`), whose path or query may hold a secret:
/// it is cut to its origin (`scheme://host:port`, no userinfo), or `[redacted]` without one,
/// as tokengate's logs name URLs. Kept as they are: an `Io` or `Other` error of your own (a
/// reader, a middleware), and the `Location` a server sent that ureq could not follow
/// (`Protocol`, only when your agent follows redirects: tokengate's own never do).
///
/// ```
/// use tokengate::{ureq, Error};
/// assert!(matches!(Error::from(ureq::Error::StatusCode(401)), Error::Unauthorized));
/// assert!(matches!(Error::from(ureq::Error::StatusCode(503)), Error::StatusCode(503)));
/// let not_json = serde_json::from_str::<u32>("<html>").unwrap_err();
/// assert!(matches!(Error::from(ureq::Error::Json(not_json)), Error::Json(_)));
/// let e = Error::from(ureq::Error::RequireHttpsOnly("http://api.example.com/v1?key=s3cret".into()));
/// assert_eq!(e.to_string(), "http transport error: configured for https only: http://api.example.com:80");
/// ```
impl From<ureq::Error> for Error {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::StatusCode(401) => Error::Unauthorized,
            ureq::Error::StatusCode(n) => Error::StatusCode(n),
            ureq::Error::Json(e) => from_json(e),
            ureq::Error::Other(other) => match other.downcast::<Error>() {
                Ok(ours) => *ours,
                Err(other) => Error::Http(TransportError::new(ureq::Error::Other(other), None)),
            },
            ureq::Error::BadUri(s) => Error::Http(TransportError::new(
                ureq::Error::BadUri(origins_only(&s)),
                None,
            )),
            ureq::Error::RequireHttpsOnly(s) => Error::Http(TransportError::new(
                ureq::Error::RequireHttpsOnly(origins_only(&s)),
                None,
            )),
            e => Error::Http(TransportError::new(e, None)),
        }
    }
}

/// `text` with every word that may be (part of) a URL (holds `/`, `?`, `#` or `@`) cut to its
/// origin, or `[redacted]` when it has none: a path or query may hold a secret.
fn origins_only(text: &str) -> String {
    let word = |w: &str| {
        if !w.contains(['/', '?', '#', '@']) {
            return w.to_owned();
        }
        w.parse::<ureq::http::Uri>()
            .ok()
            .and_then(|uri| Origin::of(&uri))
            .map_or_else(|| "[redacted]".to_owned(), |o| format!("{o:?}"))
    };
    text.split(' ').map(word).collect::<Vec<_>>().join(" ")
}

/// ureq's `read_json` error. ureq parses a body as it arrives, so a connection that broke
/// mid-body comes as a JSON error of category `Io`: it is the transport error it wraps (ureq's
/// own, when ureq wrapped one), transient as such. A body that is not the JSON asked for is
/// [`Error::Json`], its message without the value serde_json quotes (`invalid type: string
/// "…"`), which may be a token: the category, line and column only (a message that quotes
/// nothing from the body is kept).
fn from_json(e: serde_json::Error) -> Error {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => Error::from(ureq::Error::from(std::io::Error::from(e))),
        Category::Data if quotes_a_value(&e) => Error::Json(
            <serde_json::Error as serde::de::Error>::custom(format!(
                "the body is not the JSON expected (a value of another type or shape) at line {} column {}",
                e.line(),
                e.column()
            )),
        ),
        Category::Data | Category::Syntax | Category::Eof => Error::Json(e),
    }
}

/// Whether serde_json's message for a body quotes something the body held (`invalid type:
/// string "…"`, `invalid value`, `unknown field`/`variant`). Not: a field the caller's own type
/// names as missing or twice, a wrong length, or an error of writing a value (`send_json`
/// through a middleware's agent: no line), whose message is the caller's own.
fn quotes_a_value(e: &serde_json::Error) -> bool {
    let said = e.to_string();
    e.line() != 0
        && !["missing field", "duplicate field", "invalid length"]
            .iter()
            .any(|own| said.starts_with(own))
}

/// For `?` on [`IdToken::unverified_claims`](crate::IdToken::unverified_claims): [`Error::IdToken`].
impl From<IdTokenError> for Error {
    fn from(e: IdTokenError) -> Self {
        Error::IdToken(e)
    }
}
