// Plain-WGSL stand-ins for the cooperative-matrix operations of matmul_coop.wgsl, for tests on
// devices without them (kernels.rs rewrites the calls). A "subgroup" is 32 consecutive
// invocations; lane l holds elements 8l .. 8l + 7 (row-major) of each 16x16 C fragment. A and B
// fragments are offsets into x_tile / w_tile with the layouts the real (row-major, `...T`) loads
// use: A element (m, k) at a + m AS + k, B element (k, n) at b + k BS + n; C is stored row-major,
// element (m, n) at off + m CS + n.
var<private> emu_lane: u32;

fn emu_mma(a: u32, b: u32, c: array<f32, 8>) -> array<f32, 8> {
    var r = c;
    for (var i = 0u; i < 8u; i++) {
        let e = 8u * emu_lane + i;
        let m = e / 16u;
        let n = e % 16u;
        var s = 0.0;
        for (var k = 0u; k < 16u; k++) {
            s += f32(x_tile[a + m * AS + k]) * f32(w_tile[b + k * BS + n]);
        }
        r[i] += s;
    }
    return r;
}

fn emu_store(c: array<f32, 8>, off: u32) {
    for (var i = 0u; i < 8u; i++) {
        let e = 8u * emu_lane + i;
        c_tile[off + (e / 16u) * CS + e % 16u] = c[i];
    }
}
