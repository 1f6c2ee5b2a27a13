// Matrix products, tensor-core path: many activation rows (prefill, large batches).
// Block tile: 64 activation rows x 64 weight rows, K steps of 64. Each step dequantizes the weight
// tile to f16 in shared memory (2 threads per weight row, 32 values each) and converts the
// activation tile to f16; 4 warps (2 x 2) each compute 32 x 32 with mma.sync m16n8k16, f32
// accumulators. Needs in_dim % 32 == 0 (% 256 for the K-quants); a last half step is zero-filled.
// Split K (job.pad = splits > 1, only for act == NONE): each split adds its partial sum into
// `out` with atomicAdd (split 0 adds the bias); `out` is cleared first unless accumulating.

#define MM_BM 64
#define MM_BN 64
#define MM_BK 64
#define MM_LD (MM_BK + 8)  // padded row (halves): fragment loads hit 32 distinct banks

__device__ __forceinline__ void mma16816(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 values (in order) as 8 packed halves pairs -> two 16-byte stores.
__device__ __forceinline__ void store16(u16* dst, const float (&v)[16]) {
    uint4 a = make_uint4(pack_h2(v[0], v[1]), pack_h2(v[2], v[3]), pack_h2(v[4], v[5]), pack_h2(v[6], v[7]));
    uint4 b = make_uint4(pack_h2(v[8], v[9]), pack_h2(v[10], v[11]), pack_h2(v[12], v[13]), pack_h2(v[14], v[15]));
    *(uint4*)dst = a;
    *(uint4*)(dst + 8) = b;
}

// A weight tile row's share (32 values) is fetched into registers first (mm_raw_b) and decoded to
// f16 in shared memory later (mm_store_b), so the next step's loads fly during this step's mma.
struct RawB {
    uint4 v[8];
    bool zero;
};

__device__ __forceinline__ void mm_raw_b(const MatJob& J, long long row, int k0, int half, RawB& R) {
    R.zero = row >= J.out_dim || k0 + 32 * half >= J.in_dim;
    if (R.zero) return;
    if (J.dtype == DT_Q4K) {
        int nb = J.in_dim / 256, b = k0 / 256, c = (k0 % 256) / 64;
        long long blk = row * nb + b;
        R.v[0] = ld_stream16(J.wq + blk * 128 + 32 * c + 16 * half);
        R.v[1] = ld_stream16(J.wm + blk * 16);
    } else if (J.dtype == DT_Q6K) {
        int nb = J.in_dim / 256, b = k0 / 256, j0 = k0 % 256, n = j0 / 128, q0 = (j0 % 128) / 32;
        long long blk = row * nb + b;
        const u8* qb = J.wq + blk * 192;
        R.v[0] = ld_stream16(qb + 64 * n + 16 * half);
        R.v[1] = ld_stream16(qb + 64 * n + 32 + 16 * half);
        R.v[2] = ld_stream16(qb + 128 + 32 * n + 16 * half);
        const u8* mb = J.wm + blk * 20;
        const i8* S = (const i8*)(mb + 4) + 8 * n + half + 2 * q0;
        R.v[3] = make_uint4(__ldg((const u16*)mb), (u32)(int)S[0], (u32)(int)S[2], 0u);
    } else if (J.dtype == DT_Q8_0) {
        long long blk = row * (J.in_dim / 32) + k0 / 32 + half;
        const uint4* p = (const uint4*)(J.wq + blk * 32);
        R.v[0] = ld_stream16(p);
        R.v[1] = ld_stream16(p + 1);
        R.v[2].x = __ldg((const u16*)J.wm + blk);
    } else if (J.dtype == DT_F16) {
        const uint4* p = (const uint4*)(J.wq + (row * J.in_dim + k0 + 32 * half) * 2);
#pragma unroll
        for (int j = 0; j < 4; j++) R.v[j] = ld_stream16(p + j);
    } else {
        const uint4* p = (const uint4*)(J.wq + (row * J.in_dim + k0 + 32 * half) * 4);
#pragma unroll
        for (int j = 0; j < 8; j++) R.v[j] = ld_stream16(p + j);
    }
}

__device__ __forceinline__ void mm_store_b(const MatJob& J, int k0, int half, const RawB& R, u16* dst) {
    float v[16], u[16];
    if (R.zero) {
        uint4 z = make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int j = 0; j < 4; j++) *(uint4*)(dst + 32 * half + 8 * j) = z;
        return;
    }
    if (J.dtype == DT_Q4K) {
        int c = (k0 % 256) / 64;
        uint4 mv = R.v[1];
        float d = h2f((u16)(mv.x & 0xffff)), dmin = h2f((u16)(mv.x >> 16));
        float d1, m1, d2, m2;
        q4k_sm_words(mv.y, mv.z, mv.w, 2 * c, d, dmin, d1, m1);
        q4k_sm_words(mv.y, mv.z, mv.w, 2 * c + 1, d, dmin, d2, m2);
        u32 qw[4] = {R.v[0].x, R.v[0].y, R.v[0].z, R.v[0].w};
#pragma unroll
        for (int i = 0; i < 16; i++) {
            u32 byte = byte_of(qw[i >> 2], i & 3);
            v[i] = d1 * small_int_f(byte & 15) - m1;
            u[i] = d2 * small_int_f(byte >> 4) - m2;
        }
        store16(dst + 16 * half, v);       // low nibbles: sub-block 2c, tile k = 16*half + i
        store16(dst + 32 + 16 * half, u);  // high nibbles: sub-block 2c+1
    } else if (J.dtype == DT_Q6K) {
        int q0 = ((k0 % 256) % 128) / 32;
        float d = h2f((u16)R.v[3].x);
        float s0 = d * (float)(int)R.v[3].y, s1 = d * (float)(int)R.v[3].z;
        int lsh = q0 == 2 ? 4 : 0;
        u32 a0[4] = {R.v[0].x, R.v[0].y, R.v[0].z, R.v[0].w}, a1[4] = {R.v[1].x, R.v[1].y, R.v[1].z, R.v[1].w};
        u32 hh[4] = {R.v[2].x, R.v[2].y, R.v[2].z, R.v[2].w};
#pragma unroll
        for (int i = 0; i < 16; i++) {
            u32 lo0 = byte_of(a0[i >> 2], i & 3), lo1 = byte_of(a1[i >> 2], i & 3), h = byte_of(hh[i >> 2], i & 3);
            v[i] = s0 * (float)((int)(((lo0 >> lsh) & 15) | (((h >> (2 * q0)) & 3) << 4)) - 32);
            u[i] = s1 * (float)((int)(((lo1 >> lsh) & 15) | (((h >> (2 * q0 + 2)) & 3) << 4)) - 32);
        }
        store16(dst + 16 * half, v);       // quarter q0, l = 16*half + i
        store16(dst + 32 + 16 * half, u);  // quarter q0+1
    } else if (J.dtype == DT_Q8_0) {
        float d = h2f((u16)R.v[2].x);
        u32 ws[8] = {R.v[0].x, R.v[0].y, R.v[0].z, R.v[0].w, R.v[1].x, R.v[1].y, R.v[1].z, R.v[1].w};
#pragma unroll
        for (int i = 0; i < 16; i++) {
            v[i] = d * (float)(int)(signed char)byte_of(ws[i >> 2], i & 3);
            u[i] = d * (float)(int)(signed char)byte_of(ws[4 + (i >> 2)], i & 3);
        }
        store16(dst + 32 * half, v);
        store16(dst + 32 * half + 16, u);
    } else if (J.dtype == DT_F16) {
#pragma unroll
        for (int j = 0; j < 4; j++) *(uint4*)(dst + 32 * half + 8 * j) = R.v[j];
    } else {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            v[4 * j] = __uint_as_float(R.v[j].x); v[4 * j + 1] = __uint_as_float(R.v[j].y);
            v[4 * j + 2] = __uint_as_float(R.v[j].z); v[4 * j + 3] = __uint_as_float(R.v[j].w);
            u[4 * j] = __uint_as_float(R.v[4 + j].x); u[4 * j + 1] = __uint_as_float(R.v[4 + j].y);
            u[4 * j + 2] = __uint_as_float(R.v[4 + j].z); u[4 * j + 3] = __uint_as_float(R.v[4 + j].w);
        }
        store16(dst + 32 * half, v);
        store16(dst + 32 * half + 16, u);
    }
}

