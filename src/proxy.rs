//! Which proxy a request goes through: the one rule, applied at every send
//! ([`crate::transport`]) and used to name the proxy in errors ([`proxy_for`]).
//!
//! A ureq agent has one proxy for all its requests. By default it is the environment's
//! (`ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY`, upper or lower case, the first set, read by ureq
//! when the agent is built). tokengate narrows an **environment** proxy per request, as Go's
//! `http.ProxyFromEnvironment` and curl do:
//! - a loopback destination ([`is_loopback_host`]: `localhost`, `*.localhost`,
//!   `127.0.0.0/8`, `[::1]`) never goes through it: a proxy elsewhere cannot reach this
//!   machine's loopback, and a dead one would break every local test server;
//! - nor does a destination that `NO_PROXY` (or `no_proxy`, the first that is not empty) names
//!   ([`NoProxy`]; read once per process, as Go does). ureq's own reading of it still applies
//!   on top (it also takes prefixes such as `10.*`).
//!
//! A proxy set **explicitly** (`AuthClientBuilder::proxy(Some(p))`, or an agent of the user's
//! own built with `Proxy::new`) is used for every destination, loopback included, except those
//! its own `ProxyBuilder::no_proxy` list exempts: explicit is explicit (Go's `http.ProxyURL`
//! does the same). Whether a proxy is the environment's is what ureq says
//! (`Proxy::is_from_env`).
//!
//! Cost: an agent without a proxy (the common case) pays one `Option` check per request; the
//! per-request override (`configure_request(..).proxy(None)`) is made only when a request
//! bypasses an environment proxy.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::OnceLock;

use ureq::http::Uri;
use ureq::{Agent, Proxy};

use crate::url::{is_loopback_host, port_of};

/// True when tokengate sends a request to `uri` on `agent` directly although the agent's
/// proxy would take it: that proxy came from the environment, and `uri` is loopback or named
/// by `NO_PROXY`. False at once when the agent has no proxy.
pub(crate) fn bypasses(agent: &Agent, uri: &Uri) -> bool {
    match agent.config().proxy() {
        Some(proxy) if proxy.is_from_env() => exempt_from_env_proxy(uri),
        _ => false,
    }
}

/// The proxy a request to `url` on `agent` goes through, as `scheme://host:port` (never its
/// credentials), or `None` when it goes directly: no proxy, a destination the rules above
/// exempt, or one the proxy's own no-proxy list exempts. For naming the proxy in errors.
pub(crate) fn proxy_for(agent: &Agent, url: &str) -> Option<String> {
    let proxy = agent.config().proxy()?;
    if let Ok(uri) = url.parse::<Uri>() {
        if proxy.is_no_proxy(&uri) || (proxy.is_from_env() && exempt_from_env_proxy(&uri)) {
            return None;
        }
    }
    Some(name(proxy))
}

/// `scheme://host:port` of `proxy`: the userinfo is left out (`host()` has none), the port is
/// the effective one (the protocol's default when the URI has none).
fn name(proxy: &Proxy) -> String {
    let scheme = proxy.uri().scheme_str().unwrap_or("http");
    format!(
        "{}://{}:{}",
        scheme.to_ascii_lowercase(),
        proxy.host(),
        proxy.port()
    )
}

/// Loopback, or named by the environment's `NO_PROXY`.
fn exempt_from_env_proxy(uri: &Uri) -> bool {
    let Some(host) = uri.host() else {
        return false;
    };
    is_loopback_host(host) || env_no_proxy().matches(host, port_of(uri))
}

/// `NO_PROXY`, else `no_proxy` (the first that is set and not blank), parsed once per process.
fn env_no_proxy() -> &'static NoProxy {
    static LIST: OnceLock<NoProxy> = OnceLock::new();
    LIST.get_or_init(|| {
        let list = ["NO_PROXY", "no_proxy"]
            .iter()
            .filter_map(|var| std::env::var(var).ok())
            .find(|v| !v.trim().is_empty());
        NoProxy::parse(list.as_deref().unwrap_or(""))
    })
}

