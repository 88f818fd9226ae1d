//! tokengate's main job, end to end, with no setup and no network.
//!
//! Starts a local OAuth2 authorization server and API, [`tokengate::testing::TestServer`]
//! (access tokens live 2 s, refresh tokens rotate, reusing a rotated refresh token revokes
//! the session), then runs worker threads against it for a few seconds through one shared
//! `AuthClient`, printing a timeline of every 401, refresh and wait, and a summary of what
//! the server saw.
//!
//! ```text
//! cargo run --example demo
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

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokengate::testing::TestServer;
use tokengate::{AuthClient, Error, Event, RefreshReason, Tokens};

const WORKERS: usize = 6;
const TOKEN_LIFETIME: Duration = Duration::from_secs(2);
const TOKEN_ENDPOINT_DELAY: Duration = Duration::from_millis(80);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    session_expired: AtomicU64,
    other_errors: AtomicU64,
}

/// The timeline: its lines go to one printer thread, which prints them in order and ends once
/// every `Timeline` is dropped, the client's listeners' too. So every line comes before the
/// summary, also a listener's that runs just after `close()` returned (the report of the
/// refresh that `close()` waited for may come a moment after that refresh ended).
#[derive(Clone)]
struct Timeline {
    start: Instant,
    lines: mpsc::Sender<String>,
}

impl Timeline {
    fn log(&self, who: &str, what: &str) {
        let at = self.start.elapsed().as_secs_f64();
        let _ = self.lines.send(format!("{at:>7.3} s  {who:<18} {what}"));
    }
}

/// Numbers the access tokens in the order the client comes to use them: token #1, #2, …
/// (events name a token by the client's generation counter, which also counts a session's
/// end and a logout, so its numbers skip where no token was held).
#[derive(Default)]
struct TokenNumbers(Mutex<Vec<u64>>);

impl TokenNumbers {
    fn of(&self, generation: u64) -> usize {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen.iter().position(|&g| g == generation) {
            Some(i) => i + 1,
            None => {
                seen.push(generation);
                seen.len()
            }
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}"); // `{:#}`: with every cause, on one line
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::builder()
        .access_token_lifetime(TOKEN_LIFETIME)
        .token_delay(TOKEN_ENDPOINT_DELAY)
        .start()?;
    let start = Instant::now();
    let (lines, to_print) = mpsc::channel::<String>();
    let printer = thread::spawn(move || to_print.into_iter().for_each(|l| println!("{l}")));
    let timeline = Timeline { start, lines };

    println!("tokengate demo: {WORKERS} worker threads share one AuthClient for ~5 s.");
    println!(
        "Local server at {}; access tokens live {:?}; the token endpoint answers in {:?}.\n",
        server.base_url(),
        TOKEN_LIFETIME,
        TOKEN_ENDPOINT_DELAY
    );
    println!("Token #1 is the access token the client starts with, #2 the one its first refresh");
    println!("brings, and so on. Token #1 was given out long ago and the server no longer takes");
    println!(
        "it, so the first requests draw 401s: one thread refreshes, the others wait for it.\n"
    );
    println!("   time    thread             event");

    // The user logged in some time ago: the server has already expired this access token,
    // but the client does not know it yet (no expires_in), so the first requests draw 401s.
    let stale_login = server.login();
    server.revoke_access_tokens();
    let stale = Tokens::new(stale_login.access_token().secret())
        .with_refresh_token(stale_login.refresh_token().unwrap().secret());

    // The server as the client knows it (token endpoint, client id and secret): its refresher.
    let (on_expired, on_event) = (timeline.clone(), timeline.clone());
    let numbers = TokenNumbers::default();
    let client = AuthClient::builder(server.api_url())
        .refresher(server.auth_server().refresh_grant())
        .tokens(stale)
        .on_session_expired(move || {
            let me = thread::current();
            on_expired.log(
                me.name().unwrap_or("?"),
                "on_session_expired listener: the user must log in again",
            );
        })
        .on_event(move |event| {
            let me = thread::current();
            let who = me.name().unwrap_or("?");
            let what = match event {
                Event::Unauthorized { generation } => {
                    format!("got 401 with token #{}", numbers.of(*generation))
                }
                Event::RefreshStarted { reason, generation } => format!(
                    "REFRESHING token #{} ({})",
                    numbers.of(*generation),
                    match reason {
                        RefreshReason::Unauthorized => "after a 401",
                        RefreshReason::Expired => "token expired",
                        RefreshReason::Proactive => "ahead of expiry, in the background",
                        RefreshReason::Acquire => "first token",
                        _ => "other",
                    }
                ),
                Event::Refreshed { generation } => {
                    format!("refreshed: now token #{}", numbers.of(*generation))
                }
                Event::RefreshFailed { generation } => {
                    format!("refresh of token #{} failed", numbers.of(*generation))
                }
                Event::Waited { generation } => format!(
                    "waited for another thread's refresh of token #{}",
                    numbers.of(*generation)
                ),
                Event::SessionExpired => "token endpoint said invalid_grant: session over".into(),
                Event::Retrying { retry, delay } => format!("retry {retry} in {delay:?}"),
                _ => format!("{event:?}"),
            };
            on_event.log(who, &what);
        })
        .build()?;

    let tally = Arc::new(Tally::default());
    let stop_at = start + Duration::from_millis(5200);
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let client = client.clone();
            let tally = tally.clone();
            let timeline = timeline.clone();
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
                                let who = format!("worker-{i}");
                                timeline.log(&who, &format!("request failed: {e}"));
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
    timeline.log(
        "main",
        "server revokes all access tokens (expect one 401 storm, one refresh)",
    );
    server.revoke_access_tokens();

    // Act three: the server ends the session; every worker gets SessionExpired.
    thread::sleep(Duration::from_millis(3800).saturating_sub(start.elapsed()));
    timeline.log("main", "server ends the session (refresh token revoked)");
    server.revoke_all();

    // Act four: the user logs in again; workers carry on with the new tokens.
    thread::sleep(Duration::from_millis(4400).saturating_sub(start.elapsed()));
    timeline.log("main", "user logs in again: set_tokens(..)");
    client.set_tokens(server.login())?;

    for w in workers {
        w.join().expect("worker panicked");
    }
    // The end of the program: close() waits for a background refresh still on the wire and
    // saves what it brings (dropping the last handle would do the same, silently).
    timeline.log("main", "close(): waits for a refresh in flight, if any");
    client.close()?;
    drop(timeline);
    printer.join().expect("printer panicked");

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
    // What the server saw, from its journal.
    let reuse = server.reuse_detected();
    let twice = server.presented_twice();
    println!("  401s answered by the API      {}", server.api_401s());
    println!("  refreshes (token endpoint)    {}", server.refreshes());
    println!("  a refresh token sent twice    {twice}");
    println!("  refresh-token reuse detected  {reuse}");
    if errors > 0 || twice > 0 || reuse > 0 {
        return Err("unexpected failures".into());
    }
    Ok(())
}
