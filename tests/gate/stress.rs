//! Stress: 64 threads share one client for about 2.5 s against a server whose access tokens
//! live 400 ms and which injects faults (503/500 from the API and from the token endpoint,
//! slow responses). Every failure a thread sees must be explained by an injected fault, no
//! body is ever corrupted or changed on a retry, no refresh token is ever reused, and the
//! number of refreshes is within one of the number of expiries (defined below).
//!
//! The run is bounded by time and by count (at most `MAX_PER_THREAD` requests per thread).
//! Nothing asserts on elapsed time: how many requests, expiries and faults happen depends on
//! the machine, and every check below holds for any number of them. A typical run on the
//! shared 2-core machine: about 4 500 requests, 200 401s, 100 bodies re-sent after a 401,
//! 6 refreshes, 300 injected API faults, 3 injected token faults, in 2.6 s. Under heavy
//! load from other processes (load average 16) about 330 requests, and some retries arrive
//! with an already expired refreshed token, which the test recognises from the server's
//! record of that request.
//!
//! # These checks can fail
//! Mutations tried by hand (then reverted), each failing this test:
//! - gate: end the flight before installing its result → `a rotated refresh token was reused`;
//! - gate: lead without checking the in-flight flag → `a rotated refresh token was reused`;
//! - gate: drop the generation re-check in `refresh` → a waiter spins holding the flight lock
//!   (livelock), caught by the watchdog;
//! - client: retry after a 401 without the body → `a body did not match its checksum`;
//! - client: retry after a 401 with the old token → about 200 unexplained `Unauthorized`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::harness::servers::faults::{fnv1a, FaultPlan, FaultServer, TokenOutcome};
use tokengate::time::Clock;
use tokengate::{AuthClient, AuthServer, Error, Event, RefreshError};

const THREADS: usize = 64;
const RUN: Duration = Duration::from_millis(2500);
const MAX_PER_THREAD: usize = 400;
const LIFETIME: Duration = Duration::from_millis(400);
/// Not a timing claim: only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(120);

/// The client's clock, read from the same monotonic clock the server stamps its events with,
/// so "the client decided to refresh" and "the server minted / received" compare exactly.
struct MonotonicClock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock for MonotonicClock {
    fn now(&self) -> SystemTime {
        self.wall + self.mono.elapsed()
    }
}

#[derive(Default)]
struct EventCounts {
    started: AtomicU64,
    refreshed: AtomicU64,
    failed: AtomicU64,
    session_expired: AtomicU64,
    waited: AtomicU64,
    unauthorized: AtomicU64,
}

/// What one thread's request ended with.
enum Outcome {
    Ok,
    Failed { id: String, error: Error },
}

