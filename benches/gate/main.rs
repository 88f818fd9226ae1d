//! tokengate benchmarks: the cost of the gate, refresh storms, refresh-ahead latency and
//! memory, side by side with a raw `ureq::Agent` and two hand-written baselines.
//!
//! ```text
//! cargo bench --bench gate                       # everything (a few minutes on 2 cores)
//! cargo bench --bench gate -- storm overhead     # chosen scenarios
//! cargo bench --bench gate -- storm --storm-n 1024   # the storm at one N (references + AuthClient)
//! cargo bench --bench gate -- --quick            # a short smoke run (numbers not meaningful)
//! cargo bench --bench gate -- --write            # also update BENCHMARKS.md and docs/storm.svg
//! cargo bench --bench gate -- alloc --alloc-sites   # where the per-request allocations happen
//! cargo bench --bench gate -- instructions        # instructions per request, under callgrind
//! ```
//! Scenarios: `ceiling`, `overhead`, `instructions`, `storm`, `ahead`, `memory`, `alloc`; and
//! `redis` (`cargo bench --features redis --bench gate -- redis`: a session in Redis against
//! one in memory; needs `redis-server`; only when named).
//! Results always go to `target/tokengate-bench/` (Markdown, CSV, SVG) and to stdout.

mod alloc;
mod contenders;
mod instructions;
mod memtransport;
#[cfg(feature = "redis")]
mod redis;
mod server;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use contenders::{Contender, Kind, Oracle, Setup};
use server::Server;
use tokengate::AuthServer;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const SCENARIOS: [&str; 7] = [
    "ceiling",
    "overhead",
    "instructions",
    "storm",
    "ahead",
    "memory",
    "alloc",
];

struct Opts {
    quick: bool,
    write: bool,
    alloc_sites: bool,
    /// `--storm-n N`: run the storm at this N only (and only the reference rows and AuthClient).
    storm_n: Option<usize>,
    scenarios: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--memory-child") {
        memory_child(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--plot") {
        // `--plot CSV SVG`: redraw the storm plot from a storm.csv the bench wrote.
        let [csv, svg] = &args[1..] else {
            eprintln!("usage: --plot STORM_CSV OUT_SVG");
            std::process::exit(2);
        };
        let text = std::fs::read_to_string(csv).expect("read storm csv");
        let mut series: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let (n, name, ms) = (f[0].parse().expect("n"), f[1], f[3].parse().expect("ms"));
            match series.iter_mut().find(|s| s.0 == name) {
                Some(s) => s.1.push((n, ms)),
                None => series.push((name.to_owned(), vec![(n, ms)])),
            }
        }
        std::fs::write(svg, storm_svg(&series)).expect("write svg");
        return;
    }
    #[cfg(feature = "redis")]
    if args.first().map(String::as_str) == Some("--redis-spin") {
        redis::spin_child(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--instructions-child") {
        instructions::child(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--spin") {
        spin(&args[1..]);
        return;
    }
    let mut opts = Opts {
        quick: false,
        write: false,
        alloc_sites: false,
        storm_n: None,
        scenarios: Vec::new(),
    };
    let mut args_iter = args.iter();
    while let Some(a) = args_iter.next() {
        match a.as_str() {
            "--storm-n" => {
                opts.storm_n = args_iter.next().and_then(|n| n.parse().ok());
                if opts.storm_n.is_none() {
                    eprintln!("--storm-n needs a thread count");
                    std::process::exit(2);
                }
            }
            "--quick" => opts.quick = true,
            "--write" => opts.write = true,
            "--alloc-sites" => opts.alloc_sites = true,
            s if SCENARIOS.contains(&s) => opts.scenarios.push(s.to_owned()),
            "redis" if cfg!(feature = "redis") => opts.scenarios.push("redis".to_owned()),
            "redis" => {
                eprintln!("the redis scenario needs the feature: cargo bench --features redis --bench gate -- redis");
                std::process::exit(2);
            }
            s if s.starts_with("--") => {} // `--bench` from cargo
            s => {
                eprintln!("unknown scenario {s:?}; known: {}", SCENARIOS.join(", "));
                std::process::exit(2);
            }
        }
    }
    if opts.scenarios.is_empty() {
        opts.scenarios = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }

    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tokengate-bench");
    std::fs::create_dir_all(&out_dir).expect("create target/tokengate-bench");

    let machine = machine_info();
    println!("{machine}");
    let server = Server::start();
    let mut sections: Vec<(String, String)> = vec![("machine".into(), machine)];
    let started = Instant::now();
    // One line per scenario for the summary, in scenario order.
    let mut headline: Vec<String> = Vec::new();
    for s in opts.scenarios.clone() {
        let load_before = loadavg();
        let ticks_before = cpu_ticks();
        let t = Instant::now();
        let mut md = match s.as_str() {
            "ceiling" => ceiling(&server, &opts),
            "overhead" => overhead(&server, &opts, &mut headline),
            "instructions" => instructions::scenario(opts.quick, &out_dir, &mut headline),
            "storm" => storm(&server, &opts, &out_dir, &mut headline),
            "ahead" => ahead(&server, &opts, &mut headline),
            "memory" => memory(&server, &opts, &mut headline),
            "alloc" => alloc_scenario(&server, &opts, &mut headline),
            #[cfg(feature = "redis")]
            "redis" => redis::scenario(&server, &opts),
            _ => unreachable!(),
        };
        let secs = t.elapsed().as_secs_f64();
        let _ = writeln!(
            md,
            "\n<sub>Scenario `{s}` took {secs:.0} s; meanwhile {}; load average before / after (counting the bench's own threads): {load_before} / {}.</sub>",
            foreign_load(ticks_before, cpu_ticks(), secs),
            loadavg()
        );
        println!("{md}");
        sections.push((s, md));
    }
    let total = started.elapsed().as_secs_f64();
    println!("total: {total:.0} s");
    if opts.scenarios.len() == SCENARIOS.len() {
        let mut md = String::new();
        for l in &headline {
            let _ = writeln!(md, "- {l}");
        }
        let _ = writeln!(
            md,
            "\nWhole run: {total:.0} s{}.",
            if opts.quick {
                " (--quick: numbers not meaningful)"
            } else {
                ""
            }
        );
        println!("{md}");
        sections.insert(1, ("headline".into(), md));
    }

    let mut all = String::new();
    for (name, md) in &sections {
        let _ = writeln!(all, "<!-- {name} -->\n{md}\n");
    }
    std::fs::write(out_dir.join("results.md"), &all).expect("write results.md");
    println!("wrote {}", out_dir.join("results.md").display());
    if opts.write {
        // The redis scenario alone carries its own date and load: the machine block stays
        // the one of the full run the other sections come from.
        if opts.scenarios == ["redis"] {
            sections.retain(|(name, _)| name != "machine");
        }
        write_benchmarks_md(&sections, &out_dir);
    }
}

// ------------------------------------------------------------------------------------------
// Helpers

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `p` quantile (nearest rank) of sorted `v`.
fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// CPU ticks so far: `(busy ticks of the whole machine, steal ticks, ticks of this process
/// and its waited-for children)`, from `/proc/stat` and `/proc/self/stat`.
fn cpu_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    let steal = f.get(7).copied().unwrap_or(0);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: utime is the 12th, then stime,
    // cutime, cstime.
    let own = me
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    (busy, steal, own)
}