/// A `NO_PROXY` list: comma-separated entries, spaces around them ignored, case-insensitive.
///
/// | entry | matches |
/// |---|---|
/// | `*` | every host |
/// | `example.com`, `.example.com`, `*.example.com` | `example.com` and every name under it (not `badexample.com`) |
/// | `example.com:8443` (any form above with a port) | those, on that port only (the scheme's default port counts: `example.com:443` matches `https://example.com/`) |
/// | `10.1.2.3`, `::1`, `[::1]`, `[::1]:8080`, `10.1.2.3:8080` | that IP address (any spelling of it), on that port if one is given |
/// | `10.0.0.0/8`, `fd00::/8` | every address in the block |
///
/// An entry that is none of these is ignored. Names match names only and addresses match
/// addresses only: `localhost` does not match `127.0.0.1` (nothing is resolved). This is
/// curl's reading; Go's differs in one point: for Go, `.example.com` does not match
/// `example.com` itself.
#[derive(Debug, Default)]
struct NoProxy(Vec<Entry>);

#[derive(Debug, PartialEq)]
enum Entry {
    All,
    /// Lower case, without a leading `.`/`*.` or a trailing `.`.
    Name {
        name: String,
        port: Option<u16>,
    },
    Ip {
        ip: IpAddr,
        port: Option<u16>,
    },
    Block {
        net: IpAddr,
        bits: u8,
    },
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        NoProxy(list.split(',').filter_map(Entry::parse).collect())
    }

    /// True if a request to `host` (as `Uri::host` gives it: an IPv6 address in brackets) on
    /// `port` is exempt.
    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host);
        let ip = host.parse::<IpAddr>().ok();
        self.0.iter().any(|e| e.matches(host, ip, port))
    }
}