/// A request body: 0 to 12 000 pseudo-random bytes, different for every request.
fn body_for(id: &str) -> Vec<u8> {
    let mut x = fnv1a(id.as_bytes()) | 1;
    let len = (x % 12_001) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn one_request(client: &AuthClient, thread: usize, i: usize) -> Outcome {
    let id = format!("{thread}-{i}");
    let result = if i.is_multiple_of(2) {
        client
            .get(&format!("items/{i}"))
            .header("x-request-id", &id)
            .header("x-body-fnv1a", &format!("{:016x}", fnv1a(b"")))
            .call()
    } else {
        let body = body_for(&id);
        client
            .post("orders")
            .header("x-request-id", &id)
            .header("x-body-fnv1a", &format!("{:016x}", fnv1a(&body)))
            .send(&body)
    };
    match result {
        Ok(mut resp) => {
            let text = resp.body_mut().read_to_string().expect("readable body");
            let json: serde_json::Value = serde_json::from_str(&text).expect("JSON body");
            assert_eq!(json["id"], id.as_str(), "a response for another request");
            Outcome::Ok
        }
        Err(error) => Outcome::Failed { id, error },
    }
}

#[test]
fn sixty_four_threads_under_injected_faults() {
    let srv = FaultServer::start(FaultPlan {
        lifetime: LIFETIME,
        api_503_every: 23,
        api_500_every: 37,
        // Calls 1, 4, 7, … fail. The first call for a generation is usually the proactive one,
        // so about every other generation runs into its expiry (and draws 401s) first.
        token_fault_every: 3,
        token_fault_phase: 1,
        api_slow_every: 5,
        token_slow_every: 2,
        slow: Duration::from_millis(40),
    });
    let events = Arc::new(EventCounts::default());
    let ev = events.clone();
    let client = AuthClient::builder(srv.api_url())
        .proxy(None)
        .refresher(
            AuthServer::new(srv.token_url())
                .client_id("stress")
                .client_secret("stress-secret")
                .refresh_grant(),
        )
        .tokens(srv.login())
        .clock(MonotonicClock {
            wall: SystemTime::now(),
            mono: Instant::now(),
        })
        .refresh_timeout(Duration::from_secs(20))
        .token_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .on_event(move |e| {
            let counter = match e {
                Event::RefreshStarted { .. } => &ev.started,
                Event::Refreshed { .. } => &ev.refreshed,
                Event::RefreshFailed { .. } => &ev.failed,
                Event::SessionExpired => &ev.session_expired,
                Event::Waited { .. } => &ev.waited,
                Event::Unauthorized { .. } => &ev.unauthorized,
                _ => return,
            };
            counter.fetch_add(1, SeqCst);
        })
        .build()
        .unwrap();

    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let (client, barrier, tx) = (client.clone(), barrier.clone(), tx.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let stop = Instant::now() + RUN;
            let mut outcomes = Vec::new();
            for i in 0..MAX_PER_THREAD {
                if Instant::now() >= stop {
                    break;
                }
                outcomes.push(one_request(&client, t, i));
            }
            tx.send(outcomes).unwrap();
        });
    }
    drop(tx);
    // Collected with a watchdog, so a deadlock or livelock fails the test instead of hanging
    // it. The bound is far above any legitimate run (requests time out after 20 s).
    let hang_by = Instant::now() + HANG;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for _ in 0..THREADS {
        match rx.recv_timeout(hang_by.saturating_duration_since(Instant::now())) {
            Ok(o) => outcomes.extend(o),
            Err(RecvTimeoutError::Timeout) => panic!("workers still running after {HANG:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("a worker panicked"),
        }
    }

    // A background (refresh-ahead) flight may still be running: wait for it to end (token
    // calls time out after 10 s; the bound only turns a hang into a failure).
    let quiet_by = Instant::now() + HANG;
    while events.started.load(SeqCst)
        != events.refreshed.load(SeqCst)
            + events.failed.load(SeqCst)
            + events.session_expired.load(SeqCst)
    {
        assert!(Instant::now() < quiet_by, "a refresh never finished");
        std::thread::sleep(Duration::from_millis(5));
    }

    let s = srv.state.lock();
    let requests = outcomes.len();
    let ok = outcomes.iter().filter(|o| matches!(o, Outcome::Ok)).count();

    // 1. No refresh token was ever used twice (rotation would have revoked the session).
    assert_eq!(s.reuse_detected, 0, "a rotated refresh token was reused");
    assert!(!s.revoked);

    // 2. Every body arrived intact, and every retry of a request re-sent the same bytes.
    assert_eq!(
        s.checksum_mismatches, 0,
        "a body did not match its checksum"
    );
    let mut replays = 0;
    for (id, attempts) in &s.requests {
        let first = &attempts[0];
        for a in &attempts[1..] {
            assert_eq!(
                (a.body_fnv, a.body_len),
                (first.body_fnv, first.body_len),
                "request {id}: a retry sent another body"
            );
        }
        if attempts.len() > 1 && first.body_len > 0 {
            replays += 1;
        }
    }

    // 3. No generation was refreshed before it was due. The client refreshes generation k
    //    when it is past its refresh point, 3/4 of its lifetime after the client received it
    //    (skew clamped to a quarter of the lifetime), or when the API rejects it, which this
    //    server does only after the full lifetime. The client received generation k after the
    //    server minted it, so every token call presenting generation k must arrive at least
    //    3/4 of a lifetime after generation k was minted. A second, concurrent refresh of the
    //    same expiry would present the next generation too early, or reuse a rotated token.
    let due = LIFETIME * 3 / 4;
    for call in &s.token_calls {
        let g = call
            .presented
            .expect("only our refresh tokens are presented");
        let minted = s.generations[g as usize].minted;
        assert!(
            call.arrived >= minted + due,
            "generation {g} was refreshed {:?} after it was minted (due after {due:?})",
            call.arrived - minted
        );
    }

    // 4. Refreshes vs. expiries. An "expiry" is a generation whose refresh point
    //    (minted + 3/4 lifetime) passed before the last API call arrived. Every refresh of
    //    generation k is triggered by a request that then calls the API after k's refresh
    //    point, so each refreshed generation is an expiry; generation k+1 exists only once k
    //    is refreshed, so at most the newest generation is an expiry not (yet) refreshed.
    //    Hence refreshes == expiries or expiries - 1.
    let refreshes = s.generations.len() as u64 - 1;
    let last_api = s.last_api_arrival.expect("API calls were made");
    let expiries = s
        .generations
        .iter()
        .filter(|g| g.minted + due <= last_api)
        .count() as u64;
    assert!(
        refreshes == expiries || refreshes + 1 == expiries,
        "{refreshes} refreshes for {expiries} expiries"
    );
    let minted = s
        .token_calls
        .iter()
        .filter(|c| matches!(c.outcome, TokenOutcome::Minted(_)))
        .count() as u64;
    assert_eq!(minted, refreshes);
    assert!(
        s.token_calls
            .iter()
            .all(|c| c.outcome != TokenOutcome::Rejected),
        "the token endpoint rejected a refresh"
    );

    // 5. The client's own account agrees with the server's: one Refreshed per minted
    //    generation. A flight may retry the token endpoint after an injected 503 (the
    //    RetryPolicy does, since a 503 cannot have used the refresh token), so each
    //    RefreshStarted accounts for 1 to 1 + max_retries token calls, and a flight fails
    //    (RefreshFailed) only on an injected fault: at most one per injected token fault.
    let injected_token: u64 = s.injected_token.values().sum();
    let started = events.started.load(SeqCst);
    let token_calls = s.token_calls.len() as u64;
    let per_flight = 1 + u64::from(tokengate::RetryPolicy::default().retries());
    assert!(
        started <= token_calls && token_calls <= started * per_flight,
        "{started} flights for {token_calls} token calls"
    );
    assert_eq!(events.refreshed.load(SeqCst), refreshes);
    assert!(events.failed.load(SeqCst) <= injected_token);
    assert_eq!(events.session_expired.load(SeqCst), 0);

    // 6. Every failure is explained by an injected fault.
    let mut explained: BTreeMap<&str, u64> = BTreeMap::new();
    let mut api_failures: BTreeMap<u16, u64> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for o in &outcomes {
        let Outcome::Failed { id, error } = o else {
            continue;
        };
        let attempts = s.requests.get(id);
        let last = attempts.and_then(|a| a.last());
        match error {
            // The API's answer to this very request was an injected fault with this status.
            Error::StatusCode(status @ (500 | 503))
                if last.is_some_and(|a| a.injected && a.status == *status) =>
            {
                *api_failures.entry(*status).or_default() += 1;
                *explained.entry("API 5xx").or_default() += 1;
            }
            // A refresh failed with the status the token endpoint injected. Threads that
            // waited for that flight share its error; the flights themselves are counted
            // exactly against the injected faults in check 5.
            Error::Refresh(e)
                if matches!(&**e, RefreshError::Status { status, .. }
                    if s.injected_token.contains_key(status)) =>
            {
                *explained.entry("refresh 5xx").or_default() += 1;
            }
            // The retry's token, newer than the one of an earlier 401, was itself expired when
            // it arrived: this thread was descheduled for most of a 400 ms lifetime between
            // getting the refreshed token and the server reading it (seen on a loaded machine).
            Error::Unauthorized
                if attempts.is_some_and(|a| {
                    let last = &a[a.len() - 1];
                    last.status == 401
                        && last.token_expired
                        && a[..a.len() - 1].iter().any(|x| {
                            x.status == 401 && x.token_expired && x.generation < last.generation
                        })
                }) =>
            {
                *explained
                    .entry("refreshed token expired before the retry")
                    .or_default() += 1;
            }
            other => unexplained.push(format!("{id}: {other:?} (server saw {attempts:?})")),
        }
    }
    for (status, n) in &api_failures {
        assert!(
            *n <= s.injected_api.get(status).copied().unwrap_or(0),
            "{n} API failures with {status}, more than injected"
        );
    }

    eprintln!(
        "stress: {requests} requests by {THREADS} threads, {ok} ok; {} API calls ({} 401s, {} \
         slow, injected {:?}); {} token calls ({} slow, injected {:?}); {refreshes} refreshes, \
         {expiries} expiries; {replays} bodies re-sent after a 401; {} waits; failures: {:?}",
        s.api_calls,
        s.api_401s,
        s.slow_api,
        s.injected_api,
        s.token_calls.len(),
        s.slow_token,
        s.injected_token,
        events.waited.load(SeqCst),
        explained,
    );
    assert!(
        unexplained.is_empty(),
        "{} unexplained failures:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );

    // 7. The run really exercised what it claims to.
    assert!(ok > 0 && ok + explained.values().sum::<u64>() as usize == requests);
    assert!(s.injected_api.contains_key(&503) && s.injected_api.contains_key(&500));
    assert!(injected_token > 0, "no token fault was injected");
    assert!(s.slow_api > 0 && s.slow_token > 0);
    assert!(refreshes >= 2, "only {refreshes} refreshes");
    // Token call 1 always fails (the schedule), so generation 0 reaches its expiry with
    // requests in flight: some bodies are re-sent after a 401, and check 2 is not vacuous.
    assert!(replays > 0, "no body was re-sent after a 401");
}
