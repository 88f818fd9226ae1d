//! A process writing tokens in a loop is killed with SIGKILL at random moments, many times:
//! after every kill the file parses and holds one complete token set, never older than the
//! last save the child had finished. The test keeps killing until at least
//! `MIN_INTERRUPTED` of the kills interrupted a write (they left a temporary file behind), so
//! it cannot pass without having tested the case it is about; about a third of kills do.
//!
//! The test re-executes its own binary (`current_exe() <module>::<test> --exact`, the name
//! from `test_name!`) with `TOKENGATE_TEST_ROLE=writer` for the child.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::observe::{child_test, test_name, FILE, ROLE};
use tokengate::{FileStore, TokenStore, Tokens};

/// At least this many kills …
const KILLS: usize = 40;
/// … and as many more as it takes (up to `MAX_KILLS`) until this many interrupted a write.
const MIN_INTERRUPTED: usize = 10;
const MAX_KILLS: usize = 400;
/// Tokens are large so that a write takes long enough to be interrupted part-way.
const PAD: usize = 12 * 1024;
/// Kill delay after the child's first completed save: 0 to this many microseconds.
const MAX_DELAY_US: u64 = 6_000;
/// Bounds that only a bug reaches.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(10);
const MAX_SAVES: u64 = 100_000;

/// Token set number `n`: every field says `n`, so a mix of two sets cannot pass `check`.
fn tokens(n: u64) -> Tokens {
    Tokens::new(format!("at-{n}-{}", "a".repeat(PAD)))
        .with_refresh_token(format!("rt-{n}-{}", "r".repeat(PAD)))
        .with_expires_at(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + n))
        .with_scope(format!("scope-{n}"))
}

/// The number of a complete token set, or a panic describing what is wrong.
fn check(t: &Tokens) -> u64 {
    let access = t.access_token().secret();
    let n: u64 = access
        .strip_prefix("at-")
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("access token of {} bytes is malformed", access.len()));
    let expected = tokens(n);
    assert!(
        access == expected.access_token().secret(),
        "access token {n} is incomplete"
    );
    assert!(
        t.refresh_token().map(|r| r.secret()) == expected.refresh_token().map(|r| r.secret()),
        "refresh token does not belong to set {n}"
    );
    assert_eq!(t.expires_at(), expected.expires_at(), "set {n}");
    assert_eq!(t.scope(), expected.scope(), "set {n}");
    n
}

#[test]
fn a_writer_killed_at_random_moments_never_leaves_a_broken_file() {
    if std::env::var_os(ROLE).is_some() {
        return writer();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("file_store_crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tokens.json");
    let mut rng = Rng::seeded();
    eprintln!("crash test seed {}", rng.0);

    let mut last = 0;
    let mut left_temp_file = 0;
    let mut kills = 0;
    while kills < KILLS || (left_temp_file < MIN_INTERRUPTED && kills < MAX_KILLS) {
        let kill = kills;
        kills += 1;
        let mut child = child_test(
            &test_name!(a_writer_killed_at_random_moments_never_leaves_a_broken_file),
            "writer",
        )
        .env(FILE, &path)
        .spawn()
        .unwrap();
        // The child says READY once its first save is complete (renamed and synced).
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("READY") {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                panic!("writer exited before its first save ({status}), kill {kill}");
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(MAX_DELAY_US)));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the writer was still running when killed"
        );

        let loaded = FileStore::new(&path)
            .unwrap()
            .load()
            .unwrap_or_else(|e| panic!("after kill {kill}: {e}"))
            .unwrap_or_else(|| panic!("after kill {kill}: the file is gone"));
        let n = check(&loaded);
        assert!(
            n > last,
            "after kill {kill}: set {n}, but the child had completed a save of a set after {last}"
        );
        last = n;
        if dir.join("tokens.json.tmp").exists() {
            left_temp_file += 1;
        }
    }
    eprintln!(
        "{kills} kills; {left_temp_file} of them interrupted a write (a temporary file was left); \
         last complete set {last}"
    );
    assert!(
        left_temp_file >= MIN_INTERRUPTED,
        "only {left_temp_file} of {kills} kills interrupted a write: the crash case was not tested"
    );

    // The next save cleans up whatever a kill left, and only the file and its lock remain.
    let store = FileStore::new(&path).unwrap();
    store.save(&tokens(last + 1)).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["tokens.json", "tokens.json.lock"]);
    assert_eq!(check(&store.load().unwrap().unwrap()), last + 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child: saves set after set, continuing from what the file holds, until killed.
fn writer() {
    let path = PathBuf::from(std::env::var_os(FILE).unwrap());
    let store = FileStore::new(&path)
        .unwrap()
        .lock_timeout(Duration::from_secs(5));
    let start = store.load().unwrap().map_or(0, |t| check(&t));
    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    for n in start + 1..=start + MAX_SAVES {
        store.save(&tokens(n)).unwrap();
        if n == start + 1 {
            let mut out = std::io::stdout().lock();
            writeln!(out, "\nREADY").unwrap();
            out.flush().unwrap();
        }
        if Instant::now() > deadline {
            break;
        }
    }
}

/// xorshift64*: enough to spread kill moments; the seed is printed to replay a failure.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("TOKENGATE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos() as u64
                    | 1
            });
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