__device__ __forceinline__ void mm_raw_a(const MatJob& J, int rows, int m0, int k0, int tid, float4 (&a)[8]) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int idx = tid + 128 * i, r = idx >> 4, c4 = idx & 15;
        int gr = m0 + r;
        a[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (gr < rows && k0 + 4 * c4 < J.in_dim) a[i] = *(const float4*)(J.x + (long long)gr * J.in_dim + k0 + 4 * c4);
    }
}

extern "C" __global__ void __launch_bounds__(128, 3) matmul_mma_kernel(const JobTable T, int rows) {
    __shared__ __align__(16) u16 As[MM_BM * MM_LD];
    __shared__ __align__(16) u16 Bs[MM_BN * MM_LD];
    pdl_trigger();
    int bid = blockIdx.x;
    const MatJob& J = T.job[find_job(T, bid)];
    int tile = bid - J.block_start;
    int tiles_m = (rows + MM_BM - 1) / MM_BM;
    int n0 = (tile % J.n_tiles_n) * MM_BN, rest = tile / J.n_tiles_n;
    int m0 = (rest % tiles_m) * MM_BM, split = rest / tiles_m, splits = max(J.pad, 1);
    int steps = (J.in_dim + MM_BK - 1) / MM_BK;
    int k_begin = steps * split / splits * MM_BK, k_end = min(J.in_dim, steps * (split + 1) / splits * MM_BK);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tig = lane & 3;
    int wm = warp >> 1, wn = warp & 1;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int k = 0; k < 4; k++) acc[i][j][k] = 0.0f;

    int brow = tid >> 1, bhalf = tid & 1;
    long long wrow = n0 + brow;
    RawB rb;
    float4 ra[8];
    // Weights do not depend on the previous kernel: the first tile's loads go out before the wait.
    if (k_begin < k_end) mm_raw_b(J, wrow, k_begin, bhalf, rb);
    pdl_wait();
    if (k_begin < k_end) mm_raw_a(J, rows, m0, k_begin, tid, ra);
    for (int k0 = k_begin; k0 < k_end; k0 += MM_BK) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            int idx = tid + 128 * i, r = idx >> 4, c4 = idx & 15;
            *(uint2*)&As[r * MM_LD + 4 * c4] = make_uint2(pack_h2(ra[i].x, ra[i].y), pack_h2(ra[i].z, ra[i].w));
        }
        mm_store_b(J, k0, bhalf, rb, &Bs[brow * MM_LD]);
        __syncthreads();
        if (k0 + MM_BK < k_end) {
            mm_raw_b(J, wrow, k0 + MM_BK, bhalf, rb);
            mm_raw_a(J, rows, m0, k0 + MM_BK, tid, ra);
        }
