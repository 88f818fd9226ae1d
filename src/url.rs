//! URLs: origins (what the token is scoped to), endpoint URLs, and userinfo stripping for
//! `Debug` output and error messages.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
