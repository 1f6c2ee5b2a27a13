// Batch-1 products whose input is mostly zero: the channel mix's value matrix reads
// relu(k)^2, where every k <= 0 gives an exact zero (about half of them on random weights, more
// on trained ones). Walking the matrix by input column lets a zero skip its whole column:
//   out[r] += sum over nonzero i of a[i] * W[r][i].
// A Q4_K matrix W [rows, cols] is rearranged once (q4k_transpose_kernel), without requantizing:
//   nibT: u32 [cols][rows/8]; word w of column i holds the quants of rows 8w..8w+7 (row 8w+s in
//         bits 4s..4s+3);
//   scT:  u16 [cols/32][rows]; the 6-bit sub-block scale | min << 8 of column group g, row r;
//   ddT:  u32 [cols/256][rows]; the Q4_K block's d | dmin << 16 (f16 bits).
// So W[r][i] = d*sc*q - dmin*mn exactly as in the row layout, and per 32-column group g
//   out[r] += d*sc * sum_i a[i] q[r][i]  -  dmin*mn * sum_i a[i].

// Element-wise copies: grid-stride over (column, 8-row word) with the column fastest, so the
// reads of the row-major quants are coalesced. Runs once per matrix, at plan compile time.
extern "C" __global__ void q4k_transpose_kernel(const u8* q, const u8* m, int rows, int cols, u32* nibT, u16* scT,
                                                u32* ddT) {
    long long nb = cols / 256;
    long long wpc = rows / 8;  // words per column
    long long stride = (long long)gridDim.x * blockDim.x;
    long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    for (long long t = tid; t < wpc * cols; t += stride) {
        int i = (int)(t % cols);
        long long w = t / cols;
        int j = i & 255, c = j >> 6, hi = (j >> 5) & 1, l = j & 31;
        u32 v = 0;
#pragma unroll
        for (int s = 0; s < 8; s++) {
            long long r = 8 * w + s;
            u32 byte = q[(r * nb + i / 256) * 128 + 32 * c + l];
            v |= ((byte >> (4 * hi)) & 15u) << (4 * s);
        }
        nibT[(long long)i * wpc + w] = v;
    }
    long long ng = cols / 32;
    for (long long t = tid; t < ng * rows; t += stride) {
        long long g = t / rows, r = t % rows;
        int sc, mn;
        q4k_scale_min((int)(g & 7), m + (r * nb + g / 8) * 16 + 4, sc, mn);
        scT[t] = (u16)(sc | (mn << 8));
    }
    for (long long t = tid; t < nb * rows; t += stride) {
        long long b = t / rows, r = t % rows;
        ddT[t] = *(const u32*)(m + (r * nb + b) * 16);
    }
}

__device__ __forceinline__ u32 ld_stream4(const u32* p) {
    u32 v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}

#define SP_WARPS 8   // warps per block, all on the same 256 rows
#define SP_BATCH 16  // nonzero columns whose loads are in flight together

