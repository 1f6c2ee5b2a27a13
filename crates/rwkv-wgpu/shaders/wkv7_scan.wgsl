// WKV-7 prefill, pass 2 of 3: the state recurrence. Given the token's key-side vectors (from
// wkv7_prep.wgsl), the rows of a head's state S are independent:
//   sa = S_p · (−kk);  S_p ← S_p ∘ w + sa·b + v_p·k;  y_p = S_p · r
// so row p of the state of one (head, sequence) stays with J invocations ("lanes") for the
// whole sequence, its N values in vec4 registers (loops with constant bounds, unrolled by the
// driver): lane j holds columns 4(iJ + j) + 0..3. No invocation waits for another inside a
// token except, when J > 1, for the lane sums of S·kk and S·r (`lane_sum`: subgroup shuffles,
// or workgroup memory in the variant without subgroups). One workgroup of N·J invocations per
// (head, sequence). Tokens go in chunks of T: the chunk's six vectors (r, w, kk, b, k, v:
// 6·T·N floats) are copied into workgroup memory with vec4 loads, then every invocation runs
// the T tokens reading them as vec4 broadcasts; two barriers per chunk. The next chunk's loads
// are issued into registers before the current chunk is computed, so their latency overlaps
// it. y_p (before GroupNorm) goes to `out`; wkv7_post.wgsl finishes it.
// params: as wkv7_prep.wgsl (8 out, 9 width, 10 n_tok, 11 S offset, 12 state_stride; 24..29
//         the six sources). The arena and state are bound as vec4: width, N, the offsets and
//         the stride are multiples of 4 (checked by the host). Bindings: 1 arena, 2 state.
const N: u32 = HEAD_SIZEu;
const T: u32 = SCAN_CHUNKu;
const J: u32 = SCAN_LANESu;
const WG: u32 = HEAD_SIZEu * SCAN_LANESu;
// vec4s of one head's vector, and of one lane's part of a state row.
const NV4: u32 = HEAD_SIZEu / 4u;
const RV4: u32 = HEAD_SIZEu / (4u * SCAN_LANESu);
// vec4s of one source array in a chunk (T tokens), of all six, and loads per invocation.
const ARR: u32 = SCAN_CHUNKu * HEAD_SIZEu / 4u;
const TOTAL: u32 = 6u * ARR;
const LOADS: u32 = (TOTAL + WG - 1u) / WG;
// Positions of the six arrays in `sh` (order of params 24..29).
const R: u32 = 0u;
const W: u32 = ARR;
const KK: u32 = 2u * ARR;
const B: u32 = 3u * ARR;
const K: u32 = 4u * ARR;
const V: u32 = 5u * ARR;

@group(0) @binding(1) var<storage, read_write> arena: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> state: array<vec4<f32>>;

var<workgroup> sh: array<vec4<f32>, 6u * SCAN_CHUNKu * HEAD_SIZEu / 4u>;

// Element e of the chunk starting at token t0 (zeros past the sequence's end).
fn chunk_load(e: u32, t0: u32, n_tok: u32, first_row: u32, width4: u32, head: u32) -> vec4<f32> {
    let arr = e / ARR;
    let rem = e % ARR;
    let tt = t0 + rem / NV4;
    if (e >= TOTAL || tt >= n_tok) {
        return vec4<f32>(0.0);
    }
    return arena[prm(24u + arr) / 4u + (first_row + tt) * width4 + head * NV4 + rem % NV4];
}

SCAN_LANE_SUM

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32 SCAN_BUILTINS) {
    let head = wid.x;
    let seq = wid.y;
    // Row p, lane j: the lanes of a row are consecutive in SCAN_INDEX (one subgroup's
    // consecutive lanes where lane sums use shuffles).
    let idx = SCAN_INDEX;
    let p = idx / J;
    let j = idx % J;
    let width4 = prm(9u) / 4u;
    let n_tok = prm(10u);
    let first_row = seq * n_tok;
    let s_base = (seq * prm(12u) + prm(11u) + head * N * N + p * N) / 4u;
    var srow: array<vec4<f32>, RV4>;
    for (var i = 0u; i < RV4; i++) {
        srow[i] = state[s_base + i * J + j];
    }
    var pre: array<vec4<f32>, LOADS>;
    for (var l = 0u; l < LOADS; l++) {
        pre[l] = chunk_load(l * WG + lid, 0u, n_tok, first_row, width4, head);
    }
    let n_chunks = (n_tok + T - 1u) / T;
    let out4 = prm(8u) / 4u;
    let v_at = p / 4u;
    let v_c = p % 4u;
    for (var c = 0u; c < n_chunks; c++) {
        // Everyone is done reading the previous chunk.
        workgroupBarrier();
        for (var l = 0u; l < LOADS; l++) {
            let e = l * WG + lid;
            if (e < TOTAL) {
                sh[e] = pre[l];
            }
        }
        workgroupBarrier();
        let t0 = c * T;
        if (t0 + T < n_tok) {
            for (var l = 0u; l < LOADS; l++) {
                pre[l] = chunk_load(l * WG + lid, t0 + T, n_tok, first_row, width4, head);
            }
        }
        let count = min(T, n_tok - t0);
        for (var tt = 0u; tt < count; tt++) {
            let base = tt * NV4 + j;
            var acc = vec4<f32>(0.0);
            for (var i = 0u; i < RV4; i++) {
                acc = fma(srow[i], sh[KK + base + i * J], acc);
            }
            let sa = -lane_sum((acc.x + acc.y) + (acc.z + acc.w), lid, p);
            let v_p = sh[V + tt * NV4 + v_at][v_c];
            var yacc = vec4<f32>(0.0);
            for (var i = 0u; i < RV4; i++) {
                let b = base + i * J;
                let s = srow[i] * sh[W + b] + sa * sh[B + b] + v_p * sh[K + b];
                srow[i] = s;
                yacc = fma(s, sh[R + b], yacc);
            }
            let y = lane_sum((yacc.x + yacc.y) + (yacc.z + yacc.w), lid, p);
            if (j == 0u) {
                let at = (first_row + t0 + tt) * prm(9u) + head * N + p;
                arena[out4 + at / 4u][at % 4u] = y;
            }
        }
    }
    for (var i = 0u; i < RV4; i++) {
        state[s_base + i * J + j] = srow[i];
    }
}
