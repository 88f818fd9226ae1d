//! Redirects (issue 3): followed by tokengate; credentials go only to the base URL's origin.

use std::sync::Arc;

use crate::harness::servers::raw::{recording, Action, Log, RawServer};
use tokengate::{AuthClient, Error, Tokens};

fn redirect(status: u16, location: String) -> Action {
    Action::Respond(
        status,
        vec![format!("location: {location}").into_bytes()],
        vec![],
    )
}

fn ok() -> Action {
    Action::Respond(200, vec![], b"ok".to_vec())
}

fn client(base: String) -> tokengate::AuthClientBuilder {
    AuthClient::builder(base)
        .proxy(None)
        .tokens(Tokens::new("SECRET-token"))
}

#[test]
fn same_origin_redirects_keep_the_token() {
    let log: Log = Default::default();
    let server = recording(&log, |req| match req.path.as_str() {
        "/api/old" => redirect(301, "/api/new".into()),
        "/api/new" => redirect(302, "next".into()),
        _ => ok(),
    });
    let c = client(server.url("/api/")).build().unwrap();
    assert!(c.get("old").call().is_ok());
    let log = log.lock();
    let paths: Vec<_> = log.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/api/old", "/api/new", "/api/next"]);
    for r in log.iter() {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer SECRET-token"),
            "{}",
            r.path
        );
    }
}

#[test]
fn cross_origin_redirects_drop_the_token_and_sensitive_headers() {
    let foreign_log: Log = Default::default();
    let foreign = recording(&foreign_log, |_| ok());
    let target = foreign.url("/landing");
    let log: Log = Default::default();
    let server = recording(&log, move |_| redirect(307, target.clone()));
    let c = client(server.url("/api/"))
        .sensitive_header("X-Api-Key")
        .build()
        .unwrap();
    let resp = c
        .post("upload")
        .header("X-Api-Key", "SECRET-key")
        .header("Cookie", "session=SECRET-cookie")
        .header("X-Trace", "keep-me")
        .send("payload")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = foreign_log.lock();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST", "307 keeps the method");
    assert_eq!(r.body, b"payload", "307 keeps the body");
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("x-api-key"), None);
    assert_eq!(r.header("cookie"), None);
    assert_eq!(r.header("x-trace"), Some("keep-me"));
    assert_eq!(log.lock()[0].header("x-api-key"), Some("SECRET-key"));
}

#[test]
fn another_host_name_or_port_is_another_origin() {
    // localhost and 127.0.0.1 are the same server here, but different origins.
    let port = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let p = port.clone();
    let log: Log = Default::default();
    let server = recording(&log, move |req| match req.path.as_str() {
        "/api/start" => {
            let port = p.load(std::sync::atomic::Ordering::SeqCst);
            redirect(302, format!("http://localhost:{port}/api/elsewhere"))
        }
        _ => ok(),
    });
    port.store(server.port, std::sync::atomic::Ordering::SeqCst);
    let c = client(server.url("/api/")).build().unwrap();
    assert!(c.get("start").call().is_ok());
    let l = log.lock();
    assert_eq!(l[0].header("authorization"), Some("Bearer SECRET-token"));
    assert_eq!(l[1].path, "/api/elsewhere");
    assert_eq!(l[1].header("authorization"), None);
    drop(l);

    // A different port on the same host is another origin too.
    let other: Log = Default::default();
    let other_server = recording(&other, |_| ok());
    let target = format!("http://127.0.0.1:{}/x", other_server.port);
    let bouncer = RawServer::start(move |_| redirect(302, target.clone()));
    let c = client(bouncer.url("/api/")).build().unwrap();
    assert!(c.get("start").call().is_ok());
    assert_eq!(other.lock()[0].header("authorization"), None);
}

