//! Issue 15, part 3: `AuthClient::middleware()` on an existing `ureq::Agent`.

use std::sync::Arc;
use std::time::Duration;

use crate::harness::observe::{
    body_json, is_refreshed, is_unauthorized, release_together, Recorder,
};
use crate::harness::servers::{Api, TokenServer};
use tokengate::time::ManualClock;
use tokengate::ureq::{self, Agent};
use tokengate::{AuthClient, AuthServer, Error, Refresh, RefreshReason, Stats, Tokens};

fn agent_with(client: &tokengate::AuthClient, status_as_error: bool) -> Agent {
    Agent::config_builder()
        .proxy(None)
        .http_status_as_error(status_as_error)
        .middleware(client.middleware())
        .build()
        .into()
}

fn token_of(resp: ureq::http::Response<ureq::Body>) -> String {
    let mut resp = resp;
    body_json(&mut resp)["token"].as_str().unwrap().to_owned()
}

#[test]
fn thirty_two_threads_through_the_middleware_across_an_expiry_make_one_refresh() {
    const N: usize = 32;
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let client = srv
        .client_builder()
        .clock(clock.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    let agent = agent_with(&client, true);
    let url = format!("{}me", srv.api_url());
    assert_eq!(token_of(agent.get(&url).call().unwrap()), "at-1");

    clock.advance(Duration::from_secs(3600)); // expired: every thread needs a new token
    let handles = release_together(N, &client, {
        let (agent, url) = (agent.clone(), url.clone());
        move |_, _| token_of(agent.get(&url).call().unwrap())
    });
    for h in handles {
        assert_eq!(h.join().unwrap(), "at-2");
    }
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.api_401s(), 0, "the expired token was never sent");
    assert_eq!(client.stats().refreshes, 1);
}

#[test]
fn a_401_through_the_middleware_refreshes_once_for_the_callers_retry() {
    const N: usize = 32;
    for status_as_error in [false, true] {
        let srv = TokenServer::start();
        let events = Recorder::new();
        let oauth = AuthServer::new(srv.token_url())
            .client_id("test-app")
            .client_secret("test-secret")
            .refresh_grant();
        let ev = events.clone();
        // The refresh waits until every thread has had its 401, so all of them meet it.
        let client = srv
            .client_builder()
            .refresher(move |agent: &Agent, current: &Tokens| {
                ev.wait_for("every thread's 401", N, is_unauthorized);
                oauth.refresh(agent, current)
            })
            .on_event(events.listener())
            .tokens(srv.login())
            .build()
            .unwrap();
        let agent = agent_with(&client, status_as_error);
        let url = format!("{}me", srv.api_url());
        srv.revoke_access_tokens();
        let handles = release_together(N, &client, {
            let (agent, url) = (agent.clone(), url.clone());
            move |_, _| {
                // The 401 comes back unchanged (as the agent reports statuses)…
                match agent.get(&url).call() {
                    Ok(resp) => assert_eq!(resp.status(), 401),
                    Err(ureq::Error::StatusCode(401)) => {}
                    other => panic!("{other:?}"),
                }
                // …and the caller's own retry has the new token.
                token_of(agent.get(&url).call().unwrap())
            }
        });
        for h in handles {
            assert_eq!(h.join().unwrap(), "at-2");
        }
        assert_eq!(srv.refreshes(), 1, "one refresh for {N} threads");
        assert_eq!(srv.api_401s(), N as u64);
        assert_eq!(srv.reuse_detected(), 0);
        let s = client.stats();
        assert_eq!((s.unauthorized, s.refreshes), (N as u64, 1), "{s:?}");
    }
}

