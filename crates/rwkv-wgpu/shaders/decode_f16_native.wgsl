// F16 rows read through the shader-f16 extension (exact conversion, f32 arithmetic after it).
fn decode_unit(row_base: u32, unit: u32, w: ptr<function, array<f32, 16>>) {
    let b = row_base + unit * 8u;
    for (var i = 0u; i < 8u; i++) {
        let h = vec2<f32>(bitcast<vec2<f16>>(wq[b + i]));
        (*w)[2u * i] = h.x;
        (*w)[2u * i + 1u] = h.y;
    }
}
