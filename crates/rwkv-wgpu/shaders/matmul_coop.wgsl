// Matrix-matrix product on cooperative matrices (tensor cores) for many activation rows:
// out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for one chunk of W's rows, with f16 operands and
// f32 accumulation. Needs `enable f16; enable wgpu_cooperative_matrix;` (prepended by
// kernels.rs) and a subgroup size of exactly 32 (checked on the host): 128 invocations are
// 4 subgroups, and each subgroup owns 2x2 fragments of 16x16 of the 64x64 output tile.
// The K loop steps by 32 values: every invocation decodes one 16-value unit of W (row n, half h)
// to f16 in workgroup memory and converts 16 activations (row m, half h) to f16, then each
// subgroup multiplies its fragments over two k steps of 16. After the loop the fragments go to
// an f32 staging tile, from which all invocations apply bias / activation / accumulation and
// write the output with bounds checks (rows and columns need not be multiples of 64; K need
// not be a multiple of 32: the tail is zero-filled on both sides).
// Values are clamped to the f16 range before the conversion, so a huge activation or weight
// saturates instead of turning into inf (and inf * 0 into NaN).
// Workgroup memory: 2 x 64x40 f16 tiles + 64x68 f32 staging = 27 KiB (host checks the limit).
// params: as matmul_tiled.wgsl (10 groups_x counts tiles of 64 output columns).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
// Row strides of the f16 tiles: 40 values = 80 bytes, a multiple of 16 bytes (the alignment
// cooperative loads want) that spreads 8 consecutive rows over distinct bank groups.
const AS: u32 = 40u;
// Row stride of the f32 staging tile: 68 values = 272 bytes (16-byte multiple, skewed banks).
const CS: u32 = 68u;
const F16_MAX: f32 = 65504.0;

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

// Activations [m][k] (row-major A), weights [n][k] (= B[k][n] column-major), output [m][n].
var<workgroup> x_tile: array<f16, 2560>;
var<workgroup> w_tile: array<f16, 2560>;
var<workgroup> c_tile: array<f32, 4352>;

fn to_f16(v: f32) -> f16 {
    return f16(clamp(v, -F16_MAX, F16_MAX));
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32COOP_SG_BUILTIN) {
    let n_out = prm(0u);
    // Workgroups past the last tile (the grid is rounded up) must not return early: cooperative
    // operations need uniform control flow. Their loads are zero and their writes skipped.
    let col0 = (wid.x + wid.y * prm(10u)) * BN;
    let cols = prm(1u);
    let row_words = prm(2u);
    let n_rows = prm(3u);
    let x_off = prm(4u);
    let units = prm(11u);
    let r0 = wid.z * BM;
    // Load roles: weight row n / activation row m = lid / 2, half h of the 32 k values.
    let ld_row = lid >> 1u;
    let h = lid & 1u;
    let o_load = col0 + ld_row;
    let r_load = r0 + ld_row;
    // Product role: this subgroup's fragments start at row fm, column fn of the output tile.
    let sg = COOP_SG_ID;
    let fm = (sg >> 1u) * 32u;
    let fn_ = (sg & 1u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var w: array<f32, 16>;
    for (var k0 = 0u; k0 < cols; k0 += BK) {
        let unit = k0 / 16u + h;
        if (o_load < n_out && unit < units) {
            decode_unit(o_load * row_words, unit, &w);
        } else {
            for (var i = 0u; i < 16u; i++) {
                w[i] = 0.0;
            }
        }
        let t = ld_row * AS + 16u * h;
        for (var i = 0u; i < 16u; i++) {
            w_tile[t + i] = to_f16(w[i]);
        }
        let kb = k0 + 16u * h;
        let xb = x_off + r_load * cols + kb;
        let valid_row = r_load < n_rows;
        for (var i = 0u; i < 16u; i++) {
            var v = 0.0;
            if (valid_row && kb + i < cols) {
                v = arena[xb + i];
            }
            x_tile[t + i] = to_f16(v);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[fm * AS + kk], AS);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[(fm + 16u) * AS + kk], AS);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[fn_ * AS + kk], AS);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&w_tile[(fn_ + 16u) * AS + kk], AS);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    coopStoreT(c00, &c_tile[fm * CS + fn_], CS);
    coopStoreT(c01, &c_tile[fm * CS + fn_ + 16u], CS);
    coopStoreT(c10, &c_tile[(fm + 16u) * CS + fn_], CS);
    coopStoreT(c11, &c_tile[(fm + 16u) * CS + fn_ + 16u], CS);
    workgroupBarrier();
    let bias_off = prm(7u);
    let act = prm(8u);
    let accumulate = prm(9u) != 0u;
    let out_off = prm(5u);
    let out_stride = prm(6u);
    // Consecutive invocations write consecutive output columns of one row.
    for (var i = 0u; i < BM * BN / 128u; i++) {
        let e = i * 128u + lid;
        let m = e / BN;
        let n = e % BN;
        let r = r0 + m;
        let o = col0 + n;
        if (r < n_rows && o < n_out) {
            var val = c_tile[m * CS + n];
            if (bias_off != NONE) {
                val += vecs[bias_off + o];
            }
            val = apply_act(act, val);
            let idx = out_off + r * out_stride + o;
            if (accumulate) {
                arena[idx] += val;
            } else {
                arena[idx] = val;
            }
        }
    }
}
