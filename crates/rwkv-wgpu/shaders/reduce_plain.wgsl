// Workgroup sum without subgroups: a tree in workgroup memory. WG and WG_HALF_POW2 (half the
// next power of two >= WG) are constants of the including kernel. Every invocation gets the sum.
var<workgroup> red_scratch: array<f32, WG>;

fn block_sum(v: f32, lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32) -> f32 {
    red_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG_HALF_POW2; s > 0u; s = s >> 1u) {
        if (lid < s && lid + s < WG) {
            red_scratch[lid] += red_scratch[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_scratch[0];
    workgroupBarrier();
    return total;
}

var<workgroup> red_scratch4: array<vec4<f32>, WG>;

// Four sums at once (the row tile of a matrix product).
fn block_sum4(v: vec4<f32>, lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32) -> vec4<f32> {
    red_scratch4[lid] = v;
    workgroupBarrier();
    for (var s = WG_HALF_POW2; s > 0u; s = s >> 1u) {
        if (lid < s && lid + s < WG) {
            red_scratch4[lid] += red_scratch4[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_scratch4[0];
    workgroupBarrier();
    return total;
}
