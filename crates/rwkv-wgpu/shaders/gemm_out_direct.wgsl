// Output of gemm_f16.wgsl without a K split: bias, activation, overwrite or accumulate.
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;
@group(0) @binding(4) var<storage, read> w16: array<vec4<f16>>;

fn write_value(v: f32, r: u32, o: u32, z: u32) {
    var val = v;
    let bias_off = prm(6u);
    if (bias_off != NONE) {
        val += vecs[bias_off + o];
    }
    val = apply_act(prm(7u), val);
    let idx = prm(4u) + r * prm(5u) + o;
    if (prm(8u) != 0u) {
        val += arena[idx];
    }
    arena[idx] = val;
}
