#!/usr/bin/env bash
# Mutation testing of tokengate's core with cargo-mutants, bounded in time.
#
#   scripts/mutants.sh                 # the default file list (below)
#   scripts/mutants.sh src/retry.rs    # only these files
#
# Default files: src/gate.rs, src/session/*.rs (the refresh path), src/client.rs and
# src/run.rs (the client and its request loop), src/reentry.rs, src/retry.rs,
# src/redirect.rs and FileStore's sources, src/store/file/**/*.rs.
#
# Each mutant is tested with the test targets that exercise its file (the table in
# `selection` below), not with the whole suite. The targets are the area binaries of tests/
# (client, gate, store, redis, lifecycle, login; logging and fuzz_corpus on their own), and
# a selected area runs whole. Files sharing a selection are run together, by one
# cargo-mutants invocation; each invocation writes its results to its own directory (see
# MUTANTS_OUT).
#
# Environment (all optional):
#   MUTANTS_BUDGET   whole run, in seconds (default 1500). The run is then interrupted;
#                    mutants already tested keep their results, the rest are reported untested.
#   MUTANTS_TIMEOUT  per-mutant test timeout, in seconds (default 60; a hang guard in the
#                    tests turns most hangs into failures within 10 s).
#   MUTANTS_JOBS     parallel build/test jobs (default 1; the suite is multi-threaded, and all
#                    jobs share one target directory).
#   MUTANTS_ALL_TESTS=1  test every mutant with the whole suite (`cargo test --tests`)
#                    instead of the file's selection: slow, for a final check.
#   MUTANTS_FULL=1   also run the long randomized tests (stress, multi-process FileStore,
#                    SIGKILL crash, the two Redis fleet runs) and the randomized tool-length
#                    test of tests/lifecycle/exit.rs, skipped by default: they take most of
#                    the suite's time and are not deterministic enough to judge a mutant by.
#                    (The fleet runs came in with the redis area binary, which holds
#                    redis_fleet next to redis_store; no selection ran them before.)
#   MUTANTS_OUT      output directory (default target/mutants); the results of a group of files
#                    in $MUTANTS_OUT/<first file, with / as _>/mutants.out.
#   MUTANTS_TARGET   cargo target directory for the mutant builds (default target/mutants-target),
#                    kept between runs so dependencies are built once.
#   MUTANTS_ARGS     extra arguments for cargo mutants (e.g. `-F 'fn_name'` for some mutants).
#
# Needs cargo-mutants (`cargo install cargo-mutants`; checked with 27.1). Doc tests are not run.
# Run from anywhere inside the repository.
set -euo pipefail

cd "$(git rev-parse --show-toplevel)"
if ! command -v cargo-mutants >/dev/null; then
    echo "cargo-mutants is not installed: cargo install cargo-mutants" >&2
    exit 2
fi

# The test targets that exercise each file (cargo test's target selection; `--features F`
# also goes to cargo-mutants, for its builds). Picked by what each test module is about (its
# header) and by grepping tests/ for the API the file implements; a target is the area
# binary holding those modules. Unlisted files: all tests.
selection() {
    case "$1" in
    src/gate.rs | src/reentry.rs | src/client.rs | src/run.rs)
        # Every refresh goes through the gate; wait_idle is the client's close / drop
        # (lifecycle: exit); the request loop's tests are in client, with storage (store)
        # and reentrant (gate). No --lib: the gate's unit tests are the loom models, built
        # only under --cfg tokengate_loom (see TESTING.md for re-checking missed gate
        # mutants with them).
        echo --test client --test gate --test store --test lifecycle ;;
    src/session/*)
        # The refresh path, the store sync, the write retry, shut-down; the lapsed-lock
        # re-read is only reachable with RedisStore (tests/redis/redis_store.rs, a real
        # redis-server).
        echo --features redis --lib --test client --test gate --test store --test lifecycle \
            --test logging --test redis ;;
    src/store/file/*)
        echo --lib --test store --test lifecycle --test client ;;
    *) echo --tests ;;
    esac
}

budget=${MUTANTS_BUDGET:-1500}
timeout=${MUTANTS_TIMEOUT:-60}
jobs=${MUTANTS_JOBS:-1}
out=${MUTANTS_OUT:-target/mutants}
export CARGO_TARGET_DIR=${MUTANTS_TARGET:-$PWD/target/mutants-target}
# No debug info: links several times faster, and mutants need no debugger.
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
read -r -a extra <<<"${MUTANTS_ARGS:-}"

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    shopt -s nullglob globstar
    for f in src/gate.rs src/session/*.rs src/client.rs src/run.rs src/reentry.rs \
        src/retry.rs src/redirect.rs src/store/file/**/*.rs; do
        [ -f "$f" ] && files+=("$f")
    done
