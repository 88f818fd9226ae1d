//! Model checks of the refresh gate with [loom](https://docs.rs/loom): every interleaving of
//! 2-3 threads (plus the model's main thread), within a preemption bound, of the gate's real
//! code. loom runs the gate on its own `Mutex`/`RwLock`/`Condvar` (through `src/sync.rs`) and
//! fails a model on any assertion below, and on a deadlock: every thread blocked, which is how
//! a lost wake-up shows, since the shim's timed waits never time out under loom.
//!
//! # Running
//! ```text
//! RUSTFLAGS="--cfg tokengate_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --lib loom -- --test-threads=1
//! ```
//! - `--cfg tokengate_loom`, not `--cfg loom`: tokio (pulled in by httpmock) reacts to
//!   `cfg(loom)` and no longer compiles.
//! - The separate target directory keeps the normal build cache valid (a new `RUSTFLAGS`
//!   rebuilds everything).
//! - The `loom` filter matters: under this cfg the whole library runs on loom's primitives,
//!   which only work inside `loom::model`, so the crate's other unit tests must not run.
//! - `--nocapture` prints how many executions each model explored.
//! - On 2 cores: about 5 s of model checking (about 2 min for the first, cold build).
//!
//! # Bound
//! Each model runs with a preemption bound of [`PREEMPTION_BOUND`] (3) unless
//! `LOOM_MAX_PREEMPTIONS` is set: within that bound every interleaving is explored (26 to
//! 12 700 executions per model, 34 000 in all, about 5 s), beyond it none. Bounds 4 and 5
//! (set through the variable) explore 157 000 and 575 000 executions in about 21 s and 40 s,
//! also passing. With no effective bound (`LOOM_MAX_PREEMPTIONS=255`) three models were
//! explored completely and passed: `failure_of_an_older_generation_is_not_shared` (171
//! executions), `failing_refresher_wakes_every_waiter_with_its_error` (134 482) and
//! `logout_racing_refresh_is_never_undone` (6.6 million, about 5 minutes); the others did
//! not finish within the few minutes given. A bound of 2-3 is what tokio uses for its own
//! primitives, and the study behind preemption bounding (CHESS, Musuvathi & Qadeer, PLDI
//! 2007) found that nearly all concurrency bugs need at most two preemptions. Every mutation
//! below was caught with bound 2.
//!
//! Shared values are held in `std::sync::Arc`, not loom's: loom's `Arc` panics when dropped
//! while a detected deadlock unwinds, which aborts the whole test binary instead of failing
//! one test. Counters and logs inside a model are loom's atomics and mutexes; the `Seen` sets
//! that collect which paths the executions reached live outside the models.
//!
//! # These checks can fail
//! Each mutation below was applied to `src/gate.rs` by hand, the loom run (bound 2) failed as
//! listed, and the mutation was reverted. The first twelve were made when the gate had the ten
//! models of the first version (and `fly` was called `lead`); the next three on the current
//! gate, whose leader installs through a `Lead` handle and whose `Claim` ends its flight in
//! `Drop`; the last two are mutants cargo-mutants generated that no model caught before
//! (TESTING.md lists the gate's other cargo-mutants results and which model catches each).
//!
//! | mutation in `src/gate.rs` | failing models | what loom reported |
//! |---|---|---|
//! | `refresh`: drop the `snap.generation != seen` re-check | 8 of 10, e.g. `one_refresh_per_expiry`, `stale_callers_never_refresh_an_old_generation` | `2 refreshes`, `each generation refreshed exactly once`, a branch-limit livelock |
//! | `refresh`: lead without checking `flight.running` | 8 of 10 | `exactly one refresh per expiry` |
//! | `refresh`: wait while `flight.finished == n` only (ignore the generation) | `replace_wakes_waiters_of_an_abandoned_claim` | deadlock |
//! | `refresh`: share any finished flight's failure (drop `last_generation == seen`) | `failure_of_an_older_generation_is_not_shared` | `Waited: got Failed(0) for generation 1` |
//! | `lead`: end the flight (clear `running`, bump `finished`) before installing | 5 of 10, e.g. `one_refresh_per_expiry` | `exactly one refresh per expiry` |
//! | `LeaderGuard::finish`: drop `notify_all` | 7 of 10 | deadlock |
//! | `LeaderGuard::drop`: do nothing (no panic guard) | `panicking_refresher_releases_every_waiter` | deadlock |
//! | `install`: ignore `expected` (install unconditionally) | `replace_racing_refresh_keeps_the_newest_login`, `logout_racing_refresh_is_never_undone` | `the login is never overwritten`, `a refresh resurrected a logout` |
//! | `install`: call `commit` after releasing the persist lock | the same two | `every change committed once, in order` |
//! | `replace`: drop `notify_all` | `replace_wakes_waiters_of_an_abandoned_claim` | deadlock |
//! | `try_claim`: drop the `snap.generation != seen` check | `proactive_claim_and_blocking_refresh_refresh_once` | 2 refreshes |
//! | `abandon`: drop `notify_all` | `abandoned_claim_hands_the_flight_to_a_waiter` | deadlock |
//! | `LeaderGuard::finish`: mark `proactive_failed` only for an error, not a panic | `a_failed_or_panicking_proactive_flight_is_not_claimed_again` | `generation 0 claimed again in the background` |
//! | `abandon`: do not mark `proactive_failed` | `a_failed_or_panicking_proactive_flight_is_not_claimed_again` | `generation 0 claimed again in the background` |
//! | `install`: ignore `accept` | `a_poll_never_overwrites_a_login_made_after_it_read_the_store` | `the poll overwrote a newer login` |
//! | `wait_idle`: give up when woken while the flight still runs (`&&` → `\|\|`; found by cargo-mutants) | `wait_idle_outlasts_a_login_made_during_the_flight` | `wait_idle gave up while the flight ran` |
//! | `abandon`: `finished -= 1` (wraps in release builds; found by cargo-mutants) | `a_failure_after_an_abandoned_claim_is_shared_by_its_waiter` | `no execution reached "waiter shared a failure"` |

