//! Scenario `redis` (feature `redis`): the per-request cost of a session kept in Redis.
//! `AuthClient` with a `RedisStore` against `AuthClient` with the default `MemoryStore`, both
//! with a valid token, at 1 and 16 threads, interleaved rounds. Redis is meant to be off the
//! request path (a background read at most once per poll interval): the two should be the
//! same within noise. The bench starts its own `redis-server` (loopback, a free port, a temp
//! dir) and counts the commands Redis ran while the rounds were measured.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokengate::{AuthClient, AuthServer, RedisStore, TokenStore, Tokens};

use super::{setup, throughput};
use crate::contenders::{self, Contender, Kind, Setup};
use crate::report::{kreq, median, ratio_cells};
use crate::server::{Server, Session};
use crate::Opts;

// The test suite's launcher and RESP client; the bench uses part of them.
#[allow(dead_code)]
#[path = "../../../tests/harness/servers/redis.rs"]
mod launcher;

pub fn scenario(server: &Server, opts: &Opts) -> String {
    let (reps, dur) = if opts.quick {
        (1, Duration::from_millis(200))
    } else {
        (9, Duration::from_millis(250))
    };
    let warm = Duration::from_millis(100);
    let redis = launcher::RedisServer::start();
    let sess = server.new_session(Duration::ZERO, None);
    let s = setup(
        server,
        contenders::api_agent(),
        &sess.live_access,
        &sess.refresh,
    );
    let memory = contenders::build(Kind::Auth, &s);

    // The session in Redis, as a login on another machine stored it.
    let session = "bench:session";
    save_session(&redis.url(), session, &s);
    let on_redis = auth_on_redis(&s, s.api.clone(), &redis.url(), session);
    let rows: [(&str, &Arc<dyn Contender>); 2] = [
        ("AuthClient, `MemoryStore`", &memory),
        (
            "AuthClient, `RedisStore` (default poll interval, 1 s)",
            &on_redis,
        ),
    ];
    let mut conn = redis.conn();
    let mut net = on_sockets(&rows, &mut conn, reps, warm, dur);
    // The same two clients with an in-memory transport (no socket, no other thread): what is
    // left is the CPU cost of a request in ureq and tokengate, where a per-request cost of
    // the store would show undiluted.
    let [memory_mem, redis_mem] = in_memory_rows(server, &sess, &s, &redis.url(), session);
    let mut mem = in_memory([&memory_mem, &redis_mem], reps, warm, dur);
    // The store's own share of a request: one `poll` with nothing new (what the client calls
    // before each request), in a tight loop.
    let polls = if opts.quick { 1_000_000 } else { 10_000_000 };
    let poll_ns = poll_ns(&redis.url(), session, polls);
    let instructions = instructions_per_request(&redis.url(), session);
    drop(redis);

    let mut md = sockets_table(&rows, &mut net, reps, warm, dur);
    in_memory_table(&mut md, &mut mem, reps);
    let errors = net.errors + mem.errors;
    footer(&mut md, &mut net, errors, (poll_ns, polls), &instructions);
    md
}

/// Stores the session `s` logs in with in Redis at `url`, as a login on another machine would.
fn save_session(url: &str, session: &str, s: &Setup) {
    RedisStore::open(url, session)
        .expect("open RedisStore")
        .save(
            &Tokens::new(s.access.clone())
                .with_refresh_token(s.refresh.clone())
                .with_expires_in(s.expires_in),
        )
        .expect("save the session to Redis");
}

/// AuthClient on `api`, its session in Redis at `url` (as `s` describes the server).
fn auth_on_redis(
    s: &Setup,
    api: tokengate::ureq::Agent,
    url: &str,
    session: &str,
) -> Arc<dyn Contender> {
    Arc::new(OnRedis(
        AuthClient::builder(s.base_url.clone())
            .proxy(None)
            .api_agent(api)
            .token_agent(contenders::token_agent())
            .refresher(AuthServer::new(s.token_url.clone()).refresh_grant())
            .refresh_skew(s.skew)
            .store(RedisStore::open(url, session).expect("open RedisStore"))
            .build()
            .expect("build AuthClient on Redis"),
    ))
}

