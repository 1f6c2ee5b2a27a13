// Workgroup sum with subgroups: one subgroupAdd per subgroup, then the per-subgroup partials
// (at most WG of them) are summed from workgroup memory. Every invocation gets the sum.
var<workgroup> red_scratch: array<f32, WG>;

fn block_sum(v: f32, lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32) -> f32 {
    let partial = subgroupAdd(v);
    if (sg_lane == 0u) {
        red_scratch[sg_id] = partial;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < n_sg; i++) {
        total += red_scratch[i];
    }
    workgroupBarrier();
    return total;
}

var<workgroup> red_scratch4: array<vec4<f32>, WG>;

// Four sums at once (the row tile of a matrix product).
fn block_sum4(v: vec4<f32>, lid: u32, sg_lane: u32, sg_id: u32, n_sg: u32) -> vec4<f32> {
    let partial = subgroupAdd(v);
    if (sg_lane == 0u) {
        red_scratch4[sg_id] = partial;
    }
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var i = 0u; i < n_sg; i++) {
        total += red_scratch4[i];
    }
    workgroupBarrier();
    return total;
}
