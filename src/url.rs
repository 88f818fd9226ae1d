//! URLs, and the one rule for every URL a credential is sent to (absolute http(s) with a host,
//! no userinfo, `https` unless loopback or opted in): [`EndpointUrl`] (checked) and
//! [`GivenUrl`] (as given, checked where used), [`BaseUrl`] (requests' paths resolved against
//! it), [`Origin`] (what the token is scoped to), and userinfo stripping for `Debug` output and
//! error messages.

use std::fmt;

use ureq::http::Uri;

use crate::error::Error;

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
        let port = port_of(uri)?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host,
            port,
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
        let (Some(host), Some(port)) = (uri.host(), port_of(uri)) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host.eq_ignore_ascii_case(&self.host)
            && port == self.port
    }

    pub(crate) fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    /// `localhost`, `127.0.0.0/8` or `[::1]`: hosts where plain `http` cannot leave the machine.
    pub(crate) fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
}

/// The port a request to `uri` connects to: its own, or its `http`/`https` scheme's default
/// (in any case); `None` for another scheme. Allocates nothing (it runs for every request).
pub(crate) fn port_of(uri: &ureq::http::Uri) -> Option<u16> {
    let default = match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("http") => 80,
        s if s.eq_ignore_ascii_case("https") => 443,
        _ => return None,
    };
    Some(uri.port_u16().unwrap_or(default))
}

/// `localhost`, `*.localhost`, `127.0.0.0/8` or `::1` (bracketed or not), in any case: the
/// host of a URL (`Uri::host`) that names this machine. The one loopback rule: plain `http` is
/// allowed to it, and an environment proxy is never used for it.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    const SUFFIX: &str = ".localhost";
    if h.eq_ignore_ascii_case("localhost")
        || h.len()
            .checked_sub(SUFFIX.len())
            .and_then(|start| h.get(start..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(SUFFIX))
    {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
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

/// True if `s` starts with `http://` or `https://`, in any case.
pub(crate) fn has_http_scheme(s: &str) -> bool {
    let starts = |prefix: &str| {
        s.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts("http://") || starts("https://")
}

/// What is wrong with a URL that would carry a credential, by the one rule
/// ([`EndpointUrl::parse`]). Each caller words it its own way, in its own error type.
#[derive(Debug)]
pub(crate) enum UrlProblem {
    /// Does not parse as a URL.
    Unparsable,
    /// Parses, but is not an absolute http(s) URL with a host.
    NotHttp,
    /// Has `user:password@` in its authority.
    Credentials,
    /// Plain http to a host other than loopback, not opted in: the origin, which is safe to
    /// show (a path or query could carry a secret).
    Insecure(Origin),
}

/// The first half of the rule: `url` parses as an absolute `http`/`https` URL with a host.
fn parse_http(url: &str) -> Result<(Uri, Origin), UrlProblem> {
    let uri: Uri = url.parse().map_err(|_| UrlProblem::Unparsable)?;
    let origin = Origin::of(&uri).ok_or(UrlProblem::NotHttp)?;
    Ok((uri, origin))
}

/// The second half of the rule: no credentials in the authority, and `https` unless the host
/// is loopback or `allow_insecure_http`. (The base URL checks its query between the halves.)
fn check_credentials_and_security(
    uri: &Uri,
    origin: &Origin,
    allow_insecure_http: bool,
) -> Result<(), UrlProblem> {
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(UrlProblem::Credentials);
    }
    if origin.is_https() || origin.is_loopback() || allow_insecure_http {
        Ok(())
    } else {
        Err(UrlProblem::Insecure(origin.clone()))
    }
}

/// [`Error::InsecureUrl`] for `origin`: only the origin is shown.
pub(crate) fn insecure(origin: &Origin) -> Error {
    Error::InsecureUrl(format!("{origin:?}"))
}

/// An endpoint URL that passed the rule: absolute http(s) with a host, no credentials,
/// `https` unless loopback or opted in. Keeps the URL as it was given.
#[derive(Clone)]
pub(crate) struct EndpointUrl {
    url: String,
    uri: Uri,
}

impl EndpointUrl {
    /// Checks `url` against the rule.
    ///
    /// # Errors
    /// The first [`UrlProblem`] found, in the order of its variants.
    pub(crate) fn parse(url: &str, allow_insecure_http: bool) -> Result<EndpointUrl, UrlProblem> {
        let (uri, origin) = parse_http(url)?;
        check_credentials_and_security(&uri, &origin, allow_insecure_http)?;
        Ok(EndpointUrl {
            url: url.to_owned(),
            uri,
        })
    }

    /// The URL, as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.url
    }

    /// `scheme://authority`, as spelled in the URL.
    pub(crate) fn root(&self) -> String {
        root_of(&self.uri)
    }

    /// The URL's path.
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }
}

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&strip_userinfo(&self.url), f)
    }
}

