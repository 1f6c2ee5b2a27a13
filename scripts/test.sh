#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need on a fresh Debian
# machine, then runs every test of the workspace.
#  - mesa-vulkan-drivers + libvulkan1: lavapipe, so the WebGPU backend's tests run on the CPU.
# GPU-only tests skip loudly here; on a GPU machine run them with RWKV_REQUIRE_GPU=1.
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

# One closing line over every test binary (cargo prints one "test result" per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
