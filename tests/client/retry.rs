//! Retries (issue 3): what is retried, how long it waits, and how it composes with refresh.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::harness::fixtures::RecordingSleeper;
use crate::harness::servers::raw::{Action, RawServer};
use crate::harness::servers::TokenServer;
use parking_lot::Mutex;
use tokengate::time::{ManualClock, Sleeper};
use tokengate::{AuthClient, Error, RefreshError, RetryPolicy, Tokens};

fn respond(status: u16, headers: &[&str], body: &str) -> Action {
    Action::Respond(
        status,
        headers.iter().map(|h| h.as_bytes().to_vec()).collect(),
        body.as_bytes().to_vec(),
    )
}

/// A client for `server` with a fixed token and a recording sleeper.
fn client(server: &RawServer, sleeper: &Arc<RecordingSleeper>) -> tokengate::AuthClientBuilder {
    AuthClient::builder(server.url("/api/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .tokens(Tokens::new("tok-1").with_refresh_token("rt-1"))
}

/// A server answering with `script[i]` for the i-th request, then 200.
fn scripted(script: Vec<(u16, Vec<&'static str>)>) -> RawServer {
    let n = AtomicUsize::new(0);
    RawServer::start(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        match script.get(i) {
            Some((status, headers)) => respond(*status, headers, "retry me"),
            None => respond(200, &[], "ok"),
        }
    })
}

#[test]
fn idempotent_requests_are_retried_on_502_503_504_429_with_bounded_backoff() {
    let server = scripted(vec![(502, vec![]), (503, vec![]), (504, vec![])]);
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = client(&server, &sleeper).build().unwrap();
    let mut resp = c.get("x").call().unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "ok");
    assert_eq!(server.requests(), 4);
    let sleeps = sleeper.sleeps();
    assert_eq!(sleeps.len(), 3);
    // full jitter: retry n waits at most 200 ms × 2ⁿ
    for (n, d) in sleeps.iter().enumerate() {
        assert!(
            *d <= Duration::from_millis(200 << n),
            "retry {n} waited {d:?}"
        );
    }

    let server = scripted(vec![(429, vec![])]);
    let c = client(&server, &sleeper).build().unwrap();
    assert!(c.delete("x").call().is_ok());
    assert_eq!(server.requests(), 2);
}

#[test]
fn retries_are_exhausted_after_max_retries_and_500_is_not_retried() {
    let server = RawServer::start(|_| respond(503, &[], "down"));
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = client(&server, &sleeper).build().unwrap();
    assert!(matches!(c.get("x").call(), Err(Error::StatusCode(503))));
    assert_eq!(server.requests(), 1 + 3);

    let server = RawServer::start(|_| respond(500, &[], "bug"));
    let c = client(&server, &sleeper).build().unwrap();
    assert!(matches!(c.get("x").call(), Err(Error::StatusCode(500))));
    assert_eq!(server.requests(), 1);

    let server = RawServer::start(|_| respond(503, &[], "down"));
    let c = client(&server, &sleeper)
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    assert!(matches!(c.get("x").call(), Err(Error::StatusCode(503))));
    assert_eq!(server.requests(), 1);
}

#[test]
fn post_is_not_retried_after_sending_unless_opted_in() {
    let sleeper = Arc::new(RecordingSleeper::default());
    let server = scripted(vec![(503, vec![])]);
    let c = client(&server, &sleeper).build().unwrap();
    assert!(matches!(
        c.post("x").send("body"),
        Err(Error::StatusCode(503))
    ));
    assert_eq!(server.requests(), 1);

    let server = scripted(vec![(503, vec![])]);
    let c = client(&server, &sleeper).build().unwrap();
    assert!(c.post("x").retry_non_idempotent().send("body").is_ok());
    assert_eq!(server.requests(), 2);

    let server = scripted(vec![(503, vec![])]);
    let c = client(&server, &sleeper)
        .retry(RetryPolicy::new().retry_non_idempotent(true))
        .build()
        .unwrap();
    assert!(c.patch("x").send("body").is_ok());
    assert_eq!(server.requests(), 2);

    // A reset after sending: GET is retried, POST is not.
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let server = RawServer::start(move |_| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::Close
        } else {
            respond(200, &[], "ok")
        }
    });
    let c = client(&server, &sleeper).build().unwrap();
    assert!(c.get("x").call().is_ok());
    assert_eq!(server.requests(), 2);
    n.store(0, Ordering::SeqCst);
    assert!(matches!(c.post("x").send("b"), Err(Error::Http(_))));
}

