// Q4_K, 36 words per 256-value block as stored: word 0 = d | dmin << 16 (f16), words 1..3 the
// packed 6-bit scales/mins, words 4..35 the nibbles. A unit is 16 values: sub-block j (0..7),
// half h: values 32j + 16h .. +15, nibbles of bytes 32(j/2) + 16h .. +15 (low for even j).
fn q4k_scale_byte(b: u32, i: u32) -> u32 {
    return (wq[b + 1u + (i >> 2u)] >> (8u * (i & 3u))) & 255u;
}

fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + (unit >> 4u) * 36u;
    let j = (unit & 15u) >> 1u;
    let h = unit & 1u;
    let dm = unpack2x16float(wq[b]);
    var sc: u32;
    var mn: u32;
    if (j < 4u) {
        sc = q4k_scale_byte(b, j) & 63u;
        mn = q4k_scale_byte(b, j + 4u) & 63u;
    } else {
        sc = (q4k_scale_byte(b, j + 4u) & 15u) | ((q4k_scale_byte(b, j - 4u) >> 6u) << 4u);
        mn = (q4k_scale_byte(b, j + 4u) >> 4u) | ((q4k_scale_byte(b, j) >> 6u) << 4u);
    }
    let scale = dm.x * f32(sc);
    let min = dm.y * f32(mn);
    let shift = (j & 1u) * 4u;
    let q = b + 4u + (j >> 1u) * 8u + h * 4u;
    for (var i = 0u; i < 4u; i++) {
        let word = wq[q + i] >> shift;
        for (var k = 0u; k < 4u; k++) {
            (*w)[4u * i + k] = scale * f32((word >> (8u * k)) & 15u) - min;
        }
    }
}
