//! Issue 10, item 6: a refresher, store or listener that calls back into its own client
//! while the client refreshes or writes gets `Error::Reentrant` at once: never a deadlock,
//! never a wait for its own refresh until `refresh_timeout`.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::harness::observe::{body_json, is_refreshed, must_not_block, Recorder};
use crate::harness::servers::TokenServer;
use tokengate::time::ManualClock;
use tokengate::ureq::Agent;
use tokengate::{AuthClient, AuthServer, Error, Event, MemoryStore, Refresh, TokenStore, Tokens};

type Slot = Arc<OnceLock<AuthClient>>;

/// The token a request on `client` is sent with; the request must not block (`what`).
fn token_without_blocking(what: &str, client: &AuthClient) -> String {
    let c = client.clone();
    must_not_block(what, move || {
        let mut r = c.get("items").call().unwrap();
        body_json(&mut r)["token"].as_str().unwrap().to_owned()
    })
}

#[test]
fn a_listener_that_needs_a_refresh_during_the_refresh_gets_reentrant() {
    let srv = TokenServer::start();
    let slot: Slot = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, log) = (slot.clone(), seen.clone());
    let client = srv
        .client_builder()
        .on_event(move |e| {
            if matches!(e, Event::RefreshStarted { .. }) {
                let c = s.get().unwrap();
                // This very thread leads the refresh the call would wait for.
                let outcome = match c.get("items").call() {
                    Err(Error::Reentrant) => "reentrant".to_owned(),
                    other => format!("{other:?}"),
                };
                log.lock().unwrap().push(outcome);
                let login = c.set_tokens(Tokens::new("x"));
                log.lock().unwrap().push(format!("{login:?}"));
            }
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    slot.set(client.clone()).unwrap();
    srv.revoke_access_tokens();
    let token = token_without_blocking("a request whose listener calls back", &client);
    assert_eq!(token, "at-2");
    assert_eq!(
        *seen.lock().unwrap(),
        ["reentrant", "Err(Reentrant)"],
        "both calls back were refused at once"
    );
    assert_eq!(srv.refreshes(), 1);
}

#[test]
fn a_listener_with_a_valid_token_may_call_the_client_during_a_background_refresh() {
    let srv = TokenServer::start();
    let clock = Arc::new(ManualClock::new());
    let slot: Slot = Arc::default();
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, log) = (slot.clone(), tokens.clone());
    let events = Recorder::new();
    let rec = events.listener();
    let client = srv
        .client_builder()
        .clock(clock.clone())
        .on_event(move |e| {
            rec(e);
            if matches!(e, Event::RefreshStarted { .. }) {
                let mut r = s.get().unwrap().get("items").call().unwrap();
                log.lock()
                    .unwrap()
                    .push(body_json(&mut r)["token"].to_string());
            }
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    slot.set(client.clone()).unwrap();
    clock.advance(Duration::from_secs(3600 - 20)); // inside the window, still valid
    client.get("items").call().unwrap();
    events.wait_for("the background refresh", 1, is_refreshed);
    assert_eq!(*tokens.lock().unwrap(), ["\"at-1\""]);
}

#[test]
fn a_refresher_calling_its_own_client_gets_reentrant_not_a_timeout() {
    let srv = TokenServer::start();
    let slot: Slot = Arc::default();
    let s = slot.clone();
    let oauth = AuthServer::new(srv.token_url())
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant();
    let client = srv
        .client_builder()
        .refresher(move |agent: &Agent, current: &Tokens| {
            match s.get().unwrap().get("items").call() {
                Err(Error::Reentrant) => oauth.refresh(agent, current),
                other => panic!("expected Reentrant, got {other:?}"),
            }
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    slot.set(client.clone()).unwrap();
    srv.revoke_access_tokens();
    let token = token_without_blocking("a refresher that calls back", &client);
    assert_eq!(token, "at-2");
}

/// A store whose `save` calls back into the client it belongs to.
struct CallsBack {
    slot: Slot,
    inner: MemoryStore,
    seen: Mutex<Vec<String>>,
}

impl TokenStore for CallsBack {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.inner.load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        if let Some(c) = self.slot.get() {
            let r = c.clear_tokens();
            self.seen.lock().unwrap().push(format!("{r:?}"));
        }
        self.inner.save(tokens)
    }
    fn clear(&self) -> io::Result<()> {
        self.inner.clear()
    }
}

#[test]
fn a_store_calling_its_own_client_gets_reentrant_not_a_deadlock() {
    let srv = TokenServer::start();
    let slot: Slot = Arc::default();
    let store = Arc::new(CallsBack {
        slot: slot.clone(),
        inner: MemoryStore::new(),
        seen: Mutex::default(),
    });
    let client = srv
        .client_builder()
        .store(store.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    slot.set(client.clone()).unwrap();
    let c = client.clone();
    let login = srv.login();
    must_not_block("set_tokens with a store that calls back", move || {
        c.set_tokens(login).unwrap()
    });
    srv.revoke_access_tokens();
    let c = client.clone();
    must_not_block("a refresh saved by a store that calls back", move || {
        c.get("items").call().unwrap();
    });
    assert_eq!(
        *store.seen.lock().unwrap(),
        ["Err(Reentrant)", "Err(Reentrant)"]
    );
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-3");
}

/// A store whose `save` fails once armed (`clear` and `load` work).
struct FailingSave {
    inner: MemoryStore,
    fail: std::sync::atomic::AtomicBool,
}

impl TokenStore for FailingSave {
    fn load(&self) -> io::Result<Option<Tokens>> {
        self.inner.load()
    }
    fn save(&self, tokens: &Tokens) -> io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("No space left on device"));
        }
        self.inner.save(tokens)
    }
    fn clear(&self) -> io::Result<()> {
        self.inner.clear()
    }
}

/// `Event::StoreFailed` for a login is reported from inside `set_tokens` (as `Event`'s doc
/// says): a listener that calls back for a store write gets `Reentrant` at once, while the
/// same call once `set_tokens` has returned goes through. Catches the report being moved out
/// of the busy section without the doc following (or a deadlock on the way back in).
#[test]
fn a_store_failed_listener_of_a_login_gets_reentrant_from_inside_set_tokens() {
    let srv = TokenServer::start();
    let slot: Slot = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, log) = (slot.clone(), seen.clone());
    let store = Arc::new(FailingSave {
        inner: MemoryStore::new(),
        fail: false.into(),
    });
    let client = srv
        .client_builder()
        .store(store.clone())
        .on_event(move |e| {
            if matches!(e, Event::StoreFailed { .. }) {
                let login = s
                    .get()
                    .unwrap()
                    .set_tokens(Tokens::new("from-the-listener"));
                log.lock().unwrap().push(format!("{login:?}"));
            }
        })
        .tokens(srv.login())
        .build()
        .unwrap();
    slot.set(client.clone()).unwrap();
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let c = client.clone();
    let login = srv.login();
    let result = must_not_block(
        "set_tokens whose StoreFailed listener calls back",
        move || format!("{:?}", c.set_tokens(login)),
    );
    assert!(result.starts_with("Err(Store("), "{result}");
    assert_eq!(*seen.lock().unwrap(), ["Err(Reentrant)"]);
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-2");
    // Outside set_tokens the same call is an ordinary login.
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    client.set_tokens(Tokens::new("later")).unwrap();
    assert_eq!(client.tokens().unwrap().access_token().secret(), "later");
}

