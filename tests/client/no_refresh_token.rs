//! Issue 10, item 2: tokens without a refresh token, with a refresher that needs one
//! (`OAuth2Refresh`, `JsonRefresh`). No refresh that cannot succeed is attempted; the access
//! token is used until it expires or draws a 401, and only then does the session end, once.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::observe::{is_refresh_started, release_together, token_of, Recorder};
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::{AuthClient, Error, Event, JsonRefresh, Tokens};

/// The server's access token, with no refresh token and a client-side lifetime of 100 s
/// (refresh window from 74.25 s).
fn access_only(srv: &TokenServer) -> Tokens {
    Tokens::new(srv.login().access_token().secret()).with_expires_in(Duration::from_secs(100))
}

struct Setup {
    srv: TokenServer,
    clock: Arc<ManualClock>,
    events: Recorder,
    ended: Arc<AtomicUsize>,
    client: AuthClient,
}

fn setup(json: bool) -> Setup {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let ended = Arc::new(AtomicUsize::new(0));
    let e = ended.clone();
    let mut builder = srv
        .client_builder()
        .clock(clock.clone())
        .on_event(events.listener())
        .on_session_expired(move || {
            e.fetch_add(1, SeqCst);
        })
        .tokens(access_only(&srv));
    if json {
        builder = builder.refresher(JsonRefresh::new(srv.json_url()));
    }
    let client = builder.build().unwrap();
    Setup {
        srv,
        clock,
        events,
        ended,
        client,
    }
}

fn session_expired_events(events: &Recorder) -> usize {
    events.count(|e| matches!(e, Event::SessionExpired))
}

#[test]
fn tokens_without_a_refresh_token_are_used_until_they_expire_then_the_session_ends_once() {
    for json in [false, true] {
        let s = setup(json);
        // Inside the refresh window: nothing can refresh these tokens, so nothing is tried,
        // in the background or otherwise, and the valid token keeps working.
        s.clock.advance(Duration::from_secs(80));
        for _ in 0..5 {
            assert_eq!(token_of(&s.client), "at-1");
        }
        assert_eq!(s.events.count(is_refresh_started), 0, "json: {json}");
        assert_eq!(
            s.ended.load(SeqCst),
            0,
            "the session ended while the token was valid"
        );
        assert!(s.client.tokens().is_some());

        // Once it expires the session is over: once, without a call to the token endpoint.
        s.clock.advance(Duration::from_secs(21));
        for _ in 0..3 {
            let err = s.client.get("items").call().unwrap_err();
            assert!(matches!(err, Error::SessionExpired), "{err:?}");
        }
        assert_eq!(s.ended.load(SeqCst), 1);
        assert_eq!(session_expired_events(&s.events), 1);
        assert_eq!(s.events.count(is_refresh_started), 0);
        assert_eq!(s.srv.refreshes(), 0);
        assert_eq!(s.srv.api_requests(), 5, "the expired token was never sent");
    }
}

#[test]
fn a_401_for_tokens_without_a_refresh_token_ends_the_session_once_for_every_thread() {
    let s = setup(false);
    s.srv.revoke_access_tokens(); // the server rejects at-1 although it has not expired here
    let results = release_together(8, &s.client, |_, c| c.get("items").call().map(|_| ()));
    for r in results {
        let err = r.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::SessionExpired), "{err:?}");
    }
    assert!(matches!(
        s.client.get("items").call(),
        Err(Error::SessionExpired)
    ));
    assert_eq!(s.ended.load(SeqCst), 1);
    assert_eq!(session_expired_events(&s.events), 1);
    assert_eq!(
        s.events.count(is_refresh_started),
        0,
        "the refresher was not even called"
    );
    assert_eq!(s.srv.refreshes(), 0);
}
