//! The token endpoint under the default `RetryPolicy`, one failure class at a time. A refresh
//! POST is retried only where the server cannot have used the refresh token (nothing was
//! sent; 503; 429 honouring `Retry-After`). Where the server may have rotated it (a 5xx other
//! than 503, a timeout, a reset or hang-up after sending), a retry would present a rotated
//! refresh token, which a strict server treats as theft: exactly one call, tokens kept.
//!
//! The token server here rotates the refresh token *before* it fails in those classes, as a
//! real server that crashes after committing would, and counts every reuse. Calls are counted
//! on both sides: by the server and by the client's `Retrying` events (which are exact even
//! when the server has not yet read a request the client gave up on).

use std::sync::Arc;
use std::time::Duration;

use crate::harness::fixtures::{refused_addr, RecordingSleeper};
use crate::harness::observe::{release_together, wait_until, Recorder, HANG_GUARD};
use crate::harness::servers::form;
use crate::harness::servers::raw::{Action, RawServer};
use parking_lot::Mutex;
use tokengate::{AuthClient, AuthServer, Error, Event, RefreshError, Tokens};

/// What the token endpoint does with one call.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Rotates and answers 200 with the new tokens.
    Rotate,
    /// Answers this status without touching the refresh token (503, 429 by the book).
    Before(u16, Option<u64>),
    /// Rotates, then answers this status (the server committed, then failed).
    After(u16),
    /// Rotates, then never answers (until the test ends).
    AfterThenHang,
    /// Rotates, then closes the connection without answering.
    AfterThenClose,
}

#[derive(Default)]
struct TokenState {
    current: String,
    rotated: Vec<String>,
    minted: u64,
    calls: usize,
    reuse: usize,
}

/// A strict token server: `script[i]` answers call i, then `Rotate`.
struct StrictTokenServer {
    server: RawServer,
    state: Arc<Mutex<TokenState>>,
}