fi

# Group the files by selection, in order of first appearance.
groups=() # selections
declare -A group_files
for f in "${files[@]}"; do
    [ -f "$f" ] || { echo "no such file: $f" >&2; exit 2; }
    if [ "${MUTANTS_ALL_TESTS:-0}" = 1 ]; then sel=--tests; else sel=$(selection "$f"); fi
    [ -n "${group_files[$sel]+x}" ] || groups+=("$sel")
    group_files[$sel]+="$f "
done

skips=()
if [ "${MUTANTS_FULL:-0}" != 1 ]; then
    skips=(--skip sixty_four_threads_under_injected_faults
        --skip processes_sharing_a_file_store_refresh_once_per_expiry
        --skip a_writer_killed_at_random_moments_never_leaves_a_broken_file
        --skip tool_runs_of_random_length_never_lose_the_session
        --skip processes_sharing_a_redis_session_refresh_once_per_expiry
        --skip redis_restarted_mid_run_loses_no_session)
fi

echo "mutants at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests || echo ' + uncommitted changes'): budget ${budget}s, ${timeout}s per mutant, ${jobs} job(s)"
start=$SECONDS
status=0
dirs=()
for sel in "${groups[@]}"; do
    read -r -a group <<<"${group_files[$sel]}"
    file_args=() mutants_args=() test_args=()
    for f in "${group[@]}"; do file_args+=(--file "$f"); done
    read -r -a words <<<"$sel"
    for ((i = 0; i < ${#words[@]}; i++)); do
        case "${words[i]}" in
        --features) mutants_args+=(--features "${words[i + 1]}"); i=$((i + 1)) ;;
        --test) test_args+=("--cargo-arg=--test=${words[i + 1]}"); i=$((i + 1)) ;;
        *) test_args+=("--cargo-arg=${words[i]}") ;;
        esac
    done
    dir=$out/${group[0]//\//_}
    dirs+=("$dir")
    mkdir -p "$dir"
    left=$((budget - (SECONDS - start)))
    echo
    echo "== ${group[*]}: tests $sel (${left}s of budget left)"
    if [ "$left" -le 0 ]; then status=124; continue; fi
    # SIGINT lets cargo-mutants stop cleanly and write what it has; KILL only if it does not.
    timeout --signal=INT --kill-after=120 "$left" \
        cargo mutants "${file_args[@]}" "${mutants_args[@]}" --timeout "$timeout" \
        --build-timeout 600 --jobs "$jobs" --output "$dir" --no-shuffle "${test_args[@]}" \
        ${extra[@]+"${extra[@]}"} -- -- ${skips[@]+"${skips[@]}"} || {
        s=$?
        # cargo-mutants exits 2 when mutants were missed, 3 on timeouts; 124 is our budget.
        if [ "$status" = 0 ] || [ "$s" = 124 ]; then status=$s; fi
    }

    results=$dir/mutants.out
    count() {
        if [ -f "$results/$1.txt" ]; then grep -c . "$results/$1.txt" || true; else echo 0; fi
    }
    total=$(cargo mutants "${file_args[@]}" ${extra[@]+"${extra[@]}"} --list 2>/dev/null | grep -c .)
    caught=$(count caught) missed=$(count missed) timedout=$(count timeout) unviable=$(count unviable)
    untested=$((total - caught - missed - timedout - unviable))
    echo
    echo "== ${group[*]}: ${total} mutants: ${caught} caught, ${missed} missed, ${timedout} timed out, ${unviable} unviable, ${untested} untested (budget); $((SECONDS - start))s so far"
    if [ "$missed" -gt 0 ]; then
        echo "== missed (each needs a test, or a reason in TESTING.md why it is harmless):"
        cat "$results/missed.txt"
    fi
    if [ "$timedout" -gt 0 ]; then
        echo "== timed out (a hang counts as caught, but check it is not a slow pass):"
        cat "$results/timeout.txt"
    fi
done
echo
echo "results in: ${dirs[*]}"
exit "$status"
