//! Allocations per request.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::setup;
use crate::alloc;
use crate::contenders::{self, Contender, Kind};
use crate::server::Server;
use crate::Opts;

pub fn scenario(server: &Server, opts: &Opts, headline: &mut Vec<String>) -> String {
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
