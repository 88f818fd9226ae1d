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
//! Scenarios: `ceiling`, `overhead`, `instructions`, `storm`, `ahead`, `memory`, `alloc`; and,
//! only when named, `redis` (`cargo bench --features redis --bench gate -- redis`: a session
//! in Redis against one in memory; needs `redis-server`), `kit` (the test kit: start-up,
//! stop, 1,000 servers in one process) and `browser` (the browser login, step by step).
//! Results always go to `target/tokengate-bench/` (Markdown, CSV, SVG) and to stdout.

mod alloc;
mod contenders;
mod machine;
mod memtransport;
mod report;
mod scenarios;
mod server;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use machine::{cpu_ticks, foreign_load, loadavg, machine_info};
use report::write_benchmarks_md;
#[cfg(feature = "redis")]
use scenarios::redis;
use scenarios::{
    ahead, allocations, browser, ceiling, instructions, kit, memory, overhead, spin, storm,
    storm_svg,
};
use server::Server;

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

impl Opts {
    /// The options and scenarios on the command line; all scenarios (but `redis`) if none is
    /// named. Exits on an unknown scenario.
    fn parse(args: &[String]) -> Opts {
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
                "kit" => opts.scenarios.push("kit".to_owned()),
                "browser" => opts.scenarios.push("browser".to_owned()),
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
        opts
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if child_mode(&args) {
        return;
    }
    let opts = Opts::parse(&args);

    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tokengate-bench");
    std::fs::create_dir_all(&out_dir).expect("create target/tokengate-bench");

    let machine = machine_info();
    println!("{machine}");
    let server = Server::start();
    let mut sections: Vec<(String, String)> = vec![("machine".into(), machine)];
    let started = Instant::now();
    // One line per scenario for the summary, in scenario order.
    let mut headline: Vec<String> = Vec::new();
    for s in opts.scenarios.clone() {
        let md = run_scenario(&s, &server, &opts, &out_dir, &mut headline);
        println!("{md}");
        sections.push((s, md));
    }
    let total = started.elapsed().as_secs_f64();
    println!("total: {total:.0} s");
    if opts.scenarios.len() == SCENARIOS.len() {
        let md = report::summary(&headline, total, opts.quick);
        println!("{md}");
        sections.insert(1, ("headline".into(), md));
    }

    report::write_results_md(&sections, &out_dir);
    if opts.write {
        // The redis scenario alone carries its own date and load: the machine block stays
        // the one of the full run the other sections come from.
        if opts.scenarios == ["redis"] || opts.scenarios == ["kit"] || opts.scenarios == ["browser"]
        {
            sections.retain(|(name, _)| name != "machine");
        }
        write_benchmarks_md(&sections, &out_dir);
    }
}

/// The modes in which this binary is not the bench but a child of a scenario, or a tool:
/// runs the one the first argument names and returns true; false if it names none.
fn child_mode(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some("--memory-child") => memory::child(&args[1..]),
        // `--plot CSV SVG`: redraw the storm plot from a storm.csv the bench wrote.
        Some("--plot") => storm_svg::replot(&args[1..]),
        #[cfg(feature = "redis")]
        Some("--redis-spin") => redis::spin_child(&args[1..]),
        Some("--instructions-child") => instructions::child(&args[1..]),
        Some("--refresh-instructions-child") => instructions::refresh_child(&args[1..]),
        Some("--spin") => spin::run(&args[1..]),
        _ => return false,
    }
    true
}

/// Runs scenario `s` and returns its section, with a footnote: how long it took and how busy
/// the machine was meanwhile.
fn run_scenario(
    s: &str,
    server: &Server,
    opts: &Opts,
    out_dir: &Path,
    headline: &mut Vec<String>,
) -> String {
    let load_before = loadavg();
    let ticks_before = cpu_ticks();
    let t = Instant::now();
    let mut md = match s {
        "ceiling" => ceiling::scenario(server, opts),
        "overhead" => overhead::scenario(server, opts, headline),
        "instructions" => instructions::scenario(opts.quick, out_dir, headline),
        "storm" => storm::scenario(server, opts, out_dir, headline),
        "ahead" => ahead::scenario(server, opts, headline),
        "memory" => memory::scenario(server, opts, headline),
        "alloc" => allocations::scenario(server, opts, headline),
        #[cfg(feature = "redis")]
        "redis" => redis::scenario(server, opts),
        "kit" => kit::scenario(opts),
        "browser" => browser::scenario(opts),
        _ => unreachable!(),
    };
    let secs = t.elapsed().as_secs_f64();
    let _ = writeln!(
        md,
        "\n<sub>Scenario `{s}` took {secs:.0} s; meanwhile {}; load average before / after (counting the bench's own threads): {load_before} / {}.</sub>",
        foreign_load(ticks_before, cpu_ticks(), secs),
        loadavg()
    );
    md
}