impl StrictTokenServer {
    fn start(script: Vec<Answer>) -> Self {
        let state = Arc::new(Mutex::new(TokenState {
            current: "rt-0".into(),
            ..Default::default()
        }));
        let st = state.clone();
        let server = RawServer::start(move |req| {
            let presented = form(&req.body)
                .get("refresh_token")
                .cloned()
                .unwrap_or_default();
            let mut s = st.lock();
            let answer = script.get(s.calls).copied().unwrap_or(Answer::Rotate);
            s.calls += 1;
            if s.rotated.contains(&presented) {
                s.reuse += 1;
                return respond(400, &[], r#"{"error":"invalid_grant"}"#);
            }
            assert_eq!(presented, s.current, "an unknown refresh token");
            if let Answer::Before(status, retry_after) = answer {
                let header = retry_after.map(|s| format!("retry-after: {s}"));
                return respond(status, header.as_slice(), "{}");
            }
            // Commit the rotation, then answer (or not).
            s.minted += 1;
            let (access, refresh) = (format!("at-{}", s.minted), format!("rt-{}", s.minted));
            let old = std::mem::replace(&mut s.current, refresh.clone());
            s.rotated.push(old);
            match answer {
                Answer::After(status) => respond(status, &[], "{}"),
                Answer::AfterThenHang => Action::Hang(HANG_GUARD),
                Answer::AfterThenClose => Action::Close,
                _ => respond(
                    200,
                    &["content-type: application/json".to_owned()],
                    &format!(
                        r#"{{"access_token":"{access}","token_type":"Bearer","refresh_token":"{refresh}"}}"#
                    ),
                ),
            }
        });
        StrictTokenServer { server, state }
    }

    fn calls(&self) -> usize {
        self.state.lock().calls
    }

    fn reuse(&self) -> usize {
        self.state.lock().reuse
    }
}

fn respond(status: u16, headers: &[String], body: &str) -> Action {
    Action::Respond(
        status,
        headers.iter().map(|h| h.as_bytes().to_vec()).collect(),
        body.as_bytes().to_vec(),
    )
}

/// An API that accepts any `at-N` token minted by the token server and rejects the login's.
fn api() -> RawServer {
    RawServer::start(|req| match req.header("authorization") {
        Some(v) if v.starts_with("Bearer at-") => respond(200, &[], "ok"),
        _ => respond(
            401,
            &[r#"www-authenticate: Bearer error="invalid_token""#.to_owned()],
            "",
        ),
    })
}

struct Run {
    client: AuthClient,
    sleeper: Arc<RecordingSleeper>,
    events: Recorder,
}

/// A client with the default retry policy, a recording sleeper (no real waits) and a token
/// timeout long enough for any loaded machine, except where a test wants a timeout.
fn run(api: &RawServer, token_url: String, token_timeout: Duration) -> Run {
    let sleeper = Arc::new(RecordingSleeper::default());
    let events = Recorder::new();
    let client = AuthClient::builder(api.url("/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .token_timeout(token_timeout)
        .refresher(AuthServer::new(token_url).refresh_grant())
        .tokens(Tokens::new("login").with_refresh_token("rt-0"))
        .on_event(events.listener())
        .build()
        .unwrap();
    Run {
        client,
        sleeper,
        events,
    }
}

fn retries(events: &Recorder) -> usize {
    events.count(|e| matches!(e, Event::Retrying { .. }))
}

#[track_caller]
fn assert_kept(r: &Run) {
    let t = r.client.tokens().expect("tokens kept");
    assert_eq!(t.access_token().secret(), "login");
    assert_eq!(t.refresh_token().unwrap().secret(), "rt-0");
    assert_eq!(
        r.events
            .count(|e| matches!(e, Event::RefreshStarted { .. })),
        1,
        "one flight"
    );
    assert_eq!(r.events.count(|e| *e == Event::SessionExpired), 0);
}

#[test]
fn a_5xx_other_than_503_is_one_call_since_the_server_may_have_rotated() {
    let api = api();
    for status in [500u16, 502, 504] {
        let token = StrictTokenServer::start(vec![Answer::After(status)]);
        let r = run(&api, token.server.url("/token"), HANG_GUARD);
        let err = r.client.get("x").call().unwrap_err();
        assert!(
            matches!(&err, Error::Refresh(e) if e.status() == Some(status)),
            "{status}: {err:?}"
        );
        assert!(err.is_transient());
        assert_eq!(token.calls(), 1, "{status}: exactly one token call");
        assert_eq!(retries(&r.events), 0, "{status}");
        assert!(r.sleeper.sleeps().is_empty());
        assert_eq!(token.reuse(), 0);
        assert_kept(&r);
    }
}

#[test]
fn a_timeout_after_sending_is_one_call() {
    let api = api();
    let token = StrictTokenServer::start(vec![Answer::AfterThenHang]);
    // The server never answers: the timeout is the fault under test, not a limit on speed
    // (a second is ample for connecting and sending on loopback, however loaded).
    let r = run(&api, token.server.url("/token"), Duration::from_secs(1));
    let err = r.client.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(&**e, RefreshError::Transport(t) if matches!(t.ureq_error(), tokengate::ureq::Error::Timeout(_)))),
        "{err:?}"
    );
    assert_eq!(retries(&r.events), 0, "no retry after a timeout");
    wait_until("the server to read the one call", || token.calls() >= 1);
    assert_eq!(token.calls(), 1);
    assert_eq!(token.reuse(), 0);
    assert_kept(&r);
}

#[test]
fn a_hang_up_after_sending_is_one_call() {
    let api = api();
    let token = StrictTokenServer::start(vec![Answer::AfterThenClose]);
    let r = run(&api, token.server.url("/token"), HANG_GUARD);
    let err = r.client.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(**e, RefreshError::Transport(_))),
        "{err:?}"
    );
    assert_eq!(retries(&r.events), 0);
    assert_eq!(token.calls(), 1);
    assert_eq!(token.reuse(), 0);
    assert_kept(&r);
}

