//! Redirect hygiene: which origin sees which credential.
//! - Every hop that leaves the base URL's origin loses `Authorization`, `Cookie`,
//!   `Proxy-Authorization` and the headers named with `sensitive_header`, with tokengate's own
//!   agent and with a user's `api_agent` (whose ureq config would follow redirects itself).
//! - https → http on the same host and port is another origin.
//! - A 401 from a foreign origin is just a status: no refresh.
//! - A token endpoint that redirects is not followed: the refresh token and the client secret
//!   go to the token endpoint only, never to where it points.
//! - The API never receives the refresh token or the client secret.
//!
//! Each foreign server here is shown to be reachable and hit where a hop goes to it, so "it
//! saw no secret" cannot pass because it saw nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::harness::fixtures::base64;
use crate::harness::observe::Recorder;
use crate::harness::servers::raw::{recording, Action, Log, RawRequest, RawServer};
use crate::harness::servers::tls::TlsServer;
use crate::harness::servers::Api;
use parking_lot::Mutex;
use tokengate::ureq::Agent;
use tokengate::{
    AuthClient, AuthClientBuilder, AuthServer, ClientAuth, Error, Event, RefreshError, Tokens,
};

fn redirect(status: u16, location: &str) -> Action {
    Action::Respond(
        status,
        vec![format!("location: {location}").into_bytes()],
        vec![],
    )
}

fn ok(body: &str) -> Action {
    Action::Respond(200, vec![], body.as_bytes().to_vec())
}

/// The credentials a request carries besides the token.
const SENSITIVE: [(&str, &str); 3] = [
    ("Proxy-Authorization", "Basic U0VDUkVULXByb3h5"),
    ("Cookie", "session=SECRET-cookie"),
    ("X-Api-Key", "SECRET-key"),
];

#[track_caller]
fn assert_no_credentials(r: &RawRequest, hop: &str) {
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
    ] {
        assert_eq!(r.header(name), None, "{hop} received {name}");
    }
    let text = format!("{r:?}");
    assert!(!text.contains("SECRET"), "{hop} received a secret: {text}");
    assert_eq!(
        r.header("x-trace"),
        Some("keep-me"),
        "{hop}: other headers stay"
    );
}

/// base → 307 → foreign A → 302 → foreign B → 200.
fn hop_through_two_foreign_origins(agent: Option<Agent>) {
    let (base_log, a_log, b_log): (Log, Log, Log) = Default::default();
    let b = recording(&b_log, |_| ok("b"));
    let b_url = b.url("/b");
    let a = recording(&a_log, move |_| redirect(302, &b_url));
    let a_url = a.url("/a");
    let base = recording(&base_log, move |_| redirect(307, &a_url));

    let mut builder = AuthClient::builder(base.url("/api/"))
        .proxy(None)
        .sensitive_header("X-Api-Key")
        .tokens(Tokens::new("SECRET-token"));
    if let Some(agent) = agent {
        builder = builder.api_agent(agent);
    }
    let c = builder.build().unwrap();
    let mut req = c.put("start").header("X-Trace", "keep-me");
    for (name, value) in SENSITIVE {
        req = req.header(name, value);
    }
    let mut resp = req.send("payload").unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "b");

    // The first request carried everything.
    let first = base_log.lock()[0].clone();
    assert_eq!(first.header("authorization"), Some("Bearer SECRET-token"));
    for (name, value) in SENSITIVE {
        assert_eq!(first.header(name), Some(value));
    }
    // Each foreign hop got the request (the method and body of 307/302 rules), without them.
    let a_seen = a_log.lock().clone();
    let b_seen = b_log.lock().clone();
    assert_eq!(a_seen.len(), 1, "the hop to A was followed");
    assert_eq!(b_seen.len(), 1, "the hop to B was followed");
    assert_eq!(
        (a_seen[0].method.as_str(), &a_seen[0].body[..]),
        ("PUT", &b"payload"[..])
    );
    assert_no_credentials(&a_seen[0], "foreign origin A");
    assert_eq!(b_seen[0].method, "GET", "302 turned the PUT into a GET");
    assert_no_credentials(&b_seen[0], "foreign origin B");
}

#[test]
fn credentials_are_dropped_on_every_hop_to_another_origin() {
    hop_through_two_foreign_origins(None);
}

#[test]
fn credentials_are_dropped_on_every_hop_with_a_user_api_agent_too() {
    // ureq's defaults: follows up to 10 redirects itself and turns 4xx/5xx into errors.
    let agent: Agent = Agent::config_builder().proxy(None).build().into();
    hop_through_two_foreign_origins(Some(agent));
}