use std::collections::{BTreeSet, HashSet};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering::Relaxed};
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread::{self, JoinHandle};
use std::sync::Arc;

use super::{Claim, Failure, Fresh, Gate, Role, Snapshot};

/// Token values are `u64`s; a failed flight shares the id of the thread that led it. Nothing
/// is persisted alongside (the client's store bookkeeping has its own model below).
type TestGate = Gate<u64, usize, ()>;

/// What one call of a test refresher produces.
enum Attempt {
    /// New tokens.
    Refreshed(u64),
    /// A failure that keeps the session.
    Failed(usize),
    /// The session is over.
    Expired,
}

/// A blocking refresh as the client makes one: `run` plays the refresher, its answer is
/// installed through the leader's handle (`commit` sees each install, under the persist lock).
fn refresh(
    gate: &TestGate,
    seen: u64,
    deadline: Instant,
    run: impl FnOnce(Option<&Arc<u64>>) -> Attempt,
    commit: impl FnOnce(&Snapshot<u64>),
) -> (Role, Result<Fresh<u64>, Failure<usize>>) {
    gate.refresh(seen, deadline, |lead| install(lead, run, commit))
}

/// Runs a claimed proactive flight the same way.
fn lead(
    claim: Claim<Arc<TestGate>>,
    run: impl FnOnce(Option<&Arc<u64>>) -> Attempt,
    commit: impl FnOnce(&Snapshot<u64>),
) -> Result<Fresh<u64>, Failure<usize>> {
    claim.lead(|l| install(l, run, commit))
}

fn install(
    lead: &mut super::Lead<'_, u64, usize, ()>,
    run: impl FnOnce(Option<&Arc<u64>>) -> Attempt,
    commit: impl FnOnce(&Snapshot<u64>),
) -> Result<(), usize> {
    match run(lead.tokens()) {
        Attempt::Refreshed(t) => {
            lead.install(Some(t), false, |snap, ()| commit(snap));
            Ok(())
        }
        Attempt::Expired => {
            lead.install(None, true, |snap, ()| commit(snap));
            Ok(())
        }
        Attempt::Failed(e) => Err(e),
    }
}

/// A login (`Some`) or logout (`None`), unconditional.
fn replace(
    gate: &TestGate,
    tokens: Option<u64>,
    commit: impl FnOnce(&Snapshot<u64>),
) -> Snapshot<u64> {
    gate.replace(None, |()| true, tokens, |snap, ()| commit(snap))
        .expect("an unconditional replace always installs")
}

/// Default preemption bound (see the module docs); `LOOM_MAX_PREEMPTIONS` overrides it.
const PREEMPTION_BOUND: usize = 3;

/// Runs `f` under loom with the bound, and returns how many executions were explored.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) -> usize {
    static RUNS: StdAtomicUsize = StdAtomicUsize::new(0);
    let before = RUNS.load(Relaxed);
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(PREEMPTION_BOUND);
    }
    b.check(move || {
        RUNS.fetch_add(1, Relaxed);
        f();
    });
    let n = RUNS.load(Relaxed) - before;
    eprintln!(
        "{name}: {n} executions explored (preemption bound {:?})",
        b.preemption_bound
    );
    n
}

/// Far enough that it never matters; loom ignores deadlines anyway.
fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// A gate holding token `0` (expired) at generation 0, to be shared by the model's threads.
fn expired_gate() -> Arc<TestGate> {
    Arc::new(TestGate::new(Some(0), ()))
}

/// An expired gate and a proactive claim of its generation 0, taken before any thread starts
/// (so it always succeeds, and the threads find that flight running).
fn claimed_gate() -> (Arc<TestGate>, Claim<Arc<TestGate>>) {
    let gate = expired_gate();
    let claim = TestGate::try_claim(gate.clone(), 0).expect("nothing else runs yet");
    (gate, claim)
}

/// A counter of refresher calls, to be shared by the model's threads.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A refresher that counts its call and answers the token after the one it refreshes.
fn counted_next(refreshes: &AtomicUsize) -> impl FnOnce(Option<&Arc<u64>>) -> Attempt + '_ {
    move |t| {
        refreshes.fetch_add(1, SeqCst);
        Attempt::Refreshed(**t.unwrap() + 1)
    }
}

/// A refresher that counts its call and answers `token`, whatever it refreshes.
fn counted_fixed(
    refreshes: &AtomicUsize,
    token: u64,
) -> impl FnOnce(Option<&Arc<u64>>) -> Attempt + '_ {
    move |_| {
        refreshes.fetch_add(1, SeqCst);
        Attempt::Refreshed(token)
    }
}