#[test]
fn a_429_is_retried_after_its_retry_after() {
    let api = api();
    let token = StrictTokenServer::start(vec![Answer::Before(429, Some(7))]);
    let r = run(&api, token.server.url("/token"), HANG_GUARD);
    assert_eq!(r.client.get("x").call().unwrap().status(), 200);
    assert_eq!(token.calls(), 2);
    assert_eq!(r.sleeper.sleeps(), vec![Duration::from_secs(7)]);
    assert_eq!(
        r.events
            .all()
            .iter()
            .filter(|e| matches!(e, Event::Retrying { .. }))
            .collect::<Vec<_>>(),
        vec![&Event::Retrying {
            retry: 1,
            delay: Duration::from_secs(7)
        }]
    );
    assert_eq!(token.reuse(), 0);
    assert_eq!(
        r.client.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt-1"
    );

    // A 429 every time: the default policy's 3 retries, then the error; tokens kept.
    let token = StrictTokenServer::start(vec![Answer::Before(429, Some(1)); 10]);
    let r = run(&api, token.server.url("/token"), HANG_GUARD);
    let err = r.client.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if e.status() == Some(429)),
        "{err:?}"
    );
    assert_eq!(token.calls(), 1 + 3);
    assert_eq!(r.sleeper.sleeps(), vec![Duration::from_secs(1); 3]);
    assert_eq!(token.reuse(), 0);
    assert_kept(&r);
}

#[test]
fn a_503_is_retried_with_backoff() {
    let api = api();
    let token = StrictTokenServer::start(vec![Answer::Before(503, None); 2]);
    let r = run(&api, token.server.url("/token"), HANG_GUARD);
    assert_eq!(r.client.get("x").call().unwrap().status(), 200);
    assert_eq!(token.calls(), 3);
    let sleeps = r.sleeper.sleeps();
    assert_eq!(sleeps.len(), 2);
    for (n, d) in sleeps.iter().enumerate() {
        assert!(*d <= Duration::from_millis(200 << n), "retry {n}: {d:?}");
    }
    assert_eq!(token.reuse(), 0);

    // A 503 every time: exactly 1 + 3 calls (the default policy's 3 retries), then the
    // 503 as the error; tokens kept.
    let token = StrictTokenServer::start(vec![Answer::Before(503, None); 10]);
    let r = run(&api, token.server.url("/token"), HANG_GUARD);
    let err = r.client.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if e.status() == Some(503)),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(token.calls(), 1 + 3);
    assert_eq!(retries(&r.events), 3);
    assert_eq!(r.sleeper.sleeps().len(), 3);
    assert_eq!(token.reuse(), 0);
    assert_kept(&r);
}

#[test]
fn connection_refused_is_retried_since_nothing_was_sent() {
    let api = api();
    let r = run(&api, format!("http://{}/token", refused_addr()), HANG_GUARD);
    let err = r.client.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(**e, RefreshError::Transport(_))),
        "{err:?}"
    );
    assert_eq!(retries(&r.events), 3, "the default policy's 3 retries");
    assert_eq!(r.sleeper.sleeps().len(), 3);
    assert_kept(&r);
}

#[test]
fn a_retried_refresh_is_still_one_flight_for_every_waiting_thread() {
    // Two 503s, then success: 4 threads, 1 flight, 3 token calls, 1 new generation.
    const N: usize = 4;
    let api = api();
    let token = StrictTokenServer::start(vec![Answer::Before(503, Some(0)); 2]);
    let r = run(&api, token.server.url("/token"), HANG_GUARD);
    let handles = release_together(N, &r.client, move |_, c| {
        c.get("x").call().map(|resp| resp.status())
    });
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), 200);
    }
    assert_eq!(token.calls(), 3);
    assert_eq!(token.state.lock().minted, 1);
    assert_eq!(token.reuse(), 0);
    assert_eq!(
        r.events
            .count(|e| matches!(e, Event::RefreshStarted { .. })),
        1
    );
}
