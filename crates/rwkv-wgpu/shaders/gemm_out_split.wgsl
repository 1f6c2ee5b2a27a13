// Output of gemm_f16.wgsl with the K range split over the grid's z: raw partial sums
// part[z][r][o], finished by split_reduce.wgsl.
@group(0) @binding(2) var<storage, read_write> part: array<f32>;
@group(0) @binding(3) var<storage, read> w16: array<vec4<f16>>;

fn write_value(v: f32, r: u32, o: u32, z: u32) {
    part[(z * prm(0u) + r) * prm(1u) + o] = v;
}
