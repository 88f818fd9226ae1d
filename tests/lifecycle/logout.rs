//! `AuthClient::logout`: the session ends here (memory and store) always, and at the server
//! (RFC 7009) when it can; a failed revocation is reported, never keeps the user logged in,
//! and a newer session is never cleared.

use std::sync::Arc;

use crate::harness::fixtures::{no_proxy_agent, refused_addr, ClientSlot, TempDir};
use crate::harness::observe::{wait_until, Recorder};
use crate::harness::servers::raw::forwarding;
use crate::harness::servers::TokenServer;
use tokengate::login::{Discovery, RevocationError};
use tokengate::testing::{
    ClientAuthUsed, Fault, RevocationCall, TestServerError, CLIENT_ID, CLIENT_SECRET,
};
use tokengate::{
    AuthClient, AuthClientBuilder, AuthServer, Error, Event, FileStore, MemoryStore, TokenStore,
    Tokens,
};

/// A client whose refresher was discovered: token and revocation endpoints of `srv`.
fn discovered_client(srv: &TokenServer) -> AuthClientBuilder {
    let meta = Discovery::new(srv.issuer())
        .agent(no_proxy_agent())
        .fetch()
        .unwrap();
    AuthClient::builder(srv.api_url()).proxy(None).refresher(
        AuthServer::from_metadata(&meta)
            .client_id(CLIENT_ID)
            .client_secret(CLIENT_SECRET)
            .refresh_grant(),
    )
}

/// What the server's token endpoint answers to `refresh_token` now: `Ok` or the refusal's
/// status and error.
fn try_refresh(srv: &TokenServer, refresh_token: &str) -> Result<(), (u16, &'static str)> {
    match srv.refresh(refresh_token) {
        Ok(_) => Ok(()),
        Err(TestServerError::Refused { status, error }) => Err((status, error)),
        Err(e) => panic!("{e}"),
    }
}

/// Whether `call` revoked the refresh token `rt-N` (`refresh`) or the access token `at-N`.
fn revoked(call: &RevocationCall, n: u64, refresh: bool) -> bool {
    call.generation == Some(n) && call.refresh_token == refresh
}

/// The next revocation call is answered 503 (and revokes nothing).
fn revocation_answers_503(srv: &TokenServer) {
    srv.fault_next_revocations(1, Fault::Unavailable { retry_after: None });
}

#[test]
fn logout_revokes_the_refresh_token_and_empties_the_store() {
    let srv = TokenServer::start();
    let dir = TempDir::new("logout-revokes");
    let path = dir.path("tokens.json");
    let events = Recorder::new();
    let client = discovered_client(&srv)
        .store(FileStore::new(&path).unwrap())
        .tokens(srv.login())
        .on_event(events.listener())
        .build()
        .unwrap();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    assert!(path.exists());

    client.logout().unwrap();

    let revocations = srv.revocation_calls();
    assert_eq!(revocations.len(), 1);
    assert!(revoked(&revocations[0], 1, true), "{revocations:?}");
    assert_eq!(revocations[0].hint.as_deref(), Some("refresh_token"));
    assert_eq!(
        revocations[0].client_auth,
        ClientAuthUsed::Basic,
        "same client authentication as the refresh"
    );
    // The server refuses the revoked refresh token.
    assert_eq!(try_refresh(&srv, "rt-1"), Err((400, "invalid_grant")));
    // Nothing is left here.
    assert!(client.tokens().is_none());
    assert!(!path.exists());
    assert!(FileStore::new(&path).unwrap().load().unwrap().is_none());
    assert!(matches!(client.get("me").call(), Err(Error::NoTokens)));
    assert_eq!(
        events.count(|e| matches!(e, Event::RevocationFailed { .. })),
        0
    );
    // A second logout has nothing to revoke.
    client.logout().unwrap();
    assert_eq!(srv.revocations(), 1);
}

