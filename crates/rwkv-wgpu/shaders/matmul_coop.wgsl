// Matrix-matrix product on cooperative matrices (tensor cores) for many activation rows:
// out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for one chunk of W's rows, with f16 operands and
// f32 accumulation. Needs `enable f16; enable wgpu_cooperative_matrix;` (prepended by
// kernels.rs) and a subgroup size of exactly 32 (checked on the host): 128 invocations are
// 4 subgroups, and each subgroup owns 2x2 fragments of 16x16 of the 64x64 output tile.
// The K loop steps by 32 values over double-buffered tiles: while the subgroups multiply the
// current tiles, every invocation fills the other pair for the next step (one barrier per
// step): it decodes one 16-value unit of W (row n, half h) to f16 and converts 4 vec4 of
// activations (consecutive invocations read consecutive 16 bytes of a row). After the loop the
// fragments go to an f32 staging tile (half of them at a time), from which all invocations
// apply bias / activation / accumulation and write the output with bounds checks (rows and
// columns need not be multiples of 64; K need not be a multiple of 32, the tail is zero-filled
// on both sides, but K and the activation offsets must be multiples of 4 for the vec4 loads).
// Values are clamped to the f16 range before the conversion, so a huge activation or weight
// saturates instead of turning into inf (and inf * 0 into NaN).
// Workgroup memory: 2 x (64x40 + 32x72) f16 tiles + 32x68 f32 staging = 27.5 KiB (the host
// checks the device limit; WebGPU's default is 16 KiB, Vulkan drivers offer 32 KiB or more).
// params: as matmul_tiled.wgsl (10 groups_x counts tiles of 64 output columns).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
// Row stride of the activation tile [m][k]: 40 values = 80 bytes, a multiple of 16 bytes (the
// alignment cooperative loads want) that spreads 8 consecutive rows over distinct bank groups.
const AS: u32 = 40u;
// Values of one activation tile (64 rows of AS); the second buffer starts here.
const X_TILE: u32 = 2560u;
// Row stride of the weight tile [k][n]: 72 values = 144 bytes (16-byte multiple, skewed banks).
const BS: u32 = 72u;
// Values of one weight tile (32 rows of BS); the second buffer starts here.
const W_TILE: u32 = 2304u;
// Row stride of the f32 staging tile: 68 values = 272 bytes (16-byte multiple, skewed banks).
const CS: u32 = 68u;
const F16_MAX: f32 = 65504.0;

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

// Activations [m][k] (row-major A), weights transposed to [k][n] (row-major B), two buffers
// each: all three matrices use the row-major (`...T`) cooperative loads and stores, the
// combination coop_probe checked on the H100;
// half the output [m][n] (32 of its rows at a time).
var<workgroup> x_tile: array<f16, 5120>;
var<workgroup> w_tile: array<f16, 4608>;
var<workgroup> c_tile: array<f32, 2176>;

fn to_f16(v: f32) -> f16 {
    return f16(clamp(v, -F16_MAX, F16_MAX));
}

// Fills tile buffer `buf` (0 or 1) with K values k0 .. k0 + 31 of weight rows col0 .. + 63
// and activation rows r0 .. + 63, zeros outside the matrices.
fn load_tiles(k0: u32, buf: u32, lid: u32, col0: u32, r0: u32) {
    let n_out = prm(0u);
    let cols = prm(1u);
    let n_rows = prm(3u);
    // Weights: row lid % 64, half lid / 64 of the 32 values.
    let n = lid & 63u;
    let h = lid >> 6u;
    let o = col0 + n;
    let unit = k0 / 16u + h;
    var w: array<f32, 16>;
    if (o < n_out && unit < prm(11u)) {
        decode_unit(o * prm(2u), unit, &w);
    } else {
        for (var i = 0u; i < 16u; i++) {
            w[i] = 0.0;
        }
    }
    // Column n of rows 16 h .. 16 h + 15: a subgroup stores 32 consecutive values of one row.
    let t = buf * W_TILE + 16u * h * BS + n;
    for (var i = 0u; i < 16u; i++) {
        w_tile[t + i * BS] = to_f16(w[i]);
    }
    // Activations: 4 at k0 + 4 (lid % 8) of rows lid / 8 + 16 j.
    let k4 = lid & 7u;
    let k = k0 + 4u * k4;
    for (var j = 0u; j < 4u; j++) {
        let m = (lid >> 3u) + 16u * j;
        let r = r0 + m;
        var v = vec4<f32>(0.0);
        if (r < n_rows && k < cols) {
            v = arena[(prm(4u) + r * cols + k) / 4u];
        }
        let x = buf * X_TILE + m * AS + 4u * k4;
        x_tile[x] = to_f16(v.x);
        x_tile[x + 1u] = to_f16(v.y);
        x_tile[x + 2u] = to_f16(v.z);
        x_tile[x + 3u] = to_f16(v.w);
    }
}

