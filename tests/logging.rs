//! Issue 15, part 1: logs through the `log` facade, target `tokengate`. A run that refreshes,
//! fails, retries, redirects, adopts another process's login, cannot save and ends the
//! session writes the records the crate docs promise, at their levels, and no record holds a
//! token, a secret, a code or a query string.
//!
//! A binary of its own: it installs a global logger and checks every record of its process,
//! which the tests of an area binary would add to.

#[path = "harness/mod.rs"]
mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use crate::harness::fixtures::RecordingSleeper;
use crate::harness::servers::raw::{Action, RawServer};
use crate::harness::servers::TokenServer;
use log::{Level, LevelFilter, Log, Metadata, Record};
use tokengate::ureq::Agent;
use tokengate::{AuthClient, Error, FileStore, RefreshError, TokenStore, Tokens};

/// Every record of this test binary: (level, target, message).
struct Capture(Mutex<Vec<(Level, String, String)>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        self.0.lock().unwrap().push((
            record.level(),
            record.target().to_owned(),
            record.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).unwrap();
        log::set_max_level(LevelFilter::Trace);
        c
    })
}

fn records() -> Vec<(Level, String, String)> {
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, target, _)| target == "tokengate")
        .cloned()
        .collect()
}

fn has(level: Level, needle: &str) -> bool {
    records()
        .iter()
        .any(|(l, _, m)| *l == level && m.contains(needle))
}

#[test]
fn a_run_logs_what_happened_at_its_level_and_no_secret() {
    capture();
    let srv = TokenServer::start();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("logging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tokens.json");

    // 1. A session on a FileStore: a request with a secret in its query, a 401 and refresh,
    //    another process's login adopted, a save that fails, and the end of the session.
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login().with_id_token("SECRET-ID-TOKEN-FILE")) // at-1 / rt-1
        .build()
        .unwrap();
    client
        .get("items")
        .query("api_key", "SECRET-QUERY-VALUE")
        .call()
        .unwrap();
    srv.revoke_access_tokens();
    client.get("items").call().unwrap(); // 401, refresh to at-2 / rt-2
    FileStore::new(&path).unwrap().save(&srv.login()).unwrap(); // at-3 / rt-3
    client.get("items").call().unwrap(); // adopted
                                         // A directory where the save's temporary file goes: the write fails, reads still work.
    let tmp = dir.join("tokens.json.tmp");
    std::fs::create_dir(&tmp).unwrap();
    srv.revoke_access_tokens();
    client.get("items").call().unwrap(); // refreshed to at-4, but the save fails
    std::fs::remove_dir(&tmp).unwrap();
    srv.revoke_all();
    assert!(matches!(
        client.get("items").call(),
        Err(Error::SessionExpired)
    ));

    // 2. Retries, a redirect whose target has a secret in its query, a failed refresh.
    let fails = Arc::new(AtomicUsize::new(0));
    let f = fails.clone();
    let server = RawServer::start(move |req| match req.path.as_str() {
        "/api/flaky" if f.fetch_add(1, SeqCst) == 0 => Action::Respond(503, vec![], vec![]),
        "/api/moved" => Action::Respond(
            302,
            vec![b"location: /api/final?sig=SECRET-REDIRECT-QUERY".to_vec()],
            vec![],
        ),
        _ if req.header("authorization") == Some("Bearer SECRET-ACCESS-OK") => {
            Action::Respond(200, vec![], b"ok".to_vec())
        }
        _ => Action::Respond(
            401,
            vec![br#"www-authenticate: Bearer error="invalid_token""#.to_vec()],
            vec![],
        ),
    });
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let raw = AuthClient::builder(server.url("/api/"))
        .proxy(None)
        .sleeper(RecordingSleeper::default())
        .retry(tokengate::RetryPolicy::none())
        .refresher(move |_: &Agent, current: &Tokens| {
            assert_eq!(current.refresh_token().unwrap().secret(), "SECRET-REFRESH");
            if a.fetch_add(1, SeqCst) == 0 {
                return Err(RefreshError::transient("token endpoint down"));
            }
            Ok(Tokens::new("SECRET-ACCESS-OK")
                .with_refresh_token("SECRET-REFRESH")
                .with_id_token("SECRET-ID-TOKEN-NEW"))
        })
        .tokens(
            Tokens::new("SECRET-ACCESS-OLD")
                .with_refresh_token("SECRET-REFRESH")
                .with_id_token("SECRET-ID-TOKEN"),
        )
        .build()
        .unwrap();
    assert!(matches!(raw.get("x").call(), Err(Error::Refresh(_)))); // refresh fails
    raw.get("x").call().unwrap(); // refresh succeeds
    let retrying = AuthClient::builder(server.url("/api/"))
        .proxy(None)
        .sleeper(RecordingSleeper::default())
        .tokens(Tokens::new("SECRET-ACCESS-OK"))
        .build()
        .unwrap();
    retrying.get("flaky").call().unwrap(); // 503, one retry
    retrying.get("moved").call().unwrap(); // a redirect
    let _ = std::fs::remove_dir_all(&dir);

    // What was logged, at which level.
    for (level, needle) in [
        (Level::Debug, "401 from http://127.0.0.1:"),
        (
            Level::Debug,
            "refresh of token generation 0 started (Unauthorized)",
        ),
        (Level::Debug, "finished: generation"),
        (Level::Debug, "retry 1 of 3 to http://127.0.0.1:"),
        (Level::Debug, "after status 503"),
        (Level::Debug, "redirect 302 from http://127.0.0.1:"),
        (Level::Info, "adopted tokens another process stored"),
        (Level::Info, "session ended"),
        (Level::Warn, "could not save tokens"),
        (Level::Warn, "failed after"),
    ] {
        assert!(
            has(level, needle),
            "no {level} record with {needle:?}: {:#?}",
            records()
        );
    }
    // Nothing secret, in any record.
    let all = records();
    assert!(all.len() >= 10, "{all:#?}");
    for (_, _, message) in &all {
        for secret in [
            "SECRET",
            "at-1",
            "at-2",
            "at-3",
            "at-4",
            "rt-1",
            "rt-2",
            "rt-3",
            "rt-4",
            "test-secret",
            "/api/items",
            "?",
        ] {
            assert!(!message.contains(secret), "{secret:?} in {message:?}");
        }
    }
    let _ = FileStore::new(&path).map(|s| s.clear());
}

