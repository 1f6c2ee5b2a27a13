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

#define MV_THREADS 256

// The jobs of one launch travel as a kernel parameter (constant bank): finding a block's job
// costs no dependent global loads.
#define MAX_JOBS 8
struct JobTable {
    MatJob job[MAX_JOBS];
    int n;
};

__device__ __forceinline__ int find_job(const JobTable& T, int bid) {
    int j = 0;
    while (j + 1 < T.n && bid >= T.job[j + 1].block_start) j++;
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

// Raw bytes of one unit, loaded before any arithmetic so that several units' loads are in flight.
struct RawUnit {
    uint4 a, b;
    u32 c, d;
};

template <int DT>
__device__ __forceinline__ void raw_load(const MatJob& J, long long row, int u, RawUnit& w) {
    if (DT == DT_Q4K) {
        long long blk = row * (J.in_dim / 256) + (u >> 3);
        int c = (u & 7) >> 1, half = u & 1;
        w.a = ld_stream16((const uint4*)(J.wq + blk * 128 + 32 * c + 16 * half));
        w.b = ld_stream16((const uint4*)(J.wm + blk * 16));
    } else if (DT == DT_Q6K) {
        long long blk = row * (J.in_dim / 256) + (u >> 3);
        int n = (u & 7) >> 2, g = u & 3;
        const u8* qb = J.wq + blk * 192;
        uint2 l0 = ld_stream8((const uint2*)(qb + 64 * n + 8 * g));
        uint2 l1 = ld_stream8((const uint2*)(qb + 64 * n + 32 + 8 * g));
        uint2 hv = ld_stream8((const uint2*)(qb + 128 + 32 * n + 8 * g));
        const u8* mb = J.wm + blk * 20;
        w.a = make_uint4(l0.x, l0.y, l1.x, l1.y);
        w.b = make_uint4(hv.x, hv.y, __ldg((const u32*)mb), 0u);
        // scales S[8n + g/2 + {0,2,4,6}]: bytes 8n+g/2 .. 8n+g/2+6 of the 16 scale bytes.
        const u8* S = mb + 4 + 8 * n + (g >> 1);
        w.c = (u32)S[0] | ((u32)S[2] << 8) | ((u32)S[4] << 16) | ((u32)S[6] << 24);
    } else if (DT == DT_Q8_0) {
        long long blk = row * (J.in_dim / 32) + u;
        const uint4* p = (const uint4*)(J.wq + blk * 32);
        w.a = ld_stream16(p);
        w.b = ld_stream16(p + 1);
        w.c = __ldg((const u16*)J.wm + blk);
    } else if (DT == DT_F16) {
        w.a = ld_stream16((const uint4*)(J.wq + (row * J.in_dim + 8 * u) * 2));
    } else {
        const uint4* p = (const uint4*)(J.wq + (row * J.in_dim + 8 * u) * 4);
        w.a = ld_stream16(p);
        w.b = ld_stream16(p + 1);
    }
}

// 4-bit or 6-bit integer q as a float without I2F: the bits of 2^23 + q, minus 2^23 (exact).
__device__ __forceinline__ float small_int_f(u32 q) { return __uint_as_float(0x4B000000u | q) - 8388608.0f; }

// Staged activations sit in shared memory with 4 floats of padding after every 64 (fewer bank
// conflicts for the lanes' scattered segments); global ones are unpadded.
template <bool PAD>
__device__ __forceinline__ int padi(int k) { return PAD ? k + ((k >> 6) << 2) : k; }

template <int N>
__device__ __forceinline__ void xload(const float* x, float (&xv)[N]) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
        float4 t = *(const float4*)(x + i);
        xv[i] = t.x; xv[i + 1] = t.y; xv[i + 2] = t.z; xv[i + 3] = t.w;
    }
}