/// The two rows' interleaved rounds on the loopback server.
struct Sockets {
    /// `[row][threads]` = per round: req/s, client CPU µs/request.
    rps: Vec<Vec<Vec<f64>>>,
    cpu: Vec<Vec<Vec<f64>>>,
    /// `[threads]` = per round: RedisStore / MemoryStore.
    ratios: Vec<Vec<f64>>,
    errors: u64,
    /// The RedisStore rows' requests (estimated) and time, and the Redis commands meanwhile:
    /// reads (`HMGET`) and scripts.
    requests: f64,
    measured: Duration,
    reads: u64,
    scripts: u64,
}

fn on_sockets(
    rows: &[(&str, &Arc<dyn Contender>); 2],
    conn: &mut launcher::Resp,
    reps: usize,
    warm: Duration,
    dur: Duration,
) -> Sockets {
    let threads_list = [1usize, 16];
    let mut rps = vec![vec![Vec::new(); threads_list.len()]; rows.len()];
    let mut cpu = vec![vec![Vec::new(); threads_list.len()]; rows.len()];
    let mut ratios = vec![Vec::new(); threads_list.len()];
    let mut errors = 0;
    let commands = |conn: &mut launcher::Resp| {
        ["hmget", "evalsha", "eval", "script|load"].map(|c| conn.calls_of(c))
    };
    let (before, mut requests) = (commands(conn), 0f64);
    let mut measured = Duration::ZERO;
    for rep in 0..reps {
        for (ti, &threads) in threads_list.iter().enumerate() {
            let mut round = [0.0; 2];
            for k in 0..rows.len() {
                let ri = (rep + k) % rows.len();
                let c = rows[ri].1;
                let t = throughput(threads, warm, dur, &|| c.call());
                errors += t.errors;
                rps[ri][ti].push(t.rps);
                cpu[ri][ti].push(t.client_us);
                round[ri] = t.rps;
                if ri == 1 {
                    requests += t.rps * (dur + warm).as_secs_f64();
                    measured += dur + warm;
                }
            }
            ratios[ti].push(round[1] / round[0]);
        }
    }
    let after = commands(conn);
    let reads = after[0] - before[0];
    let scripts: u64 = (1..4).map(|i| after[i] - before[i]).sum();
    Sockets {
        rps,
        cpu,
        ratios,
        errors,
        requests,
        measured,
        reads,
        scripts,
    }
}

/// The same two clients with the in-memory transport: `MemoryStore`, then `RedisStore`.
fn in_memory_rows(
    server: &Server,
    sess: &Session,
    s: &Setup,
    url: &str,
    session: &str,
) -> [Arc<dyn Contender>; 2] {
    let mem_setup = setup(
        server,
        crate::memtransport::agent(None),
        &sess.live_access,
        &sess.refresh,
    );
    let memory_mem = contenders::build(Kind::Auth, &mem_setup);
    let redis_mem = auth_on_redis(s, mem_setup.api.clone(), url, session);
    [memory_mem, redis_mem]
}

/// The two clients' interleaved rounds on the in-memory transport.
struct InMemory {
    /// `[row][threads]` = per round: ns of CPU per request.
    ns: Vec<Vec<Vec<f64>>>,
    /// `[threads]` = per round: RedisStore / MemoryStore.
    ratios: Vec<Vec<f64>>,
    errors: u64,
}

fn in_memory(
    mem_rows: [&Arc<dyn Contender>; 2],
    reps: usize,
    warm: Duration,
    dur: Duration,
) -> InMemory {
    let threads_list = [1usize, 16];
    let mut errors = 0;
    let mut mem_ns = vec![vec![Vec::new(); threads_list.len()]; 2];
    let mut mem_ratios = vec![Vec::new(); threads_list.len()];
    for rep in 0..reps {
        for (ti, &threads) in threads_list.iter().enumerate() {
            let mut round = [0.0; 2];
            for k in 0..2 {
                let ri = (rep + k) % 2;
                let c = mem_rows[ri];
                let t = throughput(threads, warm, dur, &|| c.call());
                errors += t.errors;
                // CPU-bound: ns of one core per request.
                let cores =
                    threads.min(std::thread::available_parallelism().map_or(1, |n| n.get()));
                mem_ns[ri][ti].push(1e9 * cores as f64 / t.rps.max(1.0));
                round[ri] = t.rps;
            }
            mem_ratios[ti].push(round[1] / round[0]);
        }
    }
    InMemory {
        ns: mem_ns,
        ratios: mem_ratios,
        errors,
    }
}

