// BF16 weights for matvec_float.wgsl: 8 values per vec4<u32>, low half first; a bf16 is the top
// half of an f32.
fn mv_decode(w: vec4<u32>) -> array<vec4<f32>, 2> {
    let hi = vec4<u32>(0xffff0000u);
    let lo = bitcast<vec4<f32>>(w << vec4<u32>(16u));
    let up = bitcast<vec4<f32>>(w & hi);
    return array<vec4<f32>, 2>(
        vec4<f32>(lo.x, up.x, lo.y, up.y),
        vec4<f32>(lo.z, up.z, lo.w, up.w),
    );
}
