// RWKV-7 time-mix core (rwkv_core::backend::Op::Wkv7). One workgroup per (head, sequence), one
// invocation per value channel p of the head: it keeps row p of the head's state S in registers
// for all the sequence's tokens, processed in order. Per-head vectors of the token go through
// workgroup memory; the L2 norm, GroupNorm and bonus sums are workgroup reductions.
// params: 0 r, 1 w, 2 k, 3 v, 4 a, 5 g, 6 v_first, 7 v_mix (NONE: layer 0, writes v_first),
//         8 out (arena offsets), 9 width C, 10 n_tok, 11 S offset within a sequence's state,
//         12 state_stride, 13 k_k, 14 k_a, 15 r_k, 16 ln_x_w, 17 ln_x_b (vecs offsets),
//         18 gn_eps (f32 bits)
const N: u32 = HEAD_SIZEu;
const WG: u32 = HEAD_SIZEu;
const WG_HALF_POW2: u32 = HALF_POW2u;

@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

var<workgroup> sh_r: array<f32, N>;
var<workgroup> sh_w: array<f32, N>;
var<workgroup> sh_kk: array<f32, N>;
var<workgroup> sh_b: array<f32, N>;
var<workgroup> sh_k: array<f32, N>;

@compute @workgroup_size(HEAD_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let head = wid.x;
    let seq = wid.y;
    let p = lid;
    let width = prm(9u);
    let n_tok = prm(10u);
    let ch = head * N + p;
    let s_base = seq * prm(12u) + prm(11u) + head * N * N + p * N;
    var srow: array<f32, N>;
    for (var q = 0u; q < N; q++) {
        srow[q] = state[s_base + q];
    }
    let has_mix = prm(7u) != NONE;
    let k_k = vecs[prm(13u) + ch];
    let k_a = vecs[prm(14u) + ch];
    let r_k = vecs[prm(15u) + ch];
    let ln_w = vecs[prm(16u) + ch];
    let ln_b = vecs[prm(17u) + ch];
    let eps = prmf(18u);
    for (var t = 0u; t < n_tok; t++) {
        let at = (seq * n_tok + t) * width + ch;
        let r = arena[prm(0u) + at];
        let w = arena[prm(1u) + at];
        let k = arena[prm(2u) + at];
        var v = arena[prm(3u) + at];
        let a = arena[prm(4u) + at];
        let g = arena[prm(5u) + at];
        if (has_mix) {
            v = v + (arena[prm(6u) + at] - v) * arena[prm(7u) + at];
        } else {
            arena[prm(6u) + at] = v;
        }
        let kk = k * k_k;
        let norm = sqrt(block_sum(kk * kk, lid, SG_ARGS));
        let kkn = kk / max(norm, 1e-12);
        let k_mod = k * (1.0 + (a - 1.0) * k_a);
        sh_r[p] = r;
        sh_w[p] = w;
        sh_kk[p] = kkn;
        sh_b[p] = kkn * a;
        sh_k[p] = k_mod;
        workgroupBarrier();
        var sa = 0.0;
        for (var q = 0u; q < N; q++) {
            sa -= srow[q] * sh_kk[q];
        }
        var y = 0.0;
        for (var q = 0u; q < N; q++) {
            let s = srow[q] * sh_w[q] + sa * sh_b[q] + v * sh_k[q];
            srow[q] = s;
            y += s * sh_r[q];
        }
        let mean = block_sum(y, lid, SG_ARGS) / f32(N);
        let d = y - mean;
        let variance = block_sum(d * d, lid, SG_ARGS) / f32(N);
        let bonus = block_sum(r * k_mod * r_k, lid, SG_ARGS);
        let yn = d / sqrt(variance + eps) * ln_w + ln_b + bonus * v;
        arena[prm(8u) + at] = yn * g;
        // block_sum ends with a barrier, so the shared vectors are free for the next token.
    }
    for (var q = 0u; q < N; q++) {
        state[s_base + q] = srow[q];
    }
}
