//! Refresh-ahead latency.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use super::setup;
use crate::contenders::{self, Kind};
use crate::report::{median, quantile};
use crate::server::Server;
use crate::Opts;

/// Requests that start in the first 250 ms of a refresh-ahead run (opening connections) are
/// not counted.
const WARM_UP_NS: u64 = 250_000_000;

pub fn scenario(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let reps = if opts.quick { 1 } else { 3 };
    let threads = 4;
    let lifetime = Duration::from_secs(2);
    let skew = Duration::from_millis(500);
    let dur = Duration::from_millis(if opts.quick { 2200 } else { 3000 });
    server.set_keep_previous(true);
    let mut p = measure(server, reps, threads, lifetime, skew, dur);
    server.set_keep_previous(false);
    let mut md = format!(
        "### Refresh-ahead: tokens near expiry under steady load, token endpoint 200 ms\n\n{threads} threads send requests back to back for {} s; tokens live {} s (enforced by the server, which also keeps accepting the previous token until it expires, as real servers do); refresh window {} ms before expiry (AuthClient `refresh_skew`, and the naive client's expiry check). A request is \"in the window\" if it was in flight at any moment while that contender's refresh call ran (it started before the refresh ended and ended after it started). Requests of the first 250 ms of each run (opening connections) are not counted. Latencies in µs, pooled over {reps} runs; the p99 ratio is in-window p99 / outside p99 (median of per-run ratios, each run listed). The raw client sends a token that never expires and never refreshes: its row is the reference latency.\n\n| contender | refreshes | requests in window | p50 in | p99 in | max in | p50 out | p99 out | p99 in / out | per-run ratios | failed |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
        dur.as_secs_f64(),
        lifetime.as_secs(),
        skew.as_millis()
    );
    headline.push(headline_line(&mut p));
    table_rows(&mut md, &mut p);
    md
}

/// The runs of every contender, `[kind]`.
struct Pooled {
    /// (in window, outside) latencies in ns, of all runs.
    pooled: Vec<(Vec<u64>, Vec<u64>)>,
    /// Per run, p99 in the window / p99 outside.
    rep_ratios: Vec<Vec<f64>>,
    refreshes: Vec<u64>,
    errors: Vec<u64>,
}

/// `reps` rounds of one run per contender.
fn measure(
    server: &Server,
    reps: usize,
    threads: usize,
    lifetime: Duration,
    skew: Duration,
    dur: Duration,
) -> Pooled {
    // samples[kind] = (in window, outside) latencies in ns; per-rep p99 ratios
    let mut pooled: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); Kind::ALL.len()];
    let mut rep_ratios: Vec<Vec<f64>> = vec![Vec::new(); Kind::ALL.len()];
    let mut refreshes = vec![0u64; Kind::ALL.len()];
    let mut errors = vec![0u64; Kind::ALL.len()];
    for _ in 0..reps {
        for (ki, &kind) in Kind::ALL.iter().enumerate() {
            let r = run(server, kind, threads, lifetime, skew, dur);
            refreshes[ki] += r.windows.len() as u64;
            errors[ki] += r.errors;
            let (inside, outside) = in_and_out(&r.samples, &r.windows);
            if !inside.is_empty() {
                rep_ratios[ki]
                    .push(quantile(&inside, 0.99) as f64 / quantile(&outside, 0.99) as f64);
            }
            pooled[ki].0.extend(inside);
            pooled[ki].1.extend(outside);
        }
    }
    Pooled {
        pooled,
        rep_ratios,
        refreshes,
        errors,
    }
}

/// One run of one contender.
struct Run {
    /// Per thread, each request's (start, latency) in ns since the run's start.
    samples: Vec<Vec<(u64, u64)>>,
    /// The contender's refresh calls, (start, end) in ns since the run's start.
    windows: Vec<(u64, u64)>,
    /// Failed requests.
    errors: u64,
}

/// One run of contender `kind`: `threads` threads send requests back to back for `dur` on a
/// fresh session whose tokens live `lifetime`.
fn run(
    server: &Server,
    kind: Kind,
    threads: usize,
    lifetime: Duration,
    skew: Duration,
    dur: Duration,
) -> Run {
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
    Run {
        samples,
        windows,
        errors: errs.load(Relaxed),
    }
}

/// The latencies of the requests in flight during a refresh window and of the others, each
/// sorted; requests of the warm-up are left out.
fn in_and_out(samples: &[Vec<(u64, u64)>], windows: &[(u64, u64)]) -> (Vec<u64>, Vec<u64>) {
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
    (inside, outside)
}

/// Microseconds, from ns.
fn us(ns: u64) -> String {
    format!("{:.0}", ns as f64 / 1000.0)
}

/// The scenario's line in the summary.
fn headline_line(p: &mut Pooled) -> String {
    let Pooled {
        pooled, rep_ratios, ..
    } = p;
    let ki = 1; // AuthClient
    let (inside, outside) = &mut pooled[ki];
    inside.sort_unstable();
    outside.sort_unstable();
    format!(
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
    )
}

/// One table row per contender.
fn table_rows(md: &mut String, p: &mut Pooled) {
    let Pooled {
        pooled,
        rep_ratios,
        refreshes,
        errors,
    } = p;
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
}
