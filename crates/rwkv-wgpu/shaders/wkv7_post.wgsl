// WKV-7 prefill, pass 3 of 3: GroupNorm of the head's y (from wkv7_scan.wgsl, in `out`), the
// bonus (Σ r·k·r_k over the head) times v, times the gate g, back into `out`. One workgroup of
// N invocations per (head, row), invocation = channel; the same operations in the same order
// as wkv7_split.wgsl.
// params: as wkv7_prep.wgsl (0 r, 5 g, 8 out, 9 width, 15 r_k, 16 ln_x_w, 17 ln_x_b, 18 gn_eps,
//         28 k·(1 + (a − 1)·k_a), 29 mixed v).
const N: u32 = HEAD_SIZEu;
const WG: u32 = HEAD_SIZEu;
const WG_HALF_POW2: u32 = HALF_POW2u;

@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;

@compute @workgroup_size(HEAD_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let head = wid.x;
    let row = wid.y;
    let ch = head * N + lid;
    let at = row * prm(9u) + ch;
    let y = arena[prm(8u) + at];
    let r = arena[prm(0u) + at];
    let k_mod = arena[prm(28u) + at];
    let v = arena[prm(29u) + at];
    let sums = block_sum4(vec4<f32>(y, r * k_mod * vecs[prm(15u) + ch], 0.0, 0.0), lid, SG_ARGS);
    let mean = sums.x / f32(N);
    let d = y - mean;
    let variance = block_sum(d * d, lid, SG_ARGS) / f32(N);
    let yn = d / sqrt(variance + prmf(18u)) * vecs[prm(16u) + ch] + vecs[prm(17u) + ch]
        + sums.y * v;
    arena[prm(8u) + at] = yn * arena[prm(5u) + at];
}
