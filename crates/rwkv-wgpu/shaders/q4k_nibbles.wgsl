// Q4_K quant words to floats, for the matrix-vector kernels (matvec_q4k*.wgsl).
// The low nibbles of a word's four bytes as floats (one mask per word, then byte extraction).
fn lo_nibbles(word: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xU8(word & 0x0f0f0f0fu));
}

fn hi_nibbles(word: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xU8((word >> 4u) & 0x0f0f0f0fu));
}
