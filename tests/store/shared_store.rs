//! Issue 10, item 6: the edges of a store shared by processes and clients.
//! - a poll that read the store before a local login never overwrites it afterwards;
//! - every process computes the same refresh window (the stored issue time, not the time
//!   left when it read the file);
//! - two clients sharing one `FileStore` see each other's logins, logouts and refreshes,
//!   and a refresh never overwrites the other's login.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::fixtures::{Forwarding, TempDir};
use crate::harness::observe::{
    body_json, is_refresh_started, is_refreshed, must_not_block, token_of, Recorder, HANG_GUARD,
};
use crate::harness::servers::TokenServer;
use tokengate::store::{Revision, Stored};
use tokengate::time::ManualClock;
use tokengate::ureq::Agent;
use tokengate::{AuthClient, AuthServer, Error, FileStore, Refresh, TokenStore, Tokens};

/// A `FileStore` whose polls go through `hook` (given the store and `since`): how a test
/// holds a poll up, or hides what it would report. Like a store of your own, it declares no
/// lock timeout.
fn hooked_poll(
    path: &std::path::Path,
    hook: impl Fn(&FileStore, Option<Revision>) -> io::Result<Option<Stored>> + Send + Sync + 'static,
) -> Forwarding<FileStore> {
    Forwarding::new(FileStore::new(path).unwrap())
        .poll_with(hook)
        .no_lock_timeout()
}

/// A store whose polls, after the client's build, report no change until `open` is set:
/// like a rate-limited poll (`RedisStore`'s) that has not looked again yet. What another
/// process stored meanwhile is first seen under the store's lock, when a refresh takes it.
fn gated_poll(path: &std::path::Path, open: Arc<AtomicBool>) -> impl TokenStore {
    // The build's poll (`None`) reads the current record.
    hooked_poll(path, move |file, since| {
        if since.is_some() && !open.load(Ordering::SeqCst) {
            return Ok(None);
        }
        file.poll(since)
    })
}

/// A client logged in (at-1) on a store whose next poll, once armed, stops after reading the
/// file until the test lets it go; another process then logs in (at-2). A request's poll
/// reads at-2 and stops before installing it; `local` (this process's own
/// login or logout) runs in that window; then the poll goes on. Returns the client and the
/// token the request was sent with (or its error).
fn overtake_a_poll(
    srv: &TokenServer,
    path: &std::path::Path,
    local: impl FnOnce(&AuthClient),
) -> (AuthClient, Result<String, Error>) {
    type Pause = (mpsc::Sender<()>, mpsc::Receiver<()>);
    let armed: Arc<Mutex<Option<Pause>>> = Arc::default();
    let pause = armed.clone();
    let store = hooked_poll(path, move |file, since| {
        let read = file.poll(since);
        if let Some((read_done, go)) = pause.lock().unwrap().take() {
            read_done.send(()).unwrap();
            go.recv_timeout(HANG_GUARD).unwrap();
        }
        read
    });
    let client = srv
        .client_builder()
        .store(store)
        .tokens(srv.login()) // at-1
        .build()
        .unwrap();
    FileStore::new(path).unwrap().save(&srv.login()).unwrap(); // at-2

    let (read_done_tx, read_done) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *armed.lock().unwrap() = Some((read_done_tx, go_rx));
    let c = client.clone();
    let request = std::thread::spawn(move || {
        c.get("items")
            .call()
            .map(|mut r| body_json(&mut r)["token"].as_str().unwrap().to_owned())
    });
    read_done.recv_timeout(HANG_GUARD).unwrap();
    local(&client);
    go.send(()).unwrap();
    let sent = request.join().unwrap();
    (client, sent)
}

#[test]
fn a_poll_that_read_the_store_before_a_login_never_overwrites_it() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-poll-vs-login");
    let path = dir.path("tokens.json");
    // This process logs in (at-3) after the poll read at-2: the poll must not put at-2 back.
    let (client, sent) = overtake_a_poll(&srv, &path, |c| c.set_tokens(srv.login()).unwrap());
    assert_eq!(sent.unwrap(), "at-3");
    assert_eq!(client.tokens().unwrap().access_token().secret(), "at-3");
    assert_eq!(token_of(&client), "at-3");
    let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "at-3");
}

#[test]
fn a_poll_that_read_the_store_before_a_logout_never_undoes_it() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-poll-vs-logout");
    let path = dir.path("tokens.json");
    // This process logs out after the poll read at-2: the poll must not log it back in.
    let (client, sent) = overtake_a_poll(&srv, &path, |c| c.clear_tokens().unwrap());
    assert!(matches!(sent, Err(Error::NoTokens)), "{sent:?}");
    assert!(client.tokens().is_none());
    assert!(matches!(
        client.get("items").call().unwrap_err(),
        Error::NoTokens
    ));
    assert!(FileStore::new(&path).unwrap().load().unwrap().is_none());
}

