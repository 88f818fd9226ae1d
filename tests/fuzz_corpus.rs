//! Replays the fuzz corpus (`tests/fuzz_corpus/<target>/`, used by `fuzz/` as its seed corpus) through the entry points the fuzz targets
//! call (`tokengate::__fuzz`), so every `cargo test` checks the parsers against the hostile
//! inputs collected so far, without libFuzzer or a nightly toolchain. Each entry point panics
//! if its parser panics or returns something out of bounds (see `src/fuzz_api.rs`).
//!
//! On top of the files themselves, each one is replayed in a few hundred deterministic
//! mutations (bit flips, byte insertions and deletions, truncations, splices with another
//! file): a little fuzzing that needs no fuzzer.
//!
//! To add a crash the fuzzer found: fix it, then copy the file from `fuzz/artifacts/<target>/`
//! into `tests/fuzz_corpus/<target>/`.
//!
//! # These checks can fail
//! Mutations tried by hand (then reverted), each failing one of these tests:
//! - `parse_bearer` keeps values of any length → `kept a 300 byte value`;
//! - `sanitize_code` does not cap the OAuth2 `error` at 64 characters → `error text of 545 bytes`;
//! - `tokens_from` skips `validate()` → `unusable tokens accepted` (a token with CR LF);
//! - `expires_in` has no upper bound → a panic converting `1e308` seconds to a `Duration`;
//! - `jwt_expiry` drops its range check → the same panic, for a JWT `exp` (found by a mutation).

use std::fs;
use std::path::PathBuf;

const MUTATIONS_PER_FILE: usize = 300;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers, favoured when inserting.
const INTERESTING: &[u8] = b"\"\\{}[],:=. \t\r\n\x00\x7f\xffeE-+0123456789";

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                v.insert(i, b);
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            3 => v.truncate(rng.below(v.len() + 1)),
            4 if !other.is_empty() => {
                // Splice: a prefix of this input and a suffix of another.
                let cut = rng.below(v.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[rng.below(other.len())..]);
            }
            _ if !v.is_empty() => {
                // Duplicate a slice (grows nesting and repetition).
                let a = rng.below(v.len());
                let b = a + rng.below(v.len() - a) + 1;
                let chunk = v[a..b].to_vec();
                v.splice(b..b, chunk);
            }
            _ => {}
        }
    }
    v
}

/// Runs every corpus file of `target`, and its mutations, through `run`. Returns the number
/// of files (so a missing or emptied corpus fails the test instead of passing vacuously).
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let files = corpus(target);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (i, (name, data)) in files.iter().enumerate() {
        let result = std::panic::catch_unwind(|| run(data));
        assert!(result.is_ok(), "{target}/{name} failed");
        let other = &files[(i + 1) % files.len()].1;
        for m in 0..MUTATIONS_PER_FILE {
            let input = mutate(&mut rng, data, other);
            let result = std::panic::catch_unwind(|| run(&input));
            assert!(
                result.is_ok(),
                "{target}/{name}, mutation {m} failed on input {input:?}"
            );
        }
    }
    files.len()
}

#[test]
fn token_response_corpus() {
    let n = replay("token_response", tokengate::__fuzz::token_response);
    assert!(n >= 22, "only {n} corpus files");
}

#[test]
fn www_authenticate_corpus() {
    let n = replay("www_authenticate", tokengate::__fuzz::www_authenticate);
    assert!(n >= 13, "only {n} corpus files");
}

#[test]
fn jwt_expiry_corpus() {
    let n = replay("jwt_expiry", tokengate::__fuzz::jwt_expiry);
    assert!(n >= 13, "only {n} corpus files");
}
