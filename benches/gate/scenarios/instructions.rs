//! Instructions per request, counted by callgrind: deterministic where wall time on a shared
//! 2-core machine is not.
//!
//! Each row runs a child process of this binary (`--instructions-child KIND AGENT N`) under
//! `valgrind --tool=callgrind --separate-threads=yes` twice, with N = 200 and N = 1,400
//! sequential requests (one thread, a valid token, after the same warm-up). The difference of
//! the two counts divided by 1,200 is the marginal cost of one request: start-up, building the
//! client, the server's start and the warm-up cancel out.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::contenders::{self, Contender, Kind, Setup};
use crate::memtransport;
use crate::server::Server;

/// The two request counts; their difference is what a row reports per request.
const COUNTS: [u64; 2] = [200, 1400];
/// Requests made before counting starts (opening the connection, first-use costs).
const WARM_UP: u64 = 50;

/// Which agent a row's contender sends through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AgentKind {
    /// The overhead scenario's agent: a large pool, no timeouts (`contenders::api_agent`).
    Bench,
    /// tokengate's default API agent settings (per-phase timeouts); AuthClient builds its own.
    Default,
    /// The in-memory transport: no socket, no server.
    Memory,
}

impl AgentKind {
    fn id(self) -> &'static str {
        match self {
            AgentKind::Bench => "bench",
            AgentKind::Default => "default",
            AgentKind::Memory => "memory",
        }
    }

    fn from_id(s: &str) -> Option<AgentKind> {
        [AgentKind::Bench, AgentKind::Default, AgentKind::Memory]
            .into_iter()
            .find(|a| a.id() == s)
    }

    fn label(self) -> &'static str {
        match self {
            AgentKind::Bench => "same agent (the overhead scenario's: large pool, no timeouts)",
            AgentKind::Default => "AuthClient's default agent settings (per-phase timeouts)",
            AgentKind::Memory => "in-memory transport (no socket, no server)",
        }
    }
}

/// Instructions of one callgrind run: `(all threads, the calling thread)`.
#[derive(Clone, Copy)]
struct Counted {
    all: u64,
    caller: u64,
}

/// Runs the child under callgrind; `None` (with a message) if valgrind is missing or failed.
fn callgrind(exe: &Path, out_dir: &Path, kind: Kind, agent: AgentKind, n: u64) -> Option<Counted> {
    let n = n.to_string();
    let args = ["--instructions-child", kind.id(), agent.id(), &n];
    callgrind_run(
        exe,
        out_dir,
        &format!("{}.{}.{n}", kind.id(), agent.id()),
        &args,
    )
}

/// Runs this binary with `args` under callgrind (output files named after `name`).
fn callgrind_run(exe: &Path, out_dir: &Path, name: &str, args: &[&str]) -> Option<Counted> {
    let stem = out_dir.join(format!("callgrind.{name}"));
    let prefix = stem.to_string_lossy().into_owned();
    // Leftovers of an earlier run would be summed with this one's threads.
    for f in thread_files(&prefix) {
        let _ = std::fs::remove_file(f);
    }
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--separate-threads=yes",
            &format!("--callgrind-out-file={prefix}"),
        ])
        .arg(exe)
        .args(args)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "callgrind run {name} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("could not run valgrind: {e}");
            return None;
        }
    }
    let mut counted = Counted { all: 0, caller: 0 };
    for f in thread_files(&prefix) {
        let text = std::fs::read_to_string(&f).ok()?;
        let total: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.trim().parse().ok())?;
        counted.all += total;
        // `--separate-threads`: `-01` is the main thread, which makes the requests.
        if f.to_string_lossy().ends_with("-01") {
            counted.caller = total;
        }
    }
    Some(counted)
}

