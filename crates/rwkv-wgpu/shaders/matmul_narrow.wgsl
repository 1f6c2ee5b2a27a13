// The matrix product for short rows (LoRA up-projections: [C, rank] with rank <= 128): one
// invocation per output row and tile of TILE activation rows, no workgroup reduction, so no
// invocation idles on a row of only a few 16-value units.
// params: as matmul.wgsl (10 groups_x counts workgroups of 64 rows here).
const TILE: u32 = 4u;

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let job = job_of(wid);
    cur_job = job;
    let o = job_group(wid, job) * 64u + lid;
    if (o >= jp(job, 0u)) {
        return;
    }
    let cols = jp(job, 1u);
    let n_rows = jp(job, 3u);
    let r0 = wid.z * TILE;
    let x_off = jp(job, 4u);
    let row_base = o * jp(job, 2u);
    let units = jp(job, 11u);
    var acc = vec4<f32>(0.0);
    var w: array<f32, 16>;
    for (var u = 0u; u < units; u++) {
        decode_unit(row_base, u, &w);
        let k0 = u * 16u;
        for (var t = 0u; t < TILE; t++) {
            let r = r0 + t;
            if (r < n_rows) {
                let xb = x_off + r * cols + k0;
                var s = 0.0;
                for (var i = 0u; i < 16u; i++) {
                    if (k0 + i < cols) {
                        s += w[i] * arena[xb + i];
                    }
                }
                acc[t] += s;
            }
        }
    }
    let bias_off = jp(job, 7u);
    for (var t = 0u; t < TILE; t++) {
        let r = r0 + t;
        if (r < n_rows) {
            var val = acc[t];
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
}
