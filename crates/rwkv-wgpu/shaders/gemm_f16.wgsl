// Matrix-matrix product on cooperative matrices (tensor cores) from f16 operands prepared by
// to_f16.wgsl (activations X16 [rows_pad][K32]) and dequant_f16.wgsl (weights, transposed:
// W16 [K32][N_pad]), both zero-padded, so the tile loads need no bounds checks:
//   out[r][o] (=|+=) act(W[o] . x[r] + bias[o])            (split == 1)
//   part[z][r][o] = sum over split z's K range of W[o][k] x[r][k]   (split > 1, summed and
//   finished by split_reduce.wgsl)
// SGM x SGN subgroups of 32 (checked on the host), each owning FM x FN fragments of 16x16: a tile
// of BM = 16 SGM FM activation rows x BN = 16 SGN FN output columns. K advances 32 values per
// step over double-buffered workgroup tiles filled with 8-byte loads (one barrier per step).
// Measured on the H100 (examples/gemm_probe.rs, 512 x 4096 x 16384): 115 TFLOP/s at 128 x 128
// with 8 subgroups, against ~8 for matmul_coop.wgsl decoding Q4_K in its tile loads.
// The epilogue goes fragment by fragment through a per-subgroup f32 staging tile.
// Needs `enable f16; enable wgpu_cooperative_matrix;` (prepended by kernels.rs).
// params: 0 rows, 1 n (output columns of this slice), 2 k32 (X16 row stride), 3 n_pad (W16 row
//         stride), 4 out_off, 5 out_stride, 6 bias_off (already at the slice's first column) or
//         NONE, 7 act, 8 accumulate, 9 groups_x (column tiles), 10 k per split (multiple of
//         32; the grid's z is the split index).
const SGM: u32 = GEMM_SGMu;
const SGN: u32 = GEMM_SGNu;
const FM: u32 = GEMM_FMu;
const FN: u32 = GEMM_FNu;
const WG: u32 = SGM * SGN * 32u;
const BM: u32 = SGM * FM * 16u;
const BN: u32 = SGN * FN * 16u;
const BK: u32 = 32u;
// Row strides (halves) of the tiles: multiples of 8 (16-byte rows for cooperative loads) with
// 8 halves of skew against bank conflicts.
const AS: u32 = BK + 8u;
const BS: u32 = BN + 8u;
const X_TILE: u32 = BM * AS;
const W_TILE: u32 = BK * BS;
// Staging of one 16x16 fragment per subgroup, rows of CS floats (80 bytes).
const CS: u32 = 20u;
const C_TILE: u32 = 16u * CS;

@group(0) @binding(1) var<storage, read> x16: array<vec4<f16>>;
// Bindings 2.. and `write_value`: gemm_out_direct.wgsl or gemm_out_split.wgsl.
GEMM_OUTPUT

var<workgroup> x_tile: array<f16, 2u * X_TILE>;
var<workgroup> w_tile: array<f16, 2u * W_TILE>;
var<workgroup> c_tile: array<f32, SGM * SGN * C_TILE>;

// Fills buffer `buf` with K values k0 .. k0 + 31 of activation rows r0 .. r0 + BM - 1 and of
// weight columns n0 .. n0 + BN - 1 (all inside the padded scratch buffers).
fn load_tiles(k0: u32, buf: u32, lid: u32, r0: u32, n0: u32) {
    let k32 = prm(2u);
    let n_pad = prm(3u);
    for (var i = 0u; i < BM * (BK / 4u) / WG; i++) {
        let idx = lid + i * WG;
        let row = idx / (BK / 4u);
        let c4 = idx % (BK / 4u);
        let v = x16[((r0 + row) * k32 + k0) / 4u + c4];
        let t = buf * X_TILE + row * AS + c4 * 4u;
        x_tile[t] = v.x;
        x_tile[t + 1u] = v.y;
        x_tile[t + 2u] = v.z;
        x_tile[t + 3u] = v.w;
    }
    for (var i = 0u; i < BK * (BN / 4u) / WG; i++) {
        let idx = lid + i * WG;
        let row = idx / (BN / 4u);
        let c4 = idx % (BN / 4u);
        let v = w16[((k0 + row) * n_pad + n0) / 4u + c4];
        let t = buf * W_TILE + row * BS + c4 * 4u;
        w_tile[t] = v.x;
        w_tile[t + 1u] = v.y;
        w_tile[t + 2u] = v.z;
        w_tile[t + 3u] = v.w;
    }
}

// Writes the staged fragment whose top-left element is (r, o) of the output: lane l takes
// elements l, l + 32, ... (16 consecutive columns of a row per half-subgroup).
fn write_fragment(st: u32, lane: u32, r: u32, o: u32, z: u32) {
    let rows = prm(0u);
    let n = prm(1u);
    for (var t = 0u; t < 8u; t++) {
        let e = lane + 32u * t;
        let rr = r + e / 16u;
        let oo = o + e % 16u;
        if (rr < rows && oo < n) {
            write_value(c_tile[st + (e / 16u) * CS + e % 16u], rr, oo, z);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32COOP_SG_BUILTINCOOP_LANE_BUILTIN) {
    // Every workgroup runs the whole loop (cooperative operations need uniform control flow);
    // the grid covers the padded tiles exactly, so all loads are inside the scratch buffers.
    let n0 = wid.x * BN;
    let r0 = wid.y * BM;
    let z = wid.z;
    let sg = COOP_SG_ID;
    let lane = COOP_LANE;
    let fm = (sg / SGN) * FM * 16u;
    let fn_ = (sg % SGN) * FN * 16u;
ACC_DECLS
    let k_begin = z * prm(10u);
    let steps = min(prm(10u), prm(2u) - k_begin) / BK;
    load_tiles(k_begin, 0u, lid, r0, n0);
    workgroupBarrier();
    for (var s = 0u; s < steps; s++) {
        let cur = s & 1u;
        let xc = cur * X_TILE;
        let wc = cur * W_TILE;
        // The other buffer was last read in step s - 1, which ended with a barrier.
        if (s + 1u < steps) {
            load_tiles(k_begin + (s + 1u) * BK, 1u - cur, lid, r0, n0);
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
STEP_CODE
        }
        workgroupBarrier();
    }
    let st = sg * C_TILE;
STORE_CODE
}
