// BF16 rows: two values per word (low half first); bf16 is the top half of an f32.
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + unit * 8u;
    for (var i = 0u; i < 8u; i++) {
        let word = wq[b + i];
        (*w)[2u * i] = bitcast<f32>(word << 16u);
        (*w)[2u * i + 1u] = bitcast<f32>(word & 0xffff0000u);
    }
}
