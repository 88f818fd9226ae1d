//! The browser login (authorization code + PKCE over a loopback listener) against the test
//! kit's server, the browser played by `TestServer::open_in_browser`: how long each step
//! takes, whether the listener's threads are all gone after each login, and 100 logins at
//! once in one process.
//!
//! Run it by name (`cargo bench --bench gate -- browser`); not part of the default run.

use std::fmt::Write as _;
use std::time::Instant;

use tokengate::login::BrowserFlow;
use tokengate::testing::TestServer;

use crate::machine::status_kib;
use crate::report::quantile;
use crate::Opts;

/// Microseconds, as "median / p90 / max".
fn spread(mut us: Vec<u64>) -> String {
    us.sort_unstable();
    let max = us.last().copied().unwrap_or(0);
    format!("{} / {} / {}", quantile(&us, 0.5), quantile(&us, 0.9), max)
}

fn flow(server: &TestServer) -> BrowserFlow {
    let agent: tokengate::ureq::Agent = tokengate::ureq::Agent::config_builder()
        .proxy(None)
        .build()
        .into();
    server
        .auth_server()
        .agent(agent)
        .browser_flow()
        .expect("the kit has an authorization endpoint")
        .open_browser(false)
}

pub fn scenario(opts: &Opts) -> String {
    let runs = if opts.quick { 50 } else { 500 };
    let server = TestServer::start();
    // One login first: the kit's own thread for the kept-alive connection to its token
    // endpoint is then counted in the baseline, not as the listener's.
    let warm = flow(&server).start().expect("start");
    server
        .open_in_browser(warm.authorization_url())
        .expect("the listener answers");
    warm.wait().expect("tokens");
    let threads_before = status_kib("Threads:");
    let (mut start, mut browser, mut exchange, mut total) = (vec![], vec![], vec![], vec![]);
    let mut threads_left = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let pending = flow(&server).start().expect("start");
        start.push(t.elapsed().as_micros() as u64);
        let t1 = Instant::now();
        let status = server
            .open_in_browser(pending.authorization_url())
            .expect("the listener answers");
        assert_eq!(status, 200);
        browser.push(t1.elapsed().as_micros() as u64);
        let t2 = Instant::now();
        pending.wait().expect("tokens");
        exchange.push(t2.elapsed().as_micros() as u64);
        total.push(t.elapsed().as_micros() as u64);
        threads_left = threads_left.max(status_kib("Threads:").saturating_sub(threads_before));
    }
    let mut md = String::from(
        "### The browser login: one login, step by step; 100 at once\n\n\
         Against the test kit's server on loopback, the browser played by \
         `TestServer::open_in_browser` (a GET of the authorization URL, whose 302 is followed \
         to the listener). \"start\" is `BrowserFlow::start` (32 + 32 random bytes from the OS, \
         SHA-256, bind 127.0.0.1, the listener's accept thread); \"browser\" is the \
         authorization endpoint and the listener's success page; \"wait\" takes the callback \
         from the listener, stops it (threads joined) and exchanges the code at the token \
         endpoint. Microseconds, median / p90 / max of ",
    );
    let _ = writeln!(md, "{runs} logins one after another.\n");
    md.push_str("| start | browser (authorize + callback page) | wait (stop listener + code exchange) | whole login |\n|---:|---:|---:|---:|\n");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} |\n",
        spread(start),
        spread(browser),
        spread(exchange),
        spread(total)
    );
    let _ = writeln!(
        md,
        "Threads of the process above the start after each login (the listener's all joined): at most {threads_left}.\n"
    );
    md.push_str(&parallel(&server));
    md
}

/// 100 logins at once, each on its own free port, each browser sent back to its own listener.
fn parallel(server: &TestServer) -> String {
    const N: usize = 100;
    let before = server.token_calls().len();
    let threads_before = status_kib("Threads:");
    let t = Instant::now();
    let tokens: Vec<String> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    let pending = flow(server).start().expect("start");
                    server
                        .open_in_browser(pending.authorization_url())
                        .expect("the listener answers");
                    let tokens = pending.wait().expect("tokens");
                    tokens.access_token().secret().to_owned()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("login"))
            .collect()
    });
    let took = t.elapsed();
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    let exchanges = server.token_calls().len() - before;
    let threads_after = status_kib("Threads:");
    format!(
        "{N} logins at once in one process: all done in {:.0} ms; {} distinct access tokens, {exchanges} code exchanges, {} refresh tokens presented twice; threads of the process {threads_before} before, {threads_after} after.\n",
        took.as_secs_f64() * 1e3,
        distinct.len(),
        server.presented_twice()
    )
}
