//! Fault injection (issue 3): many threads against a server that randomly answers 500/503,
//! answers slowly, resets connections and redirects elsewhere, while tokens expire every
//! 300 ms. Every call must end in success or one of the errors the faults explain, the
//! token must never reach the foreign origin, and no refresh token may be used twice.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use support::raw::{Action, RawRequest, RawServer};
use support::RecordingSleeper;
use tokengate::{AuthClient, Error, OAuth2Refresh, Tokens};

const THREADS: usize = 16;
const CALLS_PER_THREAD: usize = 60;
const LIFETIME: Duration = Duration::from_millis(300);

/// A deterministic xorshift generator shared by the server's handler threads.
struct Rng(AtomicU64);

impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        loop {
            let mut y = x;
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            match self
                .0
                .compare_exchange(x, y, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return y,
                Err(actual) => x = actual,
            }
        }
    }
}

#[derive(Default)]
struct Server {
    access: HashMap<String, Instant>,
    refresh: String,
    used_refresh: Vec<String>,
    minted: u64,
    reuse: u64,
}

fn json(body: String) -> Action {
    Action::Respond(
        200,
        vec![b"content-type: application/json".to_vec()],
        body.into_bytes(),
    )
}

#[test]
fn random_faults_end_in_success_or_explained_errors_and_never_leak_the_token() {
    let leaks = Arc::new(AtomicUsize::new(0));
    let l = leaks.clone();
    let foreign = RawServer::start(move |req| {
        if req.header("authorization").is_some() {
            l.fetch_add(1, Ordering::SeqCst);
        }
        Action::Respond(200, vec![], b"foreign".to_vec())
    });
    let foreign_url = foreign.url("/elsewhere");

    let state = Arc::new(Mutex::new(Server {
        refresh: "rt-0".into(),
        ..Default::default()
    }));
    state
        .lock()
        .access
        .insert("at-0".into(), Instant::now() + LIFETIME);
    let rng = Arc::new(Rng(AtomicU64::new(0x2545_f491_4f6c_dd1d)));
    let st = state.clone();
    let server = RawServer::start(move |req: &RawRequest| {
        let roll = rng.next() % 100;
        if req.path == "/token" {
            // Token-endpoint faults happen before the grant is processed.
            match roll {
                0..=9 => return Action::Respond(503, vec![], vec![]),
                10..=14 => return Action::Close,
                _ => {}
            }
            let form = support::form(&req.body);
            let mut s = st.lock();
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if presented != s.refresh {
                if s.used_refresh.contains(&presented) {
                    s.reuse += 1;
                }
                return Action::Respond(400, vec![], br#"{"error":"invalid_grant"}"#.to_vec());
            }
            s.minted += 1;
            let (access, refresh) = (format!("at-{}", s.minted), format!("rt-{}", s.minted));
            let old = std::mem::replace(&mut s.refresh, refresh.clone());
            s.used_refresh.push(old);
            s.access.insert(access.clone(), Instant::now() + LIFETIME);
            return json(format!(
                r#"{{"access_token":"{access}","token_type":"Bearer","expires_in":{},"refresh_token":"{refresh}"}}"#,
                LIFETIME.as_secs_f64()
            ));
        }
        match roll {
            0..=7 => return Action::Respond(500, vec![], vec![]),
            8..=15 => return Action::Respond(503, vec![], vec![]),
            16..=19 => return Action::Close,
            20..=23 => thread::sleep(Duration::from_millis(20)),
            24..=27 => {
                let loc = format!("location: {foreign_url}");
                return Action::Respond(302, vec![loc.into_bytes()], vec![]);
            }
            _ => {}
        }
        let token = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        let live = token
            .and_then(|t| st.lock().access.get(t).copied())
            .is_some_and(|exp| exp > Instant::now());
        if live {
            Action::Respond(200, vec![], b"ok".to_vec())
        } else {
            Action::Respond(
                401,
                vec![br#"www-authenticate: Bearer error="invalid_token""#.to_vec()],
                vec![],
            )
        }
    });

    let sleeper = Arc::new(RecordingSleeper::default());
    let client = AuthClient::builder(server.url("/api/"))
        .proxy(None)
        .sleeper(sleeper)
        .refresher(OAuth2Refresh::new(server.url("/token")))
        .tokens(
            Tokens::new("at-0")
                .with_refresh_token("rt-0")
                .with_expires_in(LIFETIME),
        )
        .build()
        .unwrap();

    let outcomes = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (client, outcomes) = (client.clone(), outcomes.clone());
            thread::spawn(move || {
                for _ in 0..CALLS_PER_THREAD {
                    let kind = match client.get("items").call() {
                        Ok(resp) => format!("ok {}", resp.status().as_u16()),
                        // 500 is never retried; 503 only after the retries ran out.
                        Err(Error::StatusCode(s @ (500 | 503))) => format!("status {s}"),
                        // resets, after the retries ran out
                        Err(Error::Http(_)) => "transport".into(),
                        // token endpoint 503s/resets after its retries ran out
                        Err(Error::Refresh(e)) if !e.is_terminal() => "refresh transient".into(),
                        Err(other) => format!("UNEXPLAINED {other:?}"),
                    };
                    *outcomes.lock().entry(kind).or_default() += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("no call may panic");
    }

    let outcomes = outcomes.lock();
    let total: usize = outcomes.values().sum();
    assert_eq!(total, THREADS * CALLS_PER_THREAD);
    assert!(
        outcomes.keys().all(|k| !k.starts_with("UNEXPLAINED")),
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("ok 200").copied().unwrap_or(0) > total / 2,
        "{outcomes:?}"
    );
    assert_eq!(
        leaks.load(Ordering::SeqCst),
        0,
        "token sent to a foreign origin"
    );
    let s = state.lock();
    assert_eq!(s.reuse, 0, "a rotated refresh token was presented again");
    assert!(s.minted >= 1, "tokens expired and were refreshed");
    println!("outcomes {outcomes:?}; refreshes {}", s.minted);
}