/// Spawns `n` threads, the `i`th running `f(i)` with its own clone of `f` (and so of the
/// `Arc`s `f` holds).
fn spawn_n<R: 'static>(n: usize, f: impl Fn(usize) -> R + Clone + 'static) -> Vec<JoinHandle<R>> {
    (0..n)
        .map(|i| {
            let f = f.clone();
            thread::spawn(move || f(i))
        })
        .collect()
}

/// Counts the outcomes seen across all executions of one model, to prove that the paths the
/// assertions talk about were actually explored.
struct Seen(StdMutex<BTreeSet<&'static str>>);

impl Seen {
    const fn new() -> Self {
        Seen(StdMutex::new(BTreeSet::new()))
    }
    fn mark(&self, what: &'static str) {
        self.0.lock().unwrap().insert(what);
    }
    fn assert_all(&self, wanted: &[&str]) {
        let seen = self.0.lock().unwrap();
        for w in wanted {
            assert!(
                seen.contains(w),
                "no execution reached {w:?}; seen: {seen:?}"
            );
        }
    }
}

/// A request as the client makes it: read the tokens; token `0` is expired, so refresh from
/// the generation read (the refresher returns the next token). Returns (role, token, generation).
fn request(gate: &TestGate, refreshes: &AtomicUsize) -> (Option<Role>, u64, u64) {
    let snap = gate.snapshot();
    let token = *snap.tokens.expect("tokens are never cleared here").as_ref();
    if token != 0 {
        return (None, token, snap.generation);
    }
    let (role, result) = refresh(
        gate,
        snap.generation,
        deadline(),
        counted_next(refreshes),
        |_| {},
    );
    let fresh = match result {
        Ok(f) => f,
        Err(e) => panic!("refresh failed: {e:?}"),
    };
    assert!(!fresh.ended_session);
    let s = fresh.snapshot;
    (Some(role), *s.tokens.unwrap().as_ref(), s.generation)
}

/// Spawns `n` threads that each make one [`request`].
fn spawn_requests(
    gate: &Arc<TestGate>,
    refreshes: &Arc<AtomicUsize>,
    n: usize,
) -> Vec<JoinHandle<(Option<Role>, u64, u64)>> {
    let (gate, refreshes) = (gate.clone(), refreshes.clone());
    spawn_n(n, move |_| request(&gate, &refreshes))
}

/// Joins the threads of [`spawn_requests`], in order: each must end with token 1 of generation
/// 1. Returns their roles.
fn join_requests(handles: Vec<JoinHandle<(Option<Role>, u64, u64)>>) -> Vec<Option<Role>> {
    handles
        .into_iter()
        .map(|h| {
            let (role, token, generation) = h.join().unwrap();
            assert_eq!((token, generation), (1, 1), "role {role:?}");
            role
        })
        .collect()
}

/// Three threads find the token expired at once: the refresher runs exactly once, every thread
/// ends with the one new token, and each either led, waited for the leader, or found its
/// generation stale (then it took the new token without refreshing).
#[test]
fn one_refresh_per_expiry() {
    static SEEN: Seen = Seen::new();
    model("one_refresh_per_expiry", || {
        let (gate, refreshes) = (expired_gate(), counter());
        let handles = spawn_requests(&gate, &refreshes, 3);
        let mut led = 0;
        for role in join_requests(handles) {
            match role {
                Some(Role::Led) => {
                    led += 1;
                    SEEN.mark("led");
                }
                Some(Role::Waited) => SEEN.mark("waited"),
                Some(Role::Stale) => SEEN.mark("stale"),
                None => SEEN.mark("already fresh"),
            }
        }
        assert_eq!(refreshes.load(SeqCst), 1, "exactly one refresh per expiry");
        assert_eq!(led, 1);
        assert!(!gate.flight.lock().running);
    });
    SEEN.assert_all(&["led", "waited", "stale", "already fresh"]);
}

/// Two expiries in a row: thread A refreshes from generation 0 and then again from 1 (its
/// second request drew another 401); thread B refreshes from 0. Each generation is refreshed
/// exactly once, by whoever gets there first; B, holding a stale generation, never refreshes 1.
#[test]
fn stale_callers_never_refresh_an_old_generation() {
    static SEEN: Seen = Seen::new();
    model("stale_callers_never_refresh_an_old_generation", || {
        let gate = expired_gate();
        // The token each refresher call started from: it identifies the generation refreshed.
        let refreshed_from = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let run = |from: &Arc<loom::sync::Mutex<Vec<u64>>>, gate: &TestGate, seen: u64| {
            refresh(
                gate,
                seen,
                deadline(),
                |t| {
                    let t = **t.unwrap();
                    from.lock().unwrap().push(t);
                    Attempt::Refreshed(t + 1)
                },
                |_| {},
            )
        };
        let (g, f) = (gate.clone(), refreshed_from.clone());
        let a = thread::spawn(move || {
            let (_, first) = run(&f, &g, 0);
            let first = first.unwrap_or_else(|_| panic!("failed"));
            let (role, second) = run(&f, &g, first.snapshot.generation);
            (role, second.unwrap_or_else(|_| panic!("failed")).snapshot)
        });
        let (g, f) = (gate.clone(), refreshed_from.clone());
        let b = thread::spawn(move || {
            let (role, r) = run(&f, &g, 0);
            (role, r.unwrap_or_else(|_| panic!("failed")).snapshot)
        });
        let (a_role, a_snap) = a.join().unwrap();
        let (b_role, b_snap) = b.join().unwrap();
        // A's second refresh always leads: nobody else ever holds generation 1.
        assert_eq!(a_role, Role::Led);
        assert_eq!((a_snap.generation, *a_snap.tokens.unwrap()), (2, 2));
        assert!(b_snap.generation >= 1);
        SEEN.mark(match b_role {
            Role::Led => "b led",
            Role::Waited => "b waited",
            Role::Stale => "b stale",
        });
        let mut from = refreshed_from.lock().unwrap().clone();
        from.sort_unstable();
        assert_eq!(from, [0, 1], "each generation refreshed exactly once");
    });
    SEEN.assert_all(&["b led", "b waited", "b stale"]);
}

/// Every refresher call fails. Each thread gets the failure of a flight that really ran: its
/// own if it led, else the one of a leader it waited for. Nobody hangs (loom reports a
/// deadlock otherwise), nobody gets a success or a timeout, the tokens are untouched and the
/// gate is free again.
#[test]
fn failing_refresher_wakes_every_waiter_with_its_error() {
    static SEEN: Seen = Seen::new();
    model(
        "failing_refresher_wakes_every_waiter_with_its_error",
        || {
            let gate = expired_gate();
            let (leaders, waiters) = join_failures(spawn_failing_refreshes(&gate, 3));
            for (id, by) in waiters {
                assert!(leaders.contains(&by), "waiter {id} got {by}'s error");
                SEEN.mark("waiter shared a failure");
            }
            SEEN.mark(["one flight", "two flights", "three flights"][leaders.len() - 1]);
            let snap = gate.snapshot();
            assert_eq!((snap.generation, snap.tokens.as_deref()), (0, Some(&0)));
            assert!(!gate.flight.lock().running);
        },
    );
    SEEN.assert_all(&["waiter shared a failure", "one flight", "three flights"]);
}

/// Spawns `n` threads that refresh generation 0 with a refresher failing with the thread's
/// id (`0..n`). Each returns `(its id, its role, the id in the failure it got)`.
fn spawn_failing_refreshes(
    gate: &Arc<TestGate>,
    n: usize,
) -> Vec<JoinHandle<(usize, Role, usize)>> {
    let gate = gate.clone();
    spawn_n(n, move |id| {
        let (role, result) = refresh(&gate, 0, deadline(), |_| Attempt::Failed(id), |_| {});
        match result {
            Err(Failure::Failed(by)) => (id, role, by),
            Ok(_) => panic!("a failed flight returned tokens"),
            Err(other) => panic!("unexpected failure {other:?}"),
        }
    })
}

/// Joins the threads of [`spawn_failing_refreshes`] (all of them, in order) and checks that
/// each leader got its own error and nobody was stale. Returns the leaders' ids and, for each
/// waiter, `(its id, the id in the failure it got)`.
fn join_failures(
    handles: Vec<JoinHandle<(usize, Role, usize)>>,
) -> (HashSet<usize>, Vec<(usize, usize)>) {
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (mut leaders, mut waiters) = (HashSet::new(), Vec::new());
    for (id, role, by) in results {
        match role {
            Role::Led => {
                assert_eq!(by, id, "a leader gets its own error");
                leaders.insert(id);
            }
            Role::Waited => waiters.push((id, by)),
            Role::Stale => panic!("the generation never moves here"),
        }
    }
    (leaders, waiters)
}

/// A marker payload for the refresher's simulated panic. `resume_unwind` unwinds without
/// running the panic hook, so thousands of executions do not print thousands of panics.
struct RefresherPanic;

/// What a refresh returns, or the payload it unwound with.
type Caught = std::thread::Result<(Role, Result<Fresh<u64>, Failure<usize>>)>;

/// Spawns `n` threads that refresh generation 0 with a refresher that panics; each returns
/// what `catch_unwind` made of its refresh.
fn spawn_panicking_refreshes(gate: &Arc<TestGate>, n: usize) -> Vec<JoinHandle<Caught>> {
    let gate = gate.clone();
    spawn_n(n, move |_| {
        catch_unwind(AssertUnwindSafe(|| {
            refresh(
                &gate,
                0,
                deadline(),
                |_| resume_unwind(Box::new(RefresherPanic)),
                |_| {},
            )
        }))
    })
}

/// Every refresher call panics. The thread that ran it unwinds (its `LeaderGuard` publishes
/// `Panicked` while unwinding); every thread that waited for it gets `Failure::Panicked` at once.
/// Afterwards the gate is free: the next refresh leads and succeeds.
#[test]
fn panicking_refresher_releases_every_waiter() {
    static SEEN: Seen = Seen::new();
    model("panicking_refresher_releases_every_waiter", || {
        let gate = expired_gate();
        let handles = spawn_panicking_refreshes(&gate, 3);
        let mut panicked = 0;
        for h in handles {
            match h.join().unwrap() {
                Err(payload) => {
                    assert!(payload.is::<RefresherPanic>());
                    panicked += 1;
                }
                Ok((Role::Waited, Err(Failure::Panicked))) => SEEN.mark("waiter saw the panic"),
                Ok((role, Ok(_))) => panic!("{role:?}: a panicked flight returned tokens"),
                Ok((role, Err(f))) => panic!("{role:?}: unexpected {f:?}"),
            }
        }
        assert!(panicked >= 1);
        if panicked == 1 {
            SEEN.mark("one panic shared by all");
        }
        assert!(!gate.flight.lock().running, "the guard released the flight");
        let (role, result) = refresh(&gate, 0, deadline(), |_| Attempt::Refreshed(7), |_| {});
        assert_eq!(role, Role::Led);
        assert_eq!(result.ok().unwrap().snapshot.tokens.as_deref(), Some(&7));
    });
    SEEN.assert_all(&["waiter saw the panic", "one panic shared by all"]);
}

/// What the store saw, in order: `(generation, token)`. `commit` runs under the persist lock,
/// so this order must be the order of the changes in memory.
type Committed = Arc<loom::sync::Mutex<Vec<(u64, Option<u64>)>>>;

/// An empty store log.
fn new_log() -> Committed {
    Arc::new(loom::sync::Mutex::new(Vec::new()))
}

/// A `commit` that logs each change to `log`, or does nothing if there is none.
fn committer(log: Option<&Committed>) -> impl FnOnce(&Snapshot<u64>) + '_ {
    move |snap| {
        if let Some(log) = log {
            log.lock()
                .unwrap()
                .push((snap.generation, snap.tokens.as_deref().copied()));
        }
    }
}