/// How busy the rest of the machine was between two [`cpu_ticks`] readings.
fn foreign_load(a: (u64, u64, u64), b: (u64, u64, u64), secs: f64) -> String {
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let hz = 100.0; // USER_HZ
    let capacity = secs * cores * hz;
    let foreign =
        b.0.saturating_sub(a.0)
            .saturating_sub(b.2.saturating_sub(a.2)) as f64;
    let steal = b.1.saturating_sub(a.1) as f64;
    format!(
        "other processes used {:.0} % of the machine's CPU time (hypervisor steal {:.0} %)",
        100.0 * foreign / capacity,
        100.0 * steal / capacity
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine_info() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    format!(
        "| | |\n|---|---|\n| date (UTC) | {} |\n| CPU | {cpu}, {cores} cores available |\n| memory | {mem} |\n| kernel | Linux {kernel} |\n| compiler | {rustc}, `cargo bench` (release profile) |\n| load average at start | {} |",
        utc_now(),
        loadavg()
    )
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A counter on its own cache line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

fn setup(server: &Server, api: tokengate::ureq::Agent, access: &str, refresh: &str) -> Setup {
    Setup {
        base_url: server.base_url(),
        token_url: server.token_url(),
        api,
        access: access.to_owned(),
        refresh: refresh.to_owned(),
        expires_in: Duration::from_secs(3600),
        skew: Duration::from_secs(30),
        static_auth: format!("Bearer {access}"),
        auth_default_agent: false,
    }
}

/// CPU time (ns) used so far by this process's live threads named `bench-client` and
/// `srv-conn`, from `/proc/self/task/*/schedstat` (time on a CPU, in ns).
fn cpu_ns_by_role() -> (u64, u64) {
    let (mut client, mut server) = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = || {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match comm.trim() {
            "bench-client" => client += ns(),
            "srv-conn" => server += ns(),
            _ => {}
        }
    }
    (client, server)
}

/// One throughput measurement.
struct Throughput {
    rps: f64,
    errors: u64,
    /// CPU time per request of the calling threads, in µs.
    client_us: f64,
    /// CPU time per request of the server's connection threads, in µs.
    server_us: f64,
}

/// Requests per second of `call` on `threads` threads, after `warm` of unmeasured calls.
fn throughput(
    threads: usize,
    warm: Duration,
    dur: Duration,
    call: &(dyn Fn() -> Result<(), String> + Sync),
) -> Throughput {
    let stop = AtomicBool::new(false);
    let errors = AtomicU64::new(0);
    let counts: Vec<Padded> = (0..threads).map(|_| Padded::default()).collect();
    let barrier = Barrier::new(threads + 1);
    let sum = || counts.iter().map(|c| c.0.load(Relaxed)).sum::<u64>();
    thread::scope(|s| {
        for c in &counts {
            let (stop, errors, barrier) = (&stop, &errors, &barrier);
            thread::Builder::new()
                .name("bench-client".into())
                .spawn_scoped(s, move || {
                    barrier.wait();
                    while !stop.load(Relaxed) {
                        match call() {
                            Ok(()) => c.0.fetch_add(1, Relaxed),
                            Err(_) => errors.fetch_add(1, Relaxed),
                        };
                    }
                })
                .expect("spawn client thread");
        }
        barrier.wait();
        thread::sleep(warm);
        let (c1, t1, cpu1) = (sum(), Instant::now(), cpu_ns_by_role());
        thread::sleep(dur);
        let (c2, t2, cpu2) = (sum(), Instant::now(), cpu_ns_by_role());
        stop.store(true, Relaxed);
        let n = (c2 - c1).max(1) as f64;
        Throughput {
            rps: (c2 - c1) as f64 / (t2 - t1).as_secs_f64(),
            errors: errors.load(Relaxed),
            client_us: cpu2.0.saturating_sub(cpu1.0) as f64 / n / 1e3,
            server_us: cpu2.1.saturating_sub(cpu1.1) as f64 / n / 1e3,
        }
    })
}

fn kreq(x: f64) -> String {
    format!("{:.1}k", x / 1000.0)
}

// ------------------------------------------------------------------------------------------
// Ceiling: is the loopback server the bottleneck?

fn ceiling(server: &Server, opts: &Opts) -> String {
    let (reps, dur) = if opts.quick {
        (1, Duration::from_millis(200))
    } else {
        (3, Duration::from_millis(500))
    };
    let warm = Duration::from_millis(100);
    let sess = server.new_session(Duration::ZERO, None);
    let raw = contenders::build(
        Kind::Raw,
        &setup(
            server,
            contenders::api_agent(),
            &sess.live_access,
            &sess.refresh,
        ),
    );

    // httpmock, for comparison: the same request with raw ureq.
    let mock = httpmock::MockServer::start();
    mock.mock(|when, then| {
        when.method(httpmock::Method::GET).path("/api");
        then.status(200).body("ok");
    });
    let mock_agent = contenders::api_agent();
    let mock_url = mock.url("/api");
    let mock_call = || {
        let mut r = mock_agent
            .get(&mock_url)
            .header("Authorization", "Bearer static")
            .call()
            .map_err(|e| e.to_string())?;
        r.body_mut().read_to_vec().map_err(|e| e.to_string())?;
        Ok(())
    };

    let mut md = String::from(
        "### Server ceiling\n\nRequests per second on loopback (median of runs). \"minimal client\" is a raw-socket client that writes a fixed request and reads the fixed answer: it does almost no work, so it shows what the bench server can serve on this machine. The same raw-ureq client against httpmock shows why httpmock is not used.\n\n| threads | minimal client → bench server | raw ureq → bench server | raw ureq → httpmock |\n|---:|---:|---:|---:|\n",
    );
    for threads in [1usize, 4, 16] {
        let mut minimal = Vec::new();
        let mut ureq_ = Vec::new();
        let mut hm = Vec::new();
        for _ in 0..reps {
            minimal.push(minimal_client(server, threads, warm, dur));
            ureq_.push(throughput(threads, warm, dur, &|| raw.call()).rps);
            hm.push(throughput(threads, warm, dur, &mock_call).rps);
        }
        let _ = writeln!(
            md,
            "| {threads} | {} | {} | {} |",
            kreq(median(&mut minimal)),
            kreq(median(&mut ureq_)),
            kreq(median(&mut hm))
        );
    }
    md
}

fn minimal_client(server: &Server, threads: usize, warm: Duration, dur: Duration) -> f64 {
    let stop = AtomicBool::new(false);
    let counts: Vec<Padded> = (0..threads).map(|_| Padded::default()).collect();
    let sum = || counts.iter().map(|c| c.0.load(Relaxed)).sum::<u64>();
    thread::scope(|s| {
        for c in &counts {
            let stop = &stop;
            let addr = server.addr;
            s.spawn(move || server::raw_socket_loop(addr, stop, &c.0));
        }
        thread::sleep(warm);
        let (c1, t1) = (sum(), Instant::now());
        thread::sleep(dur);
        let (c2, t2) = (sum(), Instant::now());
        stop.store(true, Relaxed);
        (c2 - c1) as f64 / (t2 - t1).as_secs_f64()
    })
}

// ------------------------------------------------------------------------------------------
// Overhead: steady-state throughput

fn overhead(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let (reps, dur) = if opts.quick {
        (1, Duration::from_millis(200))
    } else {
        (9, Duration::from_millis(250))
    };
    let warm = Duration::from_millis(100);
    let sess = server.new_session(Duration::ZERO, None);
    let big = setup(
        server,
        contenders::api_agent(),
        &sess.live_access,
        &sess.refresh,
    );
    let mut small = setup(
        server,
        contenders::tokengate_default_agent(),
        &sess.live_access,
        &sess.refresh,
    );
    let mut rows: Vec<(String, Arc<dyn Contender>)> = Kind::ALL
        .iter()
        .map(|&k| (k.name().to_owned(), contenders::build(k, &big)))
        .collect();
    rows.push((
        "raw ureq, AuthClient's default agent settings".into(),
        contenders::build(Kind::Raw, &small),
    ));
    small.auth_default_agent = true;
    rows.push((
        "AuthClient, default agent".into(),
        contenders::build(Kind::Auth, &small),
    ));
    rows.push((
        "raw ureq, ureq's default pool, no timeout".into(),
        contenders::build(
            Kind::Raw,
            &setup(
                server,
                contenders::default_pool_agent(),
                &sess.live_access,
                &sess.refresh,
            ),
        ),
    ));
    rows.push((
        "raw ureq, default pool, 60 s global timeout (tokengate's default before the fix)".into(),
        contenders::build(
            Kind::Raw,
            &setup(
                server,
                contenders::global_timeout_agent(),
                &sess.live_access,
                &sess.refresh,
            ),
        ),
    ));

    let threads_list = [1usize, 4, 16];
    // results[row][threads] = per round: req/s, client CPU µs/request, server CPU µs/request
    let mut results = vec![vec![Vec::new(); threads_list.len()]; rows.len()];
    let mut client_cpu = vec![vec![Vec::new(); threads_list.len()]; rows.len()];
    let mut server_cpu = vec![vec![Vec::new(); threads_list.len()]; rows.len()];
    let mut ratios = vec![Vec::new(); threads_list.len()];
    let mut default_ratios = vec![Vec::new(); threads_list.len()];
    let mut errors = 0;
    for rep in 0..reps {
        for (ti, &threads) in threads_list.iter().enumerate() {
            let mut round = vec![0.0; rows.len()];
            // Each round starts with a different contender, so no one always runs first.
            for k in 0..rows.len() {
                let ri = (rep + k) % rows.len();
                let c = &rows[ri].1;
                let t = throughput(threads, warm, dur, &|| c.call());
                errors += t.errors;
                results[ri][ti].push(t.rps);
                client_cpu[ri][ti].push(t.client_us);
                server_cpu[ri][ti].push(t.server_us);
                round[ri] = t.rps;
            }
            ratios[ti].push(round[1] / round[0]);
            default_ratios[ti].push(round[5] / round[4]);
        }
    }
    let mut md = format!(
        "### Overhead: steady state (valid token)\n\nRequests per second, median of {reps} interleaved rounds (each starting with a different contender) of {} ms (after {} ms warm-up) per cell; every row sends the same `GET /api` with a valid bearer token and reads the 2-byte body. The first four rows share one agent configuration (a pool large enough for every thread, no timeouts); the next two use the settings of AuthClient's default agent (ureq's default pool of 3 idle connections per host, 10 s connect timeout, 60 s per phase); the next has ureq's default pool and no timeout, to tell the two effects apart; the last one has a 60 s *global* timeout, tokengate's default before finding 1 was fixed. Ratio = AuthClient / raw ureq with the same agent settings, the median of per-round ratios (min–max of the rounds in brackets).\n\n| contender | 1 thread | 4 threads | 16 threads |\n|---|---:|---:|---:|\n",
        dur.as_millis(),
        warm.as_millis()
    );
    for (ri, (name, _)) in rows.iter().enumerate() {
        let cells: Vec<String> = results[ri].iter_mut().map(|v| kreq(median(v))).collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    for (label, ratios) in [
        ("**AuthClient / raw**, same agent", &mut ratios),
        (
            "AuthClient / raw, default agent settings",
            &mut default_ratios,
        ),
    ] {
        let cells: Vec<String> = ratios
            .iter_mut()
            .map(|v| {
                let m = median(v);
                let (lo, hi) = (v[0], v[v.len() - 1]);
                format!("**{m:.3}** ({lo:.3}–{hi:.3})")
            })
            .collect();
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        md,
        "\nCPU time per request (µs, median of rounds), from `/proc/self/task/*/schedstat`: the calling threads (client) and the server's connection threads (server). The server's share is the same work for every row, a check that the rows are comparable. (Not shown for the default-agent rows: ureq resolves on a short-lived thread per request there, whose CPU time is not captured.)\n\n| contender | client, 1 thread | client, 4 | client, 16 | server, 1 | server, 4 | server, 16 |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for ri in 0..4 {
        let c: Vec<String> = client_cpu[ri]
            .iter_mut()
            .map(|v| format!("{:.1}", median(v)))
            .collect();
        let sv: Vec<String> = server_cpu[ri]
            .iter_mut()
            .map(|v| format!("{:.1}", median(v)))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            rows[ri].0,
            c.join(" | "),
            sv.join(" | ")
        );
    }
    let extra: Vec<String> = (0..threads_list.len())
        .map(|ti| {
            let a = median(&mut client_cpu[1][ti].clone());
            let r = median(&mut client_cpu[0][ti].clone());
            format!("{:+.1} µs ({:+.0} %)", a - r, (a / r - 1.0) * 100.0)
        })
        .collect();
    let _ = writeln!(
        md,
        "| AuthClient − raw, client CPU | {} | | | |",
        extra.join(" | ")
    );
    // The same four contenders with every request answered in memory: no I/O at all.
    let mem = Setup {
        base_url: "http://127.0.0.1:9/".into(),
        ..setup(
            server,
            memtransport::agent(None),
            &sess.live_access,
            &sess.refresh,
        )
    };
    let mem_rows: Vec<Arc<dyn Contender>> = Kind::ALL
        .iter()
        .map(|&k| contenders::build(k, &mem))
        .collect();
    let mut mem_results = vec![vec![Vec::new(); threads_list.len()]; mem_rows.len()];
    let mut mem_ratios = vec![Vec::new(); threads_list.len()];
    for rep in 0..reps {
        for (ti, &threads) in threads_list.iter().enumerate() {
            let mut round = vec![0.0; mem_rows.len()];
            for k in 0..mem_rows.len() {
                let ri = (rep + k) % mem_rows.len();
                let c = &mem_rows[ri];
                let t = throughput(threads, warm, dur, &|| c.call());
                errors += t.errors;
                mem_results[ri][ti].push(t.rps);
                round[ri] = t.rps;
            }
            mem_ratios[ti].push(round[1] / round[0]);
        }
    }
    let _ = writeln!(
        md,
        "\n**Without I/O.** The same four contenders on an agent whose transport answers every request in memory (`benches/gate/memtransport.rs`): no socket, no server, no other thread. This isolates the CPU cost of the request path in ureq and in each client around it. Requests per second, as above:\n\n| contender | 1 thread | 4 threads | 16 threads |\n|---|---:|---:|---:|"
    );
    for (ri, &kind) in Kind::ALL.iter().enumerate() {
        let cells: Vec<String> = mem_results[ri]
            .iter_mut()
            .map(|v| kreq(median(v)))
            .collect();
        let _ = writeln!(md, "| {} | {} |", kind.name(), cells.join(" | "));
    }
    let cells: Vec<String> = mem_ratios
        .iter_mut()
        .map(|v| {
            let m = median(v);
            let (lo, hi) = (v[0], v[v.len() - 1]);
            format!("**{m:.3}** ({lo:.3}–{hi:.3})")
        })
        .collect();
    let _ = writeln!(
        md,
        "| **AuthClient / raw**, in memory | {} |",
        cells.join(" | ")
    );

    // One thread, in memory, in short pairs: each contender right next to raw ureq, many
    // times, so drifts in the machine's speed cancel out of the paired differences.
    let (pairs, slice) = if opts.quick {
        (5, Duration::from_millis(20))
    } else {
        (41, Duration::from_millis(50))
    };
    let ns_per_call = |c: &Arc<dyn Contender>, d: Duration| {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < d {
            let _ = c.call();
            n += 1;
        }
        t.elapsed().as_nanos() as f64 / n as f64
    };
    for c in &mem_rows {
        ns_per_call(c, Duration::from_millis(100));
    }
    let mut raw_ns = Vec::new();
    let mut diffs = vec![Vec::new(); mem_rows.len()];
    for i in 0..pairs {
        let mut ns = vec![0.0; mem_rows.len()];
        for k in 0..mem_rows.len() {
            let ri = (i + k) % mem_rows.len();
            ns[ri] = ns_per_call(&mem_rows[ri], slice);
        }
        raw_ns.push(ns[0]);
        for ri in 0..mem_rows.len() {
            diffs[ri].push(ns[ri] - ns[0]);
        }
    }
    let raw_med = median(&mut raw_ns);
    let _ = writeln!(
        md,
        "\nOne thread, in memory, measured in {pairs} rounds of {} ms per contender (each round in a different order); the extra cost is the median of the per-round differences to raw ureq.\n\n| contender | ns / request | extra vs raw ureq (ns) | extra (%) |\n|---|---:|---:|---:|",
        slice.as_millis()
    );
    let mut mem_extra = Vec::new();
    for (ri, &kind) in Kind::ALL.iter().enumerate() {
        let d = median(&mut diffs[ri]);
        mem_extra.push(d);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:+.0} | {:+.1} % |",
            kind.name(),
            raw_med + d,
            d,
            100.0 * d / raw_med
        );
    }
    let _ = writeln!(md, "\nFailed requests during the runs: {errors}.");
    let m: Vec<String> = ratios
        .iter_mut()
        .map(|v| format!("{:.3}", median(v)))
        .collect();
    let d: Vec<String> = default_ratios
        .iter_mut()
        .map(|v| format!("{:.3}", median(v)))
        .collect();
    let raw_rps: Vec<String> = results[0].iter_mut().map(|v| kreq(median(v))).collect();
    headline.push(format!(
        "**Overhead** (valid token, AuthClient / raw ureq on the same agent) at 1 / 4 / 16 threads: **{}** (target ≥ 0.97; raw ureq: {} req/s); AuthClient's extra client CPU per request: {}. Without any I/O (in-memory transport) AuthClient adds {:.0} ns to ureq's {:.0} ns per request. With the default agents of both (tokengate's settings): {}.",
        m.join(" / "),
        raw_rps.join(" / "),
        extra.join(" / "),
        mem_extra[1],
        raw_med,
        d.join(" / ")
    ));
    md
}

