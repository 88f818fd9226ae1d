//! What comes back from the authorization server: the redirect's query (RFC 6749 §4.1.2),
//! read from the listener's request or from what the user pasted. One reading for both paths.

use super::pkce::Pkce;
use crate::encoding::form_decode;
use crate::login::error::BrowserError;

/// Longest code, state or error field kept; a longer one is treated as absent.
const MAX_FIELD: usize = 4096;
/// Longest paste read.
const MAX_PASTE: usize = 16 * 1024;

/// A redirect's answer.
#[derive(PartialEq, Eq)]
pub(crate) enum Answer {
    /// `code` (and the `state` it came with, if any).
    Code { code: String, state: Option<String> },
    /// `error` (RFC 6749 §4.1.2.1), its description and the `state`.
    Refused {
        error: String,
        description: Option<String>,
        state: Option<String>,
    },
    /// A pasted code alone (no URL, so no `state`).
    BareCode(String),
    /// Neither a code nor an error.
    Nothing,
}

impl Answer {
    /// This answer held against the login's `state` (compared in constant time), the one
    /// decision for the listener and for a paste: the code of a redirect with this login's
    /// `state`, or a bare code (its PKCE verifier still ties it to this login);
    /// [`BrowserError::Refused`] for an error redirect with it (the `state`, should its
    /// description echo it, hidden); [`BrowserError::StateMismatch`] for either without it;
    /// [`BrowserError::NotARedirect`] for nothing.
    pub(crate) fn checked(self, pkce: &Pkce) -> Result<String, BrowserError> {
        match self {
            Answer::BareCode(code) => Ok(code),
            Answer::Code { code, state } if pkce.state_matches(state.as_deref()) => Ok(code),
            Answer::Refused {
                error,
                description,
                state,
            } if pkce.state_matches(state.as_deref()) => Err(BrowserError::refused(
                &error,
                description.as_deref(),
                &[pkce.state()],
            )),
            Answer::Code { .. } | Answer::Refused { .. } => Err(BrowserError::StateMismatch),
            Answer::Nothing => Err(BrowserError::NotARedirect),
        }
    }
}

/// Reads a redirect's query string (without the `?`).
pub(crate) fn from_query(query: &str) -> Answer {
    let mut code = None;
    let mut state = None;
    let mut error = None;
    let mut description = None;
    for (name, value) in form_decode(query.as_bytes()) {
        if value.is_empty() || value.len() > MAX_FIELD {
            continue;
        }
        // The first of each counts; a repeated parameter does not replace it.
        let slot = match name.as_str() {
            "code" => &mut code,
            "state" => &mut state,
            "error" => &mut error,
            "error_description" => &mut description,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    match (error, code) {
        (Some(error), _) => Answer::Refused {
            error,
            description,
            state,
        },
        (None, Some(code)) => Answer::Code { code, state },
        (None, None) => Answer::Nothing,
    }
}

/// Reads what the user pasted: the whole URL the browser was sent to (its query is read, as
/// the listener would), or a query alone, or the bare code (no `state` to check: the PKCE
/// verifier still binds it to this login). `None` for nothing usable.
pub(crate) fn from_paste(text: &str) -> Option<Answer> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_PASTE {
        return None;
    }
    let query = match text.split_once('?') {
        Some((_, q)) => Some(q),
        None if text.contains('=') => Some(text),
        None => None,
    };
    match query {
        Some(q) => {
            let q = q.split('#').next().unwrap_or_default();
            match from_query(q) {
                Answer::Nothing => None,
                answer => Some(answer),
            }
        }
        // A bare code: visible ASCII only (no spaces, no quotes a terminal added).
        None if text.len() <= MAX_FIELD && text.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            Some(Answer::BareCode(text.to_owned()))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(code: &str, state: Option<&str>) -> Answer {
        Answer::Code {
            code: code.into(),
            state: state.map(Into::into),
        }
    }

    #[test]
    fn reads_codes_errors_and_nothing() {
        assert!(from_query("code=c%2B1&state=s") == code("c+1", Some("s")));
        assert!(from_query("state=s&code=c&code=other") == code("c", Some("s")));
        assert!(from_query("code=c") == code("c", None));
        assert!(
            from_query("error=access_denied&error_description=no+way&state=s&code=c")
                == Answer::Refused {
                    error: "access_denied".into(),
                    description: Some("no way".into()),
                    state: Some("s".into())
                }
        );
        assert!(from_query("") == Answer::Nothing);
        assert!(from_query("code=&state=s") == Answer::Nothing);
        assert!(from_query(&format!("code={}", "x".repeat(MAX_FIELD + 1))) == Answer::Nothing);
    }

    #[test]
    fn reads_pasted_urls_queries_and_bare_codes() {
        let url = "  http://127.0.0.1:8400/callback?code=abc&state=s#frag \n";
        assert!(from_paste(url) == Some(code("abc", Some("s"))));
        assert!(from_paste("code=abc&state=s") == Some(code("abc", Some("s"))));
        assert!(from_paste("4/0AbCd-eF_g") == Some(Answer::BareCode("4/0AbCd-eF_g".into())));
        assert!(from_paste("http://127.0.0.1:8400/callback?code=abc") == Some(code("abc", None)));
        assert!(from_paste("http://127.0.0.1:8400/callback?state=s").is_none());
        assert!(from_paste("two words").is_none());
        assert!(from_paste("").is_none());
        assert!(from_paste(&"x".repeat(MAX_PASTE + 1)).is_none());
    }
}
