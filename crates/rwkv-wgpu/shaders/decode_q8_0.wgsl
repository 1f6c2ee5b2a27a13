// Q8_0 repacked to 9 words per 32-value block: word 0 = d (f16, low half), words 1..8 = qs.
// A unit is half a block (16 values).
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + (unit >> 1u) * 9u;
    let d = unpack2x16float(wq[b]).x;
    let q = b + 1u + (unit & 1u) * 4u;
    for (var i = 0u; i < 4u; i++) {
        let word = i32(wq[q + i]);
        for (var j = 0u; j < 4u; j++) {
            (*w)[4u * i + j] = d * f32(extractBits(word, 8u * j, 8u));
        }
    }
}