/// The per-thread files callgrind wrote for `prefix` (`prefix-01`, `prefix-02`, ...).
fn thread_files(prefix: &str) -> Vec<std::path::PathBuf> {
    let path = Path::new(prefix);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = format!("{}-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_prefix(&name))
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// Marginal instructions per request of one row.
#[derive(Clone, Copy)]
pub struct PerRequest {
    pub all: f64,
    pub caller: f64,
}

fn per_request(exe: &Path, out_dir: &Path, kind: Kind, agent: AgentKind) -> Option<PerRequest> {
    let a = callgrind(exe, out_dir, kind, agent, COUNTS[0])?;
    let b = callgrind(exe, out_dir, kind, agent, COUNTS[1])?;
    let n = (COUNTS[1] - COUNTS[0]) as f64;
    let per = |x: u64, y: u64| (y as f64 - x as f64) / n;
    let r = PerRequest {
        all: per(a.all, b.all),
        caller: per(a.caller, b.caller),
    };
    println!(
        "instructions {:10} {:8} {:9.0} per request ({:9.0} on the calling thread)",
        kind.id(),
        agent.id(),
        r.all,
        r.caller
    );
    Some(r)
}

/// The `instructions` scenario: a table of instructions per request, raw ureq and AuthClient
/// side by side on each agent.
pub fn scenario(quick: bool, out_dir: &Path, headline: &mut Vec<String>) -> String {
    let mut md = format!(
        "### Instructions per request (callgrind)\n\nInstructions counted by `valgrind --tool=callgrind` (deterministic, unlike wall time on this machine): one thread makes {} and then {} sequential `GET /api` requests with a valid token (after {WARM_UP} warm-up requests), each run in a child process of the bench; a row is (instructions of the long run − of the short run) / {}, so start-up, building the client and the warm-up cancel out. \"all threads\" includes the in-process loopback server's connection thread (the same work for every row); \"calling thread\" is the client alone. Release build, the same request as the overhead scenario (raw ureq sends a static `Authorization` header).\n\n",
        COUNTS[0],
        COUNTS[1],
        COUNTS[1] - COUNTS[0]
    );
    if Command::new("valgrind").arg("--version").output().is_err() {
        let _ = writeln!(md, "valgrind is not installed: scenario skipped.");
        return md;
    }
    let exe = std::env::current_exe().expect("current exe");
    let agents: &[AgentKind] = if quick {
        &[AgentKind::Bench]
    } else {
        &[AgentKind::Bench, AgentKind::Default, AgentKind::Memory]
    };
    let measured = rows(&mut md, &exe, out_dir, agents);
    below_the_table(&mut md, &measured, headline);
    refresh_rows(&mut md, &exe, out_dir);
    md
}

/// The stores a refresh row writes to (`--refresh-instructions-child STORE N`).
const REFRESH_STORES: [(&str, &str); 2] = [
    ("memory", "`MemoryStore`"),
    (
        "file",
        "`FileStore` (lock file, atomic write and `fsync`: system calls are not counted)",
    ),
];

/// The refresh path: instructions per forced refresh with a refresher that answers at once
/// (no HTTP), so what is counted is tokengate's own path (the gate, the flight, the store's
/// lock and write, the install), the path every 401 and expiry takes.
fn refresh_rows(md: &mut String, exe: &Path, out_dir: &Path) {
    let _ = writeln!(
        md,
        "\n#### Instructions per refresh\n\nThe refresh path (the one a 401 or an expiry takes, without the HTTP call): one thread makes {} and then {} `force_refresh()` calls (after {WARM_UP} warm-up calls) with a refresher that mints tokens at once; a row is the difference / {}.\n\n| store | all threads | calling thread |\n|---|---:|---:|",
        COUNTS[0],
        COUNTS[1],
        COUNTS[1] - COUNTS[0]
    );
    for (store, label) in REFRESH_STORES {
        let run = |n: u64| {
            let n = n.to_string();
            let args = ["--refresh-instructions-child", store, &n];
            callgrind_run(exe, out_dir, &format!("refresh.{store}.{n}"), &args)
        };
        let (Some(a), Some(b)) = (run(COUNTS[0]), run(COUNTS[1])) else {
            let _ = writeln!(md, "| {label} | failed (see stderr) | |");
            continue;
        };
        let n = (COUNTS[1] - COUNTS[0]) as f64;
        let per = |x: u64, y: u64| (y as f64 - x as f64) / n;
        let (all, caller) = (per(a.all, b.all), per(a.caller, b.caller));
        println!("instructions refresh {store:8} {all:9.0} per refresh ({caller:9.0} on the calling thread)");
        let _ = writeln!(md, "| {label} | {all:.0} | {caller:.0} |");
    }
}

/// The child side of the refresh rows: `--refresh-instructions-child STORE N` makes
/// `WARM_UP + N` forced refreshes on one thread and exits.
pub fn refresh_child(args: &[String]) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use tokengate::{AuthClient, FileStore, RefreshError, Tokens};

    let [store, n] = args else {
        eprintln!("usage: --refresh-instructions-child STORE N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("refresh count");
    let minted = AtomicU64::new(0);
    let lifetime = Duration::from_secs(3600);
    let refresher = move |_: &tokengate::ureq::Agent, _: &Tokens| -> Result<Tokens, RefreshError> {
        let i = minted.fetch_add(1, Relaxed);
        Ok(Tokens::new(format!("at-{i}"))
            .with_refresh_token(format!("rt-{i}"))
            .with_expires_in(lifetime))
    };
    let login = Tokens::new("at")
        .with_refresh_token("rt")
        .with_expires_in(lifetime);
    let builder = AuthClient::builder("http://127.0.0.1:9/")
        .refresher(refresher)
        .tokens(login);
    let dir = std::env::temp_dir().join(format!("tokengate-bench-refresh-{}", std::process::id()));
    let client = match store.as_str() {
        "memory" => builder.build(),
        "file" => builder
            .store(FileStore::new(dir.join("tokens.json")).expect("token dir"))
            .build(),
        other => panic!("unknown store {other}"),
    }
    .expect("client");
    for _ in 0..WARM_UP + n {
        client.force_refresh().expect("refresh");
    }
    drop(client);
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}

/// The table: a header, then per agent a row with raw ureq's and AuthClient's counts. Returns
/// (raw, AuthClient) per agent that was counted.
fn rows(
    md: &mut String,
    exe: &Path,
    out_dir: &Path,
    agents: &[AgentKind],
) -> Vec<(AgentKind, PerRequest, PerRequest)> {
    let _ = writeln!(
        md,
        "| agent | raw ureq, all threads | AuthClient, all threads | raw ureq, calling thread | AuthClient, calling thread | **AuthClient − raw** (calling thread) |\n|---|---:|---:|---:|---:|---:|"
    );
    // (raw, AuthClient) per agent, for the sentences below the table.
    let mut measured: Vec<(AgentKind, PerRequest, PerRequest)> = Vec::new();
    for &agent in agents {
        let raw = per_request(exe, out_dir, Kind::Raw, agent);
        let auth = per_request(exe, out_dir, Kind::Auth, agent);
        let (Some(raw), Some(auth)) = (raw, auth) else {
            let _ = writeln!(md, "| {} | failed (see stderr) | | | | |", agent.label());
            continue;
        };
        let diff = auth.caller - raw.caller;
        measured.push((agent, raw, auth));
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | **{:+.0}** ({:+.1} %) |",
            agent.label(),
            raw.all,
            auth.all,
            raw.caller,
            auth.caller,
            diff,
            100.0 * diff / raw.caller
        );
    }
    measured
}

/// The sentences below the table, and the scenario's line in the summary.
fn below_the_table(
    md: &mut String,
    measured: &[(AgentKind, PerRequest, PerRequest)],
    headline: &mut Vec<String>,
) {
    let find = |a: AgentKind| measured.iter().find(|m| m.0 == a).map(|m| (m.1, m.2));
    let mut out_of_the_box = String::new();
    if let (Some((raw, _)), Some((raw_default, auth_default))) =
        (find(AgentKind::Bench), find(AgentKind::Default))
    {
        out_of_the_box = format!(
            "; with its default agent, AuthClient {:+.0} over raw ureq on an agent without timeouts, of which the per-phase timeouts are {:+.0} (raw ureq with and without them)",
            auth_default.caller - raw.caller,
            raw_default.caller - raw.caller
        );
        let _ = writeln!(
            md,
            "\nAuthClient with its default agent (per-phase timeouts) against raw ureq on an agent without timeouts: **{:+.0}** instructions per request on the calling thread, of which **{:+.0}** are the timeouts themselves (raw ureq with tokengate's default agent settings minus raw ureq without timeouts: ureq checks the timeouts at every step of a call).",
            auth_default.caller - raw.caller,
            raw_default.caller - raw.caller
        );
    }
    if let Some((raw, auth)) = find(AgentKind::Bench) {
        headline.push(format!(
            "**Instructions** per request (callgrind, valid token, one thread, same agent): AuthClient {:.0} vs raw ureq {:.0} on the calling thread: **{:+.0}** (target ≤ 1,000){out_of_the_box}.",
            auth.caller,
            raw.caller,
            auth.caller - raw.caller
        ));
    }
}

/// The child side: `--instructions-child KIND AGENT N` makes `WARM_UP + N` requests on one
/// thread and exits.
pub fn child(args: &[String]) {
    let [kind, agent, n] = args else {
        eprintln!("usage: --instructions-child KIND AGENT N");
        std::process::exit(2);
    };
    let kind = Kind::from_id(kind).expect("contender id");
    let agent = AgentKind::from_id(agent).expect("agent id");
    let n: u64 = n.parse().expect("request count");
    // The server (if any) lives in this process, so its threads are counted too.
    let server = (agent != AgentKind::Memory).then(Server::start);
    let (base_url, token_url, access) = match &server {
        Some(server) => {
            let sess = server.new_session(Duration::ZERO, None);
            (server.base_url(), server.token_url(), sess.live_access)
        }
        None => (
            "http://127.0.0.1:9/".into(),
            "http://127.0.0.1:9/token".into(),
            "at-0".to_owned(),
        ),
    };
    let s = Setup {
        base_url,
        token_url,
        api: match agent {
            AgentKind::Bench => contenders::api_agent(),
            AgentKind::Default => contenders::tokengate_default_agent(),
            AgentKind::Memory => memtransport::agent(None),
        },
        static_auth: format!("Bearer {access}"),
        access,
        refresh: "rt-unused".into(),
        expires_in: Duration::from_secs(3600),
        skew: Duration::from_secs(30),
        auth_default_agent: agent == AgentKind::Default,
    };
    let c = contenders::build(kind, &s);
    let call = |c: &dyn Contender| c.call().expect("request");
    for _ in 0..WARM_UP + n {
        call(&*c);
    }
    std::process::exit(0);
}
