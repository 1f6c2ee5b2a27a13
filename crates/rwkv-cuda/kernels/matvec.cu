// Matrix products, SIMT path: few activation rows (decode). Each warp owns MV_WR weight rows and
// walks them in units of 32 values (one 16-byte qs load for Q4_K), so every weight byte is read
// once per group of R activation rows; the lanes' partial sums meet in a warp reduction.

struct MatJob {
    const u8* wq;
    const u8* wm;
    const float* bias;
    const float* x;
    float* out;
    int dtype;
    int in_dim;
    int out_dim;
    int act;
    int accumulate;
    int block_start;  // first block of this job in the launch
    int n_tiles_n;    // mma path: tiles along out_dim
    int pad;
};

#define MV_WARPS 4
#define MV_WR 2

__device__ __forceinline__ int find_job(const MatJob* jobs, int n_jobs, int bid) {
    int j = 0;
    while (j + 1 < n_jobs && bid >= jobs[j + 1].block_start) j++;
    return j;
}

__device__ __forceinline__ u32 byte_of(u32 w, int i) { return (w >> (8 * i)) & 255u; }

// Q4_K sub-block scale/min from the scale words (y = bytes 0..3, z = 4..7, w = 8..11).
__device__ __forceinline__ void q4k_sm_words(u32 y, u32 z, u32 w, int j, float d, float dmin, float& dsc, float& dmn) {
    int sc, mn;
    if (j < 4) {
        sc = byte_of(y, j) & 63;
        mn = byte_of(z, j) & 63;
    } else {
        u32 bw = byte_of(w, j - 4);
        sc = (bw & 15) | ((byte_of(y, j - 4) >> 6) << 4);
        mn = (bw >> 4) | ((byte_of(z, j - 4) >> 6) << 4);
    }
    dsc = d * (float)sc;
    dmn = dmin * (float)mn;
}

