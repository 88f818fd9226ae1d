//! tokengate's main job, end to end, with no setup and no network.
//!
//! Starts a local OAuth2 token server and API (access tokens live 2 s, refresh tokens rotate,
//! reusing a rotated refresh token revokes the session), then runs worker threads against it
//! for a few seconds through one shared `AuthClient`, printing a timeline of every 401,
//! refresh and wait, and a summary.
//!
//! ```text
//! cargo run --example demo
//! ```

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokengate::{Error, Event, RefreshReason};

const WORKERS: usize = 6;
const TOKEN_LIFETIME: Duration = Duration::from_secs(2);
const TOKEN_ENDPOINT_DELAY: Duration = Duration::from_millis(80);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    session_expired: AtomicU64,
    other_errors: AtomicU64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = harness::servers::TokenServer::with_lifetime_and_delay(
        TOKEN_LIFETIME,
        TOKEN_ENDPOINT_DELAY,
    );
    let start = Instant::now();
    let log = move |who: &str, what: &str| {
        println!("{:>7.3} s  {who:<18} {what}", start.elapsed().as_secs_f64());
    };

    println!("tokengate demo: {WORKERS} worker threads share one AuthClient for ~5 s.");
    println!(
        "Local server at {}; access tokens live {:?}; the token endpoint answers in {:?}.\n",
        server.server.base_url(),
        TOKEN_LIFETIME,
        TOKEN_ENDPOINT_DELAY
    );
    println!("   time    thread             event");

    // The user logged in some time ago: the server has already expired this access token,
    // but the client does not know it yet (no expires_in), so the first requests draw 401s.
    let stale_login = server.login();
    server.expire_access_tokens();
    let stale = tokengate::Tokens::new(stale_login.access_token().secret())
        .with_refresh_token(stale_login.refresh_token().unwrap().secret());

    let client = server
        .client_builder()
        .tokens(stale)
        .on_session_expired(move || {
            let me = thread::current();
            log(
                me.name().unwrap_or("?"),
                "on_session_expired listener: the user must log in again",
            );
        })
        .on_event(move |event| {
            let me = thread::current();
            let who = me.name().unwrap_or("?");
            let what = match event {
                Event::Unauthorized { generation } => {
                    format!("got 401 with token gen {generation}")
                }
                Event::RefreshStarted { reason, generation } => format!(
                    "REFRESHING gen {generation} ({})",
                    match reason {
                        RefreshReason::Unauthorized => "after a 401",
                        RefreshReason::Expired => "token expired",
                        RefreshReason::Proactive => "ahead of expiry, in the background",
                        RefreshReason::Acquire => "first token",
                        _ => "other",
                    }
                ),
                Event::Refreshed { generation } => format!("refreshed: now gen {generation}"),
                Event::RefreshFailed { generation } => {
                    format!("refresh of gen {generation} failed")
                }
                Event::Waited { generation } => {
                    format!("waited for another thread's refresh of gen {generation}")
                }
                Event::SessionExpired => "token endpoint said invalid_grant: session over".into(),
                Event::Retrying { retry, delay } => format!("retry {retry} in {delay:?}"),
                _ => format!("{event:?}"),
            };
            log(who, &what);
        })
        .build()?;

    let tally = Arc::new(Tally::default());
    let stop_at = start + Duration::from_millis(5200);
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let client = client.clone();
            let tally = tally.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    let mut n = 0u32;
                    while Instant::now() < stop_at {
                        n += 1;
                        let page = n.to_string();
                        match client.get("orders").query("page", &page).call() {
                            Ok(mut resp) => {
                                let _ = resp.body_mut().read_to_string();
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::SessionExpired) => {
                                tally.session_expired.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                log(&format!("worker-{i}"), &format!("request failed: {e}"));
                                tally.other_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        thread::sleep(Duration::from_millis(25));
                    }
                })
        })
        .collect::<Result<_, _>>()?;

    // Act two: the server invalidates every access token (say, a key rotation) — a 401 storm.
    thread::sleep(Duration::from_millis(2700).saturating_sub(start.elapsed()));
    log(
        "main",
        "server revokes all access tokens (expect one 401 storm, one refresh)",
    );
    server.expire_access_tokens();

    // Act three: the server ends the session; every worker gets SessionExpired.
    thread::sleep(Duration::from_millis(3800).saturating_sub(start.elapsed()));
    log("main", "server ends the session (refresh token revoked)");
    server.revoke_session();

    // Act four: the user logs in again; workers carry on with the new tokens.
    thread::sleep(Duration::from_millis(4400).saturating_sub(start.elapsed()));
    log("main", "user logs in again: set_tokens(..)");
    client.set_tokens(server.login())?;

    for w in workers {
        w.join().expect("worker panicked");
    }
    // The end of the program: close() waits for a background refresh still on the wire and
    // saves what it brings (dropping the last handle would do the same, silently).
    log("main", "close(): waits for a refresh in flight, if any");
    client.close()?;

    let ok = tally.ok.load(Ordering::Relaxed);
    let expired = tally.session_expired.load(Ordering::Relaxed);
    let errors = tally.other_errors.load(Ordering::Relaxed);
    println!("\nsummary");
    println!("  requests made by workers      {}", ok + expired + errors);
    println!("    succeeded                   {ok}");
    println!(
        "    refused: session expired    {expired}   (between the revocation and the new login)"
    );
    println!("    other failures              {errors}");
    println!("  401s answered by the API      {}", server.api_401s());
    println!("  token endpoint calls          {}", server.refresh_calls());
    println!(
        "  refresh-token reuse detected  {}",
        server.reuse_detected()
    );
    if errors > 0 || server.reuse_detected() > 0 {
        return Err("unexpected failures".into());
    }
    Ok(())
}