#[test]
fn a_refresher_may_use_another_client_which_refreshes_on_the_same_thread() {
    // A token exchange: client `a` refreshes through client `b`, whose own token has expired,
    // so `b` refreshes too, nested on the thread leading `a`'s refresh. Only a call back into
    // the client being refreshed is refused; `b` is another client.
    let (srv_a, srv_b) = (TokenServer::start(), TokenServer::start());
    let b = srv_b
        .client_builder()
        .tokens(srv_b.login())
        .build()
        .unwrap();
    srv_b.revoke_access_tokens();
    let oauth = AuthServer::new(srv_a.token_url())
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant();
    let via_b: Arc<Mutex<Vec<String>>> = Arc::default();
    let (b2, log) = (b.clone(), via_b.clone());
    let a = srv_a
        .client_builder()
        .refresher(move |agent: &Agent, current: &Tokens| {
            let outcome = match b2.get("items").call() {
                Ok(mut r) => body_json(&mut r)["token"].as_str().unwrap().to_owned(),
                Err(e) => format!("{e:?}"),
            };
            log.lock().unwrap().push(outcome);
            oauth.refresh(agent, current)
        })
        .tokens(srv_a.login())
        .build()
        .unwrap();
    srv_a.revoke_access_tokens();
    let token = token_without_blocking("a refresher that uses another client", &a);
    assert_eq!(token, "at-2");
    assert_eq!(*via_b.lock().unwrap(), ["at-2"], "b refreshed and answered");
    assert_eq!((srv_a.refreshes(), srv_b.refreshes()), (1, 1));
}
