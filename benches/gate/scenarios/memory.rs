//! Memory: peak RSS with 1024 threads waiting on the gate (each contender in a child process).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::contenders::{self, Contender, Kind, Setup};
use crate::machine::{stack_and_other_rss_kib, status_kib};
use crate::report::median;
use crate::server::Server;
use crate::Opts;

pub fn scenario(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
    let n: usize = if opts.quick { 256 } else { 1024 };
    let reps = if opts.quick { 1 } else { 3 };
    let exe = std::env::current_exe().expect("current exe");
    // rows[kind] = per child: [VmHWM, baseline, threads, 401s, finished]
    let mut rows: Vec<Vec<Vec<u64>>> = vec![Vec::new(); Kind::ALL.len()];
    for _ in 0..reps {
        for (ki, &kind) in Kind::ALL.iter().enumerate() {
            let Some(v) = run_child(server, &exe, kind, n) else {
                continue;
            };
            rows[ki].push(v);
        }
    }
    let mut md = format!(
        "### Memory: {n} threads waiting\n\nEach contender runs in its own child process (the server and the other scenarios do not count): {n} threads each send one request with a token the API rejects; the token endpoint takes 3 s, so the threads that refresh or wait stay waiting. The raw-ureq threads take the same 401 and then park (a wait that is not a gate): the difference to that row is the cost of the gate. Once the count of 401s has settled, the child reads `VmHWM` (peak resident set since start) from `/proc/self/status`. Baseline = `VmRSS` after building the client, before the threads start. The last two columns split the resident set at that moment (from `/proc/self/smaps`) into thread stacks (anonymous 2 MiB mappings) and everything else (heap, connection buffers, code). Median of {reps} children; the naive client's threads that had not sent yet wait on its mutex and never see a 401.\n\n| contender | 401s seen | calls finished | baseline RSS | peak RSS (VmHWM) | peak − baseline | per thread | of which thread stacks (now) | rest (now) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    if !rows[0].is_empty() && !rows[1].is_empty() {
        headline.push(headline_line(&rows, n));
    }
    table_rows(&mut md, &rows, n);
    md
}

/// One child process for contender `kind` with `n` threads; its `MEM` line's numbers
/// (printed), or `None` if it failed.
fn run_child(server: &Server, exe: &Path, kind: Kind, n: usize) -> Option<Vec<u64>> {
    let sess = server.new_session(Duration::from_secs(3), None);
    let out = std::process::Command::new(exe)
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
        return None;
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
    Some(v)
}

/// Peak RSS in MiB, the median of contender `ki`'s children.
fn peak(rows: &[Vec<Vec<u64>>], ki: usize) -> f64 {
    let mut v: Vec<f64> = rows[ki].iter().map(|r| r[0] as f64).collect();
    median(&mut v) / 1024.0
}

/// The scenario's line in the summary.
fn headline_line(rows: &[Vec<Vec<u64>>], n: usize) -> String {
    format!(
        "**Memory**: peak RSS with {n} threads waiting on the gate {:.1} MiB, vs {:.1} MiB for raw ureq threads parked after the same 401 ({:+.1} KiB per thread).",
        peak(rows, 1),
        peak(rows, 0),
        (peak(rows, 1) - peak(rows, 0)) * 1024.0 / n as f64
    )
}

/// One table row per contender that ran.
fn table_rows(md: &mut String, rows: &[Vec<Vec<u64>>], n: usize) {
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
}

/// The child side of the memory scenario. Prints
/// `MEM <VmHWM KiB> <baseline VmRSS KiB> <threads> <401s seen> <calls finished> <stack RSS KiB>
/// <other RSS KiB>`.
pub fn child(args: &[String]) {
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
    wait_until_settled(&c, &started, n);
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

/// Waits until every thread has started and the count of 401s has settled (threads of the
/// naive client that had not sent yet wait on its mutex and see no 401), for at most 20 s.
fn wait_until_settled(c: &Arc<dyn Contender>, started: &AtomicU64, n: usize) {
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
}