#[test]
fn another_origin_through_the_same_agent_carries_no_token() {
    let srv = TokenServer::start();
    let other = Api::start(&[]);
    let client = srv.client_builder().tokens(srv.login()).build().unwrap();
    let agent = agent_with(&client, false);
    agent
        .get(&other.server.url("/api/elsewhere"))
        .call()
        .unwrap();
    agent
        .get(&other.server.url("/api/own"))
        .header("Authorization", "Basic b3duOmNyZWQ=")
        .call()
        .unwrap();
    let seen = other.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[1].header("authorization"), Some("Basic b3duOmNyZWQ="));
    assert_eq!(srv.api_requests(), 0);
}

#[test]
fn the_middleware_refreshes_ahead_in_the_background_and_reports_missing_tokens() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let client = srv
        .client_builder()
        .clock(clock.clone())
        .on_event(events.listener())
        .tokens(srv.login())
        .build()
        .unwrap();
    let agent = agent_with(&client, true);
    let url = format!("{}me", srv.api_url());
    clock.advance(Duration::from_secs(3600 - 20)); // inside the window, still valid
    assert_eq!(token_of(agent.get(&url).call().unwrap()), "at-1");
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(token_of(agent.get(&url).call().unwrap()), "at-2");
    assert!(events.all().iter().any(|e| matches!(
        e,
        tokengate::Event::RefreshStarted {
            reason: RefreshReason::Proactive,
            ..
        }
    )));

    client.clear_tokens().unwrap();
    match agent.get(&url).call() {
        Err(ureq::Error::Other(e)) => {
            assert!(
                matches!(e.downcast_ref::<Error>(), Some(Error::NoTokens)),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(srv.api_requests(), 2, "nothing sent without tokens");
}

/// Issue 24: the client's own requests and the middleware read an answer to the token in one
/// place, and count it by one rule: every 401 is `unauthorized`, whatever its challenge
/// says; a 403 is not. The same answers give the same counts through either path, and
/// through an agent that turns statuses into errors (it cannot read the challenge: every
/// 401 is then a rejected token, still one count each).
#[test]
fn the_client_and_the_middleware_count_the_same_answers_the_same_way() {
    const SCOPE: &str = r#"Bearer error="insufficient_scope", scope="admin""#;
    let answers: [(&str, u16, Option<&str>); 7] = [
        (
            "invalid-token",
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        ("no-challenge", 401, None),
        ("scope", 401, Some(SCOPE)),
        ("malformed", 401, Some(r#"Bearer error="invalid_request""#)),
        ("forbidden-scope", 403, Some(SCOPE)),
        ("forbidden", 403, None),
        ("fine", 200, None),
    ];
    // Every answer needs the token: a request without it would get a 404.
    let server = httpmock::MockServer::start();
    let mocks: Vec<_> = answers
        .iter()
        .map(|&(name, status, challenge)| {
            server.mock(|when, then| {
                when.path(format!("/answers/{name}"))
                    .header("authorization", "Bearer acc");
                let then = then.status(status);
                if let Some(challenge) = challenge {
                    then.header("www-authenticate", challenge);
                }
            })
        })
        .collect();
    // No refresher: each call is one request through either path (the client would replay
    // after a refresh, the middleware cannot).
    let stats_of = |through: Option<bool>| -> Stats {
        let client = AuthClient::builder(server.url("/api/"))
            .proxy(None)
            .tokens(Tokens::new("acc"))
            .build()
            .unwrap();
        for (name, ..) in answers {
            let path = format!("/answers/{name}");
            match through {
                None => drop(client.get(&path).call()),
                Some(status_as_error) => {
                    let agent = agent_with(&client, status_as_error);
                    drop(agent.get(&server.url(&path)).call());
                }
            }
        }
        client.stats()
    };
    let client = stats_of(None);
    assert_eq!((client.requests, client.unauthorized), (7, 4), "{client:?}");
    assert_eq!(
        stats_of(Some(false)),
        client,
        "the middleware, statuses as responses"
    );
    assert_eq!(
        stats_of(Some(true)),
        client,
        "the middleware, statuses as errors"
    );
    for mock in mocks {
        assert_eq!(mock.calls(), 3, "each answer, once through each path");
    }
}
