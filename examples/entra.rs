//! Microsoft Entra ID: a login from the terminal (the device flow) for any work, school or
//! personal Microsoft account, then `GET https://graph.microsoft.com/v1.0/me`.
//!
//! It talks to login.microsoftonline.com, so CI only builds it. Register an app (Microsoft
//! Entra admin center, App registrations) with "Allow public client flows" on and the
//! delegated permission `User.Read`, then:
//!
//! ```text
//! ENTRA_CLIENT_ID=535fb089-… cargo run --example entra [TOKEN_FILE]
//! ```
//!
//! - `ENTRA_TENANT` (default `common`): `organizations`, `consumers`, or your tenant's id.
//! - `TOKEN_FILE` (default: `tokengate-entra.json` in the temp directory) keeps the tokens.
//!
//! `offline_access` in the scope is what brings a refresh token. The multi-tenant issuer
//! (`…/common/v2.0`) is discovered like any other. When a refresh is refused because the
//! refresh token expired (`invalid_grant`, AADSTS70008) or MFA is now required
//! (`interaction_required`, AADSTS50076), the session ends; any other refusal (a wrong client
//! secret, AADSTS7000215) keeps it and shows Entra's message (see `tests/providers/entra.rs`).

use std::env;
use std::path::PathBuf;
use std::process::ExitCode;

use tokengate::{AuthClient, AuthServer, FileStore};

const SCOPE: &str = "offline_access openid User.Read";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entra: {e:#}"); // `{:#}`: with every cause, on one line
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let client_id = env::var("ENTRA_CLIENT_ID").map_err(|_| "set ENTRA_CLIENT_ID")?;
    let tenant = env::var("ENTRA_TENANT").unwrap_or_else(|_| "common".into());
    let file = env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| env::temp_dir().join("tokengate-entra.json"));

    // The token and device (`/oauth2/v2.0/devicecode`) endpoints, from the v2.0 metadata.
    let entra = AuthServer::discover(format!("https://login.microsoftonline.com/{tenant}/v2.0"))?
        .client_id(client_id);
    let client = AuthClient::builder("https://graph.microsoft.com/v1.0/")
        .refresher(entra.refresh_grant().scope(SCOPE))
        .store(FileStore::new(&file)?)
        .on_session_expired(|| eprintln!("the Microsoft session ended: run again to log in"))
        .build()?;

    if client.tokens().is_none() {
        let pending = entra.device_flow()?.scope(SCOPE).start()?;
        println!(
            "Open {} and enter {}",
            pending.verification_uri(),
            pending.user_code()
        );
        client.set_tokens(pending.wait()?)?;
    }

    // What the id_token says (`openid` in the scope), read for display only: tokengate does
    // not verify it.
    let id = client
        .tokens()
        .and_then(|t| t.id_token()?.unverified_claims().ok());
    if let Some(who) = id
        .as_ref()
        .and_then(|c| c.preferred_username().or(c.email()))
    {
        println!("the id_token says: {who}");
    }

    let mut resp = client.get("me").call()?;
    let me: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    println!("logged in as {}", me["userPrincipalName"]);
    Ok(())
}
