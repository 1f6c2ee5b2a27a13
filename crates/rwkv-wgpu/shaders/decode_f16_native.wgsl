// F16 rows read through the shader-f16 extension: the weights are bound as array<vec2<f16>>
// (the kernel's `wq` declaration is rewritten for this variant); the conversion to f32 is exact
// and the arithmetic stays f32. (naga 30 mistypes bitcast<vec2<f16>>(u32), hence the binding.)
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + unit * 8u;
    for (var i = 0u; i < 8u; i++) {
        let h = vec2<f32>(wq[b + i]);
        (*w)[2u * i] = h.x;
        (*w)[2u * i + 1u] = h.y;
    }
}
