// Probe kernel (examples/gemm_probe.rs): C[m][n] = sum_k A[m][k] B[k][n] on cooperative
// matrices, A [M][K] and B [K][N] f16 in storage, C [M][N] f32. SGM x SGN subgroups of 32, each
// owning FM x FN fragments of 16x16; tile BM x BN, K steps of 32. SMEM = 1: operands staged in
// double-buffered workgroup tiles (filled with 8-byte loads); SMEM = 0: fragments loaded
// straight from storage. Dimensions must be multiples of the tile (a probe: no bounds checks).
enable f16;
enable wgpu_cooperative_matrix;
const SGM: u32 = SGM_u;
const SGN: u32 = SGN_u;
const FM: u32 = FM_u;
const FN: u32 = FN_u;
const WG: u32 = SGM * SGN * 32u;
const BM: u32 = SGM * FM * 16u;
const BN: u32 = SGN * FN * 16u;
const BK: u32 = 32u;
const AS: u32 = 40u;
const BS: u32 = BN + 8u;
const A_TILE: u32 = BM * AS;
const B_TILE: u32 = BK * BS;

@group(0) @binding(0) var<uniform> dims: vec4<u32>;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> a4: array<vec4<f16>>;
@group(0) @binding(5) var<storage, read> b4: array<vec4<f16>>;

var<workgroup> at: array<f16, 2u * A_TILE>;
var<workgroup> bt: array<f16, 2u * B_TILE>;

fn fill(k0: u32, buf: u32, lid: u32, m0: u32, n0: u32) {
    let n = dims.y;
    let k = dims.z;
    // A: BM rows x 8 vec4.
    for (var i = 0u; i < BM * 8u / WG; i++) {
        let idx = lid + i * WG;
        let row = idx / 8u;
        let c4 = idx % 8u;
        let v = a4[((m0 + row) * k + k0) / 4u + c4];
        let t = buf * A_TILE + row * AS + c4 * 4u;
        at[t] = v.x;
        at[t + 1u] = v.y;
        at[t + 2u] = v.z;
        at[t + 3u] = v.w;
    }
    // B: 32 rows x BN/4 vec4.
    for (var i = 0u; i < BK * BN / 4u / WG; i++) {
        let idx = lid + i * WG;
        let row = idx / (BN / 4u);
        let c4 = idx % (BN / 4u);
        let v = b4[((k0 + row) * n + n0) / 4u + c4];
        let t = buf * B_TILE + row * BS + c4 * 4u;
        bt[t] = v.x;
        bt[t + 1u] = v.y;
        bt[t + 2u] = v.z;
        bt[t + 3u] = v.w;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    let n = dims.y;
    let k = dims.z;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let fm = (sg / SGN) * FM * 16u;
    let fn_ = (sg % SGN) * FN * 16u;
    // Generated (naga cannot index arrays of cooperative matrices): `var cIJ` accumulators,
    // per 16-k step loads `aI` / `bJ` and the products, then the stores.
ACC_DECLS
    let steps = k / BK;
    if (SMEM == 1u) {
        fill(0u, 0u, lid, m0, n0);
        workgroupBarrier();
    }
    for (var s = 0u; s < steps; s++) {
        let cur = s & 1u;
        if (SMEM == 1u && s + 1u < steps) {
            fill((s + 1u) * BK, 1u - cur, lid, m0, n0);
        }
        for (var kk = 0u; kk < BK; kk += 16u) {
STEP_CODE
        }
        if (SMEM == 1u) {
            workgroupBarrier();
        }
    }
STORE_CODE
}