/// Spawns a login (`Some`) or logout (`None`) committing to `log` if given; the thread
/// returns the generation it installed.
fn spawn_replace(
    gate: &Arc<TestGate>,
    tokens: Option<u64>,
    log: Option<&Committed>,
) -> JoinHandle<u64> {
    let (gate, log) = (gate.clone(), log.cloned());
    thread::spawn(move || replace(&gate, tokens, committer(log.as_ref())).generation)
}

/// Spawns `n` threads that refresh generation 0 with [`counted_fixed`] (token 100), counting
/// in the returned counter and committing to `log` if given; each thread returns what `then`
/// makes of its role and result.
fn spawn_counted_refreshes<R: 'static>(
    gate: &Arc<TestGate>,
    log: Option<&Committed>,
    n: usize,
    then: fn(Role, Result<Fresh<u64>, Failure<usize>>) -> R,
) -> (Arc<AtomicUsize>, Vec<JoinHandle<R>>) {
    let refreshes = counter();
    let (gate, r, log) = (gate.clone(), refreshes.clone(), log.cloned());
    let handles = spawn_n(n, move |_| {
        let commit = committer(log.as_ref());
        let (role, result) = refresh(&gate, 0, deadline(), counted_fixed(&r, 100), commit);
        then(role, result)
    });
    (refreshes, handles)
}

