#!/usr/bin/env bash
# Do the tolerances catch a small error? Applies seeded 1-2 % perturbations (one term of a
# kernel scaled by a factor in [0.98, 0.99] or [1.01, 1.02]) one at a time to a copy of the
# working tree, runs the tests that should notice and reports each as caught or MISSED.
#
#   scripts/mutation-check.sh [cpu] [wgsl] [cuda]     (default: cpu wgsl)
#
# cpu: the CPU reference (rwkv-cpu), against the float64 Python reference and rwkv.cpp's logits
#      (../shared, python3) and against WebGPU (conformance);
# wgsl: WebGPU kernels, against the CPU (conformance, rwkv-wgpu model tests); lavapipe will do;
# cuda: CUDA kernels, against the CPU (conformance, rwkv-cuda oracle and gpu tests): GPU only.
# MUTATION_SEED (default 1) picks the factors; MUTATION_ONLY=<name>,<name> runs only those. The copy
# and its build live in target/mutation (the first run copies target/debug there, so only the
# workspace crates rebuild). Exit status 0 when every mutation was caught.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(cpu wgsl)
seed="${MUTATION_SEED:-1}"
work="$repo/target/mutation"
tree="$work/tree"
export CARGO_TARGET_DIR="$work/target"
[ -n "${XDG_RUNTIME_DIR:-}" ] || export NODEVICE_SELECT=1

# name | group | file | text to scale (must occur exactly once) | the same with {f} for the factor
mutations() {
    cat <<'EOF'
cpu-wkv-bonus|cpu|crates/rwkv-cpu/src/ops.rs|out[base + p] = (normed + bonus * v[p]) * g[p];|out[base + p] = (normed + {f} * bonus * v[p]) * g[p];
cpu-layer-norm|cpu|crates/rwkv-cpu/src/ops.rs|let inv_std = 1.0 / (var + eps).sqrt();|let inv_std = {f} / (var + eps).sqrt();
cpu-group-norm|cpu|crates/rwkv-cpu/src/ops.rs|let inv_std = 1.0 / (var + weights.gn_eps).sqrt();|let inv_std = {f} / (var + weights.gn_eps).sqrt();
cpu-kk-norm|cpu|crates/rwkv-cpu/src/ops.rs|*x /= norm;|*x /= norm * {f};
cpu-decay|cpu|crates/rwkv-cpu/src/ops.rs|row[q] = row[q] * decay[q] + sa|row[q] = row[q] * (decay[q] * {f}) + sa
wgsl-wkv-bonus-decode|wgsl|crates/rwkv-wgpu/shaders/wkv7_split.wgsl|+ ln_b + sums.y * v_p;|+ ln_b + {f} * sums.y * v_p;
wgsl-wkv-bonus-prefill|wgsl|crates/rwkv-wgpu/shaders/wkv7_post.wgsl|+ sums.y * v;|+ {f} * sums.y * v;
wgsl-wkv-bonus-fused|wgsl|crates/rwkv-wgpu/shaders/wkv7.wgsl|ln_b + bonus * v;|ln_b + {f} * bonus * v;
wgsl-ln-shift|wgsl|crates/rwkv-wgpu/shaders/ln_shift.wgsl|let inv = vec2<f32>(1.0) / sqrt(variance + eps);|let inv = vec2<f32>({f}) / sqrt(variance + eps);
wgsl-layer-norm|wgsl|crates/rwkv-wgpu/shaders/layer_norm.wgsl|let inv = 1.0 / sqrt(variance + prmf(5u));|let inv = {f} / sqrt(variance + prmf(5u));
wgsl-q4k-scale|wgsl|crates/rwkv-wgpu/shaders/q4k_pieces.wgsl|return dm.x * (sc_lo * dot_lo|return dm.x * {f} * (sc_lo * dot_lo
cuda-wkv-bonus-decode|cuda|crates/rwkv-cuda/kernels/wkv7.cu|+ lb + bonus * vp)|+ lb + {f}f * bonus * vp)
cuda-wkv-bonus-prefill|cuda|crates/rwkv-cuda/kernels/wkv7.cu|A.ln_b[c] + bonus * A.v[idx])|A.ln_b[c] + {f}f * bonus * A.v[idx])
cuda-layer-norm|cuda|crates/rwkv-cuda/kernels/ops.cu|inv = rsqrtf(block_sum(q, red) / (float)n + eps);|inv = {f}f * rsqrtf(block_sum(q, red) / (float)n + eps);
cuda-kk-norm-decode|cuda|crates/rwkv-cuda/kernels/wkv7.cu|float nrm = sqrtf(block_sum(kk * kk, red));|float nrm = {f}f * sqrtf(block_sum(kk * kk, red));
EOF
}

