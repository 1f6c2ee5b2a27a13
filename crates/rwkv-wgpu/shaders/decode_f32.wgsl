// F32 rows: one word per value, row stride padded to 16 values with zeros.
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + unit * 16u;
    for (var i = 0u; i < 16u; i++) {
        (*w)[i] = bitcast<f32>(wq[b + i]);
    }
}
