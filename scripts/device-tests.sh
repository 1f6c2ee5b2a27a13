#!/usr/bin/env bash
# The GPU test run for a machine without Rust. Here: `scripts/device-pack.sh` builds the test
# executables and the release binary into .dev/ (carried). On the GPU machine:
# `scripts/device-tests.sh` runs every carried test executable from its crate's folder with
# RWKV_REQUIRE_GPU=1 (a GPU test that would skip fails instead) and prints one closing line.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
export RWKV_REQUIRE_GPU="${RWKV_REQUIRE_GPU:-1}" NODEVICE_SELECT=1
passed=0 failed=0
for t in .dev/tests/*; do
    [ -x "$t" ] || continue
    name="$(basename "$t")"          # CRATE__TEST
    crate="${name%%__*}"
    echo "== $name" | tee -a "$out/tests.log"
    if (cd "crates/$crate" && "../../$t" --test-threads="${TEST_THREADS:-2}" ${TEST_ARGS:-}) >>"$out/tests.log" 2>&1; then
        passed=$((passed + 1)); echo "   ok"
    else
        failed=$((failed + 1)); echo "   FAILED (see tests.log)"
    fi
    grep -E "^test result|FAILED|panicked" "$out/tests.log" | tail -3
done
echo "device tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
