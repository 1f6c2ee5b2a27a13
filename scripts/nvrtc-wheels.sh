#!/usr/bin/env bash
# NVRTC without a CUDA toolkit or GPU, for compiling the CUDA kernels in CI: installs NVIDIA's
# `nvidia-cuda-nvrtc` wheels (CUDA 13) and `nvidia-cuda-nvrtc-cu12` (CUDA 12) with pip into
# target/nvrtc/cu13 and target/nvrtc/cu12 (once; later runs reuse them) and prints one line per
# version, `cu13 <dir with libnvrtc.so.13>`, for LD_LIBRARY_PATH. Exits non-zero when pip or a
# wheel is unavailable (test.sh then lets the compile test skip, or fail under
# RWKV_REQUIRE_GPU=nvrtc). Versions are pinned so CI is reproducible; override with
# NVRTC13_VERSION / NVRTC12_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."

NVRTC13_VERSION="${NVRTC13_VERSION:-13.0.88}"
NVRTC12_VERSION="${NVRTC12_VERSION:-12.9.86}"
root="${CARGO_TARGET_DIR:-$PWD/target}/nvrtc"

pip=()
if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
else
    echo "nvrtc-wheels: python3 -m pip not found" >&2
    exit 1
fi

install() { # install TAG PACKAGE VERSION LIBNAME
    local dir="$root/$1"
    local lib
    lib="$( { find "$dir" -name "$4" 2>/dev/null || true; } | head -n 1)"
    if [ -z "$lib" ] || [ ! -f "$dir/.version-$3" ]; then
        rm -rf "$dir"
        echo "nvrtc-wheels: pip install $2==$3 into $dir" >&2
        # --no-deps: the wheel is the library itself; nothing else is needed to compile.
        "${pip[@]}" install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$dir" "$2==$3" >&2
        touch "$dir/.version-$3"
        lib="$(find "$dir" -name "$4" | head -n 1)"
    fi
    [ -n "$lib" ] || { echo "nvrtc-wheels: $4 not in $2==$3" >&2; return 1; }
    echo "$1 $(dirname "$lib")"
}
install cu13 nvidia-cuda-nvrtc "$NVRTC13_VERSION" libnvrtc.so.13
install cu12 nvidia-cuda-nvrtc-cu12 "$NVRTC12_VERSION" libnvrtc.so.12
