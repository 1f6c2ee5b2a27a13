// Token shift and mixing. One invocation per (sequence, channel) walks the sequence's tokens in
// order, so reading the register (first token) and rewriting it (last token) cannot race.
// params: 0 x_off, 1 width, 2 n_seq, 3 n_tok, 4 reg_off (within a sequence's state),
//         5 state_stride, 6 n_mix, 7 groups_x, then per mix m: 8+2m mix_off (vecs), 9+2m out_off
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * prm(7u)) * 64u + lid;
    let width = prm(1u);
    let n_seq = prm(2u);
    if (idx >= width * n_seq) {
        return;
    }
    let seq = idx / width;
    let c = idx % width;
    let n_tok = prm(3u);
    let reg = seq * prm(5u) + prm(4u) + c;
    let n_mix = prm(6u);
    var prev = state[reg];
    for (var t = 0u; t < n_tok; t++) {
        let row = seq * n_tok + t;
        let xv = arena[prm(0u) + row * width + c];
        for (var m = 0u; m < n_mix; m++) {
            let mix = vecs[prm(8u + 2u * m) + c];
            arena[prm(9u + 2u * m) + row * width + c] = xv + (prev - xv) * mix;
        }
        prev = xv;
    }
    state[reg] = prev;
}