#[test]
fn a_redirect_back_home_carries_the_token_but_not_the_dropped_credentials() {
    let (home_log, away_log): (Log, Log) = Default::default();
    let home_url = Arc::new(Mutex::new(String::new()));
    let h = home_url.clone();
    let away = recording(&away_log, move |_| redirect(302, &h.lock()));
    let away_url = away.url("/away");
    let home = recording(&home_log, move |req| match req.path.as_str() {
        "/api/start" => redirect(302, &away_url),
        _ => ok("home"),
    });
    *home_url.lock() = home.url("/api/home");
    let c = AuthClient::builder(home.url("/api/"))
        .proxy(None)
        .sensitive_header("X-Api-Key")
        .tokens(Tokens::new("SECRET-token"))
        .build()
        .unwrap();
    let mut req = c.get("start").header("X-Trace", "keep-me");
    for (name, value) in SENSITIVE {
        req = req.header(name, value);
    }
    assert_eq!(req.call().unwrap().status(), 200);
    let away_seen = away_log.lock().clone();
    assert_eq!(away_seen.len(), 1);
    assert_no_credentials(&away_seen[0], "the foreign hop");
    let home_seen = home_log.lock().clone();
    assert_eq!(home_seen.len(), 2);
    assert_eq!(home_seen[1].path, "/api/home");
    // The token belongs to the base origin and is attached there again; credentials the
    // caller set were shown to a foreign origin's redirect and are not restored.
    assert_eq!(
        home_seen[1].header("authorization"),
        Some("Bearer SECRET-token")
    );
    for (name, _) in SENSITIVE {
        assert_eq!(home_seen[1].header(name), None, "{name} restored");
    }
}

#[test]
fn an_https_to_http_hop_on_the_same_host_and_port_is_another_origin() {
    let seen: Arc<Mutex<Vec<(bool, RawRequest)>>> = Default::default();
    let s = seen.clone();
    let plain_target = Arc::new(Mutex::new(String::new()));
    let t = plain_target.clone();
    let server = TlsServer::start(move |https, req| {
        s.lock().push((https, req.clone()));
        match (https, req.path.as_str()) {
            (true, "/api/start") => redirect(302, &t.lock()),
            (true, _) => ok("secure"),
            (false, _) => ok("plain"),
        }
    });
    *plain_target.lock() = server.plain_url("/api/landing");
    let c = AuthClient::builder(server.url("/api/"))
        .proxy(None)
        .api_agent(TlsServer::agent())
        .sensitive_header("X-Api-Key")
        .tokens(Tokens::new("SECRET-token"))
        .build()
        .unwrap();
    let mut req = c.get("start").header("X-Trace", "keep-me");
    for (name, value) in SENSITIVE {
        req = req.header(name, value);
    }
    let mut resp = req.call().unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "plain");

    // The same path on the https origin carries the token (the server and the agent work).
    assert_eq!(c.get("landing").call().unwrap().status(), 200);

    let seen = seen.lock().clone();
    let summary: Vec<_> = seen.iter().map(|(h, r)| (*h, r.path.as_str())).collect();
    assert_eq!(
        summary,
        [
            (true, "/api/start"),
            (false, "/api/landing"),
            (true, "/api/landing")
        ]
    );
    assert_eq!(
        seen[0].1.header("authorization"),
        Some("Bearer SECRET-token")
    );
    assert_no_credentials(&seen[1].1, "the plain-http hop");
    assert_eq!(
        seen[2].1.header("authorization"),
        Some("Bearer SECRET-token")
    );
}

