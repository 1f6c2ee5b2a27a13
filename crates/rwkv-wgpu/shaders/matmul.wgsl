// out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for one chunk of W's rows.
// One workgroup per output row o and tile of TILE activation rows: the WG invocations stride over
// the row's 16-value units (decode_unit comes from the dtype's decode file), each decoded unit
// is used for all rows of the tile, then one workgroup reduction gives the TILE sums.
// params: 0 n_out (rows of this chunk), 1 cols, 2 row_words, 3 n_rows, 4 x_off, 5 out_off,
//         6 out_stride, 7 bias_off (NONE without bias), 8 act, 9 accumulate, 10 groups_x,
//         11 units_per_row
// WG (16, 32 or 64: no more invocations than the row has units) is set when the module is built.
const WG: u32 = MM_WGu;
const WG_HALF_POW2: u32 = MM_HALFu;
const TILE: u32 = 4u;

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

@compute @workgroup_size(MM_WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let o = wid.x + wid.y * prm(10u);
    if (o >= prm(0u)) {
        return;
    }
    let cols = prm(1u);
    let n_rows = prm(3u);
    let r0 = wid.z * TILE;
    let x_off = prm(4u);
    let row_base = o * prm(2u);
    let units = prm(11u);
    var acc = vec4<f32>(0.0);
    var w: array<f32, 16>;
    for (var u = lid; u < units; u += WG) {
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
    let total = block_sum4(acc, lid, SG_ARGS);
    let r = r0 + lid;
    if (lid < TILE && r < n_rows) {
        var val = total[lid];
        let bias_off = prm(7u);
        if (bias_off != NONE) {
            val += vecs[bias_off + o];
        }
        val = apply_act(prm(8u), val);
        let idx = prm(5u) + r * prm(6u) + o;
        if (prm(9u) != 0u) {
            arena[idx] += val;
        } else {
            arena[idx] = val;
        }
    }
}