// acc[r] += dot(unit, x[r]) for the R activation rows.
template <int DT, int R, bool PAD>
__device__ __forceinline__ void raw_dot(const MatJob& J, const RawUnit& w, int u, const float* x, int xs, int nr, float (&acc)[R]) {
    if (DT == DT_Q4K) {
        int c = (u & 7) >> 1, half = u & 1;
        int base = (u >> 3) * 256 + 64 * c + 16 * half;
        float d = h2f((u16)(w.b.x & 0xffff)), dmin = h2f((u16)(w.b.x >> 16));
        float d1, m1, d2, m2;
        q4k_sm_words(w.b.y, w.b.z, w.b.w, 2 * c, d, dmin, d1, m1);
        q4k_sm_words(w.b.y, w.b.z, w.b.w, 2 * c + 1, d, dmin, d2, m2);
        u32 qw[4] = {w.a.x, w.a.y, w.a.z, w.a.w};
        // Low nibbles (sub-block 2c, x at base) then high nibbles (2c+1, x at base + 32), one
        // half at a time to keep registers low. Four nibbles per LOP3, one byte permute per
        // value builds the float 2^23 + q.
#pragma unroll
        for (int hsel = 0; hsel < 2; hsel++) {
            float q[16];
#pragma unroll
            for (int i4 = 0; i4 < 4; i4++) {
                u32 n4 = (qw[i4] >> (4 * hsel)) & 0x0F0F0F0Fu;
#pragma unroll
                for (int b = 0; b < 4; b++) q[4 * i4 + b] = __uint_as_float(__byte_perm(n4, 0x4B000000u, 0x7440 | b)) - 8388608.0f;
            }
            float dd = hsel ? d2 : d1, mm = hsel ? m2 : m1;
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (r < nr) {
                    float xv[16];
                    xload<16>(x + (long long)r * xs + padi<PAD>(base + 32 * hsel), xv);
                    float sq = 0.f, sx = 0.f;
#pragma unroll
                    for (int i = 0; i < 16; i++) {
                        sq += q[i] * xv[i];
                        sx += xv[i];
                    }
                    acc[r] += dd * sq - mm * sx;
                }
            }
        }
    } else if (DT == DT_Q6K) {
        int n = (u & 7) >> 2, g = u & 3;
        int base = (u >> 3) * 256 + 128 * n + 8 * g;
        float d = h2f((u16)(w.b.z & 0xffff));
        float sc[4];
#pragma unroll
        for (int j = 0; j < 4; j++) sc[j] = d * (float)(signed char)byte_of(w.c, j);
        u32 a0[2] = {w.a.x, w.a.y}, a1[2] = {w.a.z, w.a.w}, hh[2] = {w.b.x, w.b.y};
        float q[4][8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 lo0 = byte_of(a0[i >> 2], i & 3), lo1 = byte_of(a1[i >> 2], i & 3), h = byte_of(hh[i >> 2], i & 3);
            q[0][i] = small_int_f((lo0 & 15) | ((h & 3) << 4)) - 32.0f;
            q[1][i] = small_int_f((lo1 & 15) | (((h >> 2) & 3) << 4)) - 32.0f;
            q[2][i] = small_int_f((lo0 >> 4) | (((h >> 4) & 3) << 4)) - 32.0f;
            q[3][i] = small_int_f((lo1 >> 4) | (((h >> 6) & 3) << 4)) - 32.0f;
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r < nr) {
                const float* xr = x + (long long)r * xs;
                float tot = 0.f;
#pragma unroll
                for (int sg = 0; sg < 4; sg++) {
                    float xv[8];
                    xload<8>(xr + padi<PAD>(base + 32 * sg), xv);
                    float t = 0.f;
#pragma unroll
                    for (int i = 0; i < 8; i++) t += q[sg][i] * xv[i];
                    tot += sc[sg] * t;
                }
                acc[r] += tot;
            }
        }
    } else if (DT == DT_Q8_0) {
        float d = h2f((u16)w.c);
        u32 ws[8] = {w.a.x, w.a.y, w.a.z, w.a.w, w.b.x, w.b.y, w.b.z, w.b.w};
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r < nr) {
                const float* xr = x + (long long)r * xs + padi<PAD>(32 * u);
                float xv[32];
                xload<32>(xr, xv);
                float t = 0.f;
#pragma unroll
                for (int i = 0; i < 32; i++) t += (float)(int)(signed char)byte_of(ws[i >> 2], i & 3) * xv[i];
                acc[r] += d * t;
            }
        }
    } else if (DT == DT_F16) {
        u32 ws[4] = {w.a.x, w.a.y, w.a.z, w.a.w};
        float wv[8];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            wv[2 * i] = h2f((u16)(ws[i] & 0xffff));
            wv[2 * i + 1] = h2f((u16)(ws[i] >> 16));
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r < nr) {
                float xv[8];
                xload<8>(x + (long long)r * xs + padi<PAD>(8 * u), xv);
                float t = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) t += wv[i] * xv[i];
                acc[r] += t;
            }
        }
    } else {
        float wv[8] = {__uint_as_float(w.a.x), __uint_as_float(w.a.y), __uint_as_float(w.a.z), __uint_as_float(w.a.w),
                       __uint_as_float(w.b.x), __uint_as_float(w.b.y), __uint_as_float(w.b.z), __uint_as_float(w.b.w)};
#pragma unroll
        for (int r = 0; r < R; r++) {
            if (r < nr) {
                float xv[8];
                xload<8>(x + (long long)r * xs + padi<PAD>(8 * u), xv);
                float t = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) t += wv[i] * xv[i];
                acc[r] += t;
            }
        }
    }
}