#[test]
fn a_401_from_a_foreign_origin_reached_by_redirect_causes_no_refresh() {
    let foreign_log: Log = Default::default();
    let foreign = recording(&foreign_log, |_| {
        Action::Respond(
            401,
            vec![br#"www-authenticate: Bearer error="invalid_token""#.to_vec()],
            b"foreign says no".to_vec(),
        )
    });
    let target = foreign.url("/elsewhere");
    let base = RawServer::start(move |_| redirect(302, &target));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let events = Recorder::new();
    let build = |lenient: bool| {
        let calls = refreshes.clone();
        AuthClient::builder(base.url("/api/"))
            .proxy(None)
            .http_status_as_error(!lenient)
            .refresher(
                move |_: &Agent, _: &Tokens| -> Result<Tokens, RefreshError> {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(Tokens::new("new"))
                },
            )
            .tokens(Tokens::new("SECRET-token").with_refresh_token("SECRET-rt"))
            .on_event(events.listener())
            .build()
            .unwrap()
    };

    let c = build(false);
    let err = c.get("x").call().unwrap_err();
    assert!(matches!(err, Error::Unauthorized), "{err:?}");
    let c = build(true);
    let mut resp = c.get("x").call().unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "foreign says no");

    assert_eq!(
        foreign_log.lock().len(),
        2,
        "the foreign 401s were received"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    assert_eq!(events.count(|e| matches!(e, Event::Unauthorized { .. })), 0);
    assert_eq!(c.tokens().unwrap().access_token().secret(), "SECRET-token");
    for r in foreign_log.lock().iter() {
        assert_eq!(r.header("authorization"), None);
    }
}

#[test]
fn a_token_endpoint_that_redirects_elsewhere_is_not_followed() {
    let foreign_log: Log = Default::default();
    let foreign = recording(&foreign_log, |_| {
        ok(r#"{"access_token":"stolen","token_type":"bearer"}"#)
    });
    // The foreign server is up: a direct request reaches it.
    let direct: Agent = Agent::config_builder().proxy(None).build().into();
    assert_eq!(
        direct.get(&foreign.url("/probe")).call().unwrap().status(),
        200
    );
    assert_eq!(foreign_log.lock().len(), 1);

    let target = foreign.url("/token");
    let status = Arc::new(AtomicUsize::new(0));
    let s = status.clone();
    let token_log: Log = Default::default();
    let token = recording(&token_log, move |_| {
        redirect(s.load(Ordering::SeqCst) as u16, &target)
    });
    let api = RawServer::start(|_| Action::Respond(401, vec![], vec![]));
    let agents: [(&str, Option<Agent>); 2] = [
        ("tokengate's token agent", None),
        // ureq's defaults follow redirects, 302/303 as a GET
        (
            "a user token agent",
            Some(Agent::config_builder().proxy(None).build().into()),
        ),
    ];
    for (what, agent) in agents {
        for code in [301u16, 302, 303, 307, 308] {
            status.store(code.into(), Ordering::SeqCst);
            let mut b = AuthClient::builder(api.url("/api/"))
                .proxy(None)
                .retry(tokengate::RetryPolicy::none())
                .refresher(
                    AuthServer::new(token.url("/token"))
                        .client_id("app")
                        .client_secret("SECRET-client")
                        .refresh_grant(),
                )
                .tokens(Tokens::new("SECRET-access").with_refresh_token("SECRET-refresh"));
            if let Some(agent) = agent.clone() {
                b = b.token_agent(agent);
            }
            let c = b.build().unwrap();
            let err = c.get("x").call().unwrap_err();
            assert!(
                matches!(&err, Error::Refresh(e) if e.status() == Some(code)),
                "{what}, {code}: {err:?}"
            );
            let t = c.tokens().unwrap();
            assert_eq!(
                t.refresh_token().unwrap().secret(),
                "SECRET-refresh",
                "kept"
            );
        }
    }
    assert_eq!(
        token_log.lock().len(),
        10,
        "the token endpoint got every refresh"
    );
    assert!(token_log
        .lock()
        .iter()
        .all(|r| r.body.windows(14).any(|w| w == b"SECRET-refresh")));
    assert_eq!(
        foreign_log.lock().len(),
        1,
        "only the probe reached the foreign origin"
    );
}

/// A client whose API and token endpoint share one server, refreshing through `auth`.
fn shared_server_client(api: &Api, auth: ClientAuth) -> AuthClientBuilder {
    AuthClient::builder(api.url())
        .proxy(None)
        .refresher(
            AuthServer::new(api.server.url("/oauth/token"))
                .client_id("app")
                .client_secret("SECRET-client")
                .auth_method(auth)
                .refresh_grant(),
        )
        .tokens(Tokens::new("login").with_refresh_token("rt-login"))
}

#[test]
fn the_api_never_receives_the_refresh_token_or_the_client_secret() {
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        let api = Api::start(&[]);
        let token_log = api.minting_endpoint("/oauth/token", "tok-");
        let events = Recorder::new();
        let c = shared_server_client(&api, auth)
            .on_event(events.listener())
            .build()
            .unwrap();
        // 401 → refresh → replay; a second refresh after the token is revoked; a POST with a
        // body; a same-origin redirect.
        assert_eq!(c.get("a").call().unwrap().status(), 200);
        api.reject("tok-1");
        assert_eq!(c.post("b").send("body").unwrap().status(), 200);
        assert_eq!(c.get("c").call().unwrap().status(), 200);
        assert_eq!(token_log.lock().unwrap().len(), 2);

        // The token endpoint did get them (so the checks below look for the right bytes).
        let basic = base64(b"app:SECRET-client");
        let refresh_tokens = ["rt-login", "rt-tok-1", "rt-tok-2"];
        let token_seen: String = token_log
            .lock()
            .unwrap()
            .iter()
            .map(|s| format!("{:?} {} ", s.headers, String::from_utf8_lossy(&s.body)))
            .collect();
        assert!(token_seen.contains("rt-login") && token_seen.contains("rt-tok-1"));
        assert!(token_seen.contains("SECRET-client") || token_seen.contains(&basic));

        let seen = api.seen();
        assert_eq!(seen.len(), 5, "{auth:?}: a, a again, b, b again, c");
        for s in &seen {
            let text = format!(
                "{} {} {:?} {}",
                s.method,
                s.target,
                s.headers,
                String::from_utf8_lossy(&s.body)
            );
            for secret in refresh_tokens
                .iter()
                .copied()
                .chain(["SECRET-client", &basic])
            {
                assert!(
                    !text.contains(secret),
                    "{auth:?}: the API received {secret}: {text}"
                );
            }
            assert!(s.header("authorization").unwrap().starts_with("Bearer "));
        }
        assert_eq!(events.count(|e| matches!(e, Event::Refreshed { .. })), 2);
    }
}
