//! A command-line tool's browser login, end to end, with no setup and no network: the
//! authorization code grant with PKCE through a loopback listener (RFC 6749 §4.1, RFC 7636,
//! RFC 8252), requests with the tokens, and a logout that revokes the session.
//!
//! A local authorization server and API, [`tokengate::testing::TestServer`], plays the
//! identity provider. The browser is yours when `$BROWSER` names one (CI runs this example
//! with a headless Chromium that way); otherwise the program plays the user, following the
//! authorization endpoint's redirect back to the listener as a browser would.
//!
//! ```text
//! cargo run --example browser_login
//! BROWSER=firefox cargo run --example browser_login
//! ```
//!
//! Copied into another crate, this file needs nothing but std and tokengate with its
//! `testing` feature.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokengate::login::LoginMethod;
use tokengate::testing::{Grant, TestClient, TestServer};
use tokengate::{AuthClient, AuthServer};

/// A command-line tool is a public client: it has no secret to keep.
const CLIENT_ID: &str = "my-cli";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("browser_login: {e:#}"); // `{:#}`: with every cause, on one line
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let server = Arc::new(
        TestServer::builder()
            .client(TestClient::public(CLIENT_ID))
            .start()?,
    );
    // The authorization, token and revocation endpoints, from the issuer's metadata.
    let auth_server = AuthServer::discover(server.issuer())?.client_id(CLIENT_ID);
    let real_browser = std::env::var_os("BROWSER").is_some_and(|b| !b.is_empty());

    // 1. Log in through the browser. The URL is printed first (a user can always open it by
    //    hand), then `$BROWSER` or the platform's opener is started; the listener on
    //    127.0.0.1 waits for the browser to come back with the code.
    let user = server.clone();
    let tokens = auth_server
        .interactive_login()
        .method(LoginMethod::Browser)
        .scope("openid offline_access api")
        .browser(|flow| {
            let flow = flow.timeout(Duration::from_secs(60));
            if real_browser {
                flow
            } else {
                // No browser named: the user "opens" the URL, approves, and the server
                // redirects to the listener.
                flow.open_with(move |url| {
                    user.open_in_browser(url)
                        .map(|status| println!("(the listener answered the browser {status})"))
                        .map_err(std::io::Error::other)
                })
            }
        })
        .run(&mut std::io::stdout(), std::io::empty())?;
    let exchanges = server
        .token_calls()
        .iter()
        .filter(|c| c.grant == Grant::AuthorizationCode)
        .count();
    println!(
        "Logged in with {} the code exchanged once ({exchanges} call), PKCE verified by the server\n",
        if real_browser { "your browser:" } else { "the program as the user:" }
    );

    // 2. Requests with the tokens; the refresh grant takes over when they expire.
    let client = AuthClient::builder(server.api_url())
        .refresher(auth_server.refresh_grant())
        .tokens(tokens)
        .build()?;
    for what in ["me", "projects"] {
        println!("GET {what:<9} -> {}", client.get(what).call()?.status());
    }

    // 3. Logout: revoked at the server (RFC 7009).
    client.logout()?;
    let revoked = server.revocation_calls().len();
    println!("Logged out: revoked at the server ({revoked} call)");
    if exchanges != 1 || revoked != 1 {
        return Err("the login or the logout did not go as expected".into());
    }
    Ok(())
}
