//! A command-line tool's whole token life, end to end, with no setup and no network:
//! discovery, a device login (RFC 8628), requests with the tokens kept in a `FileStore`, a
//! second run that needs no login, and a logout that revokes the session at the server.
//!
//! The local server plays the authorization server and the API; it "approves" the device
//! code about 1.5 s after it was issued, as a user in a browser would.
//!
//! ```text
//! cargo run --example device_login
//! ```

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::Duration;

use tokengate::login::Discovery;
use tokengate::{AuthClient, AuthServer, FileStore};

const CLIENT_ID: &str = "my-cli";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = harness::servers::login::LoginServer::start();
    {
        let mut login = server.login.lock();
        login.interval = Some(1);
        login.approve_after = Some(Duration::from_millis(1500));
    }
    // The server is on loopback: make sure no proxy from the environment gets in the way.
    let agent: tokengate::ureq::Agent = tokengate::ureq::Agent::config_builder()
        .proxy(None)
        .build()
        .into();
    let dir = std::env::temp_dir().join(format!("tokengate-device-login-{}", std::process::id()));
    let path = dir.join("tokens.json");

    // 1. Discovery: where the token, device and revocation endpoints are.
    let meta = Discovery::new(server.issuer())
        .agent(agent.clone())
        .fetch()?;
    println!("issuer            {}", meta.issuer());
    println!("token endpoint    {}", meta.token_endpoint());
    println!(
        "device endpoint   {}",
        meta.device_authorization_endpoint().unwrap_or("-")
    );
    println!(
        "revocation        {}\n",
        meta.revocation_endpoint().unwrap_or("-")
    );
    // The client's identity and the server's endpoints, set once; every flow is built from it.
    // (`AuthServer::discover(issuer)` does the discovery too, with the default agent.)
    let auth_server = AuthServer::from_metadata(&meta)
        .client_id(CLIENT_ID)
        .agent(agent);

    let build_client = || -> Result<AuthClient, Box<dyn std::error::Error>> {
        Ok(AuthClient::builder(server.ts.api_url())
            .proxy(None)
            .refresher(auth_server.refresh_grant())
            .store(FileStore::new(&path)?)
            .build()?)
    };

    // 2. First run: no saved tokens, so log in with the device flow.
    let client = build_client()?;
    if client.tokens().is_none() {
        let pending = auth_server
            .device_flow()?
            .scope("openid offline_access api")
            .start()?;
        println!(
            "Open {} and enter {}",
            pending.verification_uri(),
            pending.user_code()
        );
        if let Some(link) = pending.verification_uri_complete() {
            println!("  (or open {link})");
        }
        println!(
            "Waiting for approval (polling every {:?}) ...",
            pending.interval()
        );
        let tokens = pending.wait()?;
        client.set_tokens(tokens)?;
        println!("Logged in; tokens saved to {}\n", path.display());
    }

    // 3. Requests. An access token the server has dropped is refreshed on the 401.
    for what in ["me", "projects"] {
        let resp = client.get(what).call()?;
        println!("GET {what:<9} -> {}", resp.status());
    }
    server.ts.expire_access_tokens();
    let resp = client.get("me").call()?;
    println!(
        "GET me        -> {} (after the server dropped the access token: {} refresh)",
        resp.status(),
        server.ts.refresh_calls()
    );

    // 4. The next run of the tool loads the saved tokens: no login.
    let next_run = build_client()?;
    let resp = next_run.get("me").call()?;
    println!("next run: GET me -> {} without logging in\n", resp.status());
    drop(next_run);

    // 5. Logout: cleared here, revoked at the server.
    client.logout()?;
    let revoked = server.revocations();
    let refused = server.try_refresh(&revoked[0]["token"]);
    println!(
        "Logged out: token file removed: {}; the server now answers the old refresh token with {} {}",
        !path.exists(),
        refused.0,
        refused.1.as_deref().unwrap_or("")
    );
    match client.get("me").call() {
        Err(e) => println!("GET me        -> {e}"),
        Ok(r) => println!("GET me        -> {} (unexpected)", r.status()),
    }

    let _ = std::fs::remove_dir_all(&dir);
    if path.exists() || refused.0 != 400 {
        return Err("logout did not end the session".into());
    }
    Ok(())
}