/// ns per `RedisStore::poll` with nothing new, over `polls` calls on one thread.
fn poll_ns(url: &str, session: &str, polls: u32) -> f64 {
    let polled = RedisStore::open(url, session).expect("open RedisStore");
    let since = polled
        .poll(None)
        .expect("read the session")
        .expect("a shared store answers")
        .revision();
    let t = std::time::Instant::now();
    for _ in 0..polls {
        std::hint::black_box(polled.poll(std::hint::black_box(Some(since))).ok());
    }
    t.elapsed().as_nanos() as f64 / polls as f64
}

/// The loopback table: requests per second and client CPU, and the ratio row.
fn sockets_table(
    rows: &[(&str, &Arc<dyn Contender>); 2],
    net: &mut Sockets,
    reps: usize,
    warm: Duration,
    dur: Duration,
) -> String {
    let Sockets {
        rps, cpu, ratios, ..
    } = net;
    let mut md = format!(
        "### A session in Redis: per-request cost\n\nRequests per second with a valid token, median of {reps} interleaved rounds of {} ms (after {} ms warm-up) per cell, every row on the same agent as the overhead scenario's first rows. The `RedisStore` row's session was loaded from a real `redis-server` on loopback (started by the bench); its requests read no Redis: change detection is one background `HMGET` at most once per poll interval. Ratio = RedisStore / MemoryStore, the median of per-round ratios (min–max of the rounds). Client CPU per request from `/proc/self/task/*/schedstat` (the background reader is not a `bench-client` thread and is not counted).\n\n| store | 1 thread | 16 threads | client CPU µs/request, 1 / 16 threads |\n|---|---:|---:|---:|\n",
        dur.as_millis(),
        warm.as_millis()
    );
    for (ri, (name, _)) in rows.iter().enumerate() {
        let cells: Vec<String> = rps[ri].iter_mut().map(|v| kreq(median(v))).collect();
        let cpus: Vec<String> = cpu[ri]
            .iter_mut()
            .map(|v| format!("{:.1}", median(v)))
            .collect();
        let _ = writeln!(
            md,
            "| {name} | {} | {} |",
            cells.join(" | "),
            cpus.join(" / ")
        );
    }
    let _ = writeln!(
        md,
        "| **RedisStore / MemoryStore** | {} | |",
        ratio_cells(ratios).join(" | ")
    );
    md
}

