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
    let o = (wid.x + wid.y * prm(10u)) * 64u + lid;
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
    let bias_off = prm(7u);
    for (var t = 0u; t < TILE; t++) {
        let r = r0 + t;
        if (r < n_rows) {
            var val = acc[t];
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
}