// Decoders: unit u (32 values) of weight row `row` into w[32]; returns the x offset of its first
// segment; segments are 32 apart, NSEG of them, 32/NSEG values each.
__device__ __forceinline__ int unit_q4k(const u8* q, const u8* m, long long row, int nb, int u, float (&w)[32]) {
    int b = u >> 3, c = (u & 7) >> 1, half = u & 1;
    long long blk = row * nb + b;
    uint4 qv = __ldg((const uint4*)(q + blk * 128 + 32 * c + 16 * half));
    uint4 mv = __ldg((const uint4*)(m + blk * 16));
    float d = h2f((u16)(mv.x & 0xffff)), dmin = h2f((u16)(mv.x >> 16));
    float d1, m1, d2, m2;
    q4k_sm_words(mv.y, mv.z, mv.w, 2 * c, d, dmin, d1, m1);
    q4k_sm_words(mv.y, mv.z, mv.w, 2 * c + 1, d, dmin, d2, m2);
    u32 qw[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
    for (int i = 0; i < 16; i++) {
        u32 byte = byte_of(qw[i >> 2], i & 3);
        w[i] = d1 * (float)(byte & 15) - m1;
        w[16 + i] = d2 * (float)(byte >> 4) - m2;
    }
    return b * 256 + 64 * c + 16 * half;
}

__device__ __forceinline__ int unit_q6k(const u8* q, const u8* m, long long row, int nb, int u, float (&w)[32]) {
    int b = u >> 3, n = (u & 7) >> 2, g = u & 3;
    long long blk = row * nb + b;
    const u8* qb = q + blk * 192;
    uint2 l0 = __ldg((const uint2*)(qb + 64 * n + 8 * g));
    uint2 l1 = __ldg((const uint2*)(qb + 64 * n + 32 + 8 * g));
    uint2 hv = __ldg((const uint2*)(qb + 128 + 32 * n + 8 * g));
    const u8* mb = m + blk * 20;
    float d = h2f(__ldg((const u16*)mb));
    const i8* S = (const i8*)(mb + 4) + 8 * n + g / 2;
    float s0 = d * (float)S[0], s1 = d * (float)S[2], s2 = d * (float)S[4], s3 = d * (float)S[6];
    u32 a0[2] = {l0.x, l0.y}, a1[2] = {l1.x, l1.y}, hh[2] = {hv.x, hv.y};
#pragma unroll
    for (int i = 0; i < 8; i++) {
        u32 lo0 = byte_of(a0[i >> 2], i & 3), lo1 = byte_of(a1[i >> 2], i & 3), h = byte_of(hh[i >> 2], i & 3);
        w[i] = s0 * (float)((int)((lo0 & 15) | ((h & 3) << 4)) - 32);
        w[8 + i] = s1 * (float)((int)((lo1 & 15) | (((h >> 2) & 3) << 4)) - 32);
        w[16 + i] = s2 * (float)((int)((lo0 >> 4) | (((h >> 4) & 3) << 4)) - 32);
        w[24 + i] = s3 * (float)((int)((lo1 >> 4) | (((h >> 6) & 3) << 4)) - 32);
    }
    return b * 256 + 128 * n + 8 * g;
}

__device__ __forceinline__ int unit_q8(const u8* q, const u8* m, long long row, int nb, int u, float (&w)[32]) {
    long long blk = row * nb + u;
    const uint4* p = (const uint4*)(q + blk * 32);
    uint4 v0 = __ldg(p), v1 = __ldg(p + 1);
    float d = h2f(__ldg((const u16*)m + blk));
    u32 ws[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
#pragma unroll
    for (int i = 0; i < 32; i++) w[i] = d * (float)(int)(signed char)byte_of(ws[i >> 2], i & 3);
    return 32 * u;
}

__device__ __forceinline__ int unit_f16(const u8* q, long long row, int in_dim, int u, float (&w)[32]) {
    const uint4* p = (const uint4*)(q + (row * in_dim + 32 * u) * 2);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        uint4 v = __ldg(p + j);
        u32 ws[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[8 * j + 2 * i] = h2f((u16)(ws[i] & 0xffff));
            w[8 * j + 2 * i + 1] = h2f((u16)(ws[i] >> 16));
        }
    }
    return 32 * u;
}

__device__ __forceinline__ int unit_f32(const u8* q, long long row, int in_dim, int u, float (&w)[32]) {
    const float4* p = (const float4*)(q + (row * in_dim + 32 * u) * 4);
#pragma unroll
    for (int j = 0; j < 8; j++) {
        float4 v = __ldg(p + j);
        w[4 * j] = v.x;
        w[4 * j + 1] = v.y;
        w[4 * j + 2] = v.z;
        w[4 * j + 3] = v.w;
    }
    return 32 * u;
}

template <int NSEG, int R>
__device__ __forceinline__ void fma_unit(const float (&w)[32], const float* x, int in_dim, int base, int nr, float (&acc)[R]) {
    constexpr int SL = 32 / NSEG;
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (r < nr) {
            const float* xr = x + (long long)r * in_dim + base;
            float s = 0.0f;
#pragma unroll
            for (int sg = 0; sg < NSEG; sg++) {
#pragma unroll
                for (int v = 0; v < SL / 4; v++) {
                    float4 xv = *(const float4*)(xr + sg * 32 + 4 * v);
                    s += w[sg * SL + 4 * v] * xv.x + w[sg * SL + 4 * v + 1] * xv.y + w[sg * SL + 4 * v + 2] * xv.z +
                         w[sg * SL + 4 * v + 3] * xv.w;
                }
            }
            acc[r] += s;
        }
    }
}

template <int DT, int R>
__device__ __forceinline__ void mv_units(const MatJob& J, const float* x, int nr, int row0, float (&acc)[MV_WR][R]) {
    int lane = threadIdx.x & 31;
    int units = J.in_dim / 32, nb = DT == DT_Q8_0 ? J.in_dim / 32 : J.in_dim / 256;
#pragma unroll 2
    for (int u = lane; u < units; u += 32) {
#pragma unroll
        for (int i = 0; i < MV_WR; i++) {
            long long row = row0 + i;
            if (row < J.out_dim) {
                float w[32];
                int base;
                if (DT == DT_Q4K) base = unit_q4k(J.wq, J.wm, row, nb, u, w);
                else if (DT == DT_Q6K) base = unit_q6k(J.wq, J.wm, row, nb, u, w);
                else if (DT == DT_Q8_0) base = unit_q8(J.wq, J.wm, row, nb, u, w);
                else if (DT == DT_F16) base = unit_f16(J.wq, row, J.in_dim, u, w);
                else base = unit_f32(J.wq, row, J.in_dim, u, w);
                if (DT == DT_Q4K) fma_unit<2, R>(w, x, J.in_dim, base, nr, acc[i]);
                else if (DT == DT_Q6K) fma_unit<4, R>(w, x, J.in_dim, base, nr, acc[i]);
                else fma_unit<1, R>(w, x, J.in_dim, base, nr, acc[i]);
            }
        }
    }
}

