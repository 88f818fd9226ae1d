//! The program from the core issue, unchanged except that the URLs point at a local server
//! (the doctest in lib.rs compiles the verbatim version).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::servers::TokenServer;
use tokengate::testing::{TestClient, TestServer};
use tokengate::{AuthClient, AuthServer, Tokens};

#[test]
fn the_contract_program_works() -> Result<(), Box<dyn std::error::Error>> {
    // The program's client, as the server knows it.
    let srv =
        TokenServer::of(TestServer::builder().client(TestClient::confidential("my-app", "s3cret")));
    let login = srv.login_as("my-app", None);
    let expired_calls = Arc::new(AtomicUsize::new(0));
    let counter = expired_calls.clone();

    let client = AuthClient::builder(srv.api_url()) // base URL; requests use relative paths
        .proxy(None)
        .refresher(
            AuthServer::new(srv.token_url())
                .client_id("my-app")
                .client_secret("s3cret") // client_secret_basic when a secret is set
                .refresh_grant(), // RFC 6749 §6 refresh_token grant
        )
        .tokens(
            Tokens::new(login.access_token().secret())
                .with_refresh_token(login.refresh_token().unwrap().secret())
                .with_expires_in(Duration::from_secs(3600)),
        )
        .on_session_expired(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build()?;

    let worker = client.clone(); // cheap; shares tokens and the gate
    let handle = std::thread::spawn(move || worker.get("products").query("page", "2").call());
    let mut resp = client
        .post("orders")
        .send_json(&serde_json::json!({"sku": 1}))?; // http::Response<ureq::Body>
    let text = resp.body_mut().read_to_string()?;
    assert!(text.contains("/api/orders"), "{text}");
    let mut products = handle.join().unwrap()?;
    assert!(products
        .body_mut()
        .read_to_string()?
        .contains("/api/products"));

    client.set_tokens(Tokens::new("new-access").with_refresh_token("new-refresh"))?; // after a fresh login
    assert_eq!(
        client.tokens().unwrap().access_token().secret(),
        "new-access"
    );
    client.clear_tokens()?; // logout
    assert!(client.tokens().is_none());
    assert!(matches!(
        client.get("x").call(),
        Err(tokengate::Error::NoTokens)
    ));
    assert_eq!(expired_calls.load(Ordering::SeqCst), 0);
    Ok(())
}

#[test]
fn auth_client_is_clone_send_sync_static() {
    fn assert_bounds<T: Clone + Send + Sync + 'static>() {}
    assert_bounds::<AuthClient>();
    assert_bounds::<Tokens>();
}
