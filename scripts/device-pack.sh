#!/usr/bin/env bash
# Builds what scripts/device-tests.sh and scripts/device-bench.sh run on a GPU machine without
# Rust: the GPU test executables (stripped) into .dev/tests/CRATE__TEST and the release `rwkv`
# into .dev/bin/rwkv. .dev/ must be ignored (.git/info/exclude) and carried.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev/tests .dev/bin
rm -f .dev/tests/*
tests="${DEVICE_TESTS:-rwkv-cuda:gpu rwkv-cuda:oracle rwkv-wgpu:ops rwkv-wgpu:model rwkv-wgpu:errors rwkv:conformance rwkv:backend_ops}"
args=()
for t in $tests; do args+=(-p "${t%%:*}" --test "${t##*:}"); done
cargo test "${args[@]}" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        crate = m["package_id"].split("#")[0].rstrip("/").split("/")[-1]
        print(crate, m["target"]["name"], m["executable"])
' | while read -r crate name exe; do
    strip -o ".dev/tests/${crate}__${name}" "$exe"
done
# RELEASE_TARGET_DIR: a target folder whose release dependencies are already built.
release_dir="${RELEASE_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
CARGO_TARGET_DIR="$release_dir" cargo build --release -p rwkv
strip -o .dev/bin/rwkv "$release_dir/release/rwkv"
ls -la .dev/tests .dev/bin