/// `scheme://authority` of an absolute URL, as spelled in it.
fn root_of(uri: &Uri) -> String {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{}://{}", uri.scheme_str().unwrap_or("https"), authority)
}

/// A URL as the user gave it to an infallible setter ([`AuthServer::new`](crate::AuthServer::new),
/// [`JsonRefresh::new`](crate::JsonRefresh::new), …), checked where it is used
/// ([`GivenUrl::check`]: by `build()` for the grants' endpoints, by
/// [`DeviceFlow::start`](crate::login::DeviceFlow::start) for the device flow's). `Debug`
/// prints it without userinfo.
#[derive(Clone)]
pub(crate) struct GivenUrl(String);

impl GivenUrl {
    pub(crate) fn new(url: impl Into<String>) -> GivenUrl {
        GivenUrl(url.into())
    }

    /// The URL, as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// [`EndpointUrl::parse`].
    pub(crate) fn check(&self, allow_insecure_http: bool) -> Result<EndpointUrl, UrlProblem> {
        EndpointUrl::parse(&self.0, allow_insecure_http)
    }
}

impl fmt::Debug for GivenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&strip_userinfo(&self.0), f)
    }
}

/// The base URL: every request path is resolved against it, and its origin is the only one
/// that ever sees the access token.
pub(crate) struct BaseUrl {
    /// The base URL, ending in `/`.
    url: String,
    /// `scheme://authority`, for paths starting with `/`.
    root: String,
    origin: Origin,
}

impl BaseUrl {
    /// Parses and checks a base URL: absolute http(s) with a host, no query, no credentials
    /// ([`parse_http`], [`check_credentials_and_security`]), `https` unless the host is
    /// loopback or `allow_insecure_http`.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] saying which rule it breaks (never quoting it);
    /// [`Error::InsecureUrl`] with its origin for plain http.
    pub(crate) fn parse(url: &str, allow_insecure_http: bool) -> Result<BaseUrl, Error> {
        let invalid = |what: &str| Error::InvalidUrl(format!("base URL {what}"));
        let (uri, origin) = parse_http(url).map_err(|p| match p {
            UrlProblem::Unparsable => invalid("is not a valid URL"),
            _ => invalid("must be an absolute http(s) URL"),
        })?;
        if uri.query().is_some() {
            return Err(invalid("must not have a query"));
        }
        check_credentials_and_security(&uri, &origin, allow_insecure_http).map_err(
            |p| match p {
                UrlProblem::Insecure(origin) => insecure(&origin),
                _ => invalid("must not embed credentials"),
            },
        )?;
        let root = root_of(&uri);
        let mut url = format!("{root}{}", uri.path());
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(BaseUrl { url, root, origin })
    }

    /// The base URL, ending in `/`.
    pub(crate) fn as_str(&self) -> &str {
        &self.url
    }

