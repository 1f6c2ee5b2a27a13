#!/usr/bin/env bash
# The project's test command (README, .ci/run). On a fresh Debian machine it installs what the
# tests need (apt-get, as root or with sudo; NVRTC wheels with pip), then runs:
#   1. scripts/check-platforms.sh: the Windows (x86_64-pc-windows-gnu) build and the macOS
#      (aarch64-apple-darwin) and wasm32 checks;
#   2. scripts/test-web.sh: the browser package in headless Chromium (WebGPU via SwiftShader);
#   3. every cargo test of the workspace (WebGPU tests on lavapipe: mesa-vulkan-drivers; the
#      CUDA kernels compiled by NVRTC 13 from its pip wheel, scripts/nvrtc-wheels.sh);
#   4. the CUDA kernel compile test again with NVRTC 12;
#   5. the extra steps (EXTRA STEPS below: fuzzers and the like).
# Tests that cannot run here skip with one line `SKIPPED: <test>: <why>` (crates/rwkv-testing),
# which this script collects through RWKV_SKIP_LOG: the closing line
# `tests: N passed, N failed, N skipped` counts a skipped test as skipped, not passed, and the
# list above it says what skipped and why. Skips that must not happen fail instead:
#   RWKV_REQUIRE_GPU=cuda,webgpu (or 1 / all; also webgpu-coop, webgpu-subgroups, webgpu-f16,
#     webgpu-timestamps, nvrtc) for GPU machines;
#   RWKV_REQUIRE_REFDATA=1 (set by .ci/run): tests needing ../shared or python3.
# RWKV_TEST_QUICK=1 runs only steps 3-4. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || need+=(libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"; }; then
        echo "test.sh: WARNING: could not install ${need[*]}; WebGPU tests will skip" >&2
    fi
fi

# Mesa's Vulkan device-select layer prints "error: XDG_RUNTIME_DIR is invalid" for every wgpu
# instance when that variable is unset (CI); the tests choose adapters themselves.
[ -n "${XDG_RUNTIME_DIR:-}" ] || export NODEVICE_SELECT=1

extra_passed=0
extra_failed=0
run_step() { # run_step NAME COMMAND...: one pass or fail each
    echo "== test.sh: $1" >&2
    if "${@:2}"; then
        extra_passed=$((extra_passed + 1))
    else
        echo "test.sh: FAILED: $1" >&2
        extra_failed=$((extra_failed + 1))
    fi
}
if [ "${RWKV_TEST_QUICK:-0}" != 1 ]; then
    run_step "platform builds" scripts/check-platforms.sh
    run_step "browser test" scripts/test-web.sh
fi

# NVRTC from pip wheels, so the CUDA kernels compile here without a toolkit or GPU
# (crates/rwkv-cuda/tests/nvrtc_compile.rs). CUDA 13 serves the main run; CUDA 12 runs after.
# Each architecture takes 10-100 s of one core: by default the generations the backend is run
# on (Ampere, Ada, Hopper, Blackwell); .ci/run sets RWKV_NVRTC_ARCHS=all.
export RWKV_NVRTC_ARCHS="${RWKV_NVRTC_ARCHS:-80,86,89,90,100,120}"
nvrtc12=""
if wheels="$(scripts/nvrtc-wheels.sh)"; then
    nvrtc13="$(awk '$1 == "cu13" { print $2 }' <<<"$wheels")"
    nvrtc12="$(awk '$1 == "cu12" { print $2 }' <<<"$wheels")"
    export LD_LIBRARY_PATH="$nvrtc13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
    echo "test.sh: WARNING: no NVRTC wheels; the CUDA kernel compile test will skip" >&2
fi

log="$(mktemp)"
skips="$(mktemp)"
trap 'rm -f "$log" "$skips"' EXIT
export RWKV_SKIP_LOG="$skips"
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

if [ -n "$nvrtc12" ]; then
    run_step "CUDA kernels compile with NVRTC 12" env LD_LIBRARY_PATH="$nvrtc12" \
        RWKV_NVRTC_EXPECT_MAJOR=12 RWKV_REQUIRE_GPU=nvrtc cargo test -q -p rwkv-cuda --test nvrtc_compile
fi

# EXTRA STEPS: one `run_step "NAME" COMMAND...` each (counted as one test, passed or failed).
if [ "${RWKV_TEST_QUICK:-0}" != 1 ]; then
    run_step "fuzzers (scripts/fuzz.sh: every target ${FUZZ_SECONDS:-30} s)" scripts/fuzz.sh
fi

# Say which GPU backends this machine lacks: their tests skipped (listed below).
echo "== backends on this machine:"
if ! "${CARGO_TARGET_DIR:-target}/debug/rwkv" doctor 2>/dev/null | grep -E '^(cuda|webgpu|cpu) '; then
    echo "(rwkv doctor did not run)"
fi

# What skipped and why: one line per test (a test may mark itself more than once), then
# `#[ignore]`d tests. Skipped tests that passed are subtracted from cargo's passed count; one
# that failed after marking stays a failure.
echo "== skipped tests:"
awk '{ name = $2; sub(/:$/, "", name) } !(name in seen) { seen[name] = 1; print "  " $0 }' "$skips" | sort
awk '/^test .* \.\.\. ignored/ { print "  SKIPPED: " $2 ": #[ignore]" }' "$log"

# One closing line over every test binary (cargo prints one "test result" per binary), the
# runtime skips and the script steps.
awk -v ep="$extra_passed" -v ef="$extra_failed" -v skips="$skips" '
    BEGIN {
        while ((getline line < skips) > 0) {
            sub(/^SKIPPED: /, "", line)
            name = substr(line, 1, index(line, ": ") - 1)
            sub(/^[^:]*::/, "", name)            # the binary name; cargo prints the path only
            skipped[name] = 1
        }
    }
    /^test result:/ { p += $4; f += $6; i += $8 }
    /^test .* \.\.\. FAILED$/ { failed[$2] = 1 }
    END {
        s = 0
        for (n in skipped) if (!(n in failed)) s++
        printf "tests: %d passed, %d failed, %d skipped\n", p - s + ep, f + ef, s + i
    }' "$log"
[ "$status" = 0 ] && [ "$extra_failed" = 0 ]
