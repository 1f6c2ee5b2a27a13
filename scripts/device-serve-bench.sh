#!/usr/bin/env bash
# The serving benchmark behind benchmarks/h100-serve.md, for a GPU machine without Rust: build
# here with `cargo build --release -p rwkv`, copy target/release/rwkv to .dev/bin/rwkv, then run
# `scripts/device-serve-bench.sh cuda` there (needs python3, stdlib only).
# For each shape (random weights, Q4_K) it runs `rwkv bench` (batch 1 and 64 decode, 512-token
# prefill) as the reference, starts `rwkv serve` (state cache off, so every prompt is prefilled),
# and runs scripts/bench_serve.py at each client count: prompt 512 / output 128, streaming.
# PROMPT_TOKENS, OUTPUT_TOKENS, CLIENTS, SHAPES, WARMUP_CLIENTS, PORT override the defaults.
# Output: markdown on stdout (append it to benchmarks/h100-serve.md).
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-cuda}"
shapes="${SHAPES:-1.5b 7.2b}"
clients="${CLIENTS:-1 16 64 256}"
bin="${RWKV_BIN:-$PWD/.dev/bin/rwkv}"
port="${PORT:-18080}"
prompt="${PROMPT_TOKENS:-512}"
output="${OUTPUT_TOKENS:-128}"
warmup="${WARMUP_CLIENTS:-64}"
echo "## rwkv serve, $backend, $(date -u +%Y-%m-%dT%H:%MZ), commit ${RWKV_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
echo
for shape in $shapes; do
    echo "### RWKV-7 $shape Q4_K (random weights), prompt $prompt / output $output"
    echo
    echo "Reference: \`rwkv bench -m synth:$shape:q4k --backend $backend -p $prompt -n $output -r 2 -b 1,64\`"
    echo
    echo '```'
    "$bin" bench -m "synth:$shape:q4k" --backend "$backend" -p "$prompt" -n "$output" -r 2 -b 1,64 2>/dev/null
    echo '```'
    echo
    "$bin" serve -m "synth:$shape:q4k" --backend "$backend" --port "$port" --max-batch 64 \
        --max-queue 512 --cache-bytes 0 2>"/tmp/rwkv-serve-$shape.log" &
    pid=$!
    for _ in $(seq 1 600); do
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" \
            >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "/tmp/rwkv-serve-$shape.log" >&2; exit 1; }
        sleep 1
    done
    echo "Server: \`rwkv serve -m synth:$shape:q4k --backend $backend --max-batch 64 --max-queue 512 --cache-bytes 0\`;"
    echo "load: \`python3 scripts/bench_serve.py --clients N --requests max(16, 2N) --prompt-tokens $prompt --output-tokens $output\`"
    echo
    echo "| model | clients | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    # One warm-up pass compiles the plans (CUDA graphs per batch size) outside the figures.
    python3 scripts/bench_serve.py --url "http://127.0.0.1:$port" --clients "$warmup" \
        --requests "$warmup" --prompt-tokens "$prompt" --output-tokens 16 >/dev/null
    for c in $clients; do
        n=$((2 * c)); [ "$n" -lt 16 ] && n=16
        python3 scripts/bench_serve.py --url "http://127.0.0.1:$port" --clients "$c" \
            --requests "$n" --prompt-tokens "$prompt" --output-tokens "$output" --markdown --label "$shape" \
            | tail -n 1
    done
    kill -TERM "$pid"
    wait "$pid" || echo "(server exit status $?)"
    echo
done
