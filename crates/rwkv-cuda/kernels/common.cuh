// Shared definitions for every kernel. NVRTC compiles these files concatenated (common first),
// with no system headers: f16 conversions and tensor-core instructions are written as inline PTX.

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef signed char i8;
typedef unsigned long long u64;

// Weight encodings on the device (see src/repack.rs; Rust's `GpuDType` must match).
#define DT_F32 0
#define DT_F16 1
#define DT_Q8_0 2  // q: 32 x i8 per block, m: one f16 scale per block
#define DT_Q4K 3   // q: 128 B of nibbles per block, m: 16 B (d, dmin, 12 B of packed 6-bit scales)
#define DT_Q6K 4   // q: 192 B per block (ql 128 then qh 64), m: 20 B (d f16, 2 B pad, 16 x i8 scales)

#define ACT_NONE 0
#define ACT_TANH 1
#define ACT_SIGMOID 2
#define ACT_RELUSQ 3
#define ACT_DECAY 4

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ u32 pack_h2(float lo, float hi) {
    return (u32)f2h(lo) | ((u32)f2h(hi) << 16);
}

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float apply_act(int act, float x) {
    switch (act) {
        case ACT_TANH: return tanhf(x);
        case ACT_SIGMOID: return sigmoidf_(x);
        case ACT_RELUSQ: { float r = fmaxf(x, 0.0f); return r * r; }
        case ACT_DECAY: return expf(-0.6065306597126334f * sigmoidf_(x));
        default: return x;
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). `red` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    return warp_sum(t);
}

// Q4_K's packed 6-bit sub-block scale and min (ggml's get_scale_min_k4).
__device__ __forceinline__ void q4k_scale_min(int j, const u8* s, int& sc, int& mn) {
    if (j < 4) {
        sc = s[j] & 63;
        mn = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// One element of a weight matrix [rows, cols] (slow path: embeddings, odd shapes).
__device__ float dequant_one(int dtype, const u8* q, const u8* m, long long row, int cols, int k) {
    switch (dtype) {
        case DT_F32: return ((const float*)q)[row * cols + k];
        case DT_F16: return h2f(((const u16*)q)[row * cols + k]);
        case DT_Q8_0: {
            long long nb = cols / 32;
            float d = h2f(((const u16*)m)[row * nb + k / 32]);
            return d * (float)((const i8*)q)[row * cols + k];
        }
        case DT_Q4K: {
            long long nb = cols / 256;
            long long blk = row * nb + k / 256;
            int j = k % 256, c = j / 64, l = j % 32, hi = (j % 64) / 32;
            const u8* mb = m + blk * 16;
            float d = h2f(*(const u16*)mb), dmin = h2f(*(const u16*)(mb + 2));
            int sc, mn;
            q4k_scale_min(2 * c + hi, mb + 4, sc, mn);
            u8 byte = q[blk * 128 + 32 * c + l];
            int v = hi ? (byte >> 4) : (byte & 15);
            return (d * (float)sc) * (float)v - dmin * (float)mn;
        }
        case DT_Q6K: {
            long long nb = cols / 256;
            long long blk = row * nb + k / 256;
            int j = k % 256, n = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
            const u8* qb = q + blk * 192;
            const u8* L = qb + 64 * n;
            const u8* H = qb + 128 + 32 * n;
            const u8* mb = m + blk * 20;
            float d = h2f(*(const u16*)mb);
            const i8* S = (const i8*)(mb + 4) + 8 * n;
            int lo = (quarter & 1) ? L[l + 32] : L[l];
            lo = (quarter >= 2) ? (lo >> 4) : (lo & 15);
            int h = (H[l] >> (2 * quarter)) & 3;
            int v = (lo | (h << 4)) - 32;
            return d * (float)S[l / 16 + 2 * quarter] * (float)v;
        }
        default: return 0.0f;
    }
}

// Streaming loads of weights: read once per step, so they bypass L1 (no_allocate) and leave it to
// the activations that every warp re-reads.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 ld_stream8(const void* p) {
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
}

// Programmatic dependent launch (Hopper): the host launches every kernel with programmatic stream
// serialization, so a kernel may start while its predecessor drains. Each kernel lets its
// successor launch early (pdl_trigger) and waits for its predecessor's results (pdl_wait) before
// touching activations or state; weight loads may come before the wait. Without the launch
// attribute, or before sm_90, both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