#[test]
fn every_process_computes_the_same_refresh_window_from_the_stored_issue_time() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-window");
    let path = dir.path("tokens.json");
    let clock = Arc::new(ManualClock::new());
    let login = srv.login();
    // Process A logs in: tokens living 100 s (refresh window from 74.25 s on).
    AuthClient::builder(srv.api_url())
        .proxy(None)
        .clock(clock.clone())
        .store(FileStore::new(&path).unwrap())
        .tokens(
            Tokens::new(login.access_token().secret())
                .with_refresh_token(login.refresh_token().unwrap().secret())
                .with_expires_in(Duration::from_secs(100)),
        )
        .build()
        .unwrap();

    // Process B starts 50 s later and reads the file.
    clock.advance(Duration::from_secs(50));
    let events = Recorder::new();
    let b = srv
        .client_builder()
        .clock(clock.clone())
        .store(FileStore::new(&path).unwrap())
        .on_event(events.listener())
        .build()
        .unwrap();
    // Had B counted from the 50 s left, its window would open at 87.5 s, not 74.25 s.
    clock.advance(Duration::from_secs(24)); // 74 s
    assert_eq!(token_of(&b), "at-1");
    assert_eq!(events.count(is_refresh_started), 0);
    clock.advance(Duration::from_secs(1)); // 75 s
    assert_eq!(token_of(&b), "at-1");
    events.wait_for("B's background refresh", 1, is_refreshed);
    assert_eq!(token_of(&b), "at-2");
    assert_eq!(srv.refreshes(), 1);
}

#[test]
fn two_clients_sharing_one_file_store_see_each_others_logins_and_logouts() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-two-clients");
    let path = dir.path("tokens.json");
    let store = Arc::new(FileStore::new(&path).unwrap());
    let a = srv
        .client_builder()
        .store(store.clone())
        .tokens(srv.login()) // at-1
        .build()
        .unwrap();
    let b = srv.client_builder().store(store.clone()).build().unwrap();
    assert_eq!(token_of(&b), "at-1", "b loaded a's login");

    a.set_tokens(srv.login()).unwrap(); // at-2
    assert_eq!(token_of(&b), "at-2", "b adopted a's new login");

    // b refreshes after a 401; a adopts the refreshed tokens without a refresh of its own.
    srv.revoke_access_tokens();
    assert_eq!(token_of(&b), "at-3");
    assert_eq!(token_of(&a), "at-3");
    assert_eq!(srv.refreshes(), 1);

    b.clear_tokens().unwrap();
    assert!(matches!(a.get("items").call(), Err(Error::NoTokens)));
    a.set_tokens(srv.login()).unwrap(); // at-4
    assert_eq!(token_of(&b), "at-4");
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn a_refresh_by_one_client_never_overwrites_the_other_clients_login() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-refresh-vs-login");
    let path = dir.path("tokens.json");
    let store = Arc::new(FileStore::new(&path).unwrap());
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, release_rx) = mpsc::channel::<()>();
    let (started_tx, release_rx) = (Mutex::new(started_tx), Mutex::new(release_rx));
    let oauth = AuthServer::new(srv.token_url())
        .client_id("test-app")
        .client_secret("test-secret")
        .refresh_grant();
    let a = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(move |agent: &Agent, current: &Tokens| {
            started_tx.lock().unwrap().send(()).unwrap();
            release_rx.lock().unwrap().recv_timeout(HANG_GUARD).unwrap();
            oauth.refresh(agent, current)
        })
        .store(store.clone())
        .tokens(srv.login()) // at-1
        .build()
        .unwrap();
    let b = srv.client_builder().store(store.clone()).build().unwrap();

    // a refreshes after a 401 and holds the store's lock while its refresher runs.
    srv.revoke_access_tokens();
    let ac = a.clone();
    let refreshing = std::thread::spawn(move || {
        ac.get("items")
            .call()
            .map(|mut r| body_json(&mut r)["token"].as_str().unwrap().to_owned())
    });
    started.recv_timeout(HANG_GUARD).unwrap();
    // b logs in meanwhile (as another user of the same file would): its login waits for
    // a's refresh to be written, then wins.
    let login = Tokens::new("b-login").with_refresh_token("b-refresh");
    let bc = b.clone();
    let (login_done_tx, login_done) = mpsc::channel();
    let logging_in = std::thread::spawn(move || {
        bc.set_tokens(login).unwrap();
        login_done_tx.send(()).unwrap();
    });
    release.send(()).unwrap();
    login_done.recv_timeout(HANG_GUARD).unwrap();
    logging_in.join().unwrap();
    // a's replay carries its refreshed at-2, or (if b's login landed first) b's login, which
    // this test server does not know: then its one replay is refused.
    match refreshing.join().unwrap() {
        Ok(token) => assert_eq!(token, "at-2"),
        Err(e) => assert!(matches!(e, Error::Unauthorized), "{e:?}"),
    }

    let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "b-login", "the login won");
    assert_eq!(b.tokens().unwrap().access_token().secret(), "b-login");
    assert_eq!(srv.refreshes(), 1);
    assert_eq!(srv.reuse_detected(), 0);
}

