//! Small helpers with no secrets of their own: base64, form encoding, origins, deadlines.

use std::fmt;
use std::time::{Duration, Instant};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as HTTP Basic authentication needs.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(B64[*s as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes unpadded (or padded) base64url (RFC 4648 §5), as JWT segments use.
/// Returns `None` on any character outside the alphabet or an impossible length.
pub(crate) fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `application/x-www-form-urlencoded` byte serializer (WHATWG URL §5.2):
/// alphanumerics and `*-._` stay, space becomes `+`, everything else is `%XX`.
pub(crate) fn form_encode_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => push_pct(out, b),
        }
    }
}

/// Percent-encodes a query component: unreserved characters (RFC 3986 §2.3) stay.
pub(crate) fn query_encode_into(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => push_pct(out, b),
        }
    }
}

fn push_pct(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// Serializes pairs as an `application/x-www-form-urlencoded` body.
pub(crate) fn form_body<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        form_encode_into(&mut out, k);
        out.push('=');
        form_encode_into(&mut out, v);
    }
    out
}

/// A web origin: scheme, host and port (RFC 6454). The unit the token is scoped to.
#[derive(Clone)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
    /// The authority exactly as the URL it was taken from spells it, so that
    /// [`Origin::matches`] can recognise the same spelling without parsing it again. Not part
    /// of the origin: `host` and `HOST:443` are the same `https` origin.
    authority: String,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

impl Eq for Origin {}

impl Origin {
    /// The origin of an absolute `http`/`https` URI; `None` for anything else.
    pub(crate) fn of(uri: &ureq::http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host,
            port: uri.port_u16().unwrap_or(default_port),
            authority: uri.authority()?.as_str().to_owned(),
        })
    }

    /// True if `uri` has this origin. Allocates nothing (it runs for every request).
    pub(crate) fn matches(&self, uri: &ureq::http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        // The common case, every path resolved against the base URL: scheme and authority
        // spelled exactly as in the URL this origin came from. Equal spellings have equal
        // hosts and ports, so this is a shortcut only; any other spelling is parsed and
        // compared below.
        if scheme == self.scheme
            && uri
                .authority()
                .is_some_and(|a| a.as_str() == self.authority)
        {
            return true;
        }
        let Some(host) = uri.host() else {
            return false;
        };
        let default_port = match scheme.len() {
            4 if scheme.eq_ignore_ascii_case("http") => 80,
            5 if scheme.eq_ignore_ascii_case("https") => 443,
            _ => return false,
        };
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host.eq_ignore_ascii_case(&self.host)
            && uri.port_u16().unwrap_or(default_port) == self.port
    }

    pub(crate) fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// `localhost`, `127.0.0.0/8` or `[::1]`: hosts where plain `http` cannot leave the machine.
    pub(crate) fn is_loopback(&self) -> bool {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        if h == "localhost" || h.ends_with(".localhost") {
            return true;
        }
        h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Drops any `user:password@` from a URL's authority (not from its path or query), for
/// `Debug` output and error messages.
pub(crate) fn strip_userinfo(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[s + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}{}", &url[..s + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A URL as the user gave it; `Debug` prints it without userinfo.
#[derive(Clone)]
pub(crate) struct EndpointUrl(pub(crate) String);

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&strip_userinfo(&self.0), f)
    }
}

/// True if `s` starts with `http://` or `https://`, in any case.
pub(crate) fn has_http_scheme(s: &str) -> bool {
    let starts = |prefix: &str| {
        s.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts("http://") || starts("https://")
}

/// Milliseconds since the Unix epoch, as stores keep absolute times; before 1970 is long past,
/// and 0 says the same.
pub(crate) fn unix_ms_of(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant `ms` milliseconds after the Unix epoch, if the platform can represent it.
pub(crate) fn from_unix_ms(ms: u64) -> Option<std::time::SystemTime> {
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms))
}

/// `N` random bytes from the operating system, for ids whose uniqueness is all that matters
/// (logins' lineages, store writes, lease owners). Should the OS source fail (it does not on
/// supported platforms), std's per-process random hash keys mixed with the process id, the
/// time and a counter stand in.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::getrandom(&mut bytes).is_err() {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(n);
            h.write_u32(std::process::id());
            h.write_u128(nanos);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes
}

