//! Ceiling: is the loopback server the bottleneck?

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use super::{setup, throughput, Padded};
use crate::contenders::{self, Kind};
use crate::report::{kreq, median};
use crate::server::{self, Server};
use crate::Opts;

pub fn scenario(server: &Server, opts: &Opts) -> String {
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
