// Weights to f16 for gemm_f16.wgsl, transposed: W16[k][n] = W[n0 + n][k] for rows n0 .. n0 + n
// - 1 of one weight chunk, zero in the padding up to k32 x n_pad. A workgroup converts a tile of
// 64 rows x 32 values (2 units of 16 per row) through workgroup memory: the reads go row by row
// (invocations 2i and 2i + 1 decode the two units of row i with the dtype's `decode_unit`), the
// writes k-row by k-row as 8-byte vec4<f16> (16 consecutive stores per k-row). Decoding straight
// into the transposed layout had consecutive invocations on different rows: an H100 read the
// quants at ~100 GB/s that way.
// Values are clamped to the f16 range (a weight beyond it saturates instead of becoming inf).
// params: 0 n (rows of the slice), 1 n0 (first row in the chunk), 2 row_words, 3 n_pad (a
//         multiple of 64), 4 k32, 5 units per row, 6 groups_x; the grid counts
//         (n_pad / 64) x (k32 / 32) workgroups.
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> w16: array<vec4<f16>>;

const F16_MAX: f32 = 65504.0;
const TN: u32 = 64u;
// Row stride of the tile (k-major), skewed against bank conflicts.
const TS: u32 = 65u;

var<workgroup> tile: array<f32, 32u * TS>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_pad = prm(3u);
    let col_tiles = n_pad / TN;
    let g = wid.x + wid.y * prm(6u);
    if (g >= col_tiles * (prm(4u) / 32u)) {
        return;
    }
    let n_base = (g % col_tiles) * TN;
    let k_base = (g / col_tiles) * 32u;
    let nl = lid / 2u;
    let ul = lid % 2u;
    let n = n_base + nl;
    let u = k_base / 16u + ul;
    var w: array<f32, 16>;
    if (n < prm(0u) && u < prm(5u)) {
        decode_unit((prm(1u) + n) * prm(2u), u, &w);
    } else {
        for (var j = 0u; j < 16u; j++) {
            w[j] = 0.0;
        }
    }
    for (var j = 0u; j < 16u; j++) {
        tile[(16u * ul + j) * TS + nl] = clamp(w[j], -F16_MAX, F16_MAX);
    }
    workgroupBarrier();
    // 32 k-rows of 16 vec4<f16> each.
    for (var t = 0u; t < 4u; t++) {
        let idx = lid + 128u * t;
        let kr = idx / 16u;
        let c = idx % 16u;
        let b = kr * TS + 4u * c;
        let v = vec4<f32>(tile[b], tile[b + 1u], tile[b + 2u], tile[b + 3u]);
        w16[((k_base + kr) * n_pad + n_base) / 4u + c] = vec4<f16>(v);
    }
}