/// Checks the store saw every change once, in memory's order, and ends with memory's state.
fn assert_store_matches(gate: &TestGate, log: &Committed) {
    let log = log.lock().unwrap();
    let snap = gate.snapshot();
    let generations: Vec<u64> = log.iter().map(|(g, _)| *g).collect();
    let expected: Vec<u64> = (1..=snap.generation).collect();
    assert_eq!(
        generations, expected,
        "every change committed once, in order"
    );
    assert_eq!(
        log.last().map(|(_, t)| *t),
        Some(snap.tokens.as_deref().copied())
    );
}

/// Checks the end of a model where a login or logout (`replace`) raced refreshes: memory
/// holds its `tokens` (else it fails with `overwritten`) at its `generation`, not as a
/// session expiry, and the store saw every change once, in order.
fn assert_replace_won(
    gate: &TestGate,
    log: &Committed,
    tokens: Option<u64>,
    generation: u64,
    overwritten: &str,
) {
    let snap = gate.snapshot();
    assert_eq!(snap.tokens.as_deref().copied(), tokens, "{overwritten}");
    assert!(!snap.expired, "a login or logout is not a session expiry");
    assert_eq!(snap.generation, generation);
    assert_store_matches(gate, log);
}

/// A login (`replace` with new tokens) races two threads refreshing the old ones. Whatever the
/// order, the login wins: a refresh that finishes after it is discarded, and one that finished
/// before it is overwritten. The refresher runs at most once, and the store ends as memory.
#[test]
fn replace_racing_refresh_keeps_the_newest_login() {
    static SEEN: Seen = Seen::new();
    model("replace_racing_refresh_keeps_the_newest_login", || {
        let (gate, log) = (expired_gate(), new_log());
        let (refreshes, refreshers) = spawn_counted_refreshes(&gate, Some(&log), 2, |_, r| {
            let fresh = r.unwrap_or_else(|_| panic!("no failure is injected"));
            assert!(fresh.snapshot.generation >= 1);
            fresh.snapshot.tokens.map(|t| *t)
        });
        let login = spawn_replace(&gate, Some(200), Some(&log));
        let login_generation = login.join().unwrap();
        for h in refreshers {
            let token = h.join().unwrap();
            assert!(matches!(token, Some(100 | 200)));
        }
        let overwritten = "the login is never overwritten";
        assert_replace_won(&gate, &log, Some(200), login_generation, overwritten);
        let n = refreshes.load(SeqCst);
        assert!(n <= 1, "{n} refreshes");
        SEEN.mark(match (n, login_generation) {
            (0, _) => "login before any refresh",
            (1, 1) => "refresh discarded by the login",
            _ => "refresh installed, then the login",
        });
    });
    SEEN.assert_all(&[
        "login before any refresh",
        "refresh discarded by the login",
        "refresh installed, then the login",
    ]);
}