/// 128 random bits (see [`random_bytes`]) as 32 lowercase hex digits: `RedisStore`'s lease
/// owners and write ids.
#[cfg(feature = "redis")]
pub(crate) fn random_id() -> String {
    hex(&random_bytes::<16>())
}

/// `bytes` as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A `Debug` stand-in for a secret value.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The instant `d` from now, or a year from now if that is beyond what `Instant` can hold
/// (a timeout of `Duration::MAX` means "no limit").
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_beyond_the_clock_is_a_year_away() {
        let before = Instant::now();
        let deadline = deadline_after(Duration::MAX);
        assert!(deadline >= before + Duration::from_secs(86_400 * 365));
        assert!(
            deadline_after(Duration::from_secs(60)) <= Instant::now() + Duration::from_secs(60)
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64url_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64url_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("a+b/"), None);
    }

    #[test]
    fn form_encoding_follows_whatwg() {
        assert_eq!(
            form_body([("a b", "x&y=z"), ("k", "é~*")]),
            "a+b=x%26y%3Dz&k=%C3%A9%7E*"
        );
    }

    #[test]
    fn userinfo_is_stripped_from_the_authority_only() {
        assert_eq!(strip_userinfo("http://u:SECRET@host/x"), "http://host/x");
        assert_eq!(
            strip_userinfo("https://a@b@host:8/x?y=@z"),
            "https://host:8/x?y=@z"
        );
        assert_eq!(strip_userinfo("https://host/a@b"), "https://host/a@b");
        assert_eq!(strip_userinfo("not a url @ all"), "not a url @ all");
        assert_eq!(
            format!("{:?}", EndpointUrl("https://id:pw@h/t".into())),
            "\"https://h/t\""
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |s: &str| Origin::of(&s.parse().unwrap());
        assert_eq!(
            o("https://API.example.com/x"),
            o("https://api.example.com:443/y")
        );
        assert_ne!(o("https://api.example.com"), o("http://api.example.com"));
        assert_ne!(
            o("https://api.example.com"),
            o("https://api.example.com:8443")
        );
        assert!(o("http://127.0.0.2:8080").unwrap().is_loopback());
        assert!(o("http://[::1]:80").unwrap().is_loopback());
        assert!(o("http://localhost").unwrap().is_loopback());
        assert!(!o("http://example.com").unwrap().is_loopback());
        assert!(o("ftp://example.com").is_none());

        let base = o("https://API.example.com/v1").unwrap();
        for (url, same) in [
            ("https://api.example.com/x", true),
            ("HTTPS://api.EXAMPLE.com:443/x", true),
            ("http://api.example.com/x", false),
            ("https://api.example.com:8443/x", false),
            ("https://api.example.com.evil/x", false),
            ("/relative", false),
        ] {
            assert_eq!(base.matches(&url.parse().unwrap()), same, "{url}");
        }
        assert!(has_http_scheme("HTTP://x") && has_http_scheme("https://x"));
        assert!(
            !has_http_scheme("http:/x") && !has_http_scheme("ftp://x") && !has_http_scheme("é")
        );
    }

    #[test]
    fn matching_by_spelling_agrees_with_comparing_origins() {
        let urls = [
            "https://api.example.com/x",
            "https://API.example.com/x",
            "https://api.example.com:443/x",
            "HTTPS://api.example.com:443/x",
            "https://user@api.example.com/x",
            "http://api.example.com/x",
            "http://api.example.com:443/x",
            "https://api.example.com:8443/x",
            "https://api.example.com.evil/x",
            "http://127.0.0.1:8080/x",
            "http://127.0.0.1:08080/x",
            "http://[::1]:80/x",
            "http://[::1]/x",
        ];
        for base in urls {
            let origin = Origin::of(&base.parse().unwrap()).unwrap();
            for url in urls {
                let uri = url.parse().unwrap();
                let same = Origin::of(&uri).as_ref() == Some(&origin);
                assert_eq!(origin.matches(&uri), same, "{base} vs {url}");
            }
        }
    }
}