#[test]
fn see_other_turns_into_a_bodyless_get_and_308_keeps_put() {
    let log: Log = Default::default();
    let server = recording(&log, |req| match req.path.as_str() {
        "/api/form" => redirect(303, "/api/result".into()),
        "/api/put" => redirect(308, "/api/put2".into()),
        _ => ok(),
    });
    let c = client(server.url("/api/")).build().unwrap();
    assert!(c.post("form").send_form([("a", "1")]).is_ok());
    assert!(c.put("put").send("same bytes").is_ok());
    let l = log.lock();
    assert_eq!((l[1].method.as_str(), l[1].body.len()), ("GET", 0));
    assert_eq!(l[1].header("content-type"), None);
    assert_eq!(
        (l[3].method.as_str(), l[3].body.as_slice()),
        ("PUT", &b"same bytes"[..])
    );
}

#[test]
fn redirect_limits_and_bad_locations_are_typed_errors() {
    let log: Log = Default::default();
    let server = recording(&log, |_| redirect(302, "/api/loop".into()));
    let c = client(server.url("/api/")).build().unwrap();
    assert!(matches!(
        c.get("loop").call(),
        Err(Error::TooManyRedirects(5))
    ));
    assert_eq!(log.lock().len(), 6);

    let c = client(server.url("/api/"))
        .max_redirects(0)
        .build()
        .unwrap();
    assert_eq!(c.get("loop").call().unwrap().status(), 302);

    let server = RawServer::start(|req| match req.path.as_str() {
        "/api/js" => redirect(302, "javascript:alert(1)".into()),
        "/api/none" => Action::Respond(302, vec![], vec![]),
        _ => Action::Respond(302, vec![b"location: /\xff".to_vec()], vec![]),
    });
    let c = client(server.url("/api/")).build().unwrap();
    for path in ["js", "none", "bytes"] {
        assert!(
            matches!(c.get(path).call(), Err(Error::BadRedirect(_))),
            "{path}"
        );
    }
}

#[test]
fn a_streamed_body_is_not_resent_to_a_307_target() {
    let server = RawServer::start(|_| redirect(307, "/api/b".into()));
    let c = client(server.url("/api/")).build().unwrap();
    let err = c.post("a").send_reader(&b"once"[..]).unwrap_err();
    assert!(matches!(err, Error::NotReplayable(_)), "{err:?}");
    assert_eq!(server.requests(), 1);
}

/// Issue 10, item 5: a request to another origin B (allowed with `allow_other_origins`) that
/// carries B's own credentials, redirected by B back to the API origin A, arrives at A
/// without them: every change of origin drops Cookie, Proxy-Authorization, the caller's
/// Authorization and the sensitive headers. A gets the API token, which it alone may see.
#[test]
fn credentials_of_another_origin_do_not_follow_a_redirect_back_to_the_api() {
    let api_log: Log = Default::default();
    let api = recording(&api_log, |_| ok());
    let back_to_api = api.url("/api/landing");
    let other_log: Log = Default::default();
    let other = recording(&other_log, move |_| redirect(302, back_to_api.clone()));
    let c = client(api.url("/api/"))
        .allow_other_origins(true)
        .sensitive_header("X-Api-Key")
        .build()
        .unwrap();
    c.get(&other.url("/start"))
        .header("Cookie", "b-session=SECRET-b-cookie")
        .header("X-Api-Key", "SECRET-b-key")
        .header("Proxy-Authorization", "Basic SECRET-proxy")
        .header("Authorization", "Basic SECRET-b-credentials")
        .header("X-Trace", "keep-me")
        .call()
        .unwrap();

    // B received its own credentials (the caller set them for B), and not the API token.
    let other_log = other_log.lock();
    assert_eq!(other_log.len(), 1);
    let b = &other_log[0];
    assert_eq!(b.header("cookie"), Some("b-session=SECRET-b-cookie"));
    assert_eq!(
        b.header("authorization"),
        Some("Basic SECRET-b-credentials")
    );
    // A received none of B's credentials, only its own token.
    let api_log = api_log.lock();
    assert_eq!(api_log.len(), 1);
    let a = &api_log[0];
    assert_eq!(a.path, "/api/landing");
    assert_eq!(a.header("authorization"), Some("Bearer SECRET-token"));
    for name in ["cookie", "x-api-key", "proxy-authorization"] {
        assert_eq!(a.header(name), None, "{name} followed the redirect back");
    }
    assert_eq!(a.header("x-trace"), Some("keep-me"));
}
