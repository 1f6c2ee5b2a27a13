// Finishes a K-split product of gemm_f16.wgsl: out[r][o] (=|+=) act(sum_z part[z][r][o] +
// bias[o]), one invocation per output value.
// params: 0 rows, 1 n, 2 splits, 3 out_off, 4 out_stride, 5 bias_off or NONE, 6 act,
//         7 accumulate, 8 groups_x (of 256 invocations).
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = prm(0u);
    let n = prm(1u);
    let i = (wid.x + wid.y * prm(8u)) * 256u + lid;
    if (i >= rows * n) {
        return;
    }
    let r = i / n;
    let o = i % n;
    var val = 0.0;
    for (var z = 0u; z < prm(2u); z++) {
        val += part[z * rows * n + i];
    }
    if (prm(5u) != NONE) {
        val += vecs[prm(5u) + o];
    }
    val = apply_act(prm(6u), val);
    let idx = prm(3u) + r * prm(4u) + o;
    if (prm(7u) != 0u) {
        val += arena[idx];
    }
    arena[idx] = val;
}
