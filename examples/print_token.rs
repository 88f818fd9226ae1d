//! `print-access-token`, as `gcloud auth print-access-token` does it: print an access token
//! that is valid now, refreshing it first (and storing the new tokens) only when needed, for
//! a script, a git credential helper or another HTTP client to use.
//!
//! Runs against the crate's local demo server (no setup, no network): a login is stored in a
//! `FileStore`, then the tool "runs" three times, as three processes would: the first
//! prints the stored token with no call to the server; by the second the token has expired,
//! so it is refreshed first, once, and the new tokens are stored; the third prints those.
//! Only the tokens go to stdout; what happened goes to stderr.
//!
//! ```text
//! cargo run --example print_token
//! ```

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokengate::{AuthClient, Error, FileStore, OAuth2Refresh, TokenStore};

const TOKEN_LIFETIME: Duration = Duration::from_secs(2);

/// One run of the tool: what `main` of a real `print-access-token` would do.
fn print_access_token(store: &Path, api: &str, refresher: OAuth2Refresh) -> Result<(), Failure> {
    let client = AuthClient::builder(api)
        .proxy(None) // the demo server is on loopback
        .refresher(refresher)
        .store(FileStore::new(store)?)
        .build()?;
    let token = client.access_token()?;
    println!("{}", token.secret());
    // Waits for nothing here (access_token() already did); reports a store write that failed.
    Ok(client.close()?)
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let server = harness::servers::TokenServer::with_lifetime(TOKEN_LIFETIME);
    let dir = std::env::temp_dir().join(format!("tokengate-print-token-{}", std::process::id()));
    let path = dir.join("tokens.json");
    let result = (|| -> Result<(), Failure> {
        // `mytool login` stored this earlier.
        let login = server.login();
        let stored = tokengate::Tokens::new(login.access_token().secret())
            .with_refresh_token(login.refresh_token().unwrap().secret())
            .with_expires_in(TOKEN_LIFETIME);
        FileStore::new(&path)?.save(&stored)?;

        for run in 1..=3 {
            let calls = server.refresh_calls();
            print_access_token(&path, &server.api_url(), server.refresher())?;
            eprintln!(
                "run {run}: {} call(s) to the token endpoint",
                server.refresh_calls() - calls
            );
            if run == 1 {
                std::thread::sleep(TOKEN_LIFETIME);
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<Error>()
                .is_some_and(|e| e.is_session_expired() || matches!(e, Error::NoTokens)) =>
        {
            eprintln!("print_token: {e}: run `mytool login`");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("print_token: {e}");
            ExitCode::FAILURE
        }
    }
}