// Lanes of a row walk its units [u0, u1) with stride lpr, 4 units' loads in flight at a time.
template <int DT, int R, bool PAD>
__device__ __forceinline__ void mv_units(const MatJob& J, long long row, int u0, int u1, int l, int lpr,
                                         const float* x, int xs, int nr, float (&acc)[R]) {
    constexpr int PF = 2;
    for (int u = u0 + l; u < u1; u += PF * lpr) {
        RawUnit w[PF];
#pragma unroll
        for (int p = 0; p < PF; p++)
            if (u + p * lpr < u1) raw_load<DT>(J, row, u + p * lpr, w[p]);
#pragma unroll
        for (int p = 0; p < PF; p++)
            if (u + p * lpr < u1) raw_dot<DT, R, PAD>(J, w[p], u + p * lpr, x, xs, nr, acc);
    }
}

// ---- Int8-activation path (batch 1, Q4_K): x quantized per 16 values, products by dp4a. ----
// Staged in shared memory in the weights' unit order, so that a lane's unit u finds its 32
// activations and their scales at index u (16-byte strides: no bank conflicts):
//   xlo[u]: int8 x of the unit's low nibbles (16 values), xhi[u]: of its high nibbles,
//   meta[u] = {scale of the 16 low values, scale of the 16 high values, exact f32 sum of the
//   16 low values, of the 16 high values}. The sums keep Q4_K's dmin * min term exact.
// 48 bytes per unit (1.5 bytes per activation).
#define Q8_UNIT_BYTES 48

__device__ __forceinline__ int dp4a_s32(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Quantizes x[0..n) (n a multiple of 256) into the staged layout, one scale per 16 values (the
// unit halves; finer than 32 at no cost, as meta holds two scales per unit anyway). Each thread
// takes 4 values, 4 lanes hold one 16-value half (amax and sum by 2 shuffles); 4 float4 loads
// per thread are issued before any use (one L2 latency per 4 instead of per 1).
__device__ __forceinline__ void q8_stage(const float* x, int n, uint4* xlo, uint4* xhi, float4* meta) {
    u32* lo = (u32*)xlo;
    u32* hi = (u32*)xhi;
    float* mt = (float*)meta;
    int n4 = n / 4;  // a multiple of 64: whole warps take part in every round (shuffles)
    for (int i0 = threadIdx.x; i0 < n4; i0 += 4 * blockDim.x) {
        float4 xv[4];
#pragma unroll
        for (int t = 0; t < 4; t++) {
            int i = i0 + t * blockDim.x;
            if (i < n4) xv[t] = *(const float4*)(x + 4 * i);
        }
#pragma unroll
        for (int t = 0; t < 4; t++) {
            int i = i0 + t * blockDim.x;
            if (i < n4) {
                float4 v = xv[t];
                float a = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
                float s = (v.x + v.y) + (v.z + v.w);
                s += __shfl_xor_sync(0xffffffffu, s, 1);
                s += __shfl_xor_sync(0xffffffffu, s, 2);
                a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 1));
                a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 2));
                float inv = a > 0.0f ? 127.0f / a : 0.0f;
                u32 q = ((u32)__float2int_rn(v.x * inv) & 255u) | (((u32)__float2int_rn(v.y * inv) & 255u) << 8) |
                        (((u32)__float2int_rn(v.z * inv) & 255u) << 16) | ((u32)__float2int_rn(v.w * inv) << 24);
                // Value 4i sits in block 4i/256 at j: chunk c = j/64, nibble half h = (j%64)/32,
                // unit half (j%32)/16, word (j%16)/4 of the unit's 16 bytes.
                int k = 4 * i, j = k & 255;
                int c = j >> 6, h = (j >> 5) & 1, uh = (j >> 4) & 1, word = (j >> 2) & 3;
                int u = (k >> 8) * 8 + 2 * c + uh;
                (h ? hi : lo)[4 * u + word] = q;
                if (word == 0) {
                    mt[4 * u + h] = a * (1.0f / 127.0f);
                    mt[4 * u + 2 + h] = s;
                }
            }
        }
    }
}

