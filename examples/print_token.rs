//! `print-access-token`, as `gcloud auth print-access-token` does it: print an access token
//! that is valid now, refreshing it first (and storing the new tokens) only when needed, for
//! a script, a git credential helper or another HTTP client to use.
//!
//! Runs against a local authorization server and API, [`tokengate::testing::TestServer`]
//! (no setup, no network; its tokens are named `at-N`/`rt-N` by issuance): a login is stored
//! in a `FileStore`, then the tool "runs" three times, as three processes would: the first
//! prints the stored token with no call to the server; by the second the token has expired,
//! so it is refreshed first, once, and the new tokens are stored; the third prints those.
//! Only the tokens go to stdout (`at-1`, `at-2`, `at-2`); what happened goes to stderr.
//!
//! ```text
//! cargo run --example print_token
//! ```
//!
//! In tokengate's own repository that is all (its dev-dependencies turn the `testing`
//! feature on). Copied into another crate, this file needs nothing but std and tokengate
//! with its `testing` feature, e.g. in that crate's Cargo.toml:
//!
//! ```toml
//! [dev-dependencies]   # or [dependencies]
//! tokengate = { version = "0.1", features = ["testing"] }
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokengate::testing::TestServer;
use tokengate::{AuthClient, Error, FileStore, OAuth2Refresh, TokenStore};

const TOKEN_LIFETIME: Duration = Duration::from_secs(2);

/// One run of the tool: what `main` of a real `print-access-token` would do.
fn print_access_token(store: &Path, api: &str, refresher: OAuth2Refresh) -> Result<(), Failure> {
    let client = AuthClient::builder(api)
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
    let dir = std::env::temp_dir().join(format!("tokengate-print-token-{}", std::process::id()));
    let path = dir.join("tokens.json");
    let result = (|| -> Result<(), Failure> {
        let server = TestServer::builder()
            .access_token_lifetime(TOKEN_LIFETIME)
            .start()?;
        // `mytool login` stored this earlier: at-1 and rt-1, expiring in TOKEN_LIFETIME.
        FileStore::new(&path)?.save(&server.login())?;

        for run in 1..=3 {
            let calls = server.token_requests();
            let refresher = server.auth_server().refresh_grant();
            print_access_token(&path, &server.api_url(), refresher)?;
            eprintln!(
                "run {run}: {} call(s) to the token endpoint",
                server.token_requests() - calls
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
        Err(e) if e.downcast_ref::<Error>().is_some_and(Error::needs_login) => {
            eprintln!("print_token: {e:#}: run `mytool login`");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("print_token: {e:#}");
            ExitCode::FAILURE
        }
    }
}