/// A logout (`replace(None)`) races a refresh that succeeds and one that ends the session.
/// Whatever the order, the client ends logged out (not "session expired"): no refresh result
/// resurrects the tokens, and at most one caller reports the end of the session, only if its
/// result was installed.
#[test]
fn logout_racing_refresh_is_never_undone() {
    static SEEN: Seen = Seen::new();
    model("logout_racing_refresh_is_never_undone", || {
        let gate = expired_gate();
        let log = new_log();
        let refreshers: Vec<_> = [Attempt::Refreshed(100), Attempt::Expired]
            .into_iter()
            .map(|attempt| {
                let (gate, log) = (gate.clone(), log.clone());
                thread::spawn(move || {
                    let (role, r) =
                        refresh(&gate, 0, deadline(), |_| attempt, committer(Some(&log)));
                    let fresh = r.unwrap_or_else(|_| panic!("no failure is injected"));
                    (role, fresh.ended_session, fresh.snapshot)
                })
            })
            .collect();
        let logout = spawn_replace(&gate, None, Some(&log));
        let logout_generation = logout.join().unwrap();
        let mut ended = 0;
        for h in refreshers {
            let (role, ended_session, snap) = h.join().unwrap();
            if ended_session {
                ended += 1;
                assert_eq!(role, Role::Led);
                assert!(snap.expired && snap.tokens.is_none());
                assert!(snap.generation < logout_generation);
                SEEN.mark("session ended, then logout");
            }
        }
        assert!(ended <= 1);
        let overwritten = "a refresh resurrected a logout";
        assert_replace_won(&gate, &log, None, logout_generation, overwritten);
        if logout_generation == 1 {
            SEEN.mark("refresh discarded by the logout");
        }
    });
    SEEN.assert_all(&[
        "session ended, then logout",
        "refresh discarded by the logout",
    ]);
}

/// A refresh-ahead flight for generation 0 panics (or its claim is dropped unused) while
/// another thread also tries to refresh ahead: the refresher runs for at most one proactive
/// flight of generation 0, and afterwards nobody can claim generation 0 again in the
/// background. A blocking refresh (the token expired) still refreshes it, exactly once.
#[test]
fn a_failed_or_panicking_proactive_flight_is_not_claimed_again() {
    static SEEN: Seen = Seen::new();
    model(
        "a_failed_or_panicking_proactive_flight_is_not_claimed_again",
        || {
            let (gate, calls) = (expired_gate(), counter());
            let proactive = |panics: bool| {
                let (gate, calls) = (gate.clone(), calls.clone());
                thread::spawn(move || {
                    let Some(claim) = TestGate::try_claim(gate, 0) else {
                        return "not claimed";
                    };
                    if !panics {
                        drop(claim);
                        return "claim dropped";
                    }
                    let led = catch_unwind(AssertUnwindSafe(|| {
                        lead(
                            claim,
                            |_| {
                                calls.fetch_add(1, SeqCst);
                                resume_unwind(Box::new(RefresherPanic))
                            },
                            |_| {},
                        )
                    }));
                    assert!(led.is_err());
                    "panicked"
                })
            };
            let (a, b) = (proactive(true), proactive(false));
            SEEN.mark(a.join().unwrap());
            SEEN.mark(b.join().unwrap());
            assert!(
                calls.load(SeqCst) <= 1,
                "one proactive flight per generation"
            );
            assert!(
                TestGate::try_claim(gate.clone(), 0).is_none(),
                "generation 0 claimed again in the background"
            );
            let before = calls.load(SeqCst);
            let (role, token, generation) = request(&gate, &calls);
            assert_eq!((role, token, generation), (Some(Role::Led), 1, 1));
            assert_eq!(calls.load(SeqCst), before + 1);
            assert!(!gate.flight.lock().running);
        },
    );
    SEEN.assert_all(&["panicked", "claim dropped", "not claimed"]);
}

/// A proactive (refresh-ahead) claim races two blocking refreshes of the same generation:
/// still exactly one refresh, and everybody ends with its token.
#[test]
fn proactive_claim_and_blocking_refresh_refresh_once() {
    static SEEN: Seen = Seen::new();
    model("proactive_claim_and_blocking_refresh_refresh_once", || {
        let (gate, refreshes) = (expired_gate(), counter());
        let (g, r) = (gate.clone(), refreshes.clone());
        let proactive = thread::spawn(move || match TestGate::try_claim(g.clone(), 0) {
            Some(claim) => {
                let out = lead(claim, counted_next(&r), |_| {});
                assert_eq!(out.ok().unwrap().snapshot.generation, 1);
                true
            }
            None => false,
        });
        let blocking = spawn_requests(&gate, &refreshes, 2);
        SEEN.mark(if proactive.join().unwrap() {
            "claimed"
        } else {
            "not claimed"
        });
        join_requests(blocking);
        assert_eq!(refreshes.load(SeqCst), 1);
        assert!(!gate.flight.lock().running);
    });
    SEEN.assert_all(&["claimed", "not claimed"]);
}