// acc += dot(unit u of a Q4_K row, staged int8 x): 8 dp4a, the scales applied per 16 values.
__device__ __forceinline__ void q8_dot(const RawUnit& w, int u, const uint4* xlo, const uint4* xhi, const float4* meta,
                                       float& acc) {
    int c = (u & 7) >> 1;
    uint4 xl = xlo[u], xh = xhi[u];
    float4 mt = meta[u];
    u32 qw[4] = {w.a.x, w.a.y, w.a.z, w.a.w};
    int xlw[4] = {(int)xl.x, (int)xl.y, (int)xl.z, (int)xl.w};
    int xhw[4] = {(int)xh.x, (int)xh.y, (int)xh.z, (int)xh.w};
    int sl = 0, sh = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        sl = dp4a_s32((int)(qw[i] & 0x0F0F0F0Fu), xlw[i], sl);
        sh = dp4a_s32((int)((qw[i] >> 4) & 0x0F0F0F0Fu), xhw[i], sh);
    }
    float d = h2f((u16)(w.b.x & 0xffff)), dmin = h2f((u16)(w.b.x >> 16));
    float d1, m1, d2, m2;
    q4k_sm_words(w.b.y, w.b.z, w.b.w, 2 * c, d, dmin, d1, m1);
    q4k_sm_words(w.b.y, w.b.z, w.b.w, 2 * c + 1, d, dmin, d2, m2);
    acc += (d1 * mt.x) * (float)sl + (d2 * mt.y) * (float)sh - (m1 * mt.z + m2 * mt.w);
}

// Unit u of a Q4_K row: its 16 quant bytes at qrow + 16u (8 units per 128-byte block), the
// block's 16-byte header at mrow + 16 (u / 8).
template <int PF>
__device__ __forceinline__ void q8_loads(const u8* qrow, const u8* mrow, int u, int u1, int lpr, RawUnit (&w)[PF]) {
#pragma unroll
    for (int p = 0; p < PF; p++) {
        int up = u + p * lpr;
        if (up < u1) {
            w[p].a = ld_stream16(qrow + 16 * up);
            w[p].b = ld_stream16(mrow + 16 * (up >> 3));
        }
    }
}

