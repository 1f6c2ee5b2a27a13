#!/usr/bin/env bash
# Cross-platform build checks, so platform-specific code paths at least compile:
#   1. x86_64-pc-windows-gnu: build of the `rwkv` binary (linked with MinGW-w64),
#   2. aarch64-apple-darwin: `cargo check` of the workspace's default members,
#   3. wasm32-unknown-unknown: `cargo check` of rwkv-core + rwkv-wgpu (+ rwkv-web).
# rustup here carries only the host's std, so this uses Debian's rustc-web/cargo-web (1.85) with
# its std sources (rust-web-src) and `-Zbuild-std` (RUSTC_BOOTSTRAP=1 unlocks the nightly flag on a
# stable compiler). Installs what it needs with apt-get (as root or via sudo) on Debian 12.
# Output goes to target-platforms/ so the native build in target/ is untouched.
# Usage: scripts/check-platforms.sh [windows|macos|wasm ...]   (default: all three)
#        scripts/check-platforms.sh --install-only               (just the packages)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(rustc-web cargo-web rust-web-src lld-16 gcc-mingw-w64-x86-64)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "check-platforms: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "${1:-}" = --install-only ] && exit 0

# Debian's toolchain must come first: rustup's shims in ~/.cargo/bin would pick a rustc whose
# version does not match the std sources in /usr/lib/rustlib/src.
export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo
unset RUSTUP_TOOLCHAIN
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_PLATFORMS:-$PWD/target-platforms}"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-16
# The workspace sets [profile.dev.package."*"] opt-level = 2 for fast native tests; these checks
# only need to compile, so skip optimisation.
cargo=(/usr/bin/cargo --config 'profile.dev.opt-level=0' --config 'profile.dev.debug=0'
    --config 'profile.dev.package."*".opt-level=0')
echo "check-platforms: $(/usr/bin/cargo --version), $(/usr/bin/rustc --version)"

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
        step windows-gnu "${cargo[@]}" build -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu -p rwkv --bin rwkv
        ;;
    macos)
        step aarch64-apple-darwin "${cargo[@]}" check -Zbuild-std=std,panic_abort --target aarch64-apple-darwin
        ;;
    wasm)
        web=()
        [ -d crates/rwkv-web ] && web=(-p rwkv-web)
        step wasm32 "${cargo[@]}" check -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown \
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
