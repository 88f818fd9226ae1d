//! Auth0: a login from the terminal (the device flow) for your own API, then a GET of it.
//!
//! It talks to your Auth0 tenant, so CI only builds it. Create a Native application with the
//! Device Code grant (and Refresh Token, for `offline_access`), an API whose identifier is the
//! audience (with "Allow Offline Access"), then:
//!
//! ```text
//! AUTH0_DOMAIN=tenant.eu.auth0.com AUTH0_CLIENT_ID=… AUTH0_AUDIENCE=https://api.example.com/ \
//!     cargo run --example auth0 https://api.example.com/v1/ orders
//! ```
//!
//! The arguments are the API's base URL and the path to GET. Auth0 issues a token for an API
//! only if every request names it: `extra_param("audience", …)` on the `AuthServer` sends it
//! with the device code request, each poll and each refresh (see `tests/providers/auth0.rs`).

use std::env;
use std::process::ExitCode;

use tokengate::{AuthClient, AuthServer};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth0: {e:#}"); // `{:#}`: with every cause, on one line
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| env::var(name).map_err(|_| format!("set {name}"));
    let (domain, client_id, audience) = (
        var("AUTH0_DOMAIN")?,
        var("AUTH0_CLIENT_ID")?,
        var("AUTH0_AUDIENCE")?,
    );
    let mut args = env::args().skip(1);
    let (api, path) = match (args.next(), args.next()) {
        (Some(api), Some(path)) => (api, path),
        _ => return Err("usage: auth0 API_BASE_URL PATH".into()),
    };

    // Auth0's issuer is `https://DOMAIN/`, trailing slash included.
    let auth0 = AuthServer::discover(format!("https://{domain}/"))?
        .client_id(client_id)
        .extra_param("audience", audience);
    let client = AuthClient::builder(api)
        .refresher(auth0.refresh_grant()) // tokens in memory: a login each run
        .build()?;

    let pending = auth0
        .device_flow()?
        .scope("openid offline_access")
        .start()?;
    match pending.verification_uri_complete() {
        Some(link) => println!("Open {link} (code {})", pending.user_code()),
        None => println!(
            "Open {} and enter {}",
            pending.verification_uri(),
            pending.user_code()
        ),
    }
    client.set_tokens(pending.wait()?)?;

    let mut resp = client.get(&path).call()?;
    println!("{}: {}", resp.status(), resp.body_mut().read_to_string()?);
    Ok(())
}
