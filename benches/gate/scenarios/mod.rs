//! The scenarios, one file each, and what several of them share: a `Setup` against the bench
//! server, and the throughput measurement.

pub mod ahead;
pub mod allocations;
pub mod browser;
pub mod ceiling;
pub mod instructions;
pub mod kit;
pub mod memory;
pub mod overhead;
#[cfg(feature = "redis")]
pub mod redis;
pub mod spin;
pub mod storm;
pub mod storm_svg;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::contenders::Setup;
use crate::machine::cpu_ns_by_role;
use crate::server::Server;

/// A counter on its own cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct Padded(pub AtomicU64);

pub fn setup(server: &Server, api: tokengate::ureq::Agent, access: &str, refresh: &str) -> Setup {
    Setup {
        base_url: server.base_url(),
        token_url: server.token_url(),
        api,
        access: access.to_owned(),
        refresh: refresh.to_owned(),
        expires_in: Duration::from_secs(3600),
        skew: Duration::from_secs(30),
        static_auth: format!("Bearer {access}"),
        auth_default_agent: false,
    }
}

/// One throughput measurement.
pub struct Throughput {
    pub rps: f64,
    pub errors: u64,
    /// CPU time per request of the calling threads, in µs.
    pub client_us: f64,
    /// CPU time per request of the server's connection threads, in µs.
    pub server_us: f64,
}

/// Requests per second of `call` on `threads` threads, after `warm` of unmeasured calls.
pub fn throughput(
    threads: usize,
    warm: Duration,
    dur: Duration,
    call: &(dyn Fn() -> Result<(), String> + Sync),
) -> Throughput {
    let stop = AtomicBool::new(false);
    let errors = AtomicU64::new(0);
    let counts: Vec<Padded> = (0..threads).map(|_| Padded::default()).collect();
    let barrier = Barrier::new(threads + 1);
    let sum = || counts.iter().map(|c| c.0.load(Relaxed)).sum::<u64>();
    thread::scope(|s| {
        for c in &counts {
            let (stop, errors, barrier) = (&stop, &errors, &barrier);
            thread::Builder::new()
                .name("bench-client".into())
                .spawn_scoped(s, move || {
                    barrier.wait();
                    while !stop.load(Relaxed) {
                        match call() {
                            Ok(()) => c.0.fetch_add(1, Relaxed),
                            Err(_) => errors.fetch_add(1, Relaxed),
                        };
                    }
                })
                .expect("spawn client thread");
        }
        barrier.wait();
        thread::sleep(warm);
        let (c1, t1, cpu1) = (sum(), Instant::now(), cpu_ns_by_role());
        thread::sleep(dur);
        let (c2, t2, cpu2) = (sum(), Instant::now(), cpu_ns_by_role());
        stop.store(true, Relaxed);
        let n = (c2 - c1).max(1) as f64;
        Throughput {
            rps: (c2 - c1) as f64 / (t2 - t1).as_secs_f64(),
            errors: errors.load(Relaxed),
            client_us: cpu2.0.saturating_sub(cpu1.0) as f64 / n / 1e3,
            server_us: cpu2.1.saturating_sub(cpu1.1) as f64 / n / 1e3,
        }
    })
}
