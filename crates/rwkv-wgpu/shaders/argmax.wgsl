// Index of the largest value of each row (ties: lowest index), one workgroup per row, written as
// u32 bits into the arena. NaNs never win.
// params: 0 x_off, 1 width, 2 out_off
@group(0) @binding(1) var<storage, read_write> arena: array<f32>;

var<workgroup> best_val: array<f32, 256>;
var<workgroup> best_idx: array<u32, 256>;

fn better(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let width = prm(1u);
    let base = prm(0u) + wid.x * width;
    var bv = -3.0e38;
    var bi = 0xffffffffu;
    for (var i = lid; i < width; i += 256u) {
        let v = arena[base + i];
        if (better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    best_val[lid] = bv;
    best_idx[lid] = bi;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s && better(best_val[lid + s], best_idx[lid + s], best_val[lid], best_idx[lid])) {
            best_val[lid] = best_val[lid + s];
            best_idx[lid] = best_idx[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        // A row of only NaN/-inf keeps index 0 rather than an out-of-range id.
        arena[prm(2u) + wid.x] = bitcast<f32>(select(best_idx[0], 0u, best_idx[0] == 0xffffffffu));
    }
}
