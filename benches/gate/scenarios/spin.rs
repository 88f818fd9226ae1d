//! `--spin`: one contender in a loop, for a profiler.

use std::time::{Duration, Instant};

use crate::contenders::{self, Kind, Setup};
use crate::memtransport;

/// `--spin KIND SECS [timeout]`: one contender on the in-memory transport, one thread, for
/// SECS seconds (to run under a profiler: `perf record -g target/release/deps/gate-* --spin
/// authclient 5`). With `timeout`, the agent has a 60 s global timeout (as tokengate's default
/// agent): `strace -f -c` then shows ureq's resolver thread per request.
pub fn run(args: &[String]) {
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
