#!/usr/bin/env bash
# Builds the browser package: crates/rwkv-web for wasm32 (release), then wasm-bindgen into
# web/pkg/ (git-ignored). Serve web/ over HTTP and open index.html for the demo.
# Needs: the wasm32-unknown-unknown target (rustup target add; without rustup, Debian's
# rustc-web + rust-web-src with -Zbuild-std, as scripts/check-platforms.sh does; Debian 12 ships
# rustc 1.85, below wgpu 30's MSRV 1.87, so that fallback fails there today), and
# wasm-bindgen-cli at the same version as the wasm-bindgen crate (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
[ -n "$version" ] || { echo "build-web: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
if ! wasm-bindgen --version 2>/dev/null | grep -qF "$version"; then
    echo "build-web: installing wasm-bindgen-cli $version" >&2
    cargo install wasm-bindgen-cli --version "$version"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_WEB:-$PWD/target-web}"
# Release without debug info (the workspace keeps it for native profiling; it would triple the .wasm).
build=(build --release --target wasm32-unknown-unknown -p rwkv-web --config profile.release.debug=0)
if rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
    cargo "${build[@]}"
else
    echo "build-web: no rustup wasm32 target; using Debian's rustc-web with -Zbuild-std" >&2
    scripts/check-platforms.sh --install-only
    PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-16 \
        /usr/bin/cargo "${build[@]}" -Zbuild-std=std,panic_abort
fi

wasm-bindgen --target web --out-dir web/pkg --out-name rwkv_web \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/rwkv_web.wasm"
echo "build-web: web/pkg/ ready ($(du -h web/pkg/rwkv_web_bg.wasm | cut -f1) of wasm)"