// out[rows] (+)= W a. Grid: x over column blocks (each SP_WARPS * gpw groups of 32 columns, a
// warp taking gpw of them), y over chunks of 256 rows (a lane owns 8 rows: one 4-byte quant word
// per nonzero column, 128 coalesced bytes per warp). Per group a warp ballots the nonzero
// columns and keeps up to SP_BATCH quant loads in flight. The block's warps meet in shared
// memory; blocks leave their partial sums in `scratch` [gridDim.x][rows], and the last block of
// each row chunk (counted in `counters`, which it resets for the next step) adds them up in
// block order: deterministic, unlike atomics, so equal inputs give bit-equal outputs.
extern "C" __global__ void __launch_bounds__(SP_WARPS * 32) sparse_q4k_kernel(
    const float* a, int cols, int rows, const u32* nibT, const u16* scT, const u32* ddT, float* out, int accumulate,
    int gpw, float* scratch, u32* counters) {
    __shared__ float part[SP_WARPS][257];
    __shared__ bool last;
    pdl_trigger();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int chunk = blockIdx.y;
    int r0 = chunk * 256 + 8 * lane;
    bool active = r0 < rows;
    long long wpc = rows / 8;
    int ngroups = cols / 32;
    float outv[8];
#pragma unroll
    for (int k = 0; k < 8; k++) outv[k] = 0.0f;
    pdl_wait();
    for (int gi = 0; gi < gpw; gi++) {
        int g = (blockIdx.x * gpw + gi) * SP_WARPS + warp;
        if (g >= ngroups) break;
        float alane = a[32 * g + lane];
        u32 mask = __ballot_sync(0xffffffffu, alane != 0.0f);
        if (mask == 0) continue;
        float s = warp_sum(alane);
        uint4 scw = make_uint4(0, 0, 0, 0), dd0 = scw, dd1 = scw;
        if (active) {
            scw = ld_stream16(scT + (long long)g * rows + r0);
            const u32* dp = ddT + (long long)(g >> 3) * rows + r0;
            dd0 = ld_stream16(dp);
            dd1 = ld_stream16(dp + 4);
        }
        const u32* col0 = nibT + (long long)32 * g * wpc + (r0 >> 3);
        float acc[8];
#pragma unroll
        for (int k = 0; k < 8; k++) acc[k] = 0.0f;
        while (mask) {
            u32 w[SP_BATCH];
            u32 m2 = mask;
#pragma unroll
            for (int p = 0; p < SP_BATCH; p++) {
                w[p] = 0;
                if (mask) {
                    int k = __ffs(mask) - 1;
                    mask &= mask - 1;
                    if (active) w[p] = ld_stream4(col0 + (long long)k * wpc);
                }
            }
#pragma unroll
            for (int p = 0; p < SP_BATCH; p++) {
                if (m2) {
                    int k = __ffs(m2) - 1;
                    m2 &= m2 - 1;
                    float av = __shfl_sync(0xffffffffu, alane, k);
                    u32 lo = w[p] & 0x0F0F0F0Fu, hi = (w[p] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
                    for (int b = 0; b < 4; b++) {
                        // byte b of lo: row 2b; of hi: row 2b + 1.
                        acc[2 * b] += av * (__uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440 | b)) - 8388608.0f);
                        acc[2 * b + 1] += av * (__uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440 | b)) - 8388608.0f);
                    }
                }
            }
        }
        u32 scs[4] = {scw.x, scw.y, scw.z, scw.w};
        u32 dds[8] = {dd0.x, dd0.y, dd0.z, dd0.w, dd1.x, dd1.y, dd1.z, dd1.w};
#pragma unroll
        for (int k = 0; k < 8; k++) {
            u32 sm = (scs[k >> 1] >> (16 * (k & 1))) & 0xffffu;
            float d = h2f((u16)(dds[k] & 0xffffu)), dmin = h2f((u16)(dds[k] >> 16));
            outv[k] += (d * (float)(sm & 63u)) * acc[k] - (dmin * (float)(sm >> 8)) * s;
        }
    }
#pragma unroll
    for (int k = 0; k < 8; k++) part[warp][8 * lane + k] = outv[k];
    __syncthreads();
    int t = threadIdx.x;  // one row of the chunk per thread (blockDim = 256)
    int row = chunk * 256 + t;
    if (t < 256) {
        float v = 0.0f;
#pragma unroll
        for (int w2 = 0; w2 < SP_WARPS; w2++) v += part[w2][t];
        if (row < rows) scratch[(long long)blockIdx.x * rows + row] = v;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&counters[chunk], 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (t < 256 && row < rows) {
        float v = 0.0f;
        for (int b = 0; b < (int)gridDim.x; b++) v += __ldcg(scratch + (long long)b * rows + row);
        out[row] = accumulate ? out[row] + v : v;
    }
    if (threadIdx.x == 0) counters[chunk] = 0u;
}