/// A proactive claim is abandoned while two threads wait on it: one of them leads instead,
/// the refresher runs exactly once, and both get the new token.
#[test]
fn abandoned_claim_hands_the_flight_to_a_waiter() {
    static SEEN: Seen = Seen::new();
    model("abandoned_claim_hands_the_flight_to_a_waiter", || {
        let (gate, claim) = claimed_gate();
        let refreshes = counter();
        let waiters = spawn_requests(&gate, &refreshes, 2);
        thread::spawn(move || drop(claim)).join().unwrap();
        for role in join_requests(waiters) {
            if role == Some(Role::Waited) {
                SEEN.mark("waited, then led or shared");
            }
        }
        assert_eq!(refreshes.load(SeqCst), 1);
        assert!(!gate.flight.lock().running);
    });
    SEEN.assert_all(&["waited, then led or shared"]);
}

/// Two threads wait on a proactive claim that never finishes while a login replaces the
/// tokens: the login alone must wake them (they take its tokens, none refreshes). Then the
/// claim is abandoned (as when its thread cannot be spawned) and the gate is free again.
#[test]
fn replace_wakes_waiters_of_an_abandoned_claim() {
    static SEEN: Seen = Seen::new();
    model("replace_wakes_waiters_of_an_abandoned_claim", || {
        // Claimed before the threads start, so both block on it (or on each other).
        let (gate, claim) = claimed_gate();
        let (refreshes, waiters) =
            spawn_counted_refreshes(&gate, None, 2, |role, r| (role, r.is_ok()));
        spawn_replace(&gate, Some(200), None).join().unwrap();
        // The claim is still held: only the login's wake-up can free the waiters.
        for h in waiters {
            let (role, ok) = h.join().unwrap();
            assert!(ok);
            assert_ne!(role, Role::Led, "the claim was still held");
            SEEN.mark(match role {
                Role::Waited => "woken by the login",
                _ => "stale after the login",
            });
        }
        drop(claim);
        assert!(!gate.flight.lock().running);
        assert_eq!(refreshes.load(SeqCst), 0);
        assert_eq!(gate.snapshot().tokens.as_deref(), Some(&200));
    });
    SEEN.assert_all(&["woken by the login", "stale after the login"]);
}

/// A flight for generation 0 fails while a login moves the tokens to generation 1 and the
/// login's thread then refreshes generation 1 (its request drew a 401). If it waited on the
/// old flight, it must not take that flight's failure (it was for tokens it never sent): it
/// leads its own refresh and gets new tokens.
#[test]
fn failure_of_an_older_generation_is_not_shared() {
    static SEEN: Seen = Seen::new();
    model("failure_of_an_older_generation_is_not_shared", || {
        let gate = expired_gate();
        let g = gate.clone();
        let old = thread::spawn(move || {
            let (role, r) = refresh(&g, 0, deadline(), |_| Attempt::Failed(0), |_| {});
            (role, r.is_ok())
        });
        let g = gate.clone();
        let new = thread::spawn(move || {
            let seen = replace(&g, Some(5), |_| {}).generation;
            let (role, r) = refresh(
                &g,
                seen,
                deadline(),
                |t| Attempt::Refreshed(**t.unwrap() + 1),
                |_| {},
            );
            let fresh = r.unwrap_or_else(|f| panic!("{role:?}: got {f:?} for generation {seen}"));
            (seen, fresh.snapshot)
        });
        let (old_role, old_ok) = old.join().unwrap();
        let (seen, snap) = new.join().unwrap();
        assert_eq!(*snap.tokens.unwrap(), 6);
        assert_eq!(snap.generation, seen + 1);
        SEEN.mark(match (old_role, old_ok) {
            (Role::Led, false) => "old flight failed",
            (Role::Stale, true) => "old caller stale",
            other => panic!("old caller: {other:?}"),
        });
    });
    SEEN.assert_all(&["old flight failed", "old caller stale"]);
}

/// What the client persists beside the tokens, in this model: the store revision memory
/// corresponds to, and the order in which the persist lock saw things happen.
#[derive(Default)]
struct Persist {
    base: u64,
    log: Vec<&'static str>,
}

/// A poll read the store (revision 11, tokens 2) while a local login (tokens 3, written as
/// revision 12) and a retried write (the same tokens, saved at last as revision 13: the base
/// moves, the generation does not) race it. Its adoption is generation- and base-checked:
/// it installs only if neither happened since the poll read what it compares against, so a
/// poll never overwrites a login made after it read the store, and memory never pairs
/// tokens with a revision they were not stored as.
#[test]
fn a_poll_never_overwrites_a_login_made_after_it_read_the_store() {
    static SEEN: Seen = Seen::new();
    model(
        "a_poll_never_overwrites_a_login_made_after_it_read_the_store",
        || {
            let gate = Arc::new(Gate::<u64, usize, Persist>::new(
                Some(1),
                Persist {
                    base: 10,
                    log: Vec::new(),
                },
            ));
            let g = gate.clone();
            let poll = thread::spawn(move || poll_then_adopt(&g));
            let g = gate.clone();
            let login = thread::spawn(move || log_in(&g));
            let g = gate.clone();
            let retry = thread::spawn(move || {
                let mut p = g.persisted();
                p.base = 13;
                p.log.push("retried write");
            });
            let adopted = poll.join().unwrap();
            login.join().unwrap();
            retry.join().unwrap();
            SEEN.mark(check_poll_outcome(&gate, adopted));
        },
    );
    SEEN.assert_all(&["adopted", "not adopted"]);
}

