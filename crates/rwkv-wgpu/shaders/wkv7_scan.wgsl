// WKV-7 prefill, pass 2 of 3: the state recurrence. Given the token's key-side vectors (from
// wkv7_prep.wgsl), the rows of a head's state S are independent:
//   sa = S_p · (−kk);  S_p ← S_p ∘ w + sa·b + v_p·k;  y_p = S_p · r
// so one invocation owns row p of the state of one (head, sequence) for the whole sequence,
// its N values in vec4 registers (loops with constant bounds, unrolled by the driver), and no
// invocation waits for another inside a token. One workgroup of N invocations per (head,
// sequence). Tokens go in chunks of T: the chunk's six vectors (r, w, kk, b, k, v: 6·T·N
// floats) are copied into workgroup memory with vec4 loads, then every invocation runs the T
// tokens reading them as vec4 broadcasts; two barriers per chunk. The next chunk's loads are
// issued into registers before the current chunk is computed, so their latency overlaps it.
// y_p (before GroupNorm) goes to `out`; wkv7_post.wgsl finishes it.
// params: as wkv7_prep.wgsl (8 out, 9 width, 10 n_tok, 11 S offset, 12 state_stride; 24..29
//         the six sources). The arena and state are bound as vec4: width, N, the offsets and
//         the stride are multiples of 4 (checked by the host). Bindings: 1 arena, 2 state.
const N: u32 = HEAD_SIZEu;
const T: u32 = SCAN_CHUNKu;
// vec4s of one head's vector.
const NV4: u32 = HEAD_SIZEu / 4u;
// vec4s of one source array in a chunk (T tokens), and loads of it per invocation.
const ARR: u32 = SCAN_CHUNKu * HEAD_SIZEu / 4u;
const PER: u32 = SCAN_CHUNKu / 4u;
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

@compute @workgroup_size(HEAD_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let head = wid.x;
    let seq = wid.y;
    let p = lid;
    let width4 = prm(9u) / 4u;
    let n_tok = prm(10u);
    let first_row = seq * n_tok;
    let s_base = (seq * prm(12u) + prm(11u) + head * N * N + p * N) / 4u;
    var srow: array<vec4<f32>, NV4>;
    for (var i = 0u; i < NV4; i++) {
        srow[i] = state[s_base + i];
    }
    // Element e = j·N + lid of each array of a chunk: token e / NV4, vec4 e % NV4 of the head.
    var pre: array<vec4<f32>, 6u * SCAN_CHUNKu / 4u>;
    let n_chunks = (n_tok + T - 1u) / T;
    for (var arr = 0u; arr < 6u; arr++) {
        for (var j = 0u; j < PER; j++) {
            let e = j * N + lid;
            let tt = e / NV4;
            var x = vec4<f32>(0.0);
            if (tt < n_tok) {
                x = arena[prm(24u + arr) / 4u + (first_row + tt) * width4 + head * NV4 + e % NV4];
            }
            pre[arr * PER + j] = x;
        }
    }
    let out4 = prm(8u) / 4u;
    let v_at = p / 4u;
    let v_c = p % 4u;
    for (var c = 0u; c < n_chunks; c++) {
        // Everyone is done reading the previous chunk.
        workgroupBarrier();
        for (var arr = 0u; arr < 6u; arr++) {
            for (var j = 0u; j < PER; j++) {
                sh[arr * ARR + j * N + lid] = pre[arr * PER + j];
            }
        }
        workgroupBarrier();
        let t0 = c * T;
        let t1 = t0 + T;
        if (t1 < n_tok) {
            for (var arr = 0u; arr < 6u; arr++) {
                for (var j = 0u; j < PER; j++) {
                    let e = j * N + lid;
                    let tt = t1 + e / NV4;
                    var x = vec4<f32>(0.0);
                    if (tt < n_tok) {
                        x = arena[prm(24u + arr) / 4u + (first_row + tt) * width4 + head * NV4
                            + e % NV4];
                    }
                    pre[arr * PER + j] = x;
                }
            }
        }
        let count = min(T, n_tok - t0);
        for (var tt = 0u; tt < count; tt++) {
            let base = tt * NV4;
            var acc = vec4<f32>(0.0);
            for (var i = 0u; i < NV4; i++) {
                acc = fma(srow[i], sh[KK + base + i], acc);
            }
            let sa = -((acc.x + acc.y) + (acc.z + acc.w));
            let v_p = sh[V + base + v_at][v_c];
            var yacc = vec4<f32>(0.0);
            for (var i = 0u; i < NV4; i++) {
                let s = srow[i] * sh[W + base + i] + sa * sh[B + base + i] + v_p * sh[K + base + i];
                srow[i] = s;
                yacc = fma(s, sh[R + base + i], yacc);
            }
            let y = (yacc.x + yacc.y) + (yacc.z + yacc.w);
            let at = (first_row + t0 + tt) * prm(9u) + head * N + p;
            arena[out4 + at / 4u][at % 4u] = y;
        }
    }
    for (var i = 0u; i < NV4; i++) {
        state[s_base + i] = srow[i];
    }
}