// ------------------------------------------------------------------------------------------
// Storm

#[derive(Clone, Copy)]
struct StormRun {
    secs: f64,
    refreshes: u64,
    failures: u64,
    new_conns: u64,
    reuse: u64,
}

/// Opens `n` connections in `agent`'s pool, so the storm measures the gate, not TCP connects.
fn warm_pool(agent: &tokengate::ureq::Agent, server: &Server, n: usize) {
    let url = format!("http://{}/ping?ms={}", server.addr, 50 + n / 8);
    let barrier = Barrier::new(n);
    thread::scope(|s| {
        for _ in 0..n {
            let (barrier, url) = (&barrier, &url);
            s.spawn(move || {
                barrier.wait();
                let mut r = agent.get(url).call().expect("warm-up request");
                let _ = r.body_mut().read_to_vec();
            });
        }
    });
}

/// One storm: `n` threads behind a barrier, each making one request with a token the API
/// rejects; the token endpoint answers in 50 ms. `None` runs the raw-ureq ideal.
fn storm_run(server: &Server, kind: Option<Kind>, n: usize) -> StormRun {
    let sess = server.new_session(STORM_TOKEN_DELAY, None);
    let api = contenders::api_agent();
    warm_pool(&api, server, n);
    let mut s = setup(server, api.clone(), &sess.stale_access, &sess.refresh);
    s.static_auth = format!("Bearer {}", sess.stale_access);
    let call: Box<dyn Fn() -> Result<(), String> + Sync> = match kind {
        Some(k) => {
            let c = contenders::build(k, &s);
            Box::new(move || c.call())
        }
        None => {
            let o = Oracle {
                agent: api.clone(),
                token_agent: contenders::token_agent(),
                url: server.api_url(),
                refresher: AuthServer::new(server.token_url()).refresh_grant(),
                stale: sess.stale_access.clone(),
                refresh: sess.refresh.clone(),
                after_401: Barrier::new(n),
                after_refresh: Barrier::new(n),
                fresh: Mutex::new(None),
            };
            Box::new(move || o.call())
        }
    };
    let conns0 = server.conns();
    let barrier = Barrier::new(n);
    let results: Vec<(Instant, Instant, bool)> = thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, call) = (&barrier, &call);
                thread::Builder::new()
                    .spawn_scoped(sc, move || {
                        barrier.wait();
                        let start = Instant::now();
                        let ok = call().is_ok();
                        (start, Instant::now(), ok)
                    })
                    .expect("spawn storm thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let release = results.iter().map(|r| r.0).min().unwrap();
    let last = results.iter().map(|r| r.1).max().unwrap();
    StormRun {
        secs: (last - release).as_secs_f64(),
        refreshes: server.token_calls(),
        failures: results.iter().filter(|r| !r.2).count() as u64,
        new_conns: server.conns() - conns0,
        reuse: server.shared.reuse.load(Relaxed),
    }
}

