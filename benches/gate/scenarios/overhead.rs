//! Overhead: steady-state throughput.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{setup, throughput};
use crate::contenders::{self, Contender, Kind, Setup};
use crate::memtransport;
use crate::report::{kreq, median, ratio_cells};
use crate::server::{Server, Session};
use crate::Opts;

/// The thread counts of every table.
const THREADS: [usize; 3] = [1, 4, 16];

pub fn scenario(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let (reps, dur) = if opts.quick {
        (1, Duration::from_millis(200))
    } else {
        (9, Duration::from_millis(250))
    };
    let warm = Duration::from_millis(100);
    let sess = server.new_session(Duration::ZERO, None);
    let rows = rows(server, &sess);
    let mut net = on_sockets(&rows, reps, warm, dur);
    let mut md = throughput_table(&rows, &mut net, reps, warm, dur);
    let extra = cpu_table(&mut md, &rows, &mut net);
    // The same four contenders with every request answered in memory: no I/O at all.
    let mem_rows = in_memory_rows(server, &sess);
    let mut mem = in_memory(&mem_rows, reps, warm, dur);
    in_memory_table(&mut md, &mut mem);

    // One thread, in memory, in short pairs: each contender right next to raw ureq, many
    // times, so drifts in the machine's speed cancel out of the paired differences.
    let (pairs, slice) = if opts.quick {
        (5, Duration::from_millis(20))
    } else {
        (41, Duration::from_millis(50))
    };
    let (mut raw_ns, mut diffs) = paired(&mem_rows, pairs, slice);
    let (raw_med, mem_extra) = paired_table(&mut md, pairs, slice, &mut raw_ns, &mut diffs);
    let errors = net.errors + mem.errors;
    let _ = writeln!(md, "\nFailed requests during the runs: {errors}.");
    headline.push(headline_line(&mut net, &extra, &mem_extra, raw_med));
    md
}

/// The rows of the loopback tables: the four contenders on one agent, then raw ureq and
/// AuthClient with the settings of AuthClient's default agent, then raw ureq on ureq's
/// default pool without and with a global timeout.
fn rows(server: &Server, sess: &Session) -> Vec<(String, Arc<dyn Contender>)> {
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
    rows
}

/// The rows' interleaved rounds against the loopback server.
struct OnSockets {
    /// `[row][threads]` = per round: req/s, client CPU µs/request, server CPU µs/request.
    results: Vec<Vec<Vec<f64>>>,
    client_cpu: Vec<Vec<Vec<f64>>>,
    server_cpu: Vec<Vec<Vec<f64>>>,
    /// `[threads]` = per round: AuthClient / raw ureq on the same agent (rows 1 and 0), and
    /// with the default agent settings (rows 5 and 4).
    ratios: Vec<Vec<f64>>,
    default_ratios: Vec<Vec<f64>>,
    errors: u64,
}

fn on_sockets(
    rows: &[(String, Arc<dyn Contender>)],
    reps: usize,
    warm: Duration,
    dur: Duration,
) -> OnSockets {
    let threads_list = THREADS;
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
    OnSockets {
        results,
        client_cpu,
        server_cpu,
        ratios,
        default_ratios,
        errors,
    }
}

/// The requests-per-second table and its two ratio rows.
fn throughput_table(
    rows: &[(String, Arc<dyn Contender>)],
    net: &mut OnSockets,
    reps: usize,
    warm: Duration,
    dur: Duration,
) -> String {
    let OnSockets {
        results,
        ratios,
        default_ratios,
        ..
    } = net;
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
        ("**AuthClient / raw**, same agent", ratios),
        ("AuthClient / raw, default agent settings", default_ratios),
    ] {
        let cells = ratio_cells(ratios);
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    md
}

/// The CPU-time table of the first four rows; returns its last row's cells (AuthClient's
/// extra client CPU per request), for the headline.
fn cpu_table(
    md: &mut String,
    rows: &[(String, Arc<dyn Contender>)],
    net: &mut OnSockets,
) -> Vec<String> {
    let threads_list = THREADS;
    let OnSockets {
        client_cpu,
        server_cpu,
        ..
    } = net;
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
    extra
}

