// F32 weights for matvec_float.wgsl: 4 values per vec4<u32> (the second vec4 is unused).
fn mv_decode(w: vec4<u32>) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(bitcast<vec4<f32>>(w), vec4<f32>(0.0));
}
