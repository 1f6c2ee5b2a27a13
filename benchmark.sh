#!/usr/bin/env bash
# Runs `rwkv bench` and appends a section to benchmarks/FILE.md.
# Usage: ./benchmark.sh -t TITLE -c COMMENT -f FILE [-- extra `rwkv bench` arguments]
# Example: ./benchmark.sh -t "CUDA Q4_K 1.5B" -c "after graph capture" -f h100-cuda -- -m synth:1.5b:q4k --backend cuda -b 1,8,64
# Without `-m`, the model is a built-in synthetic one (synth:0.1b:q4k): no download needed.
# RWKV_BIN=path uses that binary instead of building one with cargo (e.g. on a machine without Rust).
# RWKV_COMMIT=hash names the commit when the binary was built on another machine (no git here).
set -euo pipefail

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
}

title="" comment="" file=""
while [ $# -gt 0 ]; do
    case "$1" in
        -t) title="${2-}"; shift 2 || { usage >&2; exit 2; } ;;
        -c) comment="${2-}"; shift 2 || { usage >&2; exit 2; } ;;
        -f) file="${2-}"; shift 2 || { usage >&2; exit 2; } ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "benchmark.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

ask() { # ask VAR PROMPT: read a value from the terminal when it is missing
    local __v
    if [ -t 0 ]; then
        read -r -p "$2: " __v
        printf -v "$1" '%s' "$__v"
    fi
}
[ -n "$title" ] || ask title "Title"
[ -n "$comment" ] || ask comment "Comment"
[ -n "$file" ] || ask file "File name (benchmarks/<name>.md)"
if [ -z "$title" ] || [ -z "$comment" ] || [ -z "$file" ]; then
    echo "benchmark.sh: -t TITLE, -c COMMENT and -f FILE are required" >&2
    usage >&2
    exit 2
fi
case "$file" in
    */*|.*) echo "benchmark.sh: FILE is a plain name, written as benchmarks/FILE.md" >&2; exit 2 ;;
esac
file="${file%.md}"

root="$(cd "$(dirname "$0")" && pwd)"
cd "$root"
if [ -n "${RWKV_BIN:-}" ]; then
    bin="$RWKV_BIN"
else
    cargo build --release -q -p rwkv
    bin="$root/target/release/rwkv"
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp" "$tmp.md"' EXIT
"$bin" bench --json "$@" >"$tmp"

if [ -n "${RWKV_COMMIT:-}" ]; then
    commit="$RWKV_COMMIT" # set where the binary was built elsewhere (a GPU machine without git)
else
    commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if ! git diff --quiet HEAD 2>/dev/null; then commit="$commit (with uncommitted changes)"; fi
fi
machine="$(uname -srm); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || true); $(nproc 2>/dev/null || echo '?') cores"
gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)"
[ -n "$gpu" ] || gpu="none found by nvidia-smi"

python3 - "$tmp" "$title" "$comment" "$commit" "$machine" "$gpu" "$*" >"$tmp.md" <<'PY'
import json, sys, datetime
path, title, comment, commit, machine, gpu, argv = sys.argv[1:8]
r = json.load(open(path))
def tps(t): return f"{t['tps_mean']:.2f} ± {t['tps_std']:.2f}"
pre = [t for t in r["tests"] if t["test"].startswith("pp")]
gen = [t for t in r["tests"] if t["test"].startswith("tg")]
q = r.get("quality") or {}
out = []
out.append(f"## {title}\n")
out.append(f"{comment}\n")
out.append("| field | value |")
out.append("| --- | --- |")
rows = [
    ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ("git commit", commit),
    ("machine", machine),
    ("GPU", gpu),
    ("backend", f"{r['backend']} ({r['backend_choice']})"),
    ("device", r["device"]),
    ("model", f"{r['model']}: {r.get('model_type', '?')} ({r['size_bytes']/2**30:.2f} GiB, {r['params']/1e9:.2f} B params)"),
    ("load time", f"{r['load_seconds']:.2f} s read/build + {r['upload_seconds']:.2f} s upload"),
    ("prefill tok/s", "; ".join(f"{t['test']}: {tps(t)}" for t in pre) or "not run"),
    ("generation tok/s", "; ".join(f"{t['test']}: {tps(t)}" for t in gen) or "not run"),
]
b1 = next((t for t in gen if " b" not in t["test"]), None)
if b1:
    # Binary units, as every size the CLI prints (GiB = 2^30 bytes).
    gibs = r["decode_bytes_per_token"] * b1["tps_mean"] / 2**30
    rows.append(("decode bandwidth", f"{r['decode_bytes_per_token']/2**30:.3f} GiB/token × {b1['tps_mean']:.1f} tok/s = {gibs:.0f} GiB/s"))
rows.append(("quality hash", f"{q.get('greedy_hash', 'not run')} (greedy, {q.get('greedy_tokens', 0)} tokens)"))
if q.get("ref_max_abs_diff") is not None:
    rows.append(("reference check", f"vs CPU reference, {q['ref_positions']} positions: max abs diff {q['ref_max_abs_diff']:.3e}, top-1 agreement {100*q['ref_top1_agreement']:.1f}%"))
else:
    rows.append(("reference check", "the CPU backend is the reference itself" if q else "not run"))
rows.append(("command", f"./benchmark.sh -t ... -c ... -f ... -- {argv}".rstrip(" -")))
for k, v in rows:
    out.append(f"| {k} | {str(v).replace('|', '/')} |")
out.append("")
print("\n".join(out))
PY

mkdir -p benchmarks
dest="benchmarks/$file.md"
[ -f "$dest" ] || printf '# Benchmarks: %s\n\n' "$file" >"$dest"
cat "$tmp.md" >>"$dest"
cat "$tmp.md"
echo "benchmark.sh: appended to $dest" >&2