/// The four contenders on an agent whose transport answers every request in memory.
fn in_memory_rows(server: &Server, sess: &Session) -> Vec<Arc<dyn Contender>> {
    let mem = Setup {
        base_url: "http://127.0.0.1:9/".into(),
        ..setup(
            server,
            memtransport::agent(None),
            &sess.live_access,
            &sess.refresh,
        )
    };
    Kind::ALL
        .iter()
        .map(|&k| contenders::build(k, &mem))
        .collect()
}

/// The in-memory rows' interleaved rounds.
struct InMemory {
    /// `[row][threads]` = per round: req/s.
    results: Vec<Vec<Vec<f64>>>,
    /// `[threads]` = per round: AuthClient / raw ureq.
    ratios: Vec<Vec<f64>>,
    errors: u64,
}

fn in_memory(
    mem_rows: &[Arc<dyn Contender>],
    reps: usize,
    warm: Duration,
    dur: Duration,
) -> InMemory {
    let threads_list = THREADS;
    let mut errors = 0;
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
    InMemory {
        results: mem_results,
        ratios: mem_ratios,
        errors,
    }
}

/// The in-memory requests-per-second table and its ratio row.
fn in_memory_table(md: &mut String, mem: &mut InMemory) {
    let InMemory {
        results: mem_results,
        ratios: mem_ratios,
        ..
    } = mem;
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
    let cells = ratio_cells(mem_ratios);
    let _ = writeln!(
        md,
        "| **AuthClient / raw**, in memory | {} |",
        cells.join(" | ")
    );
}

/// Nanoseconds per call of `c`, calling it back to back for `d`.
fn ns_per_call(c: &Arc<dyn Contender>, d: Duration) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        let _ = c.call();
        n += 1;
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// One thread, `pairs` rounds of `slice` per in-memory row, each round in a different order
/// (after 100 ms of each row unmeasured). Returns raw ureq's ns per request of each round and,
/// per row, the per-round differences to it.
fn paired(
    mem_rows: &[Arc<dyn Contender>],
    pairs: usize,
    slice: Duration,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    for c in mem_rows {
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
    (raw_ns, diffs)
}

/// The paired in-memory table; returns raw ureq's median ns per request and each row's
/// median extra ns.
fn paired_table(
    md: &mut String,
    pairs: usize,
    slice: Duration,
    raw_ns: &mut [f64],
    diffs: &mut [Vec<f64>],
) -> (f64, Vec<f64>) {
    let raw_med = median(raw_ns);
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
    (raw_med, mem_extra)
}

/// The scenario's line in the summary.
fn headline_line(net: &mut OnSockets, extra: &[String], mem_extra: &[f64], raw_med: f64) -> String {
    let OnSockets {
        results,
        ratios,
        default_ratios,
        ..
    } = net;
    let m: Vec<String> = ratios
        .iter_mut()
        .map(|v| format!("{:.3}", median(v)))
        .collect();
    let d: Vec<String> = default_ratios
        .iter_mut()
        .map(|v| format!("{:.3}", median(v)))
        .collect();
    let raw_rps: Vec<String> = results[0].iter_mut().map(|v| kreq(median(v))).collect();
    format!(
        "**Overhead** (valid token, AuthClient / raw ureq on the same agent) at 1 / 4 / 16 threads: **{}** (target ≥ 0.97; raw ureq: {} req/s); AuthClient's extra client CPU per request: {}. Without any I/O (in-memory transport) AuthClient adds {:.0} ns to ureq's {:.0} ns per request. With the default agents of both (tokengate's settings): {}.",
        m.join(" / "),
        raw_rps.join(" / "),
        extra.join(" / "),
        mem_extra[1],
        raw_med,
        d.join(" / ")
    )
}