#pragma unroll
        for (int kk = 0; kk < MM_BK / 16; kk++) {
            u32 a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                int r = 32 * wm + 16 * mt + g, c = 16 * kk + 2 * tig;
                a[mt][0] = *(const u32*)&As[r * MM_LD + c];
                a[mt][1] = *(const u32*)&As[(r + 8) * MM_LD + c];
                a[mt][2] = *(const u32*)&As[r * MM_LD + c + 8];
                a[mt][3] = *(const u32*)&As[(r + 8) * MM_LD + c + 8];
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                int r = 32 * wn + 8 * nt + g, c = 16 * kk + 2 * tig;
                u32 b0 = *(const u32*)&Bs[r * MM_LD + c];
                u32 b1 = *(const u32*)&Bs[r * MM_LD + c + 8];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) mma16816(acc[mt][nt], a[mt], b0, b1);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int m = m0 + 32 * wm + 16 * mt + g + (e >= 2 ? 8 : 0);
                int n = n0 + 32 * wn + 8 * nt + 2 * tig + (e & 1);
                if (m < rows && n < J.out_dim) {
                    float v = acc[mt][nt][e];
                    if (splits > 1) {
                        if (J.bias && split == 0) v += J.bias[n];
                        atomicAdd(J.out + (long long)m * J.out_dim + n, v);
                        continue;
                    }
                    if (J.bias) v += J.bias[n];
                    v = apply_act(J.act, v);
                    float* o = J.out + (long long)m * J.out_dim + n;
                    if (J.accumulate) *o += v;
                    else *o = v;
                }
            }
}