// A whole block of the int8 path (matvec1 only): stage x as int8, then the rows' passes. Kept
// apart from the f32 path so that neither's registers weigh on the other. PF units in flight
// per lane. (Loading the first units before the PDL wait, 4 units in flight and 3 blocks per
// SM were measured slower and removed: NOTES.md, v11.)
template <int PF>
__device__ __forceinline__ void matvec_q8_block(const MatJob& J, float* xsh, float (*part)[32][1], int passes, int rpb,
                                                int ks, int warp, int kslice, int sub, int l, int lpr, int u0, int u1,
                                                int units, long long row_base) {
    RawUnit w[PF];
    long long nb = J.in_dim / 256;
    pdl_wait();
    uint4* xlo = (uint4*)xsh;
    uint4* xhi = xlo + units;
    float4* meta = (float4*)(xhi + units);
    q8_stage(J.x, J.in_dim, xlo, xhi, meta);
    __syncthreads();
    for (int pass = 0; pass < passes; pass++) {
        long long row = row_base + (long long)pass * rpb;
        bool valid = row < J.out_dim;
        float acc = 0.0f;
        if (valid) {
            const u8* qrow = J.wq + row * nb * 128;
            const u8* mrow = J.wm + row * nb * 16;
            for (int u = u0 + l; u < u1; u += PF * lpr) {
                q8_loads<PF>(qrow, mrow, u, u1, lpr, w);
#pragma unroll
                for (int p = 0; p < PF; p++)
                    if (u + p * lpr < u1) q8_dot(w[p], u + p * lpr, xlo, xhi, meta, acc);
            }
        }
        for (int o = lpr >> 1; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (ks > 1) {
            __syncthreads();
            if (l == 0) part[warp][sub][0] = acc;
            __syncthreads();
            if (kslice == 0 && l == 0)
                for (int k2 = 1; k2 < ks; k2++) acc += part[warp + k2][sub][0];
        }
        if (kslice == 0 && l == 0 && valid) {
            float v = acc;
            if (J.bias) v += J.bias[row];
            v = apply_act(J.act, v);
            float* o = J.out + row;
            if (J.accumulate) *o += v;
            else *o = v;
        }
    }
}

template <int R, bool PAD>
__device__ __forceinline__ void mv_dispatch(const MatJob& J, long long row, int u0, int u1, int l, int lpr,
                                            const float* x, int xs, int nr, float (&acc)[R]) {
    if (J.dtype == DT_Q4K) mv_units<DT_Q4K, R, PAD>(J, row, u0, u1, l, lpr, x, xs, nr, acc);
    else if (J.dtype == DT_Q6K) mv_units<DT_Q6K, R, PAD>(J, row, u0, u1, l, lpr, x, xs, nr, acc);
    else if (J.dtype == DT_Q8_0) mv_units<DT_Q8_0, R, PAD>(J, row, u0, u1, l, lpr, x, xs, nr, acc);
    else if (J.dtype == DT_F16) mv_units<DT_F16, R, PAD>(J, row, u0, u1, l, lpr, x, xs, nr, acc);
    else mv_units<DT_F32, R, PAD>(J, row, u0, u1, l, lpr, x, xs, nr, acc);
}

// Grid: x over (job, block of weight rows), y over groups of R activation rows.
// Fields of a SIMT job: n_tiles_n = lanes per row (lpr, a power of two <= 32) | passes << 8,
// pad = warps per row (ks, K split across warps: 1, 2, 4 or 8). A block of 8 warps covers
// (8/ks) * (32/lpr) rows per pass, `passes` row groups in turn, with its R activation rows staged
// in shared memory once (when they fit in smem_floats).
// Q8: 0, f32 path only; 1, both paths (launches mixing int8 and f32 jobs); 2, int8 path only
// (launches whose jobs all take it). Each path's code weighs on the other's registers (spills at
// 64 registers), so every launch gets the kernel with only what it needs.
template <int R, int Q8>
__device__ __forceinline__ void matvec_impl(const JobTable& T, int rows, int smem_floats) {
    extern __shared__ __align__(16) float xsh[];
    __shared__ float part[8][32][R];
    pdl_trigger();
    int bid = blockIdx.x;
    const MatJob& J = T.job[find_job(T, bid)];
    int lpr = J.n_tiles_n & 255, passes = max((J.n_tiles_n >> 8) & 255, 1), ks = J.pad;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int rpw = 32 / lpr;  // rows per warp
    int rpb = (8 / ks) * rpw;
    int wrow = warp / ks, kslice = warp % ks;
    int sub = lane / lpr, l = lane % lpr;
    int vals = (J.dtype == DT_F16 || J.dtype == DT_F32) ? 8 : 32;
    bool fast = J.in_dim % vals == 0 && ((J.dtype != DT_Q4K && J.dtype != DT_Q6K) || J.in_dim % 256 == 0);
    int units = J.in_dim / vals;
    int u0 = units * kslice / ks, u1 = units * (kslice + 1) / ks;
    int rg = blockIdx.y * R;
    int nr = min(R, rows - rg);
    int pst = J.in_dim + (J.in_dim >> 6) * 4;
    // Int8 activations (flag bit 24, set by the host for batch-1 Q4_K jobs unless
    // CudaOptions::q8x is off).
    if (Q8 != 0 && R == 1 && ((J.n_tiles_n >> 24) & 1) && J.dtype == DT_Q4K && fast &&
        units * Q8_UNIT_BYTES <= smem_floats * 4) {
        long long rb = (long long)(bid - J.block_start) * passes * rpb + wrow * rpw + sub;
        matvec_q8_block<2>(J, xsh, (float(*)[32][1])part, passes, rpb, ks, warp, kslice, sub, l, lpr, u0, u1, units, rb);
        return;
    }
    if (Q8 == 2) return;  // the host sends only eligible jobs to such kernels
    // Staging pays when the block then serves several weight rows.
    bool stage = fast && nr * pst <= smem_floats && rpb * passes >= 4;
    long long row_base = (long long)(bid - J.block_start) * passes * rpb + wrow * rpw + sub;
    pdl_wait();
    const float* xg = J.x + (long long)rg * J.in_dim;
    if (stage) {
        int q4 = J.in_dim / 4;
        for (int i = threadIdx.x; i < nr * q4; i += blockDim.x) {
            int r = i / q4, k = (i - r * q4) * 4;
            *(float4*)(xsh + r * pst + padi<true>(k)) = *(const float4*)(xg + (long long)r * J.in_dim + k);
        }
        __syncthreads();
    }
    for (int pass = 0; pass < passes; pass++) {
        long long row = row_base + (long long)pass * rpb;
        bool valid = row < J.out_dim;
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = 0.0f;
        if (valid) {
            if (!fast) {
                for (int k = l + kslice * lpr; k < J.in_dim; k += lpr * ks) {
                    float w = dequant_one(J.dtype, J.wq, J.wm, row, J.in_dim, k);
#pragma unroll
                    for (int r = 0; r < R; r++)
                        if (r < nr) acc[r] += w * xg[(long long)r * J.in_dim + k];
                }
            } else if (stage) {
                mv_dispatch<R, true>(J, row, u0, u1, l, lpr, xsh, pst, nr, acc);
            } else {
                mv_dispatch<R, false>(J, row, u0, u1, l, lpr, xg, J.in_dim, nr, acc);
            }
        }
        // Reduce within each group of lpr lanes (xor offsets below lpr stay inside the group).
#pragma unroll
        for (int r = 0; r < R; r++)
            for (int o = lpr >> 1; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
        if (ks > 1) {
            __syncthreads();
            if (l == 0) {
#pragma unroll
                for (int r = 0; r < R; r++) part[warp][sub][r] = acc[r];
            }
            __syncthreads();
            if (kslice == 0 && l == 0) {
                for (int k2 = 1; k2 < ks; k2++)
#pragma unroll
                    for (int r = 0; r < R; r++) acc[r] += part[warp + k2][sub][r];
            }
        }
        if (kslice == 0 && l == 0 && valid) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                if (r < nr) {
                    float v = acc[r];
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

extern "C" __global__ void __launch_bounds__(MV_THREADS, 4) matvec1_kernel(const JobTable T, int rows, int smem_floats) {
    matvec_impl<1, 0>(T, rows, smem_floats);
}
extern "C" __global__ void __launch_bounds__(MV_THREADS, 4) matvec1mix_kernel(const JobTable T, int rows, int smem_floats) {
    matvec_impl<1, 1>(T, rows, smem_floats);
}
extern "C" __global__ void __launch_bounds__(MV_THREADS, 4) matvec1q8_kernel(const JobTable T, int rows, int smem_floats) {
    matvec_impl<1, 2>(T, rows, smem_floats);
}
extern "C" __global__ void __launch_bounds__(MV_THREADS, 4) matvec2_kernel(const JobTable T, int rows, int smem_floats) {
    matvec_impl<2, 0>(T, rows, smem_floats);
}
extern "C" __global__ void __launch_bounds__(MV_THREADS, 4) matvec4_kernel(const JobTable T, int rows, int smem_floats) {
    matvec_impl<4, 0>(T, rows, smem_floats);
}
extern "C" __global__ void __launch_bounds__(MV_THREADS, 4) matvec8_kernel(const JobTable T, int rows, int smem_floats) {
    matvec_impl<8, 0>(T, rows, smem_floats);
}