#[test]
fn a_request_with_a_valid_token_never_waits_for_the_store_lock() {
    // A poll never takes the store's lock: a request is not held up by another process's
    // long refresh when it has a valid token.
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-no-lock-wait");
    let path = dir.path("tokens.json");
    let client = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .build()
        .unwrap();
    let other = FileStore::new(&path).unwrap();
    let held = other.lock().unwrap().unwrap();
    let c = client.clone();
    assert_eq!(must_not_block("a request", move || token_of(&c)), "at-1");
    drop(held);
}

#[test]
fn expired_tokens_found_under_the_lock_are_refreshed_with_their_refresh_token_not_sent() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-expired-under-lock");
    let path = dir.path("tokens.json");
    let clock = Arc::new(ManualClock::new());
    let a = srv
        .client_builder()
        .clock(clock.clone())
        // Its polls never report a change: what b stores is first seen under the lock.
        .store(gated_poll(&path, Arc::new(AtomicBool::new(false))))
        .tokens(srv.login()) // at-1
        .build()
        .unwrap();
    let b = srv
        .client_builder()
        .clock(clock.clone())
        .store(Arc::new(FileStore::new(&path).unwrap()))
        .build()
        .unwrap();
    b.force_refresh().unwrap(); // at-2 stored; rt-1 is rotated out
                                // Both expired by the clients' clock (the server would still take them: its lifetime
                                // is an hour of real time, so a client sending at-2 would get an answer).
    clock.advance(Duration::from_secs(3601));

    // a never polled b's refresh: its own refresh finds at-2 under the lock, expired, and
    // refreshes it with rt-2 (rt-1 would be a reuse), in the same flight.
    assert_eq!(token_of(&a), "at-3");
    assert_eq!(srv.refreshes(), 2);
    assert_eq!(srv.reuse_detected(), 0);
}

/// A request's poll during this client's own refresh must not replace the tokens the
/// refresh works from. Here the flight found, under the store's lock, tokens another process
/// stored that have expired too, and refreshes them with their refresh token; meanwhile a
/// request of the same client polls the store and reads the same record. Before, the poll
/// installed it (a newer generation), the flight's answer was discarded as older than that,
/// and the next refresh presented the rotated refresh token again: the server revoked the
/// session. Seen about once in ten runs of `redis_fleet`'s restart test.
#[test]
fn a_poll_during_the_clients_own_refresh_never_makes_it_discard_its_answer() {
    let srv = TokenServer::start();
    let dir = TempDir::new("shared_store-poll-during-flight");
    let path = dir.path("tokens.json");
    let clock = Arc::new(ManualClock::new());
    let events = Recorder::new();
    let polls = Arc::new(AtomicBool::new(false));
    // Inside the flight, the refresher opens the polls, lets the request below run and
    // waits until it has polled and gone on (adopted, drew a 401, or finished).
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_tx = Mutex::new(go_tx);
    let first = AtomicBool::new(true);
    let seen = events.clone();
    let open = polls.clone();
    let oauth = srv.refresher();
    let login = srv.login(); // at-1 / rt-1
    let a = srv
        .client_builder()
        .clock(clock.clone())
        .store(gated_poll(&path, polls.clone()))
        .on_event(events.listener())
        .refresher(move |agent: &Agent, current: &Tokens| {
            if first.swap(false, Ordering::SeqCst) {
                open.store(true, Ordering::SeqCst);
                go_tx.lock().unwrap().send(()).unwrap();
                seen.wait_for("the request to have polled", 1, |e| {
                    matches!(
                        e,
                        tokengate::Event::Adopted { .. } | tokengate::Event::Unauthorized { .. }
                    )
                });
            }
            oauth.refresh(agent, current)
        })
        // By this client's clock at-1 lives ten hours, so it stays valid below.
        .tokens(
            Tokens::new(login.access_token().secret())
                .with_refresh_token(login.refresh_token().unwrap().secret())
                .with_expires_in(Duration::from_secs(10 * 3600)),
        )
        .build()
        .unwrap();
    // Another process refreshes (rt-1 → at-2 / rt-2, one hour) and stores it.
    let b = srv
        .client_builder()
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    b.force_refresh().unwrap();
    // Two hours later by a's clock: at-2 has expired, at-1 has not.
    clock.advance(Duration::from_secs(2 * 3600));

    let c = a.clone();
    let flight = std::thread::spawn(move || c.force_refresh());
    go_rx.recv_timeout(HANG_GUARD).unwrap();
    // The request polls while the flight is inside the refresher.
    let r = a.get("items").call();
    events.push(tokengate::Event::Unauthorized {
        generation: u64::MAX,
    }); // the request went on
    flight.join().unwrap().unwrap();
    drop(r);

    // The flight's answer (rt-2 → at-3) is what the client and the file hold.
    assert_eq!(srv.refreshes(), 2);
    assert_eq!(a.tokens().unwrap().access_token().secret(), "at-3");
    let stored = FileStore::new(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(stored.access_token().secret(), "at-3");
    // And the next refresh presents rt-3, not rt-2 again.
    a.force_refresh().unwrap();
    assert_eq!(token_of(&a), "at-4");
    assert_eq!(srv.reuse_detected(), 0);
}