/// The storm's second reference: the same `n` threads on a fresh agent (pool warmed the same
/// way), released by a `Barrier`, each making two plain requests with a valid token: the
/// storm's 2 × N requests with no 401, no refresh and no coordination. Seconds until the last
/// thread is done.
fn plain_run(server: &Server, n: usize) -> f64 {
    let sess = server.new_session(Duration::ZERO, None);
    let api = contenders::api_agent();
    warm_pool(&api, server, n);
    let raw = contenders::build(
        Kind::Raw,
        &setup(server, api, &sess.live_access, &sess.refresh),
    );
    let barrier = Barrier::new(n);
    let spans: Vec<(Instant, Instant)> = thread::scope(|sc| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (barrier, raw) = (&barrier, &raw);
                thread::Builder::new()
                    .spawn_scoped(sc, move || {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..2 {
                            // A failure shows in the time; the AuthClient rows count theirs.
                            let _ = raw.call();
                        }
                        (start, Instant::now())
                    })
                    .expect("spawn storm thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let release = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    (last - release).as_secs_f64()
}

/// The token endpoint's delay in the storm.
const STORM_TOKEN_DELAY: Duration = Duration::from_millis(50);

fn storm(
    server: &Server,
    opts: &Opts,
    out_dir: &std::path::Path,
    headline: &mut Vec<String>,
) -> String {
    let one_n;
    let ns: &[usize] = match opts.storm_n {
        Some(n) => {
            one_n = [n];
            &one_n
        }
        None if opts.quick => &[8, 64],
        None => &[8, 64, 256, 1024],
    };
    let reps = if opts.quick { 1 } else { 3 };
    // Contenders: the ideal (raw ureq with perfect coordination), then the three that refresh.
    let who: [(Option<Kind>, &str); 4] = [
        (None, "raw ureq (ideal)"),
        (Some(Kind::Auth), Kind::Auth.name()),
        (Some(Kind::Naive), Kind::Naive.name()),
        (Some(Kind::Seed), Kind::Seed.name()),
    ];
    // runs[who][n] = runs
    let mut runs: Vec<Vec<Vec<StormRun>>> = vec![vec![Vec::new(); ns.len()]; who.len()];
    // plain[n] = seconds of the runs of the plain reference
    let mut plain: Vec<Vec<f64>> = vec![Vec::new(); ns.len()];
    for _ in 0..reps {
        for (ni, &n) in ns.iter().enumerate() {
            let secs = plain_run(server, n);
            println!(
                "storm n={n:4} {:18} {:9.1} ms",
                "2 plain requests",
                secs * 1e3
            );
            plain[ni].push(secs);
            for (wi, (kind, name)) in who.iter().enumerate() {
                if opts.storm_n.is_some() && matches!(kind, Some(Kind::Naive | Kind::Seed)) {
                    continue;
                }
                // Runs of one cell stop once they add up to 30 s (the naive client refreshes
                // once per thread whose request was in flight: up to N × 50 ms a run).
                if runs[wi][ni].iter().map(|r| r.secs).sum::<f64>() > 30.0 {
                    continue;
                }
                let r = storm_run(server, *kind, n);
                println!(
                    "storm n={n:4} {name:18} {:9.1} ms  refreshes={} failures={} new_conns={} reuse={}",
                    r.secs * 1e3,
                    r.refreshes,
                    r.failures,
                    r.new_conns,
                    r.reuse
                );
                runs[wi][ni].push(r);
            }
        }
    }

    let med = |v: &[StormRun], f: fn(&StormRun) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        median(&mut x)
    };
    let mut md = format!(
        "### Storm: N threads hit 401 at once, token endpoint 50 ms\n\nEach run: a fresh session whose access token the API rejects (the client believes it valid, so every thread's first request draws a 401), the pool pre-warmed with N connections, N threads released by a `Barrier`. Time = from release until the last request completes; median of {reps} runs (fewer when the runs of a cell add up to over 30 s). \"ideal\" is raw ureq with perfect coordination: one 401 round, a barrier, one refresh while the rest wait at a barrier, one retry round. Ratio = time / ideal time. \"plain + 50 ms\" is the issue-14 reference: the same N threads on a fresh agent (pool warmed alike) each making two plain requests with a valid token (the storm's 2 × N requests without any 401 or coordination; its time is the first row of each N), plus the token endpoint's 50 ms; ratio = time / that.\n\n| N | contender | time (ms) | ratio to ideal | ratio to plain + 50 ms | refresh calls | failed requests | new connections | refresh-token reuse |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let mut csv = String::from(
        "n,contender,runs,median_ms,ratio_to_ideal,refresh_calls,failed,ratio_to_plain\n",
    );
    let plain_ref = |ni: usize| median(&mut plain[ni].clone()) + STORM_TOKEN_DELAY.as_secs_f64();
    for (ni, &n) in ns.iter().enumerate() {
        let ideal = med(&runs[0][ni], |r| r.secs);
        let reference = plain_ref(ni);
        let _ = writeln!(
            md,
            "| {n} | 2 plain requests per thread (reference) | {:.1} | | | | | | |",
            median(&mut plain[ni].clone()) * 1e3
        );
        for (wi, (_, name)) in who.iter().enumerate() {
            let v = &runs[wi][ni];
            if v.is_empty() {
                continue; // not run (`--storm-n`)
            }
            let t = med(v, |r| r.secs);
            let refreshes: Vec<String> = v.iter().map(|r| r.refreshes.to_string()).collect();
            let failures: Vec<String> = v.iter().map(|r| r.failures.to_string()).collect();
            let conns: Vec<String> = v.iter().map(|r| r.new_conns.to_string()).collect();
            let reuse: Vec<String> = v.iter().map(|r| r.reuse.to_string()).collect();
            let _ = writeln!(
                md,
                "| {n} | {name} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} |",
                t * 1e3,
                t / ideal,
                t / reference,
                refreshes.join(", "),
                failures.join(", "),
                conns.join(", "),
                reuse.join(", ")
            );
            let _ = writeln!(
                csv,
                "{n},{name},{},{:.3},{:.3},{},{},{:.3}",
                v.len(),
                t * 1e3,
                t / ideal,
                med(v, |r| r.refreshes as f64),
                med(v, |r| r.failures as f64),
                t / reference
            );
        }
    }
    let auth_cells: Vec<String> = ns
        .iter()
        .enumerate()
        .map(|(ni, &n)| {
            let ideal = med(&runs[0][ni], |r| r.secs);
            let v = &runs[1][ni];
            let max_refresh = v.iter().map(|r| r.refreshes).max().unwrap_or(0);
            format!(
                "N={n}: {} refresh{}, {:.0} ms, ratio {:.2} to the ideal, **{:.2}** to plain + 50 ms",
                max_refresh,
                if max_refresh == 1 { "" } else { "es" },
                med(v, |r| r.secs) * 1e3,
                med(v, |r| r.secs) / ideal,
                med(v, |r| r.secs) / plain_ref(ni)
            )
        })
        .collect();
    let naive_max: Vec<String> = ns
        .iter()
        .enumerate()
        .map(|(ni, _)| {
            runs[2][ni]
                .iter()
                .map(|r| r.refreshes)
                .max()
                .unwrap_or(0)
                .to_string()
        })
        .collect();
    headline.push(format!(
        "**Storm** (N threads, one 401 each, token endpoint 50 ms), AuthClient: {} (targets: 1 refresh, ratio to the ideal ≤ 1.5, to plain + 50 ms ≤ 1.2). The naive Mutex client made up to {} refresh calls at N = {}.",
        auth_cells.join("; "),
        naive_max.join(" / "),
        ns.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / ")
    ));
    let _ = writeln!(md, "\nPer-run counts are listed run by run. \"new connections\" counts connections the server accepted during the storm (the token agent's first call opens one).\n\n![storm completion time vs N](docs/storm.svg)");
    std::fs::write(out_dir.join("storm.csv"), &csv).expect("write storm.csv");
    let series: Vec<(String, Vec<(usize, f64)>)> = who
        .iter()
        .enumerate()
        .filter(|(wi, _)| runs[*wi].iter().all(|v| !v.is_empty()))
        .map(|(wi, (_, name))| {
            let pts = ns
                .iter()
                .enumerate()
                .map(|(ni, &n)| (n, med(&runs[wi][ni], |r| r.secs) * 1e3))
                .collect();
            (name.to_string(), pts)
        })
        .collect();
    std::fs::write(out_dir.join("storm.svg"), storm_svg(&series)).expect("write storm.svg");
    md
}

/// A log–log line chart of storm completion time vs N, one line per contender, plus the
/// 1.5 × ideal target.
fn storm_svg(series: &[(String, Vec<(usize, f64)>)]) -> String {
    let (w, h) = (760.0, 460.0);
    let (left, right, top, bottom) = (80.0, 200.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(0.1);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (ylo, yhi) = (lo.log10().floor(), hi.log10().ceil());
    let ns: Vec<usize> = series[0].1.iter().map(|p| p.0).collect();
    let (xlo, xhi) = (
        (*ns.first().unwrap() as f64).log2(),
        (*ns.last().unwrap() as f64).log2(),
    );
    let x = |n: f64| left + (n.log2() - xlo) / (xhi - xlo).max(1.0) * pw;
    let y = |ms: f64| top + ph - (ms.max(0.1).log10() - ylo) / (yhi - ylo) * ph;
    let colors = ["#555555", "#1f77b4", "#d62728", "#ff7f0e"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">Refresh storm: time until the last of N requests completes (log-log)</text>\n",
        w / 2.0
    );
    // Grid and axes.
    let mut e = ylo as i32;
    while e <= yhi as i32 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v.log10() > yhi + 1e-9 {
                continue;
            }
            let yy = y(v);
            let major = m == 1.0;
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{}\"/>",
                left + pw,
                if major { "#cccccc" } else { "#eeeeee" }
            );
            let label = if v >= 1000.0 {
                format!("{} s", v / 1000.0)
            } else {
                format!("{v} ms")
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#444\">{label}</text>",
                left - 6.0,
                yy + 4.0
            );
        }
        e += 1;
    }
    for &n in &ns {
        let xx = x(n as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{n}</text>",
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">N threads (released together, token rejected with 401, token endpoint 50 ms)</text>\n<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">completion time</text>",
        left + pw / 2.0,
        h - 18.0,
        top + ph / 2.0
    );
    // Target: 1.5 × ideal.
    let target: Vec<String> = series[0]
        .1
        .iter()
        .map(|&(n, ms)| format!("{:.1},{:.1}", x(n as f64), y(ms * 1.5)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>",
        target.join(" ")
    );
    // Lines that nearly coincide stay visible: earlier series are drawn wider underneath,
    // AuthClient (the second series) last and on top, with square markers for the others.
    let mut order: Vec<usize> = (0..series.len()).filter(|&i| i != 1).collect();
    order.push(1);
    for (rank, &i) in order.iter().enumerate() {
        let (name, pts) = &series[i];
        let c = colors[i % colors.len()];
        let width = if i == 1 { 2.0 } else { 5.0 - rank as f64 };
        let line: Vec<String> = pts
            .iter()
            .map(|&(n, ms)| format!("{:.1},{:.1}", x(n as f64), y(ms)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"{width}\" stroke-opacity=\"0.85\"/>",
            line.join(" ")
        );
        for &(n, ms) in pts {
            let (cx, cy) = (x(n as f64), y(ms));
            let title = format!("<title>{name}, N={n}: {ms:.1} ms</title>");
            let _ = if i == 1 {
                writeln!(
                    s,
                    "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"{c}\">{title}</circle>"
                )
            } else {
                writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"{c}\">{title}</rect>",
                    cx - 4.5,
                    cy - 4.5
                )
            };
        }
    }
    for (i, (name, _)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let ly = top + 10.0 + i as f64 * 22.0;
        let lx = left + pw + 16.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"2.5\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    let ly = top + 10.0 + series.len() as f64 * 22.0;
    let lx = left + pw + 16.0;
    let _ = writeln!(
        s,
        "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{}\">target: 1.5 × ideal</text>\n</svg>",
        lx + 24.0,
        lx + 30.0,
        ly + 4.0
    );
    s
}

// ------------------------------------------------------------------------------------------
// Refresh-ahead latency

/// Requests that start in the first 250 ms of a refresh-ahead run (opening connections) are
/// not counted.
const WARM_UP_NS: u64 = 250_000_000;

fn ahead(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let reps = if opts.quick { 1 } else { 3 };
    let threads = 4;
    let lifetime = Duration::from_secs(2);
    let skew = Duration::from_millis(500);
    let dur = Duration::from_millis(if opts.quick { 2200 } else { 3000 });
    server.set_keep_previous(true);
    // samples[kind] = (in window, outside) latencies in ns; per-rep p99 ratios
    let mut pooled: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); Kind::ALL.len()];
    let mut rep_ratios: Vec<Vec<f64>> = vec![Vec::new(); Kind::ALL.len()];
    let mut refreshes = vec![0u64; Kind::ALL.len()];
    let mut errors = vec![0u64; Kind::ALL.len()];
    for _ in 0..reps {
        for (ki, &kind) in Kind::ALL.iter().enumerate() {
            let sess = server.new_session(Duration::from_millis(200), Some(lifetime));
            let mut s = setup(
                server,
                contenders::api_agent(),
                &sess.live_access,
                &sess.refresh,
            );
            s.expires_in = lifetime;
            s.skew = skew;
            s.static_auth = "Bearer static".into();
            server.expire_current_in(lifetime);
            let c = contenders::build(kind, &s);
            let t0 = Instant::now();
            let errs = AtomicU64::new(0);
            let samples: Vec<Vec<(u64, u64)>> = thread::scope(|sc| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        let (c, errs) = (&c, &errs);
                        sc.spawn(move || {
                            let mut v = Vec::with_capacity(200_000);
                            loop {
                                let start = Instant::now();
                                if start - t0 >= dur {
                                    break;
                                }
                                if c.call().is_err() {
                                    errs.fetch_add(1, Relaxed);
                                }
                                let lat = start.elapsed().as_nanos() as u64;
                                v.push(((start - t0).as_nanos() as u64, lat));
                            }
                            v
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let windows: Vec<(u64, u64)> = c
                .refreshes()
                .into_iter()
                .map(|(a, b)| {
                    (
                        a.saturating_duration_since(t0).as_nanos() as u64,
                        b.saturating_duration_since(t0).as_nanos() as u64,
                    )
                })
                .collect();
            refreshes[ki] += windows.len() as u64;
            errors[ki] += errs.load(Relaxed);
            let (mut inside, mut outside) = (Vec::new(), Vec::new());
            for &(start, lat) in samples.iter().flatten() {
                if start < WARM_UP_NS {
                    continue;
                }
                // In the window: the request was in flight at some moment of the refresh.
                if windows.iter().any(|&(a, b)| start <= b && start + lat >= a) {
                    inside.push(lat);
                } else {
                    outside.push(lat);
                }
            }
            inside.sort_unstable();
            outside.sort_unstable();
            if !inside.is_empty() {
                rep_ratios[ki]
                    .push(quantile(&inside, 0.99) as f64 / quantile(&outside, 0.99) as f64);
            }
            pooled[ki].0.extend(inside);
            pooled[ki].1.extend(outside);
        }
    }
    server.set_keep_previous(false);
    let us = |ns: u64| format!("{:.0}", ns as f64 / 1000.0);
    let mut md = format!(
        "### Refresh-ahead: tokens near expiry under steady load, token endpoint 200 ms\n\n{threads} threads send requests back to back for {} s; tokens live {} s (enforced by the server, which also keeps accepting the previous token until it expires, as real servers do); refresh window {} ms before expiry (AuthClient `refresh_skew`, and the naive client's expiry check). A request is \"in the window\" if it was in flight at any moment while that contender's refresh call ran (it started before the refresh ended and ended after it started). Requests of the first 250 ms of each run (opening connections) are not counted. Latencies in µs, pooled over {reps} runs; the p99 ratio is in-window p99 / outside p99 (median of per-run ratios, each run listed). The raw client sends a token that never expires and never refreshes: its row is the reference latency.\n\n| contender | refreshes | requests in window | p50 in | p99 in | max in | p50 out | p99 out | p99 in / out | per-run ratios | failed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
        dur.as_secs_f64(),
        lifetime.as_secs(),
        skew.as_millis()
    );
    {
        let ki = 1; // AuthClient
        let (inside, outside) = &mut pooled[ki];
        inside.sort_unstable();
        outside.sort_unstable();
        headline.push(format!(
            "**Refresh-ahead** (token endpoint 200 ms, 4 threads under load): AuthClient p99 in the refresh window {} µs vs {} µs outside, ratio **{:.2}** (target ≤ 1.2); the naive and seed clients: {:.0} / {:.0} ms p99 in their window.",
            us(quantile(inside, 0.99)),
            us(quantile(outside, 0.99)),
            median(&mut rep_ratios[ki].clone()),
            {
                let v = &mut pooled[2].0;
                v.sort_unstable();
                quantile(v, 0.99) as f64 / 1e6
            },
            {
                let v = &mut pooled[3].0;
                v.sort_unstable();
                quantile(v, 0.99) as f64 / 1e6
            }
        ));
    }
    for (ki, &kind) in Kind::ALL.iter().enumerate() {
        let (inside, outside) = &mut pooled[ki];
        inside.sort_unstable();
        outside.sort_unstable();
        let ratio = median(&mut rep_ratios[ki].clone());
        let per_run: Vec<String> = rep_ratios[ki].iter().map(|r| format!("{r:.2}")).collect();
        let (p50i, p99i, maxi) = if inside.is_empty() {
            ("–".into(), "–".into(), "–".into())
        } else {
            (
                us(quantile(inside, 0.5)),
                us(quantile(inside, 0.99)),
                us(*inside.last().unwrap()),
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {p50i} | {p99i} | {maxi} | {} | {} | {} | {} | {} |",
            kind.name(),
            refreshes[ki],
            inside.len(),
            us(quantile(outside, 0.5)),
            us(quantile(outside, 0.99)),
            if ratio.is_nan() {
                "–".into()
            } else {
                format!("**{ratio:.2}**")
            },
            per_run.join(", "),
            errors[ki]
        );
    }
    md
}

// ------------------------------------------------------------------------------------------
// Memory: peak RSS with 1024 threads waiting on the gate (each contender in a child process)

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident KiB of thread stacks (anonymous 2 MiB mappings: std's default stack size) and of
/// everything else, from `/proc/self/smaps`.
fn stack_and_other_rss_kib() -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (mut stacks, mut other) = (0, 0);
    let (mut size, mut anon) = (0u64, false);
    for l in smaps.lines() {
        let kib = |l: &str, k: &str| {
            l.strip_prefix(k)
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        };
        if let Some(v) = kib(l, "Size:") {
            size = v;
        } else if let Some(v) = kib(l, "Rss:") {
            if anon && (2044..=2056).contains(&size) {
                stacks += v;
            } else {
                other += v;
            }
        } else if l
            .split_whitespace()
            .next()
            .and_then(|f| f.split_once('-'))
            .is_some_and(|(a, b)| {
                u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
            })
        {
            // A mapping header: "start-end perms offset dev inode [path]".
            anon = l.split_whitespace().nth(5).is_none();
        }
    }
    (stacks, other)
}

fn memory(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let n: usize = if opts.quick { 256 } else { 1024 };
    let reps = if opts.quick { 1 } else { 3 };
    let exe = std::env::current_exe().expect("current exe");
    // rows[kind] = per child: [VmHWM, baseline, threads, 401s, finished]
    let mut rows: Vec<Vec<Vec<u64>>> = vec![Vec::new(); Kind::ALL.len()];
    for _ in 0..reps {
        for (ki, &kind) in Kind::ALL.iter().enumerate() {
            let sess = server.new_session(Duration::from_secs(3), None);
            let out = std::process::Command::new(&exe)
                .args([
                    "--memory-child",
                    kind.id(),
                    &server.base_url(),
                    &server.token_url(),
                    &sess.stale_access,
                    &sess.refresh,
                    &n.to_string(),
                ])
                .output()
                .expect("run memory child");
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(line) = text.lines().find_map(|l| l.strip_prefix("MEM ")) else {
                eprintln!(
                    "memory child {} failed: {}",
                    kind.id(),
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            };
            let v: Vec<u64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            println!(
                "memory {:12} VmHWM={} KiB baseline={} KiB threads={} 401s={} finished={} stacks={} KiB other={} KiB",
                kind.id(),
                v[0],
                v[1],
                v[2],
                v[3],
                v[4],
                v[5],
                v[6]
            );
            rows[ki].push(v);
        }
    }
    let mut md = format!(
        "### Memory: {n} threads waiting\n\nEach contender runs in its own child process (the server and the other scenarios do not count): {n} threads each send one request with a token the API rejects; the token endpoint takes 3 s, so the threads that refresh or wait stay waiting. The raw-ureq threads take the same 401 and then park (a wait that is not a gate): the difference to that row is the cost of the gate. Once the count of 401s has settled, the child reads `VmHWM` (peak resident set since start) from `/proc/self/status`. Baseline = `VmRSS` after building the client, before the threads start. The last two columns split the resident set at that moment (from `/proc/self/smaps`) into thread stacks (anonymous 2 MiB mappings) and everything else (heap, connection buffers, code). Median of {reps} children; the naive client's threads that had not sent yet wait on its mutex and never see a 401.\n\n| contender | 401s seen | calls finished | baseline RSS | peak RSS (VmHWM) | peak − baseline | per thread | of which thread stacks (now) | rest (now) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let peak = |ki: usize| {
        let mut v: Vec<f64> = rows[ki].iter().map(|r| r[0] as f64).collect();
        median(&mut v) / 1024.0
    };
    if !rows[0].is_empty() && !rows[1].is_empty() {
        headline.push(format!(
            "**Memory**: peak RSS with {n} threads waiting on the gate {:.1} MiB, vs {:.1} MiB for raw ureq threads parked after the same 401 ({:+.1} KiB per thread).",
            peak(1),
            peak(0),
            (peak(1) - peak(0)) * 1024.0 / n as f64
        ));
    }
    for (ki, &kind) in Kind::ALL.iter().enumerate() {
        if rows[ki].is_empty() {
            continue;
        }
        let col = |i: usize| {
            let mut v: Vec<f64> = rows[ki].iter().map(|r| r[i] as f64).collect();
            median(&mut v)
        };
        let (hwm, base, seen, finished) = (col(0), col(1), col(3), col(4));
        let (stacks, other) = (col(5), col(6));
        let mib = |k: f64| format!("{:.1} MiB", k / 1024.0);
        let _ = writeln!(
            md,
            "| {} | {seen:.0} | {finished:.0} | {} | {} | {} | {:.1} KiB | {} | {} |",
            kind.name(),
            mib(base),
            mib(hwm),
            mib(hwm - base),
            (hwm - base) / n as f64,
            mib(stacks),
            mib(other)
        );
    }
    md
}

/// The child side of the memory scenario. Prints
/// `MEM <VmHWM KiB> <baseline VmRSS KiB> <threads> <401s seen> <calls finished> <stack RSS KiB>
/// <other RSS KiB>`.
fn memory_child(args: &[String]) {
    let [kind, base_url, token_url, stale, refresh, n] = args else {
        eprintln!("usage: --memory-child KIND BASE TOKEN_URL STALE REFRESH N");
        std::process::exit(2);
    };
    let kind = Kind::from_id(kind).expect("contender id");
    let n: usize = n.parse().expect("thread count");
    let s = Setup {
        base_url: base_url.clone(),
        token_url: token_url.clone(),
        api: contenders::api_agent(),
        access: stale.clone(),
        refresh: refresh.clone(),
        expires_in: Duration::from_secs(3600),
        skew: Duration::from_secs(30),
        static_auth: format!("Bearer {stale}"),
        auth_default_agent: false,
    };
    let c = contenders::build(kind, &s);
    let started = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let baseline = status_kib("VmRSS:");
    for _ in 0..n {
        let (c, started, finished) = (Arc::clone(&c), Arc::clone(&started), Arc::clone(&finished));
        thread::spawn(move || {
            started.fetch_add(1, Relaxed);
            let _ = c.call();
            if kind == Kind::Raw {
                // The same request and 401, then a wait that is not a gate.
                loop {
                    thread::park();
                }
            }
            finished.fetch_add(1, Relaxed);
        });
    }
    // Wait until every thread has started and the count of 401s has settled (threads of the
    // naive client that had not sent yet wait on its mutex and see no 401).
    let deadline = Instant::now() + Duration::from_secs(20);
    while (started.load(Relaxed) as usize) < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let settle = Instant::now();
    loop {
        let u = c.unauthorized();
        thread::sleep(Duration::from_millis(100));
        let settled =
            c.unauthorized() == u && (u as usize >= n || settle.elapsed() > Duration::from_secs(1));
        if settled || Instant::now() > deadline {
            break;
        }
    }
    thread::sleep(Duration::from_millis(200));
    let (stacks, other) = stack_and_other_rss_kib();
    println!(
        "MEM {} {} {} {} {} {} {}",
        status_kib("VmHWM:"),
        baseline,
        status_kib("Threads:"),
        c.unauthorized(),
        finished.load(Relaxed),
        stacks,
        other
    );
    std::process::exit(0);
}

// ------------------------------------------------------------------------------------------
// Allocations per request

fn alloc_scenario(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let (warm, n) = if opts.quick {
        (200, 1000)
    } else {
        (1000, 5000)
    };
    let sess = server.new_session(Duration::ZERO, None);
    let s = setup(
        server,
        contenders::api_agent(),
        &sess.live_access,
        &sess.refresh,
    );
    let mut md = format!(
        "### Allocations per request (steady state, one thread)\n\nA counting global allocator counts allocations made by the calling thread over {n} requests, after {warm} warm-up requests (the server's threads are not counted). A `realloc` counts as one allocation of the new size.\n\n| contender | allocations / request | bytes / request | vs raw ureq |\n|---|---:|---:|---:|\n"
    );
    let mut raw = (0.0, 0.0);
    for kind in Kind::ALL {
        let c = contenders::build(kind, &s);
        for _ in 0..warm {
            c.call().expect("warm-up request");
        }
        let (allocs, bytes, ()) = alloc::measure(|| {
            for _ in 0..n {
                c.call().expect("request");
            }
        });
        let (a, b) = (allocs as f64 / n as f64, bytes as f64 / n as f64);
        if kind == Kind::Raw {
            raw = (a, b);
        }
        let _ = writeln!(
            md,
            "| {} | {a:.1} | {b:.0} | {:+.1} allocations, {:+.0} bytes |",
            kind.name(),
            a - raw.0,
            b - raw.1
        );
        if kind == Kind::Auth {
            headline.push(format!(
                "**Allocations**: AuthClient {a:.1} allocations / {b:.0} bytes per request vs raw ureq {:.1} / {:.0}: {:+.1} allocations, {:+.0} bytes (where they come from: below).",
                raw.0,
                raw.1,
                a - raw.0,
                b - raw.1
            ));
        }
        if opts.alloc_sites && matches!(kind, Kind::Raw | Kind::Auth) {
            print_alloc_sites(kind, &c);
        }
    }
    md
}

/// Prints, for one request, each allocation's size and the first frames outside the
/// allocator and std (needs debug info: `CARGO_PROFILE_BENCH_DEBUG=line-tables-only`).
fn print_alloc_sites(kind: Kind, c: &Arc<dyn Contender>) {
    let traces = alloc::sites(|| c.call().expect("request"));
    println!(
        "\n== allocation sites for one {} request: {} allocations",
        kind.name(),
        traces.len()
    );
    for (size, bt) in traces {
        // Frames are "N: name" lines, each followed by "at file:line:col" lines.
        let mut frames: Vec<(String, String)> = Vec::new();
        for l in bt.lines().map(str::trim) {
            if let Some(at) = l.strip_prefix("at ") {
                if let Some(f) = frames.last_mut() {
                    if f.1.is_empty() {
                        f.1 = at.to_owned();
                    }
                }
            } else if let Some((num, name)) = l.split_once(": ") {
                if num.parse::<u32>().is_ok() {
                    frames.push((name.to_owned(), String::new()));
                }
            }
        }
        let shown: Vec<String> = frames
            .iter()
            .filter(|(_, at)| {
                !(at.is_empty()
                    || at.contains("/rustc/")
                    || at.contains("benches/gate/alloc.rs")
                    || at.contains("/library/"))
            })
            .take(3)
            .map(|(name, at)| {
                let at = at
                    .rsplit_once("/registry/src/")
                    .map(|x| x.1.split_once('/').map_or(x.1, |y| y.1))
                    .or_else(|| at.split_once("/wt-bench/").map(|x| x.1))
                    .unwrap_or(at);
                format!("{name} ({at})")
            })
            .collect();
        println!("{size:6} B  {}", shown.join("  <-  "));
    }
}

/// `--spin KIND SECS [timeout]`: one contender on the in-memory transport, one thread, for
/// SECS seconds (to run under a profiler: `perf record -g target/release/deps/gate-* --spin
/// authclient 5`). With `timeout`, the agent has a 60 s global timeout (as tokengate's default
/// agent): `strace -f -c` then shows ureq's resolver thread per request.
fn spin(args: &[String]) {
    let (kind, secs, timeout) = match args {
        [kind, secs] => (kind, secs, None),
        [kind, secs, t] if t == "timeout" => (kind, secs, Some(Duration::from_secs(60))),
        _ => {
            eprintln!("usage: --spin KIND SECS [timeout]");
            std::process::exit(2);
        }
    };
    let kind = Kind::from_id(kind).expect("contender id");
    let secs: f64 = secs.parse().expect("seconds");
    let s = Setup {
        base_url: "http://127.0.0.1:9/".into(),
        token_url: "http://127.0.0.1:9/token".into(),
        api: memtransport::agent(timeout),
        access: "at-0".into(),
        refresh: "rt-0".into(),
        expires_in: Duration::from_secs(3600),
        skew: Duration::from_secs(30),
        static_auth: "Bearer at-0".into(),
        auth_default_agent: false,
    };
    let c = contenders::build(kind, &s);
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        c.call().expect("request");
        n += 1;
    }
    println!(
        "{}: {n} requests, {:.0} ns / request",
        kind.name(),
        t.elapsed().as_nanos() as f64 / n as f64
    );
}

// ------------------------------------------------------------------------------------------
// BENCHMARKS.md

/// Replaces each `<!-- bench:NAME -->` … `<!-- /bench:NAME -->` block in BENCHMARKS.md with
/// this run's section, and copies the storm plot to docs/storm.svg.
fn write_benchmarks_md(sections: &[(String, String)], out_dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("BENCHMARKS.md");
    let Ok(mut doc) = std::fs::read_to_string(&path) else {
        eprintln!("--write: no BENCHMARKS.md at {}", path.display());
        return;
    };
    for (name, md) in sections {
        let (open, close) = (
            format!("<!-- bench:{name} -->"),
            format!("<!-- /bench:{name} -->"),
        );
        match (doc.find(&open), doc.find(&close)) {
            (Some(a), Some(b)) if a < b => {
                doc.replace_range(a + open.len()..b, &format!("\n{md}\n"));
            }
            _ => eprintln!("--write: BENCHMARKS.md has no {open} … {close} block"),
        }
    }
    std::fs::write(&path, doc).expect("write BENCHMARKS.md");
    println!("updated {}", path.display());
    if sections.iter().any(|s| s.0 == "storm") {
        std::fs::create_dir_all(root.join("docs")).expect("create docs/");
        std::fs::copy(out_dir.join("storm.svg"), root.join("docs/storm.svg"))
            .expect("copy storm.svg");
        println!("updated {}", root.join("docs/storm.svg").display());
    }
}
