//! Storm: N threads hit 401 at once, the token endpoint answers in 50 ms.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokengate::AuthServer;

use super::setup;
use super::storm_svg::storm_svg;
use crate::contenders::{self, Kind, Oracle};
use crate::report::median;
use crate::server::Server;
use crate::Opts;

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

pub fn scenario(
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
    let (runs, plain) = measure(server, opts, ns, reps, &who);
    let (mut md, csv) = table(ns, &who, &runs, &plain, reps);
    headline.push(headline_line(ns, &runs, &plain));
    let _ = writeln!(md, "\nPer-run counts are listed run by run. \"new connections\" counts connections the server accepted during the storm (the token agent's first call opens one).\n\n![storm completion time vs N](docs/storm.svg)");
    std::fs::write(out_dir.join("storm.csv"), &csv).expect("write storm.csv");
    let series = series(ns, &who, &runs);
    std::fs::write(out_dir.join("storm.svg"), storm_svg(&series)).expect("write storm.svg");
    md
}

/// The storm's runs, `reps` rounds over `ns`: returns `runs[who][n]` and, for the plain
/// reference, `plain[n]` (seconds of its runs). With `--storm-n`, only the reference rows
/// and AuthClient run.
fn measure(
    server: &Server,
    opts: &Opts,
    ns: &[usize],
    reps: usize,
    who: &[(Option<Kind>, &str)],
) -> (Vec<Vec<Vec<StormRun>>>, Vec<Vec<f64>>) {
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
    (runs, plain)
}

/// The median of `f` over runs `v`.
fn med(v: &[StormRun], f: fn(&StormRun) -> f64) -> f64 {
    let mut x: Vec<f64> = v.iter().map(f).collect();
    median(&mut x)
}

/// The second reference at `ns[ni]`: the plain requests' median time plus the token
/// endpoint's delay.
fn plain_ref(plain: &[Vec<f64>], ni: usize) -> f64 {
    median(&mut plain[ni].clone()) + STORM_TOKEN_DELAY.as_secs_f64()
}

/// The storm's Markdown table and its CSV.
fn table(
    ns: &[usize],
    who: &[(Option<Kind>, &str)],
    runs: &[Vec<Vec<StormRun>>],
    plain: &[Vec<f64>],
    reps: usize,
) -> (String, String) {
    let mut md = format!(
        "### Storm: N threads hit 401 at once, token endpoint 50 ms\n\nEach run: a fresh session whose access token the API rejects (the client believes it valid, so every thread's first request draws a 401), the pool pre-warmed with N connections, N threads released by a `Barrier`. Time = from release until the last request completes; median of {reps} runs (fewer when the runs of a cell add up to over 30 s). \"ideal\" is raw ureq with perfect coordination: one 401 round, a barrier, one refresh while the rest wait at a barrier, one retry round. Ratio = time / ideal time. \"plain + 50 ms\" is the issue-14 reference: the same N threads on a fresh agent (pool warmed alike) each making two plain requests with a valid token (the storm's 2 × N requests without any 401 or coordination; its time is the first row of each N), plus the token endpoint's 50 ms; ratio = time / that.\n\n| N | contender | time (ms) | ratio to ideal | ratio to plain + 50 ms | refresh calls | failed requests | new connections | refresh-token reuse |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let mut csv = String::from(
        "n,contender,runs,median_ms,ratio_to_ideal,refresh_calls,failed,ratio_to_plain\n",
    );
    for (ni, &n) in ns.iter().enumerate() {
        let ideal = med(&runs[0][ni], |r| r.secs);
        let reference = plain_ref(plain, ni);
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
    (md, csv)
}

/// The scenario's line in the summary.
fn headline_line(ns: &[usize], runs: &[Vec<Vec<StormRun>>], plain: &[Vec<f64>]) -> String {
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
                med(v, |r| r.secs) / plain_ref(plain, ni)
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
    format!(
        "**Storm** (N threads, one 401 each, token endpoint 50 ms), AuthClient: {} (targets: 1 refresh, ratio to the ideal ≤ 1.5, to plain + 50 ms ≤ 1.2). The naive Mutex client made up to {} refresh calls at N = {}.",
        auth_cells.join("; "),
        naive_max.join(" / "),
        ns.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" / ")
    )
}

/// The plot's lines: the median time at each N of each contender that ran at every N.
fn series(
    ns: &[usize],
    who: &[(Option<Kind>, &str)],
    runs: &[Vec<Vec<StormRun>>],
) -> Vec<(String, Vec<(usize, f64)>)> {
    who.iter()
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
        .collect()
}
