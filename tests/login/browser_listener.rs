//! The browser login's loopback listener, as a browser meets it: only the callback path is
//! served, its pages are static, the first valid callback counts, connections that send
//! nothing do not stop it, and a hundred logins side by side never cross.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;

use tokengate::testing::{Grant, Outcome, TestServer};

use crate::browser::{addr_of, distinct, flow, get, one_code_exchange, query_of, request};
use crate::harness::observe::HANG_GUARD;

/// Only the callback path is served (404 elsewhere, 405 for another method); the success
/// page is static HTML that echoes no parameter and sends no referrer; a second visit of the
/// same callback gets the "already received" page and exchanges nothing more.
#[test]
fn only_the_callback_path_is_served_and_its_pages_echo_nothing() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let callback = pending.redirect_uri().to_owned();
    let root = callback.strip_suffix("/callback").unwrap();
    for path in ["/favicon.ico", "/", "/callback/", "/callbackx", "/Callback"] {
        let page = get(&format!("{root}{path}"));
        assert_eq!(page.status, 404, "{path}");
        assert!(page.body.contains("Nothing is served here"), "{path}");
    }
    let post = request("POST", &callback);
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET");

    let redirect = srv.authorize(pending.authorization_url()).unwrap();
    let q = query_of(&redirect);
    let (code, state) = (q["code"].clone(), q["state"].clone());
    let visited = format!("{redirect}&session_state=SESSION-VALUE&iss=ISSUER-VALUE");
    // A HEAD of the very callback (a link checker, a prefetcher) does not use up the code.
    assert_eq!(request("HEAD", &visited).status, 405);
    let first = get(&visited);
    assert_eq!(first.status, 200);
    assert!(first.body.starts_with("<!DOCTYPE html>"), "{}", first.body);
    assert!(first.body.contains("Login received"), "{}", first.body);
    assert_eq!(first.headers["referrer-policy"], "no-referrer");
    assert_eq!(first.headers["cache-control"], "no-store");
    assert_eq!(first.headers["content-type"], "text/html; charset=utf-8");
    assert!(first.headers["content-security-policy"].starts_with("default-src 'none'"));
    let second = get(&visited);
    assert_eq!(second.status, 200);
    assert!(second.body.contains("already"), "{}", second.body);
    for page in [&first, &second] {
        for value in [
            code.as_str(),
            &state,
            "SESSION-VALUE",
            "ISSUER-VALUE",
            "session_state",
        ] {
            assert!(!page.body.contains(value), "{value} in {}", page.body);
            for (name, header) in &page.headers {
                assert!(!header.contains(value), "{value} in {name}: {header}");
            }
        }
    }

    pending.wait().unwrap();
    one_code_exchange(&srv, 1);
}

/// A browser's extra connections (a preconnect closed unused, one held open idle, a request
/// cut in its head) do not keep the callback from being served; when the login ends the
/// listener stops, closing the idle one.
#[test]
fn empty_idle_and_cut_connections_do_not_break_the_login() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let addr = addr_of(pending.redirect_uri());
    drop(TcpStream::connect(addr).unwrap());
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut cut = TcpStream::connect(addr).unwrap();
    cut.write_all(b"GET /callback?code=").unwrap();
    let mut cut_closed = TcpStream::connect(addr).unwrap();
    cut_closed.write_all(b"GET /callback?co").unwrap();
    drop(cut_closed);

    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    pending.wait().unwrap();
    one_code_exchange(&srv, 1);
    idle.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        idle.read(&mut byte).unwrap(),
        0,
        "the listener closed the idle connection"
    );
    drop(cut);
}

/// A local process holding more connections open than the listener serves at once (40,
/// each mid-request) cannot lock the browser out: a new connection closes the oldest, so the
/// browser's redirect, accepted after them, is served and logs in.
#[test]
fn connections_held_open_do_not_lock_the_browser_out() {
    let srv = TestServer::start();
    let pending = flow(&srv).start().unwrap();
    let addr = addr_of(pending.redirect_uri());
    let held: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"G").unwrap();
            c
        })
        .collect();
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    pending.wait().unwrap();
    one_code_exchange(&srv, 1);
    drop(held);
}

/// A hundred logins on one machine at once, each on a port of its own, each browser sent
/// back to its own listener: every one starts (no port conflict) and gets the tokens its own
/// code bought (the scope its request asked for, the kit's journal agreeing), none twice.
#[test]
fn a_hundred_logins_in_parallel_never_cross() {
    const N: usize = 100;
    let srv = TestServer::start();
    let all_bound = Barrier::new(N);
    let results: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (srv, all_bound) = (&srv, &all_bound);
                s.spawn(move || {
                    let started = flow(srv).scope(format!("api user-{i}")).start();
                    // Every listener is bound before any browser comes back.
                    all_bound.wait();
                    let pending = started?;
                    let redirect_uri = pending.redirect_uri().to_owned();
                    let status = srv.open_in_browser(pending.authorization_url()).unwrap();
                    Ok::<_, tokengate::Error>((redirect_uri, status, pending.wait()))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });

    let port_conflicts = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(port_conflicts, 0, "{results:?}");
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert!(results.iter().all(|(_, status, _)| *status == 200));
    assert_eq!(distinct(results.iter().map(|(uri, _, _)| uri.clone())), N);
    let tokens: Vec<_> = results
        .into_iter()
        .map(|(_, _, tokens)| tokens.unwrap())
        .collect();
    let mismatches = tokens
        .iter()
        .enumerate()
        .filter(|(i, t)| t.scope() != Some(format!("api user-{i}").as_str()))
        .count();
    assert_eq!(mismatches, 0);
    let access: Vec<String> = tokens
        .iter()
        .map(|t| t.access_token().secret().to_owned())
        .collect();
    assert_eq!(distinct(access.iter().cloned()), N);
    for t in &tokens {
        // An access token and its refresh token come from one issue.
        let n = t.access_token().secret().strip_prefix("at-").unwrap();
        assert_eq!(t.refresh_token().unwrap().secret(), format!("rt-{n}"));
    }

    let calls = srv.token_calls();
    assert_eq!(calls.len(), N);
    assert!(calls.iter().all(|c| c.grant == Grant::AuthorizationCode));
    let issued: Vec<String> = calls
        .iter()
        .map(|c| match c.outcome {
            Outcome::Issued(n) => format!("at-{n}"),
            ref other => panic!("{other:?}"),
        })
        .collect();
    let mut issued_sorted = issued.clone();
    issued_sorted.sort();
    let mut access_sorted = access;
    access_sorted.sort();
    assert_eq!(issued_sorted, access_sorted);
    let c = srv.counters();
    assert_eq!(
        (c.token_requests, c.issued, c.refreshes),
        (N as u64, N as u64, 0)
    );
    assert_eq!((c.reuse_detected, c.presented_twice), (0, 0));
    assert!(calls
        .iter()
        .all(|call| !call.reuse && !call.presented_twice));
}
