//! The machine the bench runs on, and readings from `/proc`: the machine's load and CPU
//! time, the CPU time of the bench's own threads, and this process's resident memory.

use std::thread;
use std::time::SystemTime;

/// CPU ticks so far: `(busy ticks of the whole machine, steal ticks, ticks of this process
/// and its waited-for children)`, from `/proc/stat` and `/proc/self/stat`.
pub fn cpu_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    let steal = f.get(7).copied().unwrap_or(0);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: utime is the 12th, then stime,
    // cutime, cstime.
    let own = me
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    (busy, steal, own)
}

/// How busy the rest of the machine was between two [`cpu_ticks`] readings.
pub fn foreign_load(a: (u64, u64, u64), b: (u64, u64, u64), secs: f64) -> String {
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let hz = 100.0; // USER_HZ
    let capacity = secs * cores * hz;
    let foreign =
        b.0.saturating_sub(a.0)
            .saturating_sub(b.2.saturating_sub(a.2)) as f64;
    let steal = b.1.saturating_sub(a.1) as f64;
    format!(
        "other processes used {:.0} % of the machine's CPU time (hypervisor steal {:.0} %)",
        100.0 * foreign / capacity,
        100.0 * steal / capacity
    )
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn machine_info() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb as f64 / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    format!(
        "| | |\n|---|---|\n| date (UTC) | {} |\n| CPU | {cpu}, {cores} cores available |\n| memory | {mem} |\n| kernel | Linux {kernel} |\n| compiler | {rustc}, `cargo bench` (release profile) |\n| load average at start | {} |",
        utc_now(),
        loadavg()
    )
}

pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// CPU time (ns) used so far by this process's live threads named `bench-client` and
/// `srv-conn`, from `/proc/self/task/*/schedstat` (time on a CPU, in ns).
pub fn cpu_ns_by_role() -> (u64, u64) {
    let (mut client, mut server) = (0, 0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = || {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match comm.trim() {
            "bench-client" => client += ns(),
            "srv-conn" => server += ns(),
            _ => {}
        }
    }
    (client, server)
}

pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resident KiB of thread stacks (anonymous 2 MiB mappings: std's default stack size) and of
/// everything else, from `/proc/self/smaps`.
pub fn stack_and_other_rss_kib() -> (u64, u64) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (mut stacks, mut other) = (0, 0);
    let (mut size, mut anon) = (0u64, false);
    for l in smaps.lines() {
        let kib = |l: &str, k: &str| {
            l.strip_prefix(k)
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        };
        if let Some(v) = kib(l, "Size:") {
            size = v;
        } else if let Some(v) = kib(l, "Rss:") {
            if anon && (2044..=2056).contains(&size) {
                stacks += v;
            } else {
                other += v;
            }
        } else if l
            .split_whitespace()
            .next()
            .and_then(|f| f.split_once('-'))
            .is_some_and(|(a, b)| {
                u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok()
            })
        {
            // A mapping header: "start-end perms offset dev inode [path]".
            anon = l.split_whitespace().nth(5).is_none();
        }
    }
    (stacks, other)
}