#[test]
fn connection_refused_is_retried_for_any_method_since_nothing_was_sent() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = AuthClient::builder(format!("http://127.0.0.1:{port}/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .tokens(Tokens::new("t"))
        .build()
        .unwrap();
    let err = c.post("x").send("b").unwrap_err();
    assert!(matches!(err, Error::Http(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        sleeper.sleeps().len(),
        3,
        "POST retried 3 times: nothing was sent"
    );
}

#[test]
fn retry_after_is_honoured_up_to_the_cap() {
    let sleeper = Arc::new(RecordingSleeper::default());
    let server = scripted(vec![
        (503, vec!["retry-after: 2"]),
        (429, vec!["retry-after: 3600"]),
    ]);
    let c = client(&server, &sleeper).build().unwrap();
    assert!(c.get("x").call().is_ok());
    assert_eq!(
        sleeper.sleeps(),
        vec![Duration::from_secs(2), Duration::from_secs(10)]
    );

    // An HTTP date, read against the client's clock.
    let clock = Arc::new(ManualClock::new());
    let now_secs = clock.now_secs();
    let date = http_date(now_secs + 5);
    let header: &'static str = Box::leak(format!("retry-after: {date}").into_boxed_str());
    let sleeper = Arc::new(RecordingSleeper::default());
    let server = scripted(vec![(503, vec![header])]);
    let c = client(&server, &sleeper)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(c.get("x").call().is_ok());
    assert_eq!(
        sleeper.sleeps(),
        vec![Duration::from_secs(5) - clock.subsec()]
    );

    // Garbage, including a header value that is not UTF-8, is ignored in favour of the backoff.
    let sleeper = Arc::new(RecordingSleeper::default());
    let n = AtomicUsize::new(0);
    let server = RawServer::start(move |_| match n.fetch_add(1, Ordering::SeqCst) {
        0 => respond(503, &["retry-after: soon"], ""),
        1 => Action::Respond(503, vec![b"retry-after: \xff\xfe".to_vec()], vec![]),
        _ => respond(200, &[], "ok"),
    });
    let c = client(&server, &sleeper).build().unwrap();
    assert!(c.get("x").call().is_ok());
    let s = sleeper.sleeps();
    assert_eq!(s.len(), 2);
    assert!(
        s[0] <= Duration::from_millis(200) && s[1] <= Duration::from_millis(400),
        "{s:?}"
    );
}

#[test]
fn a_retry_rereads_the_token() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let n = AtomicUsize::new(0);
    let server = RawServer::start(move |req| {
        seen2
            .lock()
            .push(req.header("authorization").unwrap_or("").to_owned());
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            respond(503, &[], "")
        } else {
            respond(200, &[], "ok")
        }
    });
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = client(&server, &sleeper).build().unwrap();
    let c2 = c.clone();
    *sleeper.hook.lock() = Some(Box::new(move || {
        c2.set_tokens(Tokens::new("tok-2")).unwrap();
    }));
    assert!(c.get("x").call().is_ok());
    assert_eq!(*seen.lock(), vec!["Bearer tok-1", "Bearer tok-2"]);
}

#[test]
fn retries_refresh_and_replay_compose_within_the_documented_bound() {
    // 503, 503, 401 (refresh), 503, 200: 5 requests, 3 retries, 1 refresh.
    let srv = TokenServer::start();
    let login = srv.login();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let api = RawServer::start(move |_| match n2.fetch_add(1, Ordering::SeqCst) {
        0 | 1 | 3 => respond(503, &[], ""),
        2 => respond(401, &[], ""),
        _ => respond(200, &[], "ok"),
    });
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = AuthClient::builder(api.url("/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .refresher(srv.refresher())
        .tokens(login)
        .build()
        .unwrap();
    assert!(c.get("x").call().is_ok());
    assert_eq!(api.requests(), 5);
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(sleeper.sleeps().len(), 3);

    // The bound: a server that always answers 503 gets 1 + max_retries requests; one that
    // always answers 401 gets 2 and one refresh — never a loop.
    let api = RawServer::start(|_| respond(401, &[], ""));
    let c = AuthClient::builder(api.url("/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .refresher(srv.refresher())
        .tokens(srv.login())
        .build()
        .unwrap();
    assert!(matches!(c.get("x").call(), Err(Error::Unauthorized)));
    assert_eq!(api.requests(), 2);
}

#[test]
fn token_endpoint_is_retried_only_where_the_refresh_token_cannot_have_been_used() {
    // 503 then success: retried within the one flight.
    let n = AtomicUsize::new(0);
    let token = RawServer::start(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            respond(503, &["retry-after: 1"], "")
        } else {
            respond(
                200,
                &["content-type: application/json"],
                r#"{"access_token":"new","token_type":"bearer"}"#,
            )
        }
    });
    let api = RawServer::start(|req| match req.header("authorization") {
        Some("Bearer new") => respond(200, &[], "ok"),
        _ => respond(401, &[], ""),
    });
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = via_token_server(&api, &token, &sleeper);
    assert!(c.get("x").call().is_ok());
    assert_eq!(token.requests(), 2);
    assert_eq!(sleeper.sleeps(), vec![Duration::from_secs(1)]);

    // A reset after the refresh POST was sent is NOT retried: the server may have rotated.
    let token = RawServer::start(|_| Action::CutBody {
        len: 200,
        partial: br#"{"access_token":"#.to_vec(),
    });
    let c = via_token_server(&api, &token, &sleeper);
    let err = c.get("x").call().unwrap_err();
    assert!(
        matches!(&err, Error::Refresh(e) if matches!(**e, RefreshError::Transport(_))),
        "{err:?}"
    );
    assert_eq!(token.requests(), 1);
    assert_eq!(
        c.tokens().unwrap().refresh_token().unwrap().secret(),
        "rt",
        "tokens kept"
    );
}

fn via_token_server(
    api: &RawServer,
    token: &RawServer,
    sleeper: &Arc<RecordingSleeper>,
) -> AuthClient {
    AuthClient::builder(api.url("/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .refresher(tokengate::AuthServer::new(token.url("/token")).refresh_grant())
        .tokens(Tokens::new("old").with_refresh_token("rt"))
        .build()
        .unwrap()
}

#[test]
fn streamed_bodies_are_never_retried_or_replayed() {
    let sleeper = Arc::new(RecordingSleeper::default());
    let server = scripted(vec![(503, vec![])]);
    let c = client(&server, &sleeper).build().unwrap();
    let err = c.put("x").send_reader(&b"stream"[..]).unwrap_err();
    assert!(
        matches!(&err, Error::NotReplayable(e) if matches!(**e, Error::StatusCode(503))),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot be re-sent"));
    assert_eq!(server.requests(), 1);

    // 401: the token is refreshed for the next call, but this request is not replayed.
    let srv = TokenServer::start();
    let tokens = srv.login();
    srv.revoke_access_tokens();
    let c = srv.client_builder().tokens(tokens).build().unwrap();
    let err = c.post("upload").send_reader(&b"stream"[..]).unwrap_err();
    assert!(
        matches!(&err, Error::NotReplayable(e) if matches!(**e, Error::Unauthorized)),
        "{err:?}"
    );
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.api_requests(), 1);
    assert!(c.post("upload").send_reader(&b"stream"[..]).is_ok());
}

#[test]
fn max_delay_caps_the_backoff_and_retry_after() {
    let sleeper = Arc::new(RecordingSleeper::default());
    let server = scripted(vec![
        (503, vec!["retry-after: 3600"]),
        (503, vec![]),
        (503, vec![]),
    ]);
    let policy = RetryPolicy::new()
        .max_retries(2)
        .base_delay(Duration::from_millis(1500))
        .max_delay(Duration::from_secs(2));
    let c = client(&server, &sleeper).retry(policy).build().unwrap();
    // Two retries (not the default three), then the third 503 is final.
    assert!(matches!(c.get("x").call(), Err(Error::StatusCode(503))));
    assert_eq!(server.requests(), 3);
    let sleeps = sleeper.sleeps();
    assert_eq!(sleeps[0], Duration::from_secs(2), "Retry-After capped");
    assert!(sleeps[1] <= Duration::from_secs(2), "{sleeps:?}");
    assert_eq!(sleeps.len(), 2);
}

#[test]
fn invalid_retry_policies_are_rejected_by_build() {
    let b = || AuthClient::builder("http://127.0.0.1:1/").tokens(Tokens::new("t"));
    // The limits themselves are allowed.
    assert!(b()
        .retry(RetryPolicy::new().max_retries(RetryPolicy::MAX_RETRIES))
        .build()
        .is_ok());
    assert!(b()
        .retry(
            RetryPolicy::new()
                .base_delay(Duration::from_secs(3))
                .max_delay(Duration::from_secs(3))
        )
        .build()
        .is_ok());
    assert!(matches!(
        b().retry(RetryPolicy::new().max_retries(11)).build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        b().retry(RetryPolicy::new().base_delay(Duration::from_secs(60)))
            .build(),
        Err(Error::Config(_))
    ));
}

trait ClockExt {
    fn now_secs(&self) -> u64;
    fn subsec(&self) -> Duration;
}

impl ClockExt for ManualClock {
    fn now_secs(&self) -> u64 {
        use tokengate::time::Clock;
        self.now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }
    fn subsec(&self) -> Duration {
        use tokengate::time::Clock;
        Duration::from_nanos(u64::from(
            self.now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        ))
    }
}

/// Formats unix seconds as an IMF-fixdate.
fn http_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const M: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const W: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        W[(days.rem_euclid(7)) as usize],
        d,
        M[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn backoff_is_jittered() {
    // Full jitter draws each wait from [0, ceiling]. Nine waits that are all equal, or all
    // within a millisecond of zero, would mean no jitter (or no backoff); by chance, that
    // happens with a probability far below 10^-20.
    let sleeper = Arc::new(RecordingSleeper::default());
    for _ in 0..3 {
        let server = scripted(vec![(503, vec![]), (503, vec![]), (503, vec![])]);
        let c = client(&server, &sleeper).build().unwrap();
        assert!(c.get("x").call().is_ok());
    }
    let sleeps = sleeper.sleeps();
    assert_eq!(sleeps.len(), 9);
    assert!(
        sleeps.iter().any(|d| *d > Duration::from_millis(1)),
        "{sleeps:?}"
    );
    let mut distinct = sleeps.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 1, "{sleeps:?}");
}

#[test]
fn the_default_sleeper_really_waits() {
    // A lower bound only: `thread::sleep` never returns early, however loaded the machine.
    let start = std::time::Instant::now();
    tokengate::time::ThreadSleeper.sleep(Duration::from_millis(20));
    assert!(start.elapsed() >= Duration::from_millis(20));
    let boxed: Box<dyn Sleeper> = Box::new(tokengate::time::ThreadSleeper);
    assert_eq!(format!("{boxed:?}"), "Sleeper");
}
