//! Parsing `WWW-Authenticate` challenges (RFC 7235 §4.1, RFC 6750 §3) for the Bearer scheme,
//! and what a 401 or 403 means for the token ([`classify`]).

use ureq::http::{header, HeaderMap, StatusCode};

/// What a `Bearer` challenge says. Values are kept only if they are short and printable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BearerChallenge {
    /// `invalid_request`, `invalid_token`, `insufficient_scope`, …
    pub(crate) error: Option<String>,
    /// The scope the resource needs (`insufficient_scope`).
    pub(crate) scope: Option<String>,
}

/// What an answer to a request that carried the client's token says about the token. The
/// one reading of 401/403 and `WWW-Authenticate`, for the client's requests and the
/// middleware alike.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 401 (without `invalid_request` or `insufficient_scope`): the token was rejected;
    /// refresh it and replay.
    Token,
    /// 401 or 403 with `insufficient_scope`: a new token would have the same scopes.
    InsufficientScope {
        /// 401 or 403.
        status: u16,
        /// The scope the resource needs, if the server said.
        scope: Option<String>,
    },
    /// 401 with `invalid_request`: the request, not the token, is wrong.
    Request,
    /// Anything else (another status; a 403 without `insufficient_scope`).
    None,
}

/// Reads a response's status and its first `Bearer` challenge (RFC 6750 §3.1). Headers are
/// only parsed for a 401 or 403: every other answer is decided inline, without a call (it
/// runs for every response to the token).
#[inline]
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap) -> Rejection {
    if status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
        return Rejection::None;
    }
    classify_challenge(status, headers)
}

/// [`classify`] for a 401 or 403.
fn classify_challenge(status: StatusCode, headers: &HeaderMap) -> Rejection {
    let unauthorized = status == StatusCode::UNAUTHORIZED;
    let challenge = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer)
        .unwrap_or_default();
    match challenge.error.as_deref() {
        Some("insufficient_scope") => Rejection::InsufficientScope {
            status: status.as_u16(),
            scope: challenge.scope,
        },
        _ if !unauthorized => Rejection::None,
        Some("invalid_request") => Rejection::Request,
        _ => Rejection::Token,
    }
}

/// Longest header value parsed; longer ones are treated as having no Bearer challenge.
const MAX_HEADER: usize = 8 * 1024;
/// Longest parameter value kept.
const MAX_VALUE: usize = 256;

/// Finds the first `Bearer` challenge in a `WWW-Authenticate` value and reads its `error` and
/// `scope` parameters. Returns `None` if there is no Bearer challenge. Never panics, never
/// allocates more than the input's size.
pub(crate) fn parse_bearer(header: &str) -> Option<BearerChallenge> {
    if header.len() > MAX_HEADER {
        return None;
    }
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut in_bearer = false;
    let mut found: Option<BearerChallenge> = None;
    loop {
        p.skip_ws_commas();
        let token = p.token()?;
        p.skip_ws();
        if p.peek() == Some(b'=') {
            // An auth-param `name=value` of the current challenge (or token68 padding).
            p.i += 1;
            while p.peek() == Some(b'=') {
                p.i += 1;
            }
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()?
            } else {
                p.token().unwrap_or_default().to_owned()
            };
            if in_bearer {
                let c = found.get_or_insert_with(Default::default);
                let keep = (value.len() <= MAX_VALUE
                    && value.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .then_some(value);
                if token.eq_ignore_ascii_case("error") {
                    c.error = keep;
                } else if token.eq_ignore_ascii_case("scope") {
                    c.scope = keep;
                }
            }
        } else {
            // A new challenge starts with its scheme.
            if in_bearer {
                return found;
            }
            in_bearer = token.eq_ignore_ascii_case("bearer");
            if in_bearer {
                found = Some(BearerChallenge::default());
            }
        }
        if p.peek().is_none() {
            return found;
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    /// An RFC 7230 token (plus `/` so token68 values are consumed whole). `None` if empty.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while let Some(b) = self.peek() {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b);
            if !tchar {
                break;
            }
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()
    }

    /// A quoted-string with backslash escapes. `None` if unterminated.
    fn quoted(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                b'\\' => {
                    self.i += 1;
                    out.push(self.peek()?);
                    self.i += 1;
                }
                b => {
                    out.push(b);
                    self.i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(h: &str) -> Option<String> {
        parse_bearer(h).and_then(|c| c.error)
    }

    #[test]
    fn reads_rfc6750_examples() {
        assert_eq!(
            parse_bearer(
                r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#
            ),
            Some(BearerChallenge {
                error: Some("invalid_token".into()),
                scope: None
            })
        );
        let c = parse_bearer(r#"Bearer realm="x", error="insufficient_scope", scope="read write""#)
            .unwrap();
        assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(c.scope.as_deref(), Some("read write"));
        assert_eq!(
            parse_bearer(r#"Bearer realm="example""#),
            Some(BearerChallenge::default())
        );
    }

    #[test]
    fn finds_bearer_among_other_challenges() {
        assert_eq!(
            err(r#"Basic realm="a, b", Bearer error=invalid_token"#).as_deref(),
            Some("invalid_token")
        );
        assert_eq!(
            err(r#"bearer error="x\"y", Basic realm="z""#).as_deref(),
            Some("x\"y")
        );
        assert_eq!(
            err(r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#),
            None
        );
        assert!(parse_bearer(r#"Basic realm="x""#).is_none());
        assert!(parse_bearer("Negotiate abc+/==").is_none());
    }

    #[test]
    fn hostile_input_is_harmless() {
        for h in [
            "",
            ",,,",
            "Bearer error=\"unterminated",
            "Bearer =",
            "Bearer error=\u{7}",
            "\"",
            "Bearer error=\"\\",
        ] {
            let _ = parse_bearer(h);
        }
        assert!(parse_bearer(&"Bearer ".repeat(5000)).is_none());
        assert_eq!(err("Bearer error=\"a\u{1}b\""), None);
    }
}
