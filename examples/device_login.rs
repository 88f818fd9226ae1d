//! A command-line tool's whole token life, end to end, with no setup and no network:
//! discovery, a device login (RFC 8628), requests with the tokens kept in a `FileStore`, a
//! second run that needs no login, and a logout that revokes the session at the server.
//!
//! A local authorization server and API, [`tokengate::testing::TestServer`], plays the
//! identity provider; the program plays the user too, approving the device login's user
//! code as someone in a browser would.
//!
//! ```text
//! cargo run --example device_login
//! ```
//!
//! The login reports its progress (a line per wait, with the time left), and Ctrl-C
//! cancels it (with the `ctrlc` crate, a dev-dependency here); an error is printed with its
//! causes, on one line.
//!
//! In tokengate's own repository that is all (its dev-dependencies turn the `testing`
//! feature on). Copied into another crate, this file needs std, `ctrlc` and tokengate with
//! its `testing` feature, e.g. in that crate's Cargo.toml:
//!
//! ```toml
//! [dev-dependencies]   # or [dependencies]
//! tokengate = { version = "0.1", features = ["testing"] }
//! ctrlc = "3.5"
//! ```

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use tokengate::login::{DeviceAuthorization, DeviceProgress, Discovery};
use tokengate::testing::{TestClient, TestServer};
use tokengate::{AuthClient, AuthServer, FileStore};

/// A command-line tool is a public client: it has no secret to keep.
const CLIENT_ID: &str = "my-cli";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device_login: {e:#}"); // `{:#}`: with every cause, on one line
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let server = TestServer::builder()
        .client(TestClient::public(CLIENT_ID))
        .device_interval(Some(1)) // poll every second (real servers say 5)
        .start()?;
    let dir = std::env::temp_dir().join(format!("tokengate-device-login-{}", std::process::id()));
    let path = dir.join("tokens.json");

    // 1. Discovery: where the token, device and revocation endpoints are. (Loopback is never
    //    sent through a proxy from the environment, and plain http is allowed for it.)
    let meta = Discovery::new(server.issuer()).fetch()?;
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
    // (`AuthServer::discover(issuer)` does the discovery and this in one call.)
    let auth_server = AuthServer::from_metadata(&meta).client_id(CLIENT_ID);

    let build_client = || -> Result<AuthClient, Box<dyn Error>> {
        Ok(AuthClient::builder(server.api_url())
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
            println!("  (or open {link}, which carries the code)");
        }
        // The user does so in a browser and approves: the next poll gets the tokens.
        server.approve(pending.user_code())?;
        let tokens = wait_cancellable_on_ctrl_c(pending)?;
        client.set_tokens(tokens)?;
        println!("Logged in; tokens saved to {}\n", path.display());
    }

    // 3. Requests. An access token the server has dropped is refreshed on the 401.
    for what in ["me", "projects"] {
        let resp = client.get(what).call()?;
        println!("GET {what:<9} -> {}", resp.status());
    }
    server.revoke_access_tokens();
    let resp = client.get("me").call()?;
    println!(
        "GET me        -> {} (after the server dropped the access token: {} refresh)",
        resp.status(),
        server.refreshes()
    );

    // 4. The next run of the tool loads the saved tokens: no login.
    let next_run = build_client()?;
    let resp = next_run.get("me").call()?;
    println!("next run: GET me -> {} without logging in\n", resp.status());
    drop(next_run);

    // 5. Logout: cleared here, revoked at the server (RFC 7009).
    let refresh_token = client
        .tokens()
        .and_then(|t| t.refresh_token().map(|rt| rt.secret().to_owned()))
        .ok_or("no refresh token to log out")?;
    client.logout()?;
    let still_active = server.is_active(&refresh_token);
    let revoked = server.revocation_calls();
    println!(
        "Logged out: token file removed: {}; revoked at the server ({} call): the old refresh token works: {}",
        !path.exists(),
        revoked.len(),
        still_active
    );
    match client.get("me").call() {
        Err(e) => println!("GET me        -> {e}"),
        Ok(r) => println!("GET me        -> {} (unexpected)", r.status()),
    }

    let _ = std::fs::remove_dir_all(&dir);
    if path.exists() || still_active || revoked.len() != 1 || !revoked[0].refresh_token {
        return Err("logout did not end the session".into());
    }
    Ok(())
}

/// Waits for the login, a line per wait; Ctrl-C cancels it (`DeviceError::Cancelled`), and
/// once it is over, ends the program as usual.
fn wait_cancellable_on_ctrl_c(
    pending: DeviceAuthorization,
) -> Result<tokengate::Tokens, Box<dyn Error>> {
    let cancel = pending.canceller();
    let on_ctrl_c = cancel.clone();
    ctrlc::set_handler(move || {
        if on_ctrl_c.is_cancelled() {
            std::process::exit(130);
        }
        on_ctrl_c.cancel();
    })?;
    let tokens = pending.wait_with(|progress| match progress {
        DeviceProgress::Waiting { remaining, .. } => {
            println!("waiting for approval, {} left", span(remaining));
        }
        DeviceProgress::SlowDown { interval, .. } => {
            println!("the server asked to poll every {}", span(interval));
        }
        DeviceProgress::Retrying {
            failed_polls,
            next_poll,
            ..
        } => println!(
            "a poll failed ({failed_polls} in a row); again in {}",
            span(next_poll)
        ),
        _ => {}
    });
    cancel.cancel(); // The login is over (a cancel now changes nothing): Ctrl-C exits.
    Ok(tokens?)
}

/// `14 min 58 s`, `10 min`, `5 s` (a part of a second counts as one).
fn span(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}
