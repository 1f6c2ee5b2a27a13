// RWKV-7 time-mix core (rwkv_core::backend::Op::Wkv7), with J invocations per state row: one
// workgroup of N·J invocations per (head, sequence); invocation (p, j) = (lid / J, lid % J)
// keeps the N/J columns q = 4(iJ + j) + 0..3 (i = 0 .. N/4J − 1) of row p of S in vec4
// registers for all the sequence's tokens (16 values at N = 64, J = 4, instead of one thread
// holding a whole row: 4x the invocations, and the lanes of a row read consecutive 16-byte
// words of S, so loading and storing the state is coalesced).
// Per token: invocations lid < N load channel lid's vectors (r, w, k, v, a, g) and put the
// per-key-channel ones in workgroup memory (read back as vec4); the row sums S·kk and S·r are
// split over the row's J lanes and summed through workgroup memory; the L2 norm of kk, the
// bonus, and GroupNorm's mean and variance (two passes) are workgroup sums.
// params: as wkv7.wgsl (0 r, 1 w, 2 k, 3 v, 4 a, 5 g, 6 v_first, 7 v_mix, 8 out, 9 width,
//         10 n_tok, 11 S offset, 12 state_stride, 13 k_k, 14 k_a, 15 r_k, 16 ln_x_w,
//         17 ln_x_b, 18 gn_eps). The state is bound as vec4: N, the S offset and the stride
//         are multiples of 4 (checked by the host).
const N: u32 = HEAD_SIZEu;
const J: u32 = WKV_LANESu;
const WG: u32 = WKV_WGu;
const WG_HALF_POW2: u32 = HALF_POW2u;
// vec4 blocks of a row per invocation.
const V4: u32 = HEAD_SIZEu / (4u * WKV_LANESu);

@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<vec4<f32>>;

var<workgroup> sh_r: array<vec4<f32>, HEAD_SIZEu / 4u>;
var<workgroup> sh_w: array<vec4<f32>, HEAD_SIZEu / 4u>;
var<workgroup> sh_kk: array<vec4<f32>, HEAD_SIZEu / 4u>;
var<workgroup> sh_b: array<vec4<f32>, HEAD_SIZEu / 4u>;
var<workgroup> sh_k: array<vec4<f32>, HEAD_SIZEu / 4u>;
var<workgroup> sh_v: array<f32, N>;
var<workgroup> sh_sa: array<f32, WG>;
var<workgroup> sh_y: array<f32, WG>;

@compute @workgroup_size(WKV_WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let head = wid.x;
    let seq = wid.y;
    let p = lid / J;
    let j = lid % J;
    let width = prm(9u);
    let n_tok = prm(10u);
    let s_base = (seq * prm(12u) + prm(11u) + head * N * N + p * N) / 4u;
    var srow: array<vec4<f32>, V4>;
    for (var i = 0u; i < V4; i++) {
        srow[i] = state[s_base + i * J + j];
    }
    let has_mix = prm(7u) != NONE;
    // Channel `lid` (the loaders) and channel p (the row's output).
    let loader = lid < N;
    let ch = head * N + min(lid, N - 1u);
    let k_k = vecs[prm(13u) + ch];
    let k_a = vecs[prm(14u) + ch];
    let r_k = vecs[prm(15u) + ch];
    let ch_p = head * N + p;
    let ln_w = vecs[prm(16u) + ch_p];
    let ln_b = vecs[prm(17u) + ch_p];
    let eps = prmf(18u);
    for (var t = 0u; t < n_tok; t++) {
        let row0 = (seq * n_tok + t) * width;
        var kk = 0.0;
        var bonus_part = 0.0;
        var r = 0.0;
        var w = 0.0;
        var a = 0.0;
        var k_mod = 0.0;
        if (loader) {
            let at = row0 + ch;
            r = arena[prm(0u) + at];
            w = arena[prm(1u) + at];
            let k = arena[prm(2u) + at];
            var v = arena[prm(3u) + at];
            a = arena[prm(4u) + at];
            if (has_mix) {
                v = v + (arena[prm(6u) + at] - v) * arena[prm(7u) + at];
            } else {
                arena[prm(6u) + at] = v;
            }
            kk = k * k_k;
            k_mod = k * (1.0 + (a - 1.0) * k_a);
            bonus_part = r * k_mod * r_k;
            sh_v[lid] = v;
        }
        let sums = block_sum4(vec4<f32>(kk * kk, bonus_part, 0.0, 0.0), lid, SG_ARGS);
        if (loader) {
            let kkn = kk / max(sqrt(sums.x), 1e-12);
            let q4 = lid / 4u;
            let c = lid % 4u;
            sh_r[q4][c] = r;
            sh_w[q4][c] = w;
            sh_kk[q4][c] = kkn;
            sh_b[q4][c] = kkn * a;
            sh_k[q4][c] = k_mod;
        }
        workgroupBarrier();
        let v_p = sh_v[p];
        var sa_part = 0.0;
        for (var i = 0u; i < V4; i++) {
            sa_part -= dot(srow[i], sh_kk[i * J + j]);
        }
        sh_sa[lid] = sa_part;
        workgroupBarrier();
        var sa = 0.0;
        for (var l = 0u; l < J; l++) {
            sa += sh_sa[p * J + l];
        }
        var y_part = 0.0;
        for (var i = 0u; i < V4; i++) {
            let b = i * J + j;
            let s = srow[i] * sh_w[b] + sa * sh_b[b] + v_p * sh_k[b];
            srow[i] = s;
            y_part += dot(s, sh_r[b]);
        }
        sh_y[lid] = y_part;
        workgroupBarrier();
        var y = 0.0;
        for (var l = 0u; l < J; l++) {
            y += sh_y[p * J + l];
        }
        // GroupNorm over the head's N rows (one lane per row contributes).
        let first = j == 0u;
        let mean = block_sum4(vec4<f32>(select(0.0, y, first), 0.0, 0.0, 0.0), lid, SG_ARGS).x
            / f32(N);
        let d = y - mean;
        let variance = block_sum4(vec4<f32>(select(0.0, d * d, first), 0.0, 0.0, 0.0), lid, SG_ARGS).x
            / f32(N);
        if (first) {
            let at_p = row0 + ch_p;
            let yn = d / sqrt(variance + eps) * ln_w + ln_b + sums.y * v_p;
            arena[prm(8u) + at_p] = yn * arena[prm(5u) + at_p];
        }
        // block_sum4 ends with a barrier: the shared vectors are free for the next token.
    }
    for (var i = 0u; i < V4; i++) {
        state[s_base + i * J + j] = srow[i];
    }
}
