// LayerNorm over one row per workgroup: out = (x - mean) / sqrt(var + eps) * w + b,
// population variance, two passes over the row (mean first) for accuracy. In place is fine:
// every read of the row happens before the barrier that precedes the writes.
// params: 0 x_off, 1 out_off, 2 width, 3 w_off (vecs), 4 b_off (vecs), 5 eps (f32 bits)
const WG: u32 = 128u;
const WG_HALF_POW2: u32 = 64u;

@group(0) @binding(1) var<storage, read_write> arena: array<f32>;
@group(0) @binding(2) var<storage, read> vecs: array<f32>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let row = wid.x;
    let width = prm(2u);
    let x_base = prm(0u) + row * width;
    let out_base = prm(1u) + row * width;
    var s = 0.0;
    for (var i = lid; i < width; i += WG) {
        s += arena[x_base + i];
    }
    let mean = block_sum(s, lid, SG_ARGS) / f32(width);
    var q = 0.0;
    for (var i = lid; i < width; i += WG) {
        let d = arena[x_base + i] - mean;
        q += d * d;
    }
    let variance = block_sum(q, lid, SG_ARGS) / f32(width);
    let inv = 1.0 / sqrt(variance + prmf(5u));
    let w_off = prm(3u);
    let b_off = prm(4u);
    for (var i = lid; i < width; i += WG) {
        arena[out_base + i] = (arena[x_base + i] - mean) * inv * vecs[w_off + i] + vecs[b_off + i];
    }
}
