//! The combined limit: one call makes at most `2 + max_retries + max_redirects` requests
//! (the first, the retries, one replay after a refresh, the redirects). Retries and redirects
//! are counted for the whole call: a refresh in the middle does not start them again.
//!
//! Every count here is exact: the API is scripted, so the run's requests are known in advance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::harness::fixtures::RecordingSleeper;
use crate::harness::servers::raw::{Action, RawServer};
use tokengate::ureq::Agent;
use tokengate::{AuthClient, AuthClientBuilder, Error, RefreshError, RetryPolicy, Tokens};

/// One scripted answer.
#[derive(Clone, Copy, Debug)]
enum Step {
    Status(u16),
    /// A 401 that asks for a new token.
    Unauthorized,
    /// A 302 back to the same path (same origin: the token goes along).
    RedirectToSelf,
}

/// An API answering the i-th request with `script[i]`, and with `then` after the script.
fn scripted(script: Vec<Step>, then: Step) -> RawServer {
    let n = AtomicUsize::new(0);
    RawServer::start(move |req| {
        let step = script
            .get(n.fetch_add(1, Ordering::SeqCst))
            .copied()
            .unwrap_or(then);
        match step {
            Step::Status(s) => Action::Respond(s, vec![], b"scripted".to_vec()),
            Step::Unauthorized => Action::Respond(
                401,
                vec![br#"www-authenticate: Bearer error="invalid_token""#.to_vec()],
                vec![],
            ),
            Step::RedirectToSelf => Action::Respond(
                302,
                vec![format!("location: {}", req.path).into_bytes()],
                vec![],
            ),
        }
    })
}

/// A client for `api` whose refresher counts its calls and always succeeds.
fn client(
    api: &RawServer,
    sleeper: &Arc<RecordingSleeper>,
    refreshes: &Arc<AtomicUsize>,
) -> AuthClientBuilder {
    let calls = refreshes.clone();
    AuthClient::builder(api.url("/api/"))
        .proxy(None)
        .sleeper(sleeper.clone())
        .refresher(
            move |_: &Agent, _: &Tokens| -> Result<Tokens, RefreshError> {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Tokens::new(format!("new-{n}")).with_refresh_token(format!("rt-{n}")))
            },
        )
        .tokens(Tokens::new("old").with_refresh_token("rt-0"))
}

use Step::{RedirectToSelf as Redirect, Status, Unauthorized};

#[test]
fn retries_used_before_a_refresh_are_not_given_again_after_it() {
    // 503, 503, 503 use up the 3 retries; the 401 refreshes; the replay's 503 is final.
    let api = scripted(
        vec![Status(503), Status(503), Status(503), Unauthorized],
        Status(503),
    );
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::StatusCode(503)), "{err:?}");
    assert_eq!(api.requests(), 5, "3 + 1 + the replay, no fresh retries");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(sleeper.sleeps().len(), 3, "one backoff per retry");

    // The other order: a refresh first leaves all retries for after it.
    let api = scripted(vec![Unauthorized], Status(503));
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::StatusCode(503)), "{err:?}");
    assert_eq!(api.requests(), 1 + 1 + 3);
    assert_eq!(sleeper.sleeps().len(), 3);
}

#[test]
fn a_redirect_loop_after_retries_and_a_refresh_stops_at_the_combined_limit() {
    // Default policy: 3 retries, 5 redirects: 2 + 3 + 5 = 10 requests.
    let api = scripted(
        vec![Status(503), Status(503), Status(503), Unauthorized],
        Redirect,
    );
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::TooManyRedirects(5)), "{err:?}");
    assert_eq!(api.requests(), 2 + 3 + 5);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);

    // Other settings, same formula: 2 + 2 + 3 = 7.
    let api = scripted(vec![Status(502), Status(504), Unauthorized], Redirect);
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes)
        .retry(RetryPolicy::new().max_retries(2))
        .max_redirects(3)
        .build()
        .unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::TooManyRedirects(3)), "{err:?}");
    assert_eq!(api.requests(), 2 + 2 + 3);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}

#[test]
fn redirects_followed_before_a_refresh_count_after_it() {
    // 302, 302, then a 401 on the redirect target: the replay goes to that target, and only
    // 3 more redirects are left: the first request, 5 redirect hops and the replay.
    let api = scripted(vec![Redirect, Redirect, Unauthorized], Redirect);
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::TooManyRedirects(5)), "{err:?}");
    assert_eq!(api.requests(), 1 + 5 + 1, "5 redirects and one replay");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert!(sleeper.sleeps().is_empty());
}

#[test]
fn retries_and_redirects_share_one_call_without_resetting_each_other() {
    // Alternating 503 and redirects: each kind keeps its own count through the other.
    // 503, 302, 503, 302, 503, 302, then 503 again: the 4th 503 is final (3 retries used).
    let api = scripted(
        vec![
            Status(503),
            Redirect,
            Status(503),
            Redirect,
            Status(503),
            Redirect,
        ],
        Status(503),
    );
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::StatusCode(503)), "{err:?}");
    assert_eq!(api.requests(), 7);
    assert_eq!(sleeper.sleeps().len(), 3);
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);

    // And redirects are not given back by a retry: 302 ×3, 503, 302 ×2, then a 6th 302:
    // TooManyRedirects after the first request, 5 redirect hops and 1 retry.
    let api = scripted(
        vec![
            Redirect,
            Redirect,
            Redirect,
            Status(503),
            Redirect,
            Redirect,
        ],
        Redirect,
    );
    let sleeper = Arc::new(RecordingSleeper::default());
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::TooManyRedirects(5)), "{err:?}");
    assert_eq!(api.requests(), 1 + 5 + 1);
    assert_eq!(sleeper.sleeps().len(), 1);
}

#[test]
fn a_second_401_after_the_replay_is_final_whatever_retries_are_left() {
    // 401, then the replay gets 401 again: Unauthorized with 2 requests and 1 refresh, even
    // though no retry was used; a 503 in between does not earn a second refresh.
    let api = scripted(vec![Unauthorized, Status(503)], Unauthorized);
    let sleeper = Arc::new(RecordingSleeper::default());
    let refreshes = Arc::new(AtomicUsize::new(0));
    let c = client(&api, &sleeper, &refreshes).build().unwrap();
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    assert_eq!(api.requests(), 3);
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
}