/// The in-memory table: ns of CPU per request, and the throughput ratio row.
fn in_memory_table(md: &mut String, mem: &mut InMemory, reps: usize) {
    let InMemory {
        ns: mem_ns,
        ratios: mem_ratios,
        ..
    } = mem;
    let _ = writeln!(
        md,
        "\nWith an in-memory transport (no I/O; the same clients otherwise), ns of CPU per request (1 thread; at 16 threads: wall time × cores / requests), median of {reps} interleaved rounds:\n\n| store | 1 thread | 16 threads |\n|---|---:|---:|"
    );
    for (ri, name) in ["AuthClient, `MemoryStore`", "AuthClient, `RedisStore`"]
        .iter()
        .enumerate()
    {
        let cells: Vec<String> = mem_ns[ri]
            .iter_mut()
            .map(|v| format!("{:.0}", median(v)))
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    let mem_cells = ratio_cells(mem_ratios);
    let _ = writeln!(
        md,
        "| **throughput RedisStore / MemoryStore** | {} |",
        mem_cells.join(" | ")
    );
}

/// What follows the tables: the store's own share, the instruction counts, Redis's commands
/// and errors, and the summary line.
fn footer(
    md: &mut String,
    net: &mut Sockets,
    errors: u64,
    (poll_ns, polls): (f64, u32),
    instructions: &str,
) {
    let (requests, measured, reads, scripts) = (net.requests, net.measured, net.reads, net.scripts);
    let ratios = &mut net.ratios;
    let _ = writeln!(
        md,
        "\nThe store's own share: `RedisStore::poll` (called before each request) with nothing new takes {poll_ns:.1} ns ({polls} calls in a loop, one thread)."
    );
    let _ = writeln!(md, "\n{instructions}");
    let _ = writeln!(
        md,
        "\nRedis commands while the RedisStore rows ran ({:.0} s, about {:.0}k requests): {reads} `HMGET` (background reads), {scripts} scripts (lock, write). Errors: {errors}.",
        measured.as_secs_f64(),
        requests / 1000.0
    );
    let m: Vec<f64> = ratios.iter_mut().map(|v| median(v)).collect();
    let _ = writeln!(
        md,
        "\n**RedisStore / MemoryStore at 1 / 16 threads: {:.3} / {:.3}.** Run {} UTC.",
        m[0],
        m[1],
        crate::machine::utc_now()
    );
}

/// `AuthClient` on a `RedisStore`, called like the other contenders.
struct OnRedis(AuthClient);

impl Contender for OnRedis {
    fn call(&self) -> Result<(), String> {
        let mut resp = self.0.get("api").call().map_err(|e| e.to_string())?;
        resp.body_mut().read_to_vec().map_err(|e| e.to_string())?;
        if resp.status() == 200 {
            Ok(())
        } else {
            Err(format!("status {}", resp.status()))
        }
    }
    fn unauthorized(&self) -> u64 {
        0
    }
    fn refreshes(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        Vec::new()
    }
}

/// Requests made by each `--redis-spin` child under callgrind: the difference between the
/// two counts is per request, without the setup.
const SPIN_REQUESTS: [u64; 2] = [1_000, 3_000];

/// Instructions per request with each store, counted by callgrind (unaffected by the load
/// on the machine), or why they could not be counted.
fn instructions_per_request(redis_url: &str, session: &str) -> String {
    let exe = std::env::current_exe().expect("current exe");
    let count = |store: &str, n: u64| -> Option<u64> {
        let out = std::process::Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .args(["--redis-spin", store, &n.to_string(), redis_url, session])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        text.lines()
            .find_map(|l| l.split_once("Collected :")?.1.trim().parse().ok())
    };
    let mut per = Vec::new();
    for store in ["memory", "redis"] {
        let [a, b] = SPIN_REQUESTS.map(|n| count(store, n));
        let (Some(a), Some(b)) = (a, b) else {
            return "Instructions per request: not counted (`valgrind` is not installed or failed).".into();
        };
        per.push(b.saturating_sub(a) as f64 / (SPIN_REQUESTS[1] - SPIN_REQUESTS[0]) as f64);
    }
    format!(
        "Instructions per request with the in-memory transport, counted by callgrind (the difference between runs of {} and {} requests, one thread; independent of the machine's load): `MemoryStore` {:.0}, `RedisStore` {:.0}: **{:+.0} ({:+.2} %)**.",
        SPIN_REQUESTS[0],
        SPIN_REQUESTS[1],
        per[0],
        per[1],
        per[1] - per[0],
        100.0 * (per[1] - per[0]) / per[0]
    )
}

/// `--redis-spin STORE N REDIS_URL SESSION`: N requests through AuthClient with the in-memory
/// transport, its session in a `MemoryStore` or (STORE = `redis`) in Redis, for callgrind.
pub fn spin_child(args: &[String]) {
    let [store, n, url, session] = args else {
        eprintln!("usage: --redis-spin memory|redis N REDIS_URL SESSION");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("request count");
    let tokens = Tokens::new("at-0")
        .with_refresh_token("rt-0")
        .with_expires_in(Duration::from_secs(3600));
    let builder = AuthClient::builder("http://127.0.0.1:9/")
        .proxy(None)
        .api_agent(crate::memtransport::agent(None))
        .refresher(AuthServer::new("http://127.0.0.1:9/token").refresh_grant());
    let client = match store.as_str() {
        "memory" => builder.tokens(tokens),
        // The session was stored by the scenario; a long poll interval keeps the background
        // reader's Redis reads out of the count (a request's poll is the same either way).
        _ => builder.store(
            RedisStore::open(url, session)
                .expect("open RedisStore")
                .poll_interval(Duration::from_secs(3600)),
        ),
    }
    .build()
    .expect("build AuthClient");
    for _ in 0..n {
        let mut resp = client.get("api").call().expect("request");
        resp.body_mut().read_to_vec().expect("body");
    }
}
