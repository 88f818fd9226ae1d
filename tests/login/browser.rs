//! The browser login (authorization code + PKCE over a loopback listener, RFC 6749 §4.1,
//! RFC 7636, RFC 8252) against the test kit's server, which requires PKCE S256, checks the
//! redirect URI, and makes codes single-use. The "browser" is the kit's `open_in_browser`
//! (the authorization endpoint's redirect followed with a GET) or a plain HTTP client.

use tokengate::login::BrowserFlow;
use tokengate::testing::{Grant, TestServer};
use tokengate::AuthClient;

use crate::harness::fixtures::no_proxy_agent;

fn flow(srv: &TestServer) -> BrowserFlow {
    srv.auth_server()
        .agent(no_proxy_agent())
        .browser_flow()
        .unwrap()
        .open_browser(false)
}

#[test]
fn a_login_through_the_browser_gets_tokens_that_work() {
    let srv = TestServer::start();
    let pending = flow(&srv).scope("api").start().unwrap();
    assert_eq!(
        srv.open_in_browser(pending.authorization_url()).unwrap(),
        200
    );
    let tokens = pending.wait().unwrap();
    let calls = srv.token_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].grant, Grant::AuthorizationCode);
    let client = AuthClient::builder(srv.api_url())
        .refresher(srv.auth_server().refresh_grant())
        .tokens(tokens)
        .build()
        .unwrap();
    assert_eq!(client.get("me").call().unwrap().status(), 200);
}