template <int R>
__device__ __forceinline__ void mv_generic(const MatJob& J, const float* x, int nr, int row0, float (&acc)[MV_WR][R]) {
    int lane = threadIdx.x & 31;
    for (int k = lane; k < J.in_dim; k += 32) {
#pragma unroll
        for (int i = 0; i < MV_WR; i++) {
            long long row = row0 + i;
            if (row < J.out_dim) {
                float w = dequant_one(J.dtype, J.wq, J.wm, row, J.in_dim, k);
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (r < nr) acc[i][r] += w * x[(long long)r * J.in_dim + k];
            }
        }
    }
}

template <int R>
__device__ __forceinline__ void matvec_impl(const MatJob* jobs, int n_jobs, int rows) {
    int bid = blockIdx.x;
    const MatJob J = jobs[find_job(jobs, n_jobs, bid)];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row0 = ((bid - J.block_start) * MV_WARPS + warp) * MV_WR;
    if (row0 >= J.out_dim) return;
    bool fast = (J.in_dim % 32 == 0) && (J.dtype == DT_F32 || J.dtype == DT_F16 || J.dtype == DT_Q8_0 ||
                                         ((J.dtype == DT_Q4K || J.dtype == DT_Q6K) && J.in_dim % 256 == 0));
    for (int rg = 0; rg < rows; rg += R) {
        int nr = min(R, rows - rg);
        const float* x = J.x + (long long)rg * J.in_dim;
        float acc[MV_WR][R];
#pragma unroll
        for (int i = 0; i < MV_WR; i++)
#pragma unroll
            for (int r = 0; r < R; r++) acc[i][r] = 0.0f;
        if (!fast) mv_generic<R>(J, x, nr, row0, acc);
        else if (J.dtype == DT_Q4K) mv_units<DT_Q4K, R>(J, x, nr, row0, acc);
        else if (J.dtype == DT_Q6K) mv_units<DT_Q6K, R>(J, x, nr, row0, acc);
        else if (J.dtype == DT_Q8_0) mv_units<DT_Q8_0, R>(J, x, nr, row0, acc);
        else if (J.dtype == DT_F16) mv_units<DT_F16, R>(J, x, nr, row0, acc);
        else mv_units<DT_F32, R>(J, x, nr, row0, acc);
#pragma unroll
        for (int i = 0; i < MV_WR; i++) {
            int row = row0 + i;
#pragma unroll
            for (int r = 0; r < R; r++) {
                float v = warp_sum(acc[i][r]);
                if (lane == r && r < nr && row < J.out_dim) {
                    if (J.bias) v += J.bias[row];
                    v = apply_act(J.act, v);
                    float* o = J.out + (long long)(rg + r) * J.out_dim + row;
                    if (J.accumulate) *o += v;
                    else *o = v;
                }
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(MV_WARPS * 32) matvec1_kernel(const MatJob* jobs, int n_jobs, int rows) {
    matvec_impl<1>(jobs, n_jobs, rows);
}
extern "C" __global__ void __launch_bounds__(MV_WARPS * 32) matvec2_kernel(const MatJob* jobs, int n_jobs, int rows) {
    matvec_impl<2>(jobs, n_jobs, rows);
}
extern "C" __global__ void __launch_bounds__(MV_WARPS * 32) matvec4_kernel(const MatJob* jobs, int n_jobs, int rows) {
    matvec_impl<4>(jobs, n_jobs, rows);
}
extern "C" __global__ void __launch_bounds__(MV_WARPS * 32) matvec8_kernel(const MatJob* jobs, int n_jobs, int rows) {
    matvec_impl<8>(jobs, n_jobs, rows);
}
