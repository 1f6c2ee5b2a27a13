// Q4_K pieces for the matrix-vector kernels (matvec_q4k.wgsl, matvec_q4k_sg.wgsl): a 144-byte
// block is 9 vec4<u32>, a header and 8 pieces of 16 quant bytes (32 values of two sub-blocks).
// The low nibbles of a word's four bytes as floats (one mask per word, then byte extraction).
fn lo_nibbles(word: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xU8(word & 0x0f0f0f0fu));
}

fn hi_nibbles(word: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xU8((word >> 4u) & 0x0f0f0f0fu));
}

// One row's share of piece t (within its sub-block pair g = t/2): header, quant bytes, the
// piece's 32 activations (x0..x3: low sub-block, x4..x7: high) and their sums.
fn piece_dot(
    head: vec4<u32>, q: vec4<u32>, t: u32,
    x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,
    x4: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>,
    sum_lo: f32, sum_hi: f32
) -> f32 {
    let g = t / 2u;
    let dm = unpack2x16float(head.x);
    // 6-bit scales and mins of sub-blocks 0..3 and 4..7, four per word; bytes 2g, 2g + 1.
    var sw: u32;
    var mw: u32;
    if (g >= 2u) {
        sw = (head.w & 0x0f0f0f0fu) | ((head.y >> 2u) & 0x30303030u);
        mw = ((head.w >> 4u) & 0x0f0f0f0fu) | ((head.z >> 2u) & 0x30303030u);
    } else {
        sw = head.y & 0x3f3f3f3fu;
        mw = head.z & 0x3f3f3f3fu;
    }
    let shift = 16u * (g & 1u);
    let sc_lo = f32((sw >> shift) & 255u);
    let sc_hi = f32((sw >> (shift + 8u)) & 255u);
    let mn_lo = f32((mw >> shift) & 255u);
    let mn_hi = f32((mw >> (shift + 8u)) & 255u);
    let dot_lo = dot(lo_nibbles(q.x), x0) + dot(lo_nibbles(q.y), x1)
        + dot(lo_nibbles(q.z), x2) + dot(lo_nibbles(q.w), x3);
    let dot_hi = dot(hi_nibbles(q.x), x4) + dot(hi_nibbles(q.y), x5)
        + dot(hi_nibbles(q.z), x6) + dot(hi_nibbles(q.w), x7);
    return dm.x * (sc_lo * dot_lo + sc_hi * dot_hi) - dm.y * (mn_lo * sum_lo + mn_hi * sum_hi);
}

// First activation vec4 of piece p (its low sub-block; the high one is 8 vec4 = 32 values on).
fn x_base(x4: u32, p: u32) -> u32 {
    let t = p % 8u;
    return x4 + (p / 8u) * 64u + (t / 2u) * 16u + (t % 2u) * 4u;
}
