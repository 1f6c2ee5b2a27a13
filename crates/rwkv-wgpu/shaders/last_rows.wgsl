// out[s] = x[s * n_tok + n_tok - 1], one invocation per (sequence, channel).
// params: 0 x_off, 1 out_off, 2 width, 3 n_seq, 4 n_tok, 5 groups_x
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * prm(5u)) * 64u + lid;
    let width = prm(2u);
    if (idx >= width * prm(3u)) {
        return;
    }
    let seq = idx / width;
    let c = idx % width;
    let n_tok = prm(4u);
    arena[prm(1u) + idx] = arena[prm(0u) + (seq * n_tok + n_tok - 1u) * width + c];
}