# The tests each group runs: "label|command". A GPU group requires its backend (no skipping).
commands() {
    case "$1" in
    cpu) printf '%s\n' \
        "python f64 + rwkv.cpp|RWKV_REQUIRE_REFDATA=1 cargo test -q -p rwkv-cpu --test python_reference --test rwkv_cpp_models" \
        "conformance vs webgpu|RWKV_REQUIRE_GPU=webgpu cargo test -q -p rwkv --test conformance webgpu::" ;;
    wgsl) printf '%s\n' \
        "conformance|RWKV_REQUIRE_GPU=webgpu cargo test -q -p rwkv --test conformance webgpu::" \
        "rwkv-wgpu model|RWKV_REQUIRE_GPU=webgpu cargo test -q -p rwkv-wgpu --test model" \
        "rwkv-wgpu ops|RWKV_REQUIRE_GPU=webgpu cargo test -q -p rwkv-wgpu --test ops" ;;
    cuda) printf '%s\n' \
        "conformance|RWKV_REQUIRE_GPU=cuda cargo test -q -p rwkv --test conformance cuda::" \
        "rwkv-cuda oracle + gpu|RWKV_REQUIRE_GPU=cuda cargo test -q -p rwkv-cuda --test oracle --test gpu" ;;
    esac
}

# The factor of mutation number $1: 0.98..0.99 or 1.01..1.02, from the seed.
factor() {
    python3 -c "
import random, sys
r = random.Random(int(sys.argv[1]) * 1000 + int(sys.argv[2]))
m = 0.01 + 0.01 * r.random()
print(f'{1 - m if r.random() < 0.5 else 1 + m:.4f}')" "$seed" "$1"
}

apply() { # apply FILE FIND REPLACE: exactly one occurrence, or the spec is stale
    python3 - "$tree/$1" "$2" "$3" <<'PY'
import sys
path, find, repl = sys.argv[1:4]
text = open(path).read()
n = text.count(find)
if n != 1:
    sys.exit(f"mutation-check: {path}: the text to scale occurs {n} times (want 1): {find!r}")
open(path, "w").write(text.replace(find, repl))
PY
}

echo "mutation-check: copying the working tree to $tree" >&2
rm -rf "$tree"
mkdir -p "$tree"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$tree"
if [ ! -d "$CARGO_TARGET_DIR/debug" ] && [ -d "$repo/target/debug" ]; then
    echo "mutation-check: seeding $CARGO_TARGET_DIR from target/debug (dependencies reused)" >&2
    mkdir -p "$CARGO_TARGET_DIR"
    cp -a "$repo/target/debug" "$CARGO_TARGET_DIR/"
fi
# The reference data sits beside the checkout (../shared); the copy finds it the same way.
[ ! -d "$repo/../shared" ] || ln -sfn "$(cd "$repo/.." && pwd)/shared" "$work/shared"
cd "$tree"

run_all() { # run_all GROUP: "label=pass|fail" per command of the group
    local out="" label cmd
    while IFS='|' read -r label cmd; do
        if bash -c "$cmd" >"$work/last.log" 2>&1; then
            out+="  $label: passed"$'\n'
        else
            out+="  $label: FAILED"$'\n'
        fi
    done < <(commands "$1")
    printf '%s' "$out"
}

summary=()
missed=0
for group in "${groups[@]}"; do
    echo "== mutation-check: baseline of $group (every test must pass unmutated)" >&2
    base="$(run_all "$group")"
    echo "$base" >&2
    if grep -q FAILED <<<"$base"; then
        echo "mutation-check: the unmutated $group tests fail; fix that first (log: $work/last.log)" >&2
        exit 2
    fi
    i=0
    while IFS='|' read -r name g file find repl; do
        i=$((i + 1))
        [ "$g" = "$group" ] || continue
        [ -z "${MUTATION_ONLY:-}" ] || [[ ",$MUTATION_ONLY," == *",$name,"* ]] || continue
        f="$(factor "$i")"
        cp "$repo/$file" "$tree/$file"
        apply "$file" "$find" "${repl//\{f\}/$f}"
        echo "== mutation-check: $name (x$f in $file)" >&2
        result="$(run_all "$group")"
        cp "$repo/$file" "$tree/$file"
        echo "$result" >&2
        if grep -q FAILED <<<"$result"; then
            summary+=("caught  $name x$f: $(grep FAILED <<<"$result" | sed 's/: FAILED//; s/^ *//' | paste -sd, -)")
        else
            summary+=("MISSED  $name x$f")
            missed=$((missed + 1))
        fi
    done < <(mutations)
done

echo "== mutation-check (seed $seed):"
printf '%s\n' "${summary[@]}"
[ "$missed" = 0 ]