/// The test kit logs every call at debug level, target `tokengate::testing`, naming tokens by
/// generation only: no token, client secret, device code or authorization code in a record.
#[test]
fn the_test_kit_logs_calls_without_secrets() {
    use tokengate::testing::{Fault, TestServer, PUBLIC_CLIENT_ID};
    capture();
    let server = TestServer::start();
    let client = AuthClient::builder(server.api_url())
        .tokens(server.login())
        .refresher(server.auth_server().refresh_grant())
        .build()
        .unwrap();
    server.revoke_access_tokens();
    server.fault_next_token_calls(1, Fault::ServerError);
    let _ = client.get("x").call();
    client.get("x").call().unwrap();
    let flow = tokengate::AuthServer::new(server.token_url())
        .device_authorization_url(server.device_authorization_url())
        .client_id(PUBLIC_CLIENT_ID)
        .device_flow()
        .unwrap();
    let pending = flow.start().unwrap();
    server.approve(pending.user_code()).unwrap();
    client.logout().unwrap();
    let kit: Vec<String> = capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, target, _)| target == "tokengate::testing" && *level == Level::Debug)
        .map(|(_, _, message)| message.clone())
        .collect();
    assert!(
        kit.iter()
            .any(|m| m.starts_with("token call: RefreshToken")),
        "{kit:?}"
    );
    assert!(
        kit.iter().any(|m| m.starts_with("device authorization")),
        "{kit:?}"
    );
    assert!(
        kit.iter().any(|m| m.starts_with("revocation of")),
        "{kit:?}"
    );
    for message in &kit {
        for secret in ["at-1", "at-2", "rt-1", "rt-2", "dc-1", "test-secret"] {
            assert!(!message.contains(secret), "{secret:?} in {message:?}");
        }
    }
}

/// A browser login through the listener and one completed with a paste log what happened
/// ("browser login: …", target `tokengate`) and no record of any tokengate target holds a
/// login's `state`, code or PKCE verifier (seen by a front that records the token requests),
/// nor the tokens it bought.
#[test]
fn a_browser_login_logs_no_state_code_verifier_or_token() {
    use crate::harness::fixtures::no_proxy_agent;
    use crate::harness::servers::form;
    use crate::harness::servers::raw::{forwarding, Log};
    use tokengate::testing::{TestServer, CLIENT_ID, CLIENT_SECRET};
    capture();
    let kit = TestServer::start();
    let seen = Log::default();
    let log = seen.clone();
    let front = forwarding(kit.base_url(), move |req| log.lock().push(req.clone()));
    let flow = tokengate::AuthServer::new(front.url("/oauth/token"))
        .authorization_url(kit.authorization_url())
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .agent(no_proxy_agent())
        .browser_flow()
        .unwrap()
        .open_browser(false);
    let browser: Agent = Agent::config_builder().proxy(None).build().into();
    let query = |url: &str| form(url.split_once('?').unwrap().1.as_bytes());

    let mut secrets = Vec::new();
    let mut tokens = Vec::new();
    for pasted in [false, true] {
        let pending = flow.start().unwrap();
        let redirect = kit.authorize(pending.authorization_url()).unwrap();
        let q = query(&redirect);
        secrets.extend([q["code"].clone(), q["state"].clone()]);
        tokens.push(if pasted {
            pending.complete(&redirect).unwrap()
        } else {
            browser.get(&redirect).call().unwrap();
            pending.wait().unwrap()
        });
    }
    for t in &tokens {
        secrets.push(t.access_token().secret().to_owned());
        secrets.push(t.refresh_token().unwrap().secret().to_owned());
    }
    let exchanges: Vec<_> = seen
        .lock()
        .iter()
        .map(|req| form(&req.body)["code_verifier"].clone())
        .collect();
    assert_eq!(exchanges.len(), 2);
    secrets.extend(exchanges);

    for needle in [
        "browser login: listening at http://127.0.0.1:",
        "browser login: the browser came back to the listener",
        "browser login: exchanging the code at the token endpoint",
    ] {
        assert!(
            has(Level::Debug, needle),
            "no record with {needle:?}: {:#?}",
            records()
        );
    }
    let all = capture().0.lock().unwrap().clone();
    for (_, target, message) in all.iter().filter(|(_, t, _)| t.starts_with("tokengate")) {
        for secret in &secrets {
            assert!(
                !message.contains(secret.as_str()),
                "{secret:?} in {target}: {message:?}"
            );
        }
    }
}