    /// Its origin.
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Resolves a request path (see [`AuthClient::request`](crate::AuthClient::request)) and
    /// appends `query`. Also returns whether the URL has the base URL's origin (the only one
    /// the token goes to); another origin is an error unless `other_origins` allows it.
    pub(crate) fn resolve(
        &self,
        path: &str,
        query: &str,
        other_origins: bool,
    ) -> Result<(Uri, bool), Error> {
        let mut url = self.join(path)?;
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(query);
        }
        // From the `String` itself: parsing a `&str` would copy it.
        let uri = Uri::try_from(url).map_err(|_| Error::InvalidUrl("not a valid URL".into()))?;
        if self.origin.matches(&uri) {
            return Ok((uri, true));
        }
        match Origin::of(&uri) {
            None => Err(Error::InvalidUrl(
                "only http and https URLs with a host are allowed".into(),
            )),
            Some(o) if o != self.origin && !other_origins => Err(Error::InvalidUrl(
                "the URL leaves the base URL's origin (see allow_other_origins)".into(),
            )),
            Some(_) => Ok((uri, false)),
        }
    }

    /// `path` as a URL: as is if absolute http(s), else joined to the base URL (or its root,
    /// for a path starting with `/`). Anything that would leave the origin another way is
    /// refused.
    fn join(&self, path: &str) -> Result<String, Error> {
        if has_http_scheme(path) {
            return Ok(path.to_owned());
        }
        if path.starts_with("//") || path.starts_with("\\\\") || path.starts_with("/\\") {
            return Err(Error::InvalidUrl(
                "a path starting with // would leave the base URL's origin".into(),
            ));
        }
        if path
            .find([':', '/', '?', '#'])
            .is_some_and(|i| path.as_bytes()[i] == b':')
        {
            return Err(Error::InvalidUrl(
                "a path with a scheme other than http(s) is not allowed".into(),
            ));
        }
        let prefix = if path.starts_with('/') {
            &self.root
        } else {
            &self.url
        };
        let mut url = String::with_capacity(prefix.len() + path.len() + 1);
        url.push_str(prefix);
        url.push_str(path);
        Ok(url)
    }
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
            format!("{:?}", GivenUrl::new("https://id:pw@h/t")),
            "\"https://h/t\""
        );
    }

    #[test]
    fn loopback_hosts_are_recognised_in_any_spelling() {
        for host in [
            "localhost",
            "LocalHost",
            "app.localhost",
            "a.b.LOCALHOST",
            "127.0.0.1",
            "127.255.0.9",
            "[::1]",
            "::1",
            "[0:0:0:0:0:0:0:1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "localhost.example.com",
            "notlocalhost",
            "localhost.",
            "128.0.0.1",
            "[::2]",
            "[2001:db8::1]",
            "example.com",
            "",
            "ééélocalhost",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
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

    #[test]
    fn base_urls_are_normalized_and_checked() {
        let b = BaseUrl::parse("https://api.example.com/v1", false).unwrap();
        assert_eq!(b.url, "https://api.example.com/v1/");
        assert_eq!(b.root, "https://api.example.com");
        let b = BaseUrl::parse("http://127.0.0.1:8080", false).unwrap();
        assert_eq!(b.url, "http://127.0.0.1:8080/");
        for bad in [
            "",
            "api.example.com",
            "ftp://x/",
            "https://x/?a=b",
            "https://u:p@x/",
            "https://",
        ] {
            assert!(
                matches!(BaseUrl::parse(bad, false), Err(Error::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoint_urls_follow_the_one_rule_and_report_the_first_problem() {
        let problem = |url: &str, allow: bool| EndpointUrl::parse(url, allow).err();
        assert!(matches!(problem("", false), Some(UrlProblem::Unparsable)));
        for not_http in ["ftp://h/t", "h.example", "/t", "ftp://u:p@h/t"] {
            assert!(
                matches!(problem(not_http, false), Some(UrlProblem::NotHttp)),
                "{not_http}"
            );
        }
        assert!(matches!(
            problem("http://u:p@example.com/t", false),
            Some(UrlProblem::Credentials)
        ));
        assert!(matches!(
            problem("http://example.com/t?q", false),
            Some(UrlProblem::Insecure(o)) if format!("{o:?}") == "http://example.com:80"
        ));
        for ok in ["https://h/t?q", "http://127.0.0.1:8/t", "http://[::1]/t"] {
            assert_eq!(EndpointUrl::parse(ok, false).unwrap().as_str(), ok);
        }
        let u = EndpointUrl::parse("http://example.com:8/a/b/", true).unwrap();
        assert_eq!(
            (u.root().as_str(), u.path()),
            ("http://example.com:8", "/a/b/")
        );
    }
}
