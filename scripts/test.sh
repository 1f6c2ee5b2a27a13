#!/usr/bin/env bash
# The project's test command (README, .ci/run). On a fresh Debian machine it installs what the
# tests need (apt-get, as root or with sudo), then runs:
#   1. scripts/check-platforms.sh: the Windows (x86_64-pc-windows-gnu) build and the macOS
#      (aarch64-apple-darwin) and wasm32 checks;
#   2. scripts/test-web.sh: the browser package in headless Chromium (WebGPU via SwiftShader);
#   3. every cargo test of the workspace (WebGPU tests on lavapipe: mesa-vulkan-drivers).
# GPU-only tests skip loudly here; on a GPU machine RWKV_REQUIRE_GPU=1 makes them fail instead.
# RWKV_TEST_QUICK=1 runs only step 3. Extra arguments go to `cargo test`.
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

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Say loudly which GPU backends this machine lacks: their tests skipped (the harness hides the
# skip messages of passing tests). On a GPU machine, RWKV_REQUIRE_GPU=1 turns skips into failures.
echo "== backends on this machine (GPU tests skip where a backend is unavailable):"
if ! "${CARGO_TARGET_DIR:-target}/debug/rwkv" doctor 2>/dev/null | grep -E '^(cuda|webgpu|cpu) '; then
    echo "(rwkv doctor did not run)"
fi

# One closing line over every test binary (cargo prints one "test result" per binary) and the
# script steps above.
awk -v ep="$extra_passed" -v ef="$extra_failed" \
    '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p + ep, f + ef, i }' "$log"
[ "$status" = 0 ] && [ "$extra_failed" = 0 ]
