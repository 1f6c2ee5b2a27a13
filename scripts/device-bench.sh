#!/usr/bin/env bash
# The GPU benchmark run behind benchmarks/h100-*.md, for a machine without Rust: build here with
# `cargo build --release -p rwkv` and copy target/release/rwkv to .dev/bin/rwkv, then on the GPU
# machine run `RWKV_COMMIT=<commit the binary was built from> scripts/device-bench.sh cuda` (or `webgpu`, with a Vulkan loader installed).
# Each model is synthesized in memory (random weights of the released shape, Q4_K).
# BENCH_ARGS replaces the bench sizes (default "-p 512 -n 128 -r 3 -b 1,8,64"), e.g. shorter runs
# for a slow backend.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-cuda}"
shapes="${SHAPES:-1.5b 7.2b}"
export RWKV_BIN="${RWKV_BIN:-$PWD/.dev/bin/rwkv}"
args="${BENCH_ARGS:--p 512 -n 128 -r 3 -b 1,8,64}"
for shape in $shapes; do
    ./benchmark.sh -t "RWKV-7 $shape Q4_K, $backend" \
        -c "random weights (rwkv synth shape $shape, q4k); rwkv bench $args" \
        -f "h100-$backend" -- -m "synth:$shape:q4k" --backend "$backend" $args
done
