// LayerNorm and token shift of one row per workgroup (256 invocations), the fusion of
// Op::LayerNorm{x -> xn} with the Op::TokenShift{xn} that follows it (also either alone).
// Each invocation keeps VEC4 vec4 values of the row in registers: loaded once, two workgroup
// sums (mean, then variance: two passes for accuracy), normalized, written once.
// Token shift: `prev` of token t > 0 is the normalized previous row, recomputed here from x
// (the same arithmetic as in that row's own workgroup);
// the first token of a sequence reads the slot's register, and that same workgroup then
// stores the sequence's last normalized row into the register (the only reader and the only
// writer of the register are one invocation, so no race between tokens; for n_tok > 1 it
// normalizes the last row as its second row).
// Requires: width a multiple of 4 (vec4), x != xn, mix outputs distinct from x and xn (the
// host falls back to the separate kernels otherwise).
// params: 0 x_off, 1 xn_off (NONE: not written), 2 width, 3 w_off (NONE: no LayerNorm),
//         4 b_off (vecs), 5 eps (f32 bits), 6 n_tok, 7 reg_off (within a sequence's state),
//         8 state_stride, 9 n_mix, 10 groups_x, 11 rows, then per mix m: 12+2m mix_off,
//         13+2m out_off (vecs / arena). All offsets are multiples of 4.
const WG: u32 = 256u;
const WG_HALF_POW2: u32 = 128u;
const VEC4: u32 = LN_VEC4u;
// RWKV-7's time mix has 6 mix vectors, its channel mix 1.
const MIX_PREFETCH: u32 = 6u;

@group(0) @binding(1) var<storage, read_write> arena: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> vecs: array<vec4<f32>>;
SHIFT_STATE_DECL

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let row = wid.x + wid.y * prm(10u);
    // Uniform per workgroup: every invocation takes part in the sums, or none does.
    if (row >= prm(11u)) {
        return;
    }
    let width4 = prm(2u) / 4u;
    let n_tok = prm(6u);
    let t = row % n_tok;
    let seq = row / n_tok;
    let n_mix = prm(9u);
    let shift = n_mix > 0u;
    // The second row: the previous token's (t > 0), or for the first token the sequence's last
    // row (the register's new value) when it is not this one.
    var second = NONE;
    if (shift && t > 0u) {
        second = row - 1u;
    } else if (shift && n_tok > 1u) {
        second = seq * n_tok + n_tok - 1u;
    }
    // The first MIX_PREFETCH mix vectors and the register are loaded before the sums, all in
    // flight with the row's loads: loaded after them, one memory round trip per (mix, vec4)
    // made this kernel 53 us per 4096-wide row on the H100 (17 % of a 7.2B decode step).
    var mixv: array<vec4<f32>, MIX_PREFETCH * VEC4>;
    var regv: array<vec4<f32>, VEC4>;
    for (var m = 0u; m < MIX_PREFETCH; m++) {
        for (var j = 0u; j < VEC4; j++) {
            let i = lid + j * WG;
            mixv[m * VEC4 + j] = vec4<f32>(0.0);
            if (m < n_mix && i < width4) {
                mixv[m * VEC4 + j] = vecs[prm(12u + 2u * m) / 4u + i];
            }
        }
    }
    for (var j = 0u; j < VEC4; j++) {
        let i = lid + j * WG;
        regv[j] = vec4<f32>(0.0);
        if (shift && t == 0u && i < width4) {
            regv[j] = reg_load(seq, i);
        }
    }
    let x4 = prm(0u) / 4u;
    var cur: array<vec4<f32>, VEC4>;
    var sec: array<vec4<f32>, VEC4>;
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < VEC4; j++) {
        let i = lid + j * WG;
        cur[j] = vec4<f32>(0.0);
        sec[j] = vec4<f32>(0.0);
        if (i < width4) {
            cur[j] = arena[x4 + row * width4 + i];
            if (second != NONE) {
                sec[j] = arena[x4 + second * width4 + i];
            }
        }
        s.x += (cur[j].x + cur[j].y) + (cur[j].z + cur[j].w);
        s.y += (sec[j].x + sec[j].y) + (sec[j].z + sec[j].w);
    }
    let w_off = prm(3u);
    if (w_off != NONE) {
        let n = f32(width4 * 4u);
        let mean = block_sum4(s, lid, SG_ARGS).xy / n;
        var q = vec4<f32>(0.0);
        for (var j = 0u; j < VEC4; j++) {
            if (lid + j * WG < width4) {
                let dc = cur[j] - mean.x;
                let ds = sec[j] - mean.y;
                q.x += dot(dc, dc);
                q.y += dot(ds, ds);
            }
        }
        let variance = block_sum4(q, lid, SG_ARGS).xy / n;
        let eps = prmf(5u);
        let inv = vec2<f32>(1.0) / sqrt(variance + eps);
        for (var j = 0u; j < VEC4; j++) {
            let i = lid + j * WG;
            if (i < width4) {
                let w = vecs[w_off / 4u + i];
                let b = vecs[prm(4u) / 4u + i];
                cur[j] = (cur[j] - mean.x) * inv.x * w + b;
                sec[j] = (sec[j] - mean.y) * inv.y * w + b;
            }
        }
    }
    let xn_off = prm(1u);
    for (var j = 0u; j < VEC4; j++) {
        let i = lid + j * WG;
        if (i >= width4) {
            break;
        }
        if (xn_off != NONE) {
            arena[xn_off / 4u + row * width4 + i] = cur[j];
        }
        if (shift) {
            var prev = sec[j];
            if (t == 0u) {
                prev = regv[j];
                // The register's new value: the sequence's last (normalized) row.
                if (n_tok > 1u) {
                    reg_store(seq, i, sec[j]);
                } else {
                    reg_store(seq, i, cur[j]);
                }
            }
            let d = prev - cur[j];
            for (var m = 0u; m < n_mix; m++) {
                var mix: vec4<f32>;
                if (m < MIX_PREFETCH) {
                    mix = mixv[m * VEC4 + j];
                } else {
                    mix = vecs[prm(12u + 2u * m) / 4u + i];
                }
                arena[prm(13u + 2u * m) / 4u + row * width4 + i] = cur[j] + d * mix;
            }
        }
    }
}
