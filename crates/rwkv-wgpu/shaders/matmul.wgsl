// out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for one chunk of W's rows.
// A workgroup of 64 invocations handles 64 / TPR output rows and a tile of TILE activation rows:
// the TPR invocations of a row stride over its 16-value units (decode_unit comes from the
// dtype's decode file), each decoded unit is used for all rows of the tile, then a reduction
// over the TPR invocations gives the TILE sums. TPR (16, 32 or 64: no more invocations per row
// than the row has units) is set when the module is built.
// params: 0 n_out (rows of this chunk), 1 cols, 2 row_words, 3 n_rows, 4 x_off, 5 out_off,
//         6 out_stride, 7 bias_off (NONE without bias), 8 act, 9 accumulate, 10 groups_x,
//         11 units_per_row
const WG: u32 = 64u;
const WG_HALF_POW2: u32 = 32u;
const TPR: u32 = MM_TPRu;
const ROWS_PER_WG: u32 = 64u / TPR;
const TILE: u32 = 4u;

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

var<workgroup> seg_scratch: array<vec4<f32>, 64>;

// Sum over the TPR invocations of each row (a tree in workgroup memory); the sum is valid in
// the row's first invocation.
fn segment_sum4(v: vec4<f32>, lid: u32) -> vec4<f32> {
    seg_scratch[lid] = v;
    workgroupBarrier();
    let lane = lid % TPR;
    for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            seg_scratch[lid] += seg_scratch[lid + s];
        }
        workgroupBarrier();
    }
    return seg_scratch[lid - lane];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let job = job_of(wid);
    cur_job = job;
    let first = job_group(wid, job) * ROWS_PER_WG;
    if (first >= jp(job, 0u)) {
        return;
    }
    let o = first + lid / TPR;
    let lane = lid % TPR;
    // Rows past the chunk's end still take part in the barriers.
    let valid = o < jp(job, 0u);
    let cols = jp(job, 1u);
    let n_rows = jp(job, 3u);
    let r0 = wid.z * TILE;
    let x_off = jp(job, 4u);
    let row_base = o * jp(job, 2u);
    let units = select(0u, jp(job, 11u), valid);
    var acc = vec4<f32>(0.0);
    var w: array<f32, 16>;
    for (var u = lane; u < units; u += TPR) {
        decode_unit(row_base, u, &w);
        let k0 = u * 16u;
        for (var t = 0u; t < TILE; t++) {
            let r = r0 + t;
            if (r < n_rows) {
                let xb = x_off + r * cols + k0;
                var s = 0.0;
                if (k0 + 16u <= cols) {
                    for (var i = 0u; i < 16u; i++) {
                        s += w[i] * arena[xb + i];
                    }
                } else {
                    for (var i = 0u; i < 16u; i++) {
                        if (k0 + i < cols) {
                            s += w[i] * arena[xb + i];
                        }
                    }
                }
                acc[t] += s;
            }
        }
    }
    var total: vec4<f32>;
    if (TPR == WG) {
        total = block_sum4(acc, lid, SG_ARGS);
    } else {
        total = segment_sum4(acc, lid);
    }
    let r = r0 + lane;
    if (valid && lane < TILE && r < n_rows) {
        var val = total[lane];
        let bias_off = jp(job, 7u);
        if (bias_off != NONE) {
            val += vecs[bias_off + o];
        }
        val = apply_act(jp(job, 8u), val);
        let idx = jp(job, 5u) + r * jp(job, 6u) + o;
        if (jp(job, 9u) != 0u) {
            arena[idx] += val;
        } else {
            arena[idx] = val;
        }
    }
}
