// Q6_K repacked to 53 words per 256-value block (210 bytes + 2 bytes padding so every field is
// word aligned): ql words 0..31, qh words 32..47, scales (i8) words 48..51, d (f16) word 52.
// A unit is 16 values, s = unit % 16: n = s/8, quad = (s%8)/2, half = s%2, values 16s .. +15
// with l = 16 half + i: low bits from ql[64n + l + 32(quad&1)] (high nibble when quad >= 2),
// high bits from qh[32n + l] >> 2 quad, scale index 8n + half + 2 quad.
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + (unit >> 4u) * 53u;
    let s = unit & 15u;
    let n = s >> 3u;
    let quad = (s & 7u) >> 1u;
    let half = s & 1u;
    let d = unpack2x16float(wq[b + 52u]).x;
    let si = 8u * n + half + 2u * quad;
    let sc = f32(extractBits(i32(wq[b + 48u + (si >> 2u)]), 8u * (si & 3u), 8u));
    let ds = d * sc;
    let ql = b + (64u * n + 16u * half + 32u * (quad & 1u)) / 4u;
    let qh = b + 32u + (32u * n + 16u * half) / 4u;
    let lshift = (quad >> 1u) * 4u;
    let hshift = 2u * quad;
    for (var i = 0u; i < 4u; i++) {
        let lw = wq[ql + i] >> lshift;
        let hw = wq[qh + i] >> hshift;
        for (var k = 0u; k < 4u; k++) {
            let lo = (lw >> (8u * k)) & 15u;
            let hi = (hw >> (8u * k)) & 3u;
            (*w)[4u * i + k] = ds * f32(i32(lo | (hi << 4u)) - 32);
        }
    }
}
