//! The test kit, `tokengate::testing`: how long a `TestServer` takes to start (to the first
//! answered request) and to stop, and what 1,000 servers in one process cost (time, threads,
//! memory, and whether every thread is gone after they are dropped).
//!
//! Run it by name (`cargo bench --bench gate -- kit`); not part of the default run.

use std::fmt::Write as _;
use std::time::Instant;

use tokengate::testing::TestServer;

use crate::machine::status_kib;
use crate::report::quantile;
use crate::Opts;

fn threads() -> u64 {
    status_kib("Threads:")
}

fn agent() -> tokengate::ureq::Agent {
    tokengate::ureq::Agent::config_builder()
        .proxy(None)
        .build()
        .into()
}

/// One discovery-document GET: the first request a test makes.
fn first_request(agent: &tokengate::ureq::Agent, server: &TestServer) {
    let resp = agent
        .get(&server.discovery_url())
        .call()
        .expect("kit answers");
    assert_eq!(resp.status(), 200);
}

/// Microseconds, as "median / p90 / max".
fn spread(mut us: Vec<u64>) -> String {
    us.sort_unstable();
    let max = us.last().copied().unwrap_or(0);
    format!("{} / {} / {}", quantile(&us, 0.5), quantile(&us, 0.9), max)
}

pub fn scenario(opts: &Opts) -> String {
    let runs = if opts.quick { 50 } else { 500 };
    let agent = agent();
    let (mut start, mut ready, mut stop) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let server = TestServer::start();
        start.push(t.elapsed().as_micros() as u64);
        first_request(&agent, &server);
        ready.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        drop(server);
        stop.push(t.elapsed().as_micros() as u64);
    }
    let mut md = String::from(
        "### The test kit: start, stop, 1,000 servers in one process\n\n\
         `TestServer::start()` binds 127.0.0.1 and spawns its accept thread; \"ready\" adds the \
         first request (a GET of the discovery document on a new connection); \"stop\" is \
         `drop`, which joins every thread of the server (here the accept thread and the \
         connection's) and closes the port. Microseconds, median / p90 / max of ",
    );
    let _ = writeln!(md, "{runs} servers started one after another.\n");
    md.push_str("| start | ready (start + first request) | stop (drop) |\n|---:|---:|---:|\n");
    let _ = writeln!(
        md,
        "| {} | {} | {} |\n",
        spread(start),
        spread(ready),
        spread(stop)
    );
    md.push_str(&thousand(&agent));
    md
}

/// 1,000 servers side by side: started, each serving one login's API call, dropped.
fn thousand(agent: &tokengate::ureq::Agent) -> String {
    const N: usize = 1000;
    let (threads_before, rss_before) = (threads(), status_kib("VmRSS:"));
    let t = Instant::now();
    let servers: Vec<TestServer> = (0..N).map(|_| TestServer::start()).collect();
    let started = t.elapsed();
    let (threads_up, rss_up) = (threads(), status_kib("VmRSS:"));
    let t = Instant::now();
    for server in &servers {
        let tokens = server.login();
        let bearer = format!("Bearer {}", tokens.access_token().secret());
        let resp = agent
            .get(&server.api_url())
            .header("authorization", bearer)
            .call();
        assert_eq!(resp.expect("kit answers").status(), 200);
    }
    let served = t.elapsed();
    let calls: u64 = servers.iter().map(TestServer::api_requests).sum();
    let threads_serving = threads();
    let t = Instant::now();
    drop(servers);
    let dropped = t.elapsed();
    let (threads_after, rss_after) = (threads(), status_kib("VmRSS:"));
    let mut md = format!(
        "{N} servers in one process: started in {:.0} ms ({:.0} µs each); one API call to each \
         ({calls} answered 200) in {:.0} ms; all dropped in {:.0} ms.\n\n",
        started.as_secs_f64() * 1e3,
        started.as_secs_f64() * 1e6 / N as f64,
        served.as_secs_f64() * 1e3,
        dropped.as_secs_f64() * 1e3,
    );
    md.push_str("| | before | 1,000 started | serving | after drop |\n|---|---:|---:|---:|---:|\n");
    let _ = writeln!(
        md,
        "| threads of the process | {threads_before} | {threads_up} | {threads_serving} | {threads_after} |"
    );
    let _ = writeln!(
        md,
        "| resident memory (MiB) | {:.1} | {:.1} | | {:.1} |",
        rss_before as f64 / 1024.0,
        rss_up as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    md
}
