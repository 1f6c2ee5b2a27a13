// Tiled matrix-matrix product for many activation rows (prefill, batched decode):
// out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for one chunk of W's rows.
// A workgroup of 256 invocations computes a tile of 64 output columns (rows of W) x BM activation
// rows (BM = 16 TM: 64 or 16). The K loop steps by 32 values: invocations 0..127 decode one
// 16-value unit of W each into workgroup memory (f32), 128..255 load the activation tile, then
// every invocation multiplies its register block of 4 columns x TM rows out of workgroup memory.
// Each weight is decoded once per tile (BM activation rows), not once per 4 rows.
// Workgroup memory: 32x64 weights + 32xBM activations, 16 KiB at BM = 64 (WebGPU's minimum).
// params: as matmul.wgsl (10 groups_x counts tiles of 64 output columns).
const TM: u32 = MM_TMu;
const BM: u32 = 16u * TM;
const BN: u32 = 64u;
const BK: u32 = 32u;
// Activation loaders: 128 invocations, BM of them per k group, BM / 4 values of k each.
const KG: u32 = 128u / BM;
const K_PER: u32 = BK / KG;

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read_write> arena: array<f32>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

// [k][n] and [k][m], 4 values per vec4 along n / m.
var<workgroup> w_tile: array<vec4<f32>, 512>;
var<workgroup> x_tile: array<vec4<f32>, 8u * BM>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_out = prm(0u);
    let col0 = (wid.x + wid.y * prm(10u)) * BN;
    if (col0 >= n_out) {
        return;
    }
    let cols = prm(1u);
    let row_words = prm(2u);
    let n_rows = prm(3u);
    let x_off = prm(4u);
    let units = prm(11u);
    let r0 = wid.z * BM;
    // Role in the loads: decoder of (column n, half h) or loader of (row m, k group kg).
    let n = lid % BN;
    let h = (lid / BN) & 1u;
    let o_load = col0 + n;
    let li = lid - 128u;
    let m = li % BM;
    let kg = li / BM;
    let r_load = r0 + m;
    // Role in the product: columns 4 tn .. 4 tn + 3, rows TM tm .. TM tm + TM - 1.
    let tn = lid % 16u;
    let tm = lid / 16u;
    var acc: array<vec4<f32>, TM>;
    var w: array<f32, 16>;
    for (var k0 = 0u; k0 < cols; k0 += BK) {
        if (lid < 128u) {
            let unit = k0 / 16u + h;
            if (o_load < n_out && unit < units) {
                decode_unit(o_load * row_words, unit, &w);
            } else {
                for (var i = 0u; i < 16u; i++) {
                    w[i] = 0.0;
                }
            }
            for (var i = 0u; i < 16u; i++) {
                let k = 16u * h + i;
                w_tile[k * 16u + n / 4u][n % 4u] = w[i];
            }
        } else {
            let valid_row = r_load < n_rows;
            let xb = x_off + r_load * cols + k0;
            for (var i = 0u; i < K_PER; i++) {
                let k = kg * K_PER + i;
                var v = 0.0;
                if (valid_row && k0 + k < cols) {
                    v = arena[xb + k];
                }
                x_tile[(k * BM + m) / 4u][m % 4u] = v;
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let wv = w_tile[k * 16u + tn];
            if (TM == 4u) {
                let xv = x_tile[k * 16u + tm];
                for (var i = 0u; i < TM; i++) {
                    acc[i] += xv[i] * wv;
                }
            } else {
                let xv = x_tile[(k * BM + tm) / 4u][tm % 4u];
                acc[0] += xv * wv;
            }
        }
        workgroupBarrier();
    }
    let bias_off = prm(7u);
    let act = prm(8u);
    let accumulate = prm(9u) != 0u;
    for (var i = 0u; i < TM; i++) {
        let r = r0 + tm * TM + i;
        if (r >= n_rows) {
            break;
        }
        for (var c = 0u; c < 4u; c++) {
            let o = col0 + 4u * tn + c;
            if (o < n_out) {
                var val = acc[i][c];
                if (bias_off != NONE) {
                    val += vecs[bias_off + o];
                }
                val = apply_act(act, val);
                let idx = prm(5u) + r * prm(6u) + o;
                if (accumulate) {
                    arena[idx] += val;
                } else {
                    arena[idx] = val;
                }
            }
        }
    }
}