/// The poll of that model: reads the base, then adopts tokens 2 (stored as revision 11) if
/// neither the generation nor the base moved. Returns whether it did.
fn poll_then_adopt(g: &Gate<u64, usize, Persist>) -> bool {
    let generation = g.generation();
    let since = {
        let mut p = g.persisted();
        p.log.push("poll read");
        p.base
    };
    g.replace(
        Some(generation),
        |p| p.base == since,
        Some(2),
        |_, p| {
            p.base = 11;
            p.log.push("adopted");
        },
    )
    .is_some()
}

/// The login of that model: tokens 3, written as revision 12.
fn log_in(g: &Gate<u64, usize, Persist>) {
    g.replace(
        None,
        |_| true,
        Some(3),
        |_, p| {
            p.base = 12;
            p.log.push("login");
        },
    );
}

/// Checks the end of that model: an adoption saw neither a login nor a moved base since the
/// poll read, and memory and the persisted base describe the same write. Returns what the
/// poll did.
fn check_poll_outcome(gate: &Gate<u64, usize, Persist>, adopted: bool) -> &'static str {
    let p = gate.persisted();
    let read = p.log.iter().position(|e| *e == "poll read").unwrap();
    if adopted {
        let at = p.log.iter().position(|e| *e == "adopted").unwrap();
        assert!(
            !p.log[read..at].contains(&"login"),
            "the poll overwrote a newer login: {:?}",
            p.log
        );
        assert!(
            !p.log[read..at].contains(&"retried write"),
            "adopted against a base that had moved: {:?}",
            p.log
        );
    }
    // Memory and the persisted base always describe the same write.
    let tokens = *gate.snapshot().tokens.unwrap();
    let last = p.log.iter().rev().find(|e| **e != "poll read").copied();
    let expected = match last {
        Some("adopted") => (2, 11),
        Some("login") => (3, 12),
        Some("retried write") => (tokens, 13),
        other => panic!("{other:?}"),
    };
    assert_eq!((tokens, p.base), expected, "{:?}", p.log);
    if adopted {
        "adopted"
    } else {
        "not adopted"
    }
}

/// `wait_idle` (closing the client, dropping its last handle) waits out the flight that runs
/// when it is called, whatever wakes it meanwhile: a login's wake-up (the flight still runs)
/// does not make it give up. Under loom the deadline never passes, so it must return true,
/// and only once no flight runs.
#[test]
fn wait_idle_outlasts_a_login_made_during_the_flight() {
    static SEEN: Seen = Seen::new();
    model("wait_idle_outlasts_a_login_made_during_the_flight", || {
        // Claimed before anything starts, so wait_idle always finds a flight running.
        let (gate, claim) = claimed_gate();
        let leader = thread::spawn(move || {
            let mut ran = false;
            let led = lead(
                claim,
                |_| {
                    ran = true;
                    Attempt::Refreshed(1)
                },
                |_| {},
            );
            (led.is_ok(), ran)
        });
        let login = spawn_replace(&gate, Some(200), None);
        assert!(
            gate.wait_idle(deadline()),
            "wait_idle gave up while the flight ran (loom never times out)"
        );
        assert!(
            !gate.flight.lock().running,
            "returned with a flight running"
        );
        let (led, ran) = leader.join().unwrap();
        assert!(led);
        login.join().unwrap();
        assert_eq!(
            gate.snapshot().tokens.as_deref(),
            Some(&200),
            "the login is never undone"
        );
        SEEN.mark(if ran {
            "the refresher ran"
        } else {
            "the login came first"
        });
    });
    SEEN.assert_all(&["the refresher ran", "the login came first"]);
}

/// After an abandoned claim (a background refresh whose thread could not be spawned), a
/// failing flight is still shared by the thread that waited for it: the abandoned claim
/// counts as a finished flight like any other, and a waiter that sees the next one finish
/// takes its failure instead of making a flight of its own.
#[test]
fn a_failure_after_an_abandoned_claim_is_shared_by_its_waiter() {
    static SEEN: Seen = Seen::new();
    model(
        "a_failure_after_an_abandoned_claim_is_shared_by_its_waiter",
        || {
            let (gate, claim) = claimed_gate();
            drop(claim);
            let (leaders, waiters) = join_failures(spawn_failing_refreshes(&gate, 2));
            for (id, by) in waiters {
                assert_ne!(by, id);
                SEEN.mark("waiter shared a failure");
            }
            SEEN.mark(["one flight", "two flights"][leaders.len() - 1]);
            assert!(!gate.flight.lock().running);
        },
    );
    SEEN.assert_all(&["waiter shared a failure", "one flight", "two flights"]);
}