impl Entry {
    fn parse(raw: &str) -> Option<Entry> {
        let e = raw.trim();
        if e == "*" {
            return Some(Entry::All);
        }
        if let Some((addr, bits)) = e.split_once('/') {
            return Entry::block(addr, bits);
        }
        let (host, port) = split_port(e)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Entry::Ip { ip, port });
        }
        let name = host
            .strip_prefix("*.")
            .or_else(|| host.strip_prefix('.'))
            .unwrap_or(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() || name.contains([':', '*', '[', ']', ' ']) {
            return None;
        }
        Some(Entry::Name {
            name: name.to_ascii_lowercase(),
            port,
        })
    }

    /// `10.0.0.0/8`, `fd00::/8`, `[fd00::]/8`.
    fn block(addr: &str, bits: &str) -> Option<Entry> {
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let net: IpAddr = addr.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Entry::Block { net, bits })
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: Option<u16>) -> bool {
        let port_ok = |want: &Option<u16>| want.is_none() || *want == port;
        match self {
            Entry::All => true,
            Entry::Ip { ip: want, port: p } => ip == Some(*want) && port_ok(p),
            Entry::Block { net, bits } => ip.is_some_and(|ip| in_block(ip, *net, *bits)),
            Entry::Name { name, port: p } => ip.is_none() && is_within(host, name) && port_ok(p),
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address: the host (without
/// brackets) and the port. `None` for a port that is not a number, or brackets around
/// something that is not an IPv6 address.
fn split_port(e: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = e.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    if e.parse::<Ipv6Addr>().is_ok() {
        return Some((e, None));
    }
    match e.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((e, None)),
    }
}

/// `host` is `name` or a name under it (`a.b.name`), ignoring case.
fn is_within(host: &str, name: &str) -> bool {
    if host.eq_ignore_ascii_case(name) {
        return true;
    }
    let Some(start) = host.len().checked_sub(name.len() + 1) else {
        return false;
    };
    host.as_bytes()[start] == b'.'
        && host
            .get(start + 1..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(name))
}

/// `ip` is in the block `net`/`bits` (same family only).
fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_with(proxy: Option<Proxy>) -> Agent {
        Agent::config_builder().proxy(proxy).build().into()
    }

    fn check(cases: &[(&str, &str, Option<u16>, bool)]) {
        for &(list, host, port, want) in cases {
            assert_eq!(
                NoProxy::parse(list).matches(host, port),
                want,
                "NO_PROXY={list:?} host={host} port={port:?}"
            );
        }
    }

    #[test]
    fn no_proxy_names_match_as_curl_reads_them() {
        check(&[
            // A name: itself and every name under it, any case, on any port.
            ("example.com", "example.com", Some(443), true),
            ("example.com", "api.example.com", Some(443), true),
            ("example.com", "a.b.EXAMPLE.com", Some(80), true),
            ("Example.COM", "api.example.com", Some(443), true),
            ("example.com", "badexample.com", Some(443), false),
            ("example.com", "example.com.evil.net", Some(443), false),
            ("example.com", "example.org", Some(443), false),
            // Leading `.` or `*.`: the same (curl; Go would not match example.com itself).
            (".example.com", "example.com", Some(443), true),
            (".example.com", "api.example.com", Some(443), true),
            ("*.example.com", "api.example.com", Some(443), true),
            ("*.example.com", "example.com", Some(443), true),
            (".example.com", "badexample.com", Some(443), false),
            // A trailing dot on either side is the same name.
            ("example.com.", "api.example.com", Some(443), true),
            ("example.com", "api.example.com.", Some(443), true),
            // Ports: only that one; the scheme's default counts.
            ("example.com:8443", "api.example.com", Some(8443), true),
            ("example.com:8443", "api.example.com", Some(443), false),
            ("example.com:443", "example.com", Some(443), true),
            // Everything.
            ("*", "anything.at.all", Some(1), true),
            ("*", "[2001:db8::1]", Some(1), true),
            // Lists: commas, spaces around entries, empty entries.
            (" a.test , b.test ,, ", "x.b.test", Some(80), true),
            ("a.test,b.test", "c.test", Some(80), false),
            ("", "example.com", Some(80), false),
        ]);
    }

    #[test]
    fn no_proxy_addresses_and_blocks_match_and_bad_entries_are_ignored() {
        check(&[
            // IP addresses: any spelling of the same address; names never match addresses.
            ("10.1.2.3", "10.1.2.3", Some(80), true),
            ("10.1.2.3", "10.1.2.4", Some(80), false),
            ("10.1.2.3:8080", "10.1.2.3", Some(8080), true),
            ("10.1.2.3:8080", "10.1.2.3", Some(80), false),
            ("2001:db8::1", "[2001:db8::1]", Some(443), true),
            ("[2001:db8::1]", "[2001:DB8:0::1]", Some(443), true),
            ("[2001:db8::1]:8443", "[2001:db8::1]", Some(8443), true),
            ("[2001:db8::1]:8443", "[2001:db8::1]", Some(443), false),
            ("1.2.3", "1.2.3.4", Some(80), false),
            ("example.com", "10.1.2.3", Some(80), false),
            // Blocks.
            ("10.0.0.0/8", "10.200.3.4", Some(80), true),
            ("10.0.0.0/8", "11.0.0.1", Some(80), false),
            ("192.168.1.0/24", "192.168.1.77", Some(80), true),
            ("192.168.1.0/24", "192.168.2.1", Some(80), false),
            ("0.0.0.0/0", "8.8.8.8", Some(80), true),
            ("2001:db8::/32", "[2001:db8:ffff::1]", Some(443), true),
            ("[2001:db8::]/32", "[2001:db9::1]", Some(443), false),
            ("10.0.0.0/8", "[::1]", Some(80), false),
            ("10.0.0.0/8", "example.com", Some(80), false),
            // Not entries: ignored, never a panic.
            ("10.0.0.0/33", "10.0.0.1", Some(80), false),
            ("10.0.0.0/x", "10.0.0.1", Some(80), false),
            ("example.com:http", "example.com", Some(80), false),
            ("example.com:99999", "example.com", Some(80), false),
            ("[example.com]", "example.com", Some(80), false),
            ("[::1", "[::1]", Some(80), false),
            ("*.", "example.com", Some(80), false),
            (".", "example.com", Some(80), false),
            ("exa*mple.com", "example.com", Some(80), false),
            ("é.test", "é.test", Some(80), true),
        ]);
    }

    #[test]
    fn no_proxy_entries_parse_to_one_kind_each() {
        let p = NoProxy::parse("*.Example.com:8443, [::1]:80, 10.0.0.0/8, nope:x, *");
        assert_eq!(
            p.0,
            vec![
                Entry::Name {
                    name: "example.com".into(),
                    port: Some(8443)
                },
                Entry::Ip {
                    ip: "::1".parse().unwrap(),
                    port: Some(80)
                },
                Entry::Block {
                    net: "10.0.0.0".parse().unwrap(),
                    bits: 8
                },
                Entry::All,
            ]
        );
    }

    #[test]
    fn an_explicit_proxy_takes_every_destination_loopback_included() {
        let proxy = Proxy::new("http://user:secret@127.0.0.1:3128").unwrap();
        assert!(!proxy.is_from_env());
        let agent = agent_with(Some(proxy));
        for url in [
            "http://127.0.0.1:8080/api",
            "http://localhost/x",
            "http://[::1]:1/",
            "https://api.example.com/v1",
        ] {
            let uri: Uri = url.parse().unwrap();
            assert!(!bypasses(&agent, &uri), "{url}");
            assert_eq!(
                proxy_for(&agent, url).as_deref(),
                Some("http://127.0.0.1:3128"),
                "{url}"
            );
        }
        // Named without its credentials, with its effective port and scheme.
        let socks = agent_with(Some(Proxy::new("SOCKS5://u:p@Proxy.Example:1080").unwrap()));
        let named = proxy_for(&socks, "https://api.example.com/").unwrap();
        assert_eq!(named, "socks5://Proxy.Example:1080");
        let default_port = agent_with(Some(Proxy::new("proxy.example").unwrap()));
        assert_eq!(
            proxy_for(&default_port, "https://api.example.com/").as_deref(),
            Some("http://proxy.example:80")
        );
        // Its own no-proxy list (ureq's) is honoured, and proxy_for says so.
        let listed = agent_with(Some(
            Proxy::builder(ureq::ProxyProtocol::Http)
                .host("127.0.0.1")
                .port(3128)
                .no_proxy("api.example.com")
                .build()
                .unwrap(),
        ));
        assert_eq!(proxy_for(&listed, "https://api.example.com/v1"), None);
        assert!(proxy_for(&listed, "https://other.example.com/").is_some());
    }

    #[test]
    fn an_agent_without_a_proxy_goes_directly() {
        let agent = agent_with(None);
        let uri: Uri = "https://api.example.com/".parse().unwrap();
        assert!(!bypasses(&agent, &uri));
        assert_eq!(proxy_for(&agent, "https://api.example.com/"), None);
        assert_eq!(proxy_for(&agent, "not a url"), None);
    }

    const ROLE: &str = "TOKENGATE_TEST_ROLE";

    /// Runs in a child process with a proxy and a `NO_PROXY` in its environment (the parent
    /// below sets them; no test sets its own environment).
    #[test]
    fn an_environment_proxy_skips_loopback_and_what_no_proxy_names() {
        if std::env::var_os(ROLE).is_none() {
            return run_in_child_with_proxy_env();
        }
        let agent = Agent::new_with_defaults();
        let proxy = agent.config().proxy().expect("the environment's proxy");
        assert!(proxy.is_from_env());
        let via = Some("http://127.0.0.1:9");
        for (url, want) in [
            // Loopback, whatever NO_PROXY says.
            ("http://127.0.0.1:8080/api", None),
            ("http://127.9.8.7/", None),
            ("http://localhost:1/", None),
            ("http://LOCALHOST/", None),
            ("http://app.localhost/", None),
            ("http://[::1]:8080/", None),
            // NO_PROXY (upper case wins over the lower-case one, which names other.test).
            ("https://example.com/", None),
            ("https://api.example.com/v1", None),
            ("https://internal.test:8443/", None),
            ("https://internal.test/", via),
            ("http://10.20.30.40/", None),
            ("https://other.test/", via),
            // The rest goes through the proxy, named without its credentials.
            ("https://api.example.org/v1", via),
            ("http://192.168.1.1/", via),
            ("http://[2001:db8::1]/", via),
            ("http://localhost.example.org/", via),
        ] {
            assert_eq!(proxy_for(&agent, url).as_deref(), want, "{url}");
            let uri: Uri = url.parse().unwrap();
            assert_eq!(bypasses(&agent, &uri), want.is_none(), "{url}");
        }
        println!("child checked");
    }

    fn run_in_child_with_proxy_env() {
        let name = "proxy::tests::an_environment_proxy_skips_loopback_and_what_no_proxy_names";
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child.args([name, "--exact", "--nocapture", "--test-threads=1"]);
        for var in ["ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"] {
            child.env_remove(var).env_remove(var.to_ascii_lowercase());
        }
        child
            .env(ROLE, "child")
            .env("HTTP_PROXY", "http://user:secret@127.0.0.1:9")
            .env("NO_PROXY", " .example.com, internal.test:8443 ,10.0.0.0/8")
            .env("no_proxy", "other.test");
        let out = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("child checked"), "{stdout}");
    }
}