#[test]
fn an_unreachable_revocation_endpoint_still_logs_out_locally_and_says_so() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::new());
    let events = Recorder::new();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(
            AuthServer::new(srv.token_url())
                .client_id(CLIENT_ID)
                .client_secret(CLIENT_SECRET)
                .revocation_url(format!("http://{}/revoke", refused_addr()))
                .refresh_grant(),
        )
        .store(store.clone())
        .tokens(srv.login())
        .on_event(events.listener())
        .build()
        .unwrap();

    let err = client.logout().unwrap_err();
    assert!(
        matches!(&err, Error::RevocationFailed(RevocationError::Transport(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("logged out locally"), "{err}");
    assert!(!format!("{err:?}").contains("rt-1"));
    assert!(client.tokens().is_none());
    assert!(store.load().unwrap().is_none());
    assert_eq!(
        events.count(|e| *e == Event::RevocationFailed { generation: 0 }),
        1
    );
    // Best effort: the server never heard of the logout.
    assert_eq!(try_refresh(&srv, "rt-1"), Ok(()));
}

#[test]
fn a_failing_revocation_endpoint_still_logs_out_locally() {
    let srv = TokenServer::start();
    revocation_answers_503(&srv);
    let store = Arc::new(MemoryStore::new());
    let client = discovered_client(&srv)
        .store(store.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    let err = client.logout().unwrap_err();
    assert!(
        matches!(&err, Error::RevocationFailed(RevocationError::Status(503))),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(503));
    assert!(client.tokens().is_none());
    assert!(store.load().unwrap().is_none());
    assert_eq!(srv.revocations(), 1);
}

#[test]
fn without_a_revocation_endpoint_logout_is_local() {
    let srv = TokenServer::start();
    let store = Arc::new(MemoryStore::new());
    let client = srv
        .client_builder()
        .store(store.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    client.logout().unwrap();
    assert!(client.tokens().is_none());
    assert!(store.load().unwrap().is_none());
    assert_eq!(srv.revocations(), 0);
}

#[test]
fn tokens_without_a_refresh_token_revoke_the_access_token() {
    let srv = TokenServer::start();
    let login = srv.login();
    let client = discovered_client(&srv)
        .tokens(Tokens::new(login.access_token().secret()))
        .build()
        .unwrap();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
    client.logout().unwrap();
    let revocations = srv.revocation_calls();
    assert!(revoked(&revocations[0], 1, false), "{revocations:?}");
    assert_eq!(revocations[0].hint.as_deref(), Some("access_token"));
    assert!(!srv.is_active("at-1"), "revoked at the server");
}

#[test]
fn a_login_that_lands_during_the_revocation_is_not_cleared() {
    let srv = TokenServer::start();
    // While the server handles the revocation of rt-1, the user logs in again: the client's
    // revocation endpoint is a front that does that, then forwards the call to the server.
    let slot = ClientSlot::default();
    let hook = slot.clone();
    let front = forwarding(srv.base_url(), move |_| {
        if let Some(c) = hook.take() {
            c.set_tokens(Tokens::new("at-new").with_refresh_token("rt-new"))
                .unwrap();
        }
    });
    let store = Arc::new(MemoryStore::new());
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(
            srv.auth_server()
                .revocation_url(front.url("/oauth/revoke"))
                .refresh_grant(),
        )
        .store(store.clone())
        .tokens(srv.login())
        .build()
        .unwrap();
    slot.set(&client);

    client.logout().unwrap();
    assert!(
        slot.take().is_none(),
        "the front logged in during the revocation"
    );

    assert!(revoked(&srv.revocation_calls()[0], 1, true));
    let kept = client
        .tokens()
        .expect("the newer login survives the logout");
    assert_eq!(kept.access_token().secret(), "at-new");
    let stored = store.load().unwrap().expect("and stays in the store");
    assert_eq!(stored.refresh_token().unwrap().secret(), "rt-new");
}

#[test]
fn the_newest_refresh_token_from_a_shared_store_is_the_one_revoked() {
    let srv = TokenServer::start();
    let dir = TempDir::new("logout-shared");
    let path = dir.path("tokens.json");
    let login = srv.login();
    let one = discovered_client(&srv)
        .store(FileStore::new(&path).unwrap())
        .tokens(login)
        .build()
        .unwrap();
    // Another "process" on the same file rotates rt-1 into rt-2.
    let two = discovered_client(&srv)
        .store(FileStore::new(&path).unwrap())
        .build()
        .unwrap();
    srv.revoke_access_tokens();
    assert_eq!(two.get("me").call().unwrap().status(), 200);
    assert_eq!(srv.refreshes(), 1);

    // The first still holds rt-1 in memory; its logout revokes the stored rt-2.
    one.logout().unwrap();
    assert!(revoked(&srv.revocation_calls()[0], 2, true));
    assert_eq!(try_refresh(&srv, "rt-2"), Err((400, "invalid_grant")));
    assert!(!path.exists());
    assert!(matches!(two.get("me").call(), Err(Error::NoTokens)));
}

#[test]
fn a_revocation_url_is_checked_by_build() {
    let err = AuthClient::builder("https://api.example.com/")
        .refresher(
            AuthServer::new("https://auth.example.com/token")
                .revocation_url("http://auth.example.com/revoke")
                .refresh_grant(),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InsecureUrl(_)), "{err:?}");
    let err = AuthClient::builder("https://api.example.com/")
        .refresher(
            AuthServer::new("https://auth.example.com/token")
                .revocation_url("revoke")
                .refresh_grant(),
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl(_)), "{err:?}");
}

/// `builder` logged in, on a `FileStore` at `path` that waits at most 50 ms for its lock.
fn logged_in_with_a_50ms_lock_wait(
    srv: &TokenServer,
    builder: AuthClientBuilder,
    path: &std::path::Path,
) -> AuthClient {
    builder
        .store(
            FileStore::new(path)
                .unwrap()
                .lock_timeout(std::time::Duration::from_millis(50)),
        )
        .tokens(srv.login())
        .build()
        .unwrap()
}

/// A logout while another process holds the store's lock past the lock timeout still logs
/// out: memory is cleared and the session revoked at the server; `logout` reports the store
/// error, and the logout is written once the lock is free. Caught nothing being cleared and
/// nothing revoked.
#[test]
fn a_logout_while_the_store_is_locked_elsewhere_clears_memory_and_revokes() {
    let srv = TokenServer::start();
    let dir = TempDir::new("logout-locked-elsewhere");
    let path = dir.path("tokens.json");
    let client = logged_in_with_a_50ms_lock_wait(&srv, discovered_client(&srv), &path);
    let held = FileStore::new(&path).unwrap().lock().unwrap().unwrap();

    let e = client.logout().unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    assert!(client.tokens().is_none());
    let revocations = srv.revocation_calls();
    assert_eq!(revocations.len(), 1);
    assert!(revoked(&revocations[0], 1, true), "{revocations:?}");
    assert!(FileStore::new(&path).unwrap().load().unwrap().is_some());

    // The lock is free again: the write is retried (at most once a second) and the logout
    // reaches the store.
    drop(held);
    wait_until("the logout written", || {
        assert!(matches!(client.get("me").call(), Err(Error::NoTokens)));
        FileStore::new(&path).unwrap().load().unwrap().is_none()
    });
}

/// A logout whose store write and revocation both fail returns the store's error, and
/// reports the failed revocation as its one `Event::RevocationFailed` (as the event's doc
/// says): the user is logged out in memory all the same. Catches either failure going
/// unreported, or the revocation's error hiding the store's.
#[test]
fn a_logout_whose_store_and_revocation_both_fail_returns_the_store_error_and_reports_the_revocation(
) {
    let srv = TokenServer::start();
    revocation_answers_503(&srv);
    let dir = TempDir::new("logout-both-fail");
    let path = dir.path("tokens.json");
    let events = Recorder::new();
    let builder = discovered_client(&srv).on_event(events.listener());
    let client = logged_in_with_a_50ms_lock_wait(&srv, builder, &path);
    let held = FileStore::new(&path).unwrap().lock().unwrap().unwrap();

    let e = client.logout().unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e:?}");
    assert!(client.tokens().is_none());
    assert_eq!(srv.revocations(), 1);
    assert_eq!(
        events.count(|e| matches!(e, Event::RevocationFailed { .. })),
        1
    );
    drop(held);
}
