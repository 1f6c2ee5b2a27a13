#!/usr/bin/env bash
# Cross-platform build checks, so platform-specific code paths at least compile:
#   1. x86_64-pc-windows-gnu: build of the `rwkv` binary (linked with MinGW-w64),
#   2. aarch64-apple-darwin: `cargo check` of the workspace's default members,
#   3. wasm32-unknown-unknown: `cargo check` of rwkv-core + rwkv-wgpu + rwkv-web.
# Toolchain: rustup's stable with the three targets' std (`rustup target add`, downloads ~60 MB
# once). Without rustup (or offline) it falls back to Debian's rustc-web/cargo-web with its std
# sources (rust-web-src) and `-Zbuild-std` (RUSTC_BOOTSTRAP=1 unlocks the flag); on Debian 12
# that compiler is 1.85, older than wgpu 30's MSRV (1.87), so that route only gets as far as
# the crates without wgpu (see the report in the web branch).
# Installs what it needs with apt-get (as root or via sudo): MinGW-w64 (the Windows linker) and,
# for the fallback, the Debian toolchain. Output goes to target-platforms/ so the native build in
# target/ is untouched.
# Usage: scripts/check-platforms.sh [windows|macos|wasm ...]   (default: all three)
#        scripts/check-platforms.sh --install-only               (Debian toolchain, for build-web.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "check-platforms: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
debian_toolchain=(rustc-web cargo-web rust-web-src lld-16)
if [ "${1:-}" = --install-only ]; then
    apt_install "${debian_toolchain[@]}"
    exit 0
fi

apt_install gcc-mingw-w64-x86-64
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_PLATFORMS:-$PWD/target-platforms}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# The workspace builds dependencies at opt-level 2 for fast native tests; these checks only need
# to compile.
config=(--config 'profile.dev.opt-level=0' --config 'profile.dev.debug=0'
    --config 'profile.dev.package."*".opt-level=0')
if command -v rustup >/dev/null &&
    rustup target add x86_64-pc-windows-gnu aarch64-apple-darwin wasm32-unknown-unknown >/dev/null 2>&1; then
    cargo=(cargo "${config[@]}")
    build_std=()
    echo "check-platforms: $(cargo --version) (rustup targets)"
else
    apt_install "${debian_toolchain[@]}"
    # Debian's toolchain must come first: rustup's shims would pick a rustc whose version does
    # not match the std sources in /usr/lib/rustlib/src.
    export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
    unset RUSTUP_TOOLCHAIN
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-16
    cargo=(/usr/bin/cargo "${config[@]}")
    build_std=(-Zbuild-std=std,panic_abort)
    echo "check-platforms: $(/usr/bin/cargo --version) with -Zbuild-std (no rustup targets)"
fi

which=("$@")
[ ${#which[@]} -gt 0 ] || which=(windows macos wasm)
failed=()
step() {
    local name=$1
    shift
    local t0=$SECONDS
    echo "== $name: $*"
    if "$@"; then
        echo "== $name: ok ($((SECONDS - t0)) s)"
    else
        echo "== $name: FAILED ($((SECONDS - t0)) s)"
        failed+=("$name")
    fi
}

for w in "${which[@]}"; do
    case "$w" in
    windows)
        step windows-gnu "${cargo[@]}" build "${build_std[@]}" --target x86_64-pc-windows-gnu -p rwkv --bin rwkv
        ;;
    macos)
        step aarch64-apple-darwin "${cargo[@]}" check "${build_std[@]}" --target aarch64-apple-darwin
        ;;
    wasm)
        web=()
        [ -d crates/rwkv-web ] && web=(-p rwkv-web)
        step wasm32 "${cargo[@]}" check "${build_std[@]}" --target wasm32-unknown-unknown \
            -p rwkv-core -p rwkv-wgpu "${web[@]}"
        ;;
    *)
        echo "unknown platform '$w' (windows, macos, wasm)" >&2
        exit 2
        ;;
    esac
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "check-platforms: FAIL (${failed[*]})"
    exit 1
fi
echo "check-platforms: PASS (${which[*]})"
