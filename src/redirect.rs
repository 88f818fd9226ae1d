//! Following redirects in tokengate (not in ureq), so tokengate decides which origin sees what.

use ureq::http::{self, HeaderMap, HeaderName, Method, StatusCode, Uri};

use crate::error::Error;
use crate::url::{has_http_scheme, Origin};

/// Headers always dropped when a redirect leaves the base URL's origin (besides
/// `Authorization`, which tokengate itself only ever adds for the base origin).
const ALWAYS_SENSITIVE: [HeaderName; 2] = [http::header::COOKIE, http::header::PROXY_AUTHORIZATION];

/// What following a redirect changes about the request.
pub(crate) struct Hop {
    pub(crate) uri: Uri,
    /// 301/302/303 turn the request into a body-less GET (HEAD stays HEAD).
    pub(crate) to_get: bool,
}

/// Whether `status` is a redirect tokengate follows.
pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Computes the next hop of a redirect answered to `method` on `current`.
pub(crate) fn next_hop(
    status: StatusCode,
    method: &Method,
    current: &Uri,
    headers: &HeaderMap,
) -> Result<Hop, Error> {
    let location = headers
        .get(http::header::LOCATION)
        .ok_or(Error::BadRedirect("no Location header"))?
        .to_str()
        .map_err(|_| Error::BadRedirect("Location is not visible ASCII"))?;
    let uri = resolve_location(current, location)?;
    let to_get = matches!(status.as_u16(), 301..=303) && *method != Method::HEAD;
    Ok(Hop { uri, to_get })
}

/// Resolves a `Location` value against the current URI (RFC 3986 §5.2, without dot-segment
/// removal). Only http(s) targets with a host are accepted; a fragment is dropped.
pub(crate) fn resolve_location(current: &Uri, location: &str) -> Result<Uri, Error> {
    let location = location.split('#').next().unwrap_or_default().trim();
    if location.is_empty() {
        return Err(Error::BadRedirect("empty Location"));
    }
    let scheme = current.scheme_str().unwrap_or("https");
    let authority = current.authority().map(|a| a.as_str()).unwrap_or_default();
    let url = if has_http_scheme(location) {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location
        .find([':', '/', '?'])
        .is_some_and(|i| location.as_bytes()[i] == b':')
    {
        return Err(Error::BadRedirect(
            "Location has a scheme other than http(s)",
        ));
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", current.path())
    } else {
        let path = current.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::BadRedirect("Location is not a valid URL"))?;
    if Origin::of(&uri).is_none() {
        return Err(Error::BadRedirect(
            "Location is not an http(s) URL with a host",
        ));
    }
    Ok(uri)
}

/// True for a header that carries credentials: `Authorization`, `Cookie`,
/// `Proxy-Authorization` and the headers the user named sensitive.
pub(crate) fn is_sensitive(name: &HeaderName, user_sensitive: &[HeaderName]) -> bool {
    name == http::header::AUTHORIZATION
        || ALWAYS_SENSITIVE.contains(name)
        || user_sensitive.contains(name)
}

/// Drops credentials a foreign origin must not see: cookies, proxy credentials and the
/// headers the user named sensitive.
pub(crate) fn strip_sensitive(headers: &mut HeaderMap, user_sensitive: &[HeaderName]) {
    headers.remove(http::header::AUTHORIZATION);
    for name in ALWAYS_SENSITIVE.iter().chain(user_sensitive) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cur: &str, loc: &str) -> Result<String, Error> {
        resolve_location(&cur.parse().unwrap(), loc).map(|u| u.to_string())
    }

    #[test]
    fn resolves_locations() {
        let cur = "https://api.example.com/v1/items/7?x=1";
        assert_eq!(
            r(cur, "https://other.example/a").unwrap(),
            "https://other.example/a"
        );
        assert_eq!(
            r(cur, "HTTP://other.example/a").unwrap(),
            "http://other.example/a"
        );
        assert_eq!(r(cur, "//cdn.example/a").unwrap(), "https://cdn.example/a");
        assert_eq!(
            r(cur, "/v2/items/7").unwrap(),
            "https://api.example.com/v2/items/7"
        );
        assert_eq!(r(cur, "8").unwrap(), "https://api.example.com/v1/items/8");
        assert_eq!(
            r(cur, "?page=2").unwrap(),
            "https://api.example.com/v1/items/7?page=2"
        );
        assert_eq!(r(cur, "/a#frag").unwrap(), "https://api.example.com/a");
        for bad in ["", "javascript:alert(1)", "ftp://x/y", "http://", "/a b"] {
            assert!(matches!(r(cur, bad), Err(Error::BadRedirect(_))), "{bad:?}");
        }
    }

    #[test]
    fn method_rewrite() {
        let cur: Uri = "https://a.example/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("location", "/y".parse().unwrap());
        for (status, method, to_get) in [
            (303, Method::POST, true),
            (302, Method::POST, true),
            (301, Method::HEAD, false),
            (307, Method::POST, false),
            (308, Method::PUT, false),
        ] {
            let hop = next_hop(StatusCode::from_u16(status).unwrap(), &method, &cur, &h).unwrap();
            assert_eq!(hop.to_get, to_get, "{status} {method}");
        }
        h.insert("location", http::HeaderValue::from_bytes(b"/\xff").unwrap());
        assert!(next_hop(StatusCode::FOUND, &Method::GET, &cur, &h).is_err());
    }
}
