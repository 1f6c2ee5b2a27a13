// Matrix-vector product for float weights (F32, F16, BF16) and few activation rows (decode,
// LoRA projections): out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for TILE activation rows
// (r = 4·wid.z + 0..3) per workgroup of 256 invocations.
// LANES invocations (a power of two, per job: param word 11) share an output row, so a row of
// K values is split across them and the workgroup covers 256 / LANES rows: lane l reads the
// row's vec4<u32> words l, l + LANES, ... (8 f16/bf16 or 4 f32 values each), so the lanes of a
// row read consecutive 16-byte words and consecutive rows follow (coalesced; LoRA up rows are
// 64..480 values, one word per lane). The matching activations are two (one) vec4 loads; a
// tree over the row's lanes in workgroup memory sums the partials (log2 LANES barriers, no
// subgroup layout assumptions).
// Weights are zero-padded to 16 values per row; activations past the row end read as zero
// (columns are a multiple of 4, checked by the host, so a vec4 is wholly in or out).
// params: as matmul.wgsl (10 groups_x counts workgroups, 11 LANES).
const WG: u32 = 256u;
const TILE: u32 = 4u;
const VALS: u32 = MV_VALSu;

@group(0) @binding(1) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> arena: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

var<workgroup> partial: array<vec4<f32>, WG>;

// Activations i .. i + 3 (i a multiple of 4) if they lie before `end`, else zeros.
fn x_at(i: u32, end: u32) -> vec4<f32> {
    if (i < end) {
        return arena[i >> 2u];
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let job = job_of(wid);
    cur_job = job;
    let lanes = jp(job, 11u);
    let lane = lid & (lanes - 1u);
    let o = job_group(wid, job) * (WG / lanes) + lid / lanes;
    let n_out = jp(job, 0u);
    let cols = jp(job, 1u);
    let row_vec4 = jp(job, 2u) / 4u;
    let n_rows = jp(job, 3u);
    let x_off = jp(job, 4u);
    let r0 = wid.z * TILE;
    let words = (cols + VALS - 1u) / VALS;
    var acc = vec4<f32>(0.0);
    if (o < n_out) {
        let w_base = o * row_vec4;
        for (var g = lane; g < words; g += lanes) {
            let w = mv_decode(wq[w_base + g]);
            let k0 = g * VALS;
            for (var t = 0u; t < TILE; t++) {
                let r = r0 + t;
                if (r < n_rows) {
                    let xb = x_off + r * cols;
                    let end = xb + cols;
                    var s = dot(w[0], x_at(xb + k0, end));
                    if (VALS == 8u) {
                        s += dot(w[1], x_at(xb + k0 + 4u, end));
                    }
                    acc[t] += s;
                }
            }
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = lanes >> 1u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lane != 0u || o >= n_out) {
        return;
    }
    let total = partial[lid];
    let bias_off = jp(job, 7u);
    for (var t = 0u; t < TILE; t++) {
        let r = r0 + t;
        if (r < n_rows) {
            var val = total[t];
            if (bias_off != NONE) {
                val += vecs[bias_off + o];
            }
            val = apply_act(jp(job, 8u), val);
            let idx = jp(job, 5u) + r * jp(job, 6u) + o;
            if (jp(job, 9u) != 0u) {
                arena[idx / 4u][idx % 4u] += val;
            } else {
                arena[idx / 4u][idx % 4u] = val;
            }
        }
    }
}
