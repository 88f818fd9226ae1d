//! GitHub: a login from the terminal (the device flow), then `GET https://api.github.com/user`.
//!
//! It talks to github.com, so CI only builds it. It needs the client id of a GitHub App or
//! OAuth app whose settings have "Enable Device Flow" checked:
//!
//! ```text
//! GITHUB_CLIENT_ID=Iv1.… cargo run --example github [TOKEN_FILE]
//! ```
//!
//! - `TOKEN_FILE` (default: `tokengate-github.json` in the temp directory) keeps the tokens,
//!   so a second run needs no login.
//! - `GITHUB_SCOPE` (optional): the scope an OAuth app asks for (`read:user`); a GitHub App
//!   takes none (its permissions are set on the app).
//! - `GITHUB_CLIENT_SECRET` (optional): a GitHub App's user tokens expire after 8 hours and
//!   GitHub wants the client secret, in the form, to refresh them. An OAuth app's do not expire.
//!
//! GitHub answers its errors with HTTP 200 (`authorization_pending`, `slow_down`,
//! `bad_refresh_token`): tokengate reads them as errors all the same, so polling goes on and a
//! dead refresh token ends the session (see `tests/providers/github.rs`).

use std::env;
use std::path::PathBuf;
use std::process::ExitCode;

use tokengate::{AuthClient, AuthServer, ClientAuth, FileStore};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("github: {e:#}"); // `{:#}`: with every cause, on one line
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let client_id = env::var("GITHUB_CLIENT_ID").map_err(|_| "set GITHUB_CLIENT_ID")?;
    let file = env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| env::temp_dir().join("tokengate-github.json"));

    let mut github = AuthServer::new("https://github.com/login/oauth/access_token")
        .device_authorization_url("https://github.com/login/device/code")
        .client_id(client_id);
    if let Ok(secret) = env::var("GITHUB_CLIENT_SECRET") {
        github = github.client_secret(secret).auth_method(ClientAuth::Post);
    }
    let client = AuthClient::builder("https://api.github.com/")
        .refresher(github.refresh_grant())
        .store(FileStore::new(&file)?)
        .on_session_expired(|| eprintln!("the GitHub session ended: run again to log in"))
        .build()?;

    if client.tokens().is_none() {
        let mut flow = github.device_flow()?;
        if let Ok(scope) = env::var("GITHUB_SCOPE") {
            flow = flow.scope(scope);
        }
        let pending = flow.start()?;
        println!(
            "Open {} and enter {}",
            pending.verification_uri(),
            pending.user_code()
        );
        client.set_tokens(pending.wait()?)?; // saved to TOKEN_FILE
    }

    let mut resp = client
        .get("user")
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .call()?;
    let user: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    println!(
        "logged in as {} (tokens in {})",
        user["login"],
        file.display()
    );
    Ok(())
}