// Writes the staged half of the output tile: staging row sr is tile row
// 32 (sr / 16) + half + sr % 16 (`half` 0 or 16). Consecutive invocations write consecutive
// output columns of one row.
fn write_staged(half: u32, lid: u32, col0: u32, r0: u32) {
    let n_out = prm(0u);
    let n_rows = prm(3u);
    let bias_off = prm(7u);
    let act = prm(8u);
    let accumulate = prm(9u) != 0u;
    let out_off = prm(5u);
    let out_stride = prm(6u);
    for (var i = 0u; i < 32u * BN / 128u; i++) {
        let e = i * 128u + lid;
        let sr = e / BN;
        let n = e % BN;
        let r = r0 + 32u * (sr / 16u) + half + sr % 16u;
        let o = col0 + n;
        if (r < n_rows && o < n_out) {
            var val = c_tile[sr * CS + n];
            if (bias_off != NONE) {
                val += vecs[bias_off + o];
            }
            val = apply_act(act, val);
            let idx = out_off + r * out_stride + o;
            if (accumulate) {
                val += arena[idx >> 2u][idx & 3u];
            }
            arena[idx >> 2u][idx & 3u] = val;
        }
    }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32COOP_SG_BUILTIN) {
    // Workgroups past the last tile (the grid is rounded up) must not return early: cooperative
    // operations need uniform control flow. Their loads are zero and their writes skipped.
    let col0 = (wid.x + wid.y * prm(10u)) * BN;
    let cols = prm(1u);
    let r0 = wid.z * BM;
    // This subgroup's fragments start at row fm, column fn_ of the output tile.
    let sg = COOP_SG_ID;
    let fm = (sg >> 1u) * 32u;
    let fn_ = (sg & 1u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    let steps = (cols + BK - 1u) / BK;
    load_tiles(0u, 0u, lid, col0, r0);
    workgroupBarrier();
    for (var s = 0u; s < steps; s++) {
        let cur = s & 1u;
        let xc = cur * X_TILE;
        let wc = cur * W_TILE;
        // The other buffer was last read in step s - 1, which ended with a barrier.
        if (s + 1u < steps) {
            load_tiles((s + 1u) * BK, 1u - cur, lid, col0, r0);
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[xc + fm * AS + kk], AS);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[xc + (fm + 16u) * AS + kk], AS);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&w_tile[wc + kk * BS + fn_], BS);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&w_tile[wc + kk * BS + fn_ + 16u], BS);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    // The staging tile holds half the output: first the top fragment row of every subgroup
    // (tile rows 0..15 and 32..47), then the bottom one (16..31, 48..63).
    let st = (sg >> 1u) * 16u * CS + fn_;
    coopStoreT(c00, &c_tile[st], CS);
    coopStoreT(c01, &c_tile[st + 16u], CS);
    workgroupBarrier();
    write_staged(0u, lid, col0, r0);
    workgroupBarrier();
    coopStoreT(c10, &c_tile[st], CS);
    coopStoreT(c11, &c_tile[st + 16u], CS);
    workgroupBarrier();
    write_staged(16u, lid, col0, r0);
}
