#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time from its seed corpus
# (fuzz/corpus/<target>, never written to: new inputs go to fuzz/work/<target>). Fails on a
# crash (panic, sanitizer report, a property the target checks), a slow input or an input that
# makes a reader allocate too much. Ends with one line: `fuzz: N passed, N failed`.
#
#   FUZZ_SECONDS   seconds per target (default 30; 7 targets, so about 4 minutes of fuzzing)
#   FUZZ_TARGETS   space-separated subset to run (default: all of `cargo fuzz list`)
#
# Installs what it needs when missing: rustup's nightly toolchain (libFuzzer's sanitizer flags)
# and cargo-fuzz (`cargo install cargo-fuzz --locked`: 2 min 45 s on 2 busy cores, 1 min of
# CPU). A failing input is saved under fuzz/artifacts/<target>/; `cargo +nightly fuzz run -a
# <target> <file>` (in fuzz/) replays it.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
# Memory caps. Each target holds its reader to 256 bytes per input byte plus 4 MiB (the
# allocation meter in fuzz/src/lib.rs; a file must not make a reader allocate more than its
# size justifies). These libFuzzer caps are the backstop for what the meter cannot see:
# -malloc_limit_mb fails any single allocation above 64 MiB (inputs are at most -max_len
# bytes, so no honest reader needs more), and -rss_limit_mb allows AddressSanitizer's shadow
# memory and quarantine (256 MiB) on top of that.
malloc_limit_mb=64
rss_limit_mb=1024
# An input slower than this is a hang: every reader is linear or close to it, and the seeds run
# in microseconds.
timeout_s=10
# Largest input libFuzzer makes: room for the seed models (35 KB) to grow.
max_len=65536

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain (libFuzzer needs its sanitizer flags)"
    if ! rustup toolchain install nightly --profile minimal; then
        echo "fuzz: 0 passed, 1 failed"
        exit 1
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz: 0 passed, 1 failed"
        exit 1
    fi
fi

cd fuzz
# -a: debug assertions, so integer overflow in a reader is a crash, not a silently wrong range.
if ! cargo +nightly fuzz build -a; then
    echo "fuzz: build failed"
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"

passed=0
failed=0
failed_names=()
for target in $targets; do
    mkdir -p "work/$target" "corpus/$target"
    log="work/$target.log"
    echo "fuzz: $target for ${seconds}s"
    if cargo +nightly fuzz run -a "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$timeout_s" -max_len="$max_len" \
        -malloc_limit_mb="$malloc_limit_mb" -rss_limit_mb="$rss_limit_mb" \
        -print_final_stats=1 >"$log" 2>&1; then
        passed=$((passed + 1))
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
        echo "fuzz: $target ok (${runs:-?} inputs)"
    else
        failed=$((failed + 1))
        failed_names+=("$target")
        echo "fuzz: $target FAILED (full log: fuzz/$log):"
        # The panic or sanitizer report and where the input was saved (not the input's dump).
        grep -E -A4 'panicked at|==[0-9]+==ERROR|ERROR: libFuzzer|SUMMARY:' "$log" | head -n 30
        grep -E 'Test unit written to|^Reproduce with' -A2 "$log" | head -n 6
    fi
done

if [ "$failed" -gt 0 ]; then
    echo "fuzz: failed: ${failed_names[*]} (inputs in fuzz/artifacts/)"
fi
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
