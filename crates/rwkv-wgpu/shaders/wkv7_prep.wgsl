// WKV-7 prefill, pass 1 of 3 (with wkv7_scan.wgsl and wkv7_post.wgsl): the per-token vectors
// of one head that do not depend on the state. One workgroup of N invocations per (head, row),
// invocation = channel of the head: the value v after the v_first mix (layer 0 writes v_first
// instead, as wkv7.wgsl does), kk = k·k_k L2-normalised over the head (a workgroup sum),
// b = kk·a and k·(1 + (a − 1)·k_a), written to the scratch rows the scan reads.
// params: as wkv7_split.wgsl (0 r, 1 w, 2 k, 3 v, 4 a, 5 g, 6 v_first, 7 v_mix, 8 out,
//         9 width, 10 n_tok, 11 S offset, 12 state_stride, 13 k_k, 14 k_a, 15 r_k, 16 ln_x_w,
//         17 ln_x_b, 18 gn_eps), then the scan's sources (arena offsets of [rows, C] arrays):
//         24 r, 25 w, 26 kk, 27 b = kk·a, 28 k·(1 + (a − 1)·k_a), 29 mixed v.
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
    let k = arena[prm(2u) + at];
    var v = arena[prm(3u) + at];
    let a = arena[prm(4u) + at];
    if (prm(7u) != NONE) {
        v = v + (arena[prm(6u) + at] - v) * arena[prm(7u) + at];
    } else {
        arena[prm(6u) + at] = v;
    }
    let kk = k * vecs[prm(13u) + ch];
    let norm = sqrt(block_sum(kk * kk, lid, SG_ARGS));
    let kkn = kk / max(norm, 1e-12);
    arena[prm(26u) + at] = kkn;
    arena[prm(27u) + at] = kkn * a;
    arena[prm(28u) + at] = k * (1.0 + (a - 1.0) * vecs[prm(14u) + ch]);
    arena[prm(29u) + at] = v;
}
