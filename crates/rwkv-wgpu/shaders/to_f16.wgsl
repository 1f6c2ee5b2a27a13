// Activations to f16 for gemm_f16.wgsl: X16[r][k] = x[r][k] for r < rows, k < cols, zero in the
// padding up to rows_pad x k32 (so the product's tile loads need no bounds checks). Values are
// clamped to the f16 range first, so a huge activation saturates instead of becoming inf.
// One invocation per 4 values; the arena is read as vec4 (cols and the offset are multiples of
// 4, checked by the host).
// params: 0 x_off, 1 cols, 2 rows, 3 k32, 4 rows_pad, 5 groups_x (of 256 invocations).
@group(0) @binding(1) var<storage, read> arena: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> x16: array<vec4<f16>>;

const F16_MAX: f32 = 65504.0;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cols = prm(1u);
    let k4 = prm(3u) / 4u;
    let i = (wid.x + wid.y * prm(5u)) * 256u + lid;
    if (i >= prm(4u) * k4) {
        return;
    }
    let r = i / k4;
    let k = (i % k4) * 4u;
    var v = vec4<f32>(0.0);
    if (r < prm(2u) && k < cols) {
        v = arena[(prm(0u) + r * cols + k) / 4u];
    }
    x16[i] = vec4<f16>(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}
