// Q4_K for matmul_coop.wgsl, through vec4 loads (the weights are bound as array<vec4<u32>>:
// blocks are 36 words = 9 vec4 and rows whole blocks). Block layout as in decode_q4k.wgsl:
// vec4 0 = [d | dmin << 16, scale bytes 0..3, 4..7, 8..11], then the nibbles; unit (sub-block
// j, half h) reads the header and one vec4 of nibbles: 2 loads instead of 7 scalar ones.
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b4 = (row_base + (unit >> 4u) * 36u) >> 2u;
    let j = (unit & 15u) >> 1u;
    let h = unit & 1u;
    let head = wq[b4];
    let dm = unpack2x16float(head.x);
    let s0 = unpack4xU8(head.y);
    let s1 = unpack4xU8(head.z);
    let s2 = unpack4xU8(head.w);
    var sc: u32;
    var mn: u32;
    if (j < 4u) {
        sc = s0[j] & 63u;
        mn = s1[j] & 63u;
    } else {
        sc = (s2[j - 4u] & 15u) | ((s0[j - 4u] >> 6u) << 4u);
        mn = (s2[j - 4u] >> 4u) | ((s1[j - 4u] >> 6u) << 4u);
    }
    let scale = dm.x * f32(sc);
    let min = vec4<f32>(dm.y * f32(mn));
    let shift = (j & 1u) * 4u;
    let q = wq[b4 + 1u + (j >> 1u) * 2u + h];
    for (var i = 0u; i < 4u; i++) {
        let v = scale * vec4<f32>(unpack4xU8((q[i] >> shift) & 0x0f0f0f0fu)) - min;
        (*w)[4u * i] = v.x;
        (*w)[4u * i + 1u] = v.y;
        (*w)[4u * i + 2u] = v.z;
        (*w)[4u * i + 3u] = v.w;
    }
}
