// out[r] = table[token[r]] for the tokens whose row lies in this chunk of the table; one
// invocation per (row, 16-value unit). Token ids were checked against the vocabulary on the host.
// params: 0 chunk_row_begin, 1 chunk_row_end, 2 cols, 3 row_words, 4 n_rows, 5 out_off,
//         6 units_per_row, 7 groups_x
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> tokens: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = (wid.x + wid.y * prm(7u)) * 64u + lid;
    let units = prm(6u);
    if (idx >= prm(4u) * units) {
        return;
    }
    let r = idx / units;
    let u = idx % units;
    let tok = tokens[r];
    if (tok < prm(0u) || tok >= prm(1u)) {
        return;
    }
    var w: array<f32, 16>;
    decode_unit((tok - prm(0u)) * prm(3u), u, &w);
    let cols = prm(2u);
    let out = prm(5u) + r * cols;
    for (var i = 0u; i < 16u; i++) {
        let k = u * 16u + i;
        if (k < cols) {
            arena[out + k] = w[i];
        }
    }
}
