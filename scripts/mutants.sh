#!/usr/bin/env bash
# Mutation testing of tokengate's core with cargo-mutants, bounded in time.
#
#   scripts/mutants.sh                 # the default file list (below)
#   scripts/mutants.sh src/retry.rs    # only these files
#
# Default files: src/gate.rs, src/client.rs, src/session.rs (the refresh path), src/retry.rs,
# src/redirect.rs and FileStore's sources, src/store/file/**/*.rs.
#
# Environment (all optional):
#   MUTANTS_BUDGET   whole run, in seconds (default 1500). The run is then interrupted;
#                    mutants already tested keep their results, the rest are reported untested.
#   MUTANTS_TIMEOUT  per-mutant test timeout, in seconds (default 120; a hang guard in the
#                    tests turns most hangs into failures within 10 s).
#   MUTANTS_JOBS     parallel build/test jobs (default 1; the suite is multi-threaded).
#   MUTANTS_FULL=1   also run the three long randomized tests (stress, multi-process FileStore,
#                    SIGKILL crash), skipped by default: together they take most of the suite's
#                    time and are not deterministic enough to judge a mutant by.
#   MUTANTS_OUT      output directory (default target/mutants); results in $MUTANTS_OUT/mutants.out.
#   MUTANTS_TARGET   cargo target directory for the mutant builds (default target/mutants-target),
#                    kept between runs so dependencies are built once.
#
# Needs cargo-mutants (`cargo install cargo-mutants`; checked with 27.1). Doc tests are not run
# (`cargo test --tests`). Run from anywhere inside the repository.
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
if ! command -v cargo-mutants >/dev/null; then
    echo "cargo-mutants is not installed: cargo install cargo-mutants" >&2
    exit 2
fi

budget=${MUTANTS_BUDGET:-1500}
timeout=${MUTANTS_TIMEOUT:-120}
jobs=${MUTANTS_JOBS:-1}
out=${MUTANTS_OUT:-target/mutants}
export CARGO_TARGET_DIR=${MUTANTS_TARGET:-$PWD/target/mutants-target}
# No debug info: links several times faster, and mutants need no debugger.
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    shopt -s nullglob globstar
    for f in src/gate.rs src/client.rs src/session.rs src/retry.rs src/redirect.rs \
        src/store/file/**/*.rs; do
        [ -f "$f" ] && files+=("$f")
    done
fi
file_args=()
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "no such file: $f" >&2; exit 2; }
    file_args+=(--file "$f")
done

test_args=()
if [ "${MUTANTS_FULL:-0}" != 1 ]; then
    test_args=(-- -- --skip sixty_four_threads_under_injected_faults
        --skip processes_sharing_a_file_store_refresh_once_per_expiry
        --skip a_writer_killed_at_random_moments_never_leaves_a_broken_file)
fi

mkdir -p "$out"
echo "mutants: ${files[*]} (budget ${budget}s, ${timeout}s per mutant, ${jobs} job(s)) at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests || echo ' + uncommitted changes')"
status=0
# SIGINT lets cargo-mutants stop cleanly and write what it has; KILL only if it does not.
timeout --signal=INT --kill-after=120 "$budget" \
    cargo mutants "${file_args[@]}" --timeout "$timeout" --jobs "$jobs" --output "$out" \
    --no-shuffle --cargo-test-arg=--tests "${test_args[@]}" || status=$?

results=$out/mutants.out
count() {
    if [ -f "$results/$1.txt" ]; then grep -c . "$results/$1.txt" || true; else echo 0; fi
}
total=$(cargo mutants "${file_args[@]}" --list 2>/dev/null | grep -c .)
caught=$(count caught) missed=$(count missed) timedout=$(count timeout) unviable=$(count unviable)
untested=$((total - caught - missed - timedout - unviable))
echo
echo "== ${total} mutants: ${caught} caught, ${missed} missed, ${timedout} timed out, ${unviable} unviable, ${untested} untested (budget)"
if [ "$missed" -gt 0 ]; then
    echo "== missed (each needs a test, or a reason in TESTING.md why it is harmless):"
    cat "$results/missed.txt"
fi
if [ "$timedout" -gt 0 ]; then
    echo "== timed out (a hang counts as caught, but check it is not a slow pass):"
    cat "$results/timeout.txt"
fi
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts; 124 is our budget.
exit "$status"
