// F16 rows: two values per word (low half first), row stride padded to 16 values with zeros.
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + unit * 8u;
    for (var i = 0u; i < 8u; i++) {
        let h = unpack2x16float(wq[b + i]);
        (*w)[2u * i] = h.x;
        (*w)[2u * i + 1u] = h.y;
    }
}
