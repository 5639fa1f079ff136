#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for SECONDS each (default 600), two
# at a time, and prints each target's executions and findings.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz if it is missing. Crashes land in fuzz/artifacts/TARGET/,
# the growing corpus in fuzz/corpus/TARGET/, logs in fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
# Two at a time: each target is one process on one core.
parallel="${FUZZ_JOBS:-2}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz
fi
# No sanitizer: the code under test is safe Rust; the targets catch panics,
# and their allocator (fuzz/src/lib.rs) aborts on a huge allocation.
cargo +nightly fuzz build -s none
mkdir -p logs

run() {
    local target="$1"
    mkdir -p "corpus/$target"
    # -rss_limit_mb: a run that grows past 2 GiB is an out-of-memory
    # finding; -timeout: one input taking 30 s is a hang.
    if cargo +nightly fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 \
        -max_len=65536 -print_final_stats=1 >"logs/$target.log" 2>&1; then
        outcome="no finding"
    else
        outcome="FINDING: see logs/$target.log and artifacts/$target/"
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$target.log" |
        grep -o '[0-9]*$' || echo '?')
    echo "$target: ${seconds}s, $execs executions, $outcome"
}

targets=$(cargo +nightly fuzz list)
pids=()
for t in $targets; do
    run "$t" &
    pids+=($!)
    if ((${#pids[@]} >= parallel)); then
        wait "${pids[0]}"
        pids=("${pids[@]:1}")
    fi
done
wait
