// Row-wise ops: embedding, layer norm, token shift, last rows, argmax.

// Layer norm of `n` values at `x` into `out`. Values stay in registers (LN_MAXV per thread, all
// loads issued at once: one memory latency per row instead of one per loop trip); the variance
// is taken of the deviations, as the f64 reference does. `out` may alias `x`.
#define LN_MAXV 8
__device__ __forceinline__ void ln_load(const float* x, int n, float (&v)[LN_MAXV], float& mean, float& inv,
                                        float eps, float* red) {
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < LN_MAXV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        v[j] = i < n ? x[i] : 0.0f;
        s += v[j];
    }
    mean = block_sum(s, red) / (float)n;
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < LN_MAXV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        float d = v[j] - mean;
        q += i < n ? d * d : 0.0f;
    }
    inv = rsqrtf(block_sum(q, red) / (float)n + eps);
}

__device__ __forceinline__ void ln_apply(float (&v)[LN_MAXV], int n, float mean, float inv, const float* w, const float* b) {
#pragma unroll
    for (int j = 0; j < LN_MAXV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < n) v[j] = (v[j] - mean) * inv * w[i] + b[i];
    }
}

__device__ void ln_row(const float* x, float* out, const float* w, const float* b, int n, float eps, float* red) {
    float v[LN_MAXV], mean, inv;
    ln_load(x, n, v, mean, inv, eps, red);
    ln_apply(v, n, mean, inv, w, b);
#pragma unroll
    for (int j = 0; j < LN_MAXV; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < n) out[i] = v[j];
    }
}

// out[r] = table[tokens[r]] (dequantized); with ln_w != 0, then layer-normed in place.
extern "C" __global__ void __launch_bounds__(1024) embed_kernel(const u32* tokens, int dtype, const u8* q, const u8* m, int cols,
                                        float* out, const float* ln_w, const float* ln_b, float eps) {
    pdl_trigger();
    pdl_wait();
    __shared__ float red[32];
    int r = blockIdx.x;
    long long tok = tokens[r];
    float* o = out + (long long)r * cols;
    for (int k = threadIdx.x; k < cols; k += blockDim.x) o[k] = dequant_one(dtype, q, m, tok, cols, k);
    if (ln_w) ln_row(o, o, ln_w, ln_b, cols, eps, red);
}

// out[r] = LN(x[r * in_mul + in_add]); copy (if set) receives the raw source row.
extern "C" __global__ void __launch_bounds__(1024) layernorm_kernel(const float* x, float* out, const float* w, const float* b, int n,
                                            float eps, int in_mul, int in_add, float* copy) {
    pdl_trigger();
    pdl_wait();
    __shared__ float red[32];
    int r = blockIdx.x;
    const float* xr = x + (long long)(r * in_mul + in_add) * n;
    if (copy) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) copy[(long long)r * n + i] = xr[i];
    }
    ln_row(xr, out + (long long)r * n, w, b, n, eps, red);
}

struct ShiftArgs {
    const float* mix[6];
    float* out[6];
    int n_mix;
};

// Token shift (optionally fused with the layer norm that produces its input):
//   with ln_w: xn[r] = LN(x[r]) (x is then the norm's input), else xn is the input itself;
//   prev = LN(x[r-1]) / xn[r-1] within the sequence, or the slot's register for the first token;
//   out_m[r] = xn[r] + (prev - xn[r]) * mix_m.
// With n_tok == 1 the register is updated here (each thread reads, then writes, its own entries);
// otherwise shift_store_kernel does it after this kernel. V values per thread (n <= V * blockDim);
// every global load is issued up front, so a row costs about one memory latency.
template <int V>
__device__ __forceinline__ void ln_shift(const float* x, float* xn, const float* ln_w, const float* ln_b, float eps,
                                         int n, int n_tok, const int* slots, float* state, long long state_len,
                                         long long reg_off, const ShiftArgs& a) {
    __shared__ float red[32];
    int r = blockIdx.x, t = r % n_tok, s = r / n_tok;
    float cur[V], prev[V], wv[V], bv[V], mx[6][V];
#pragma unroll
    for (int j = 0; j < V; j++) {
        int i = threadIdx.x + j * blockDim.x;
        bool in = i < n;
        wv[j] = in && ln_w ? ln_w[i] : 0.0f;
        bv[j] = in && ln_w ? ln_b[i] : 0.0f;
#pragma unroll
        for (int m = 0; m < 6; m++) mx[m][j] = in && m < a.n_mix ? a.mix[m][i] : 0.0f;
    }
    pdl_wait();
    float* reg = state + (long long)slots[s] * state_len + reg_off;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int i = threadIdx.x + j * blockDim.x;
        bool in = i < n;
        cur[j] = in ? x[(long long)r * n + i] : 0.0f;
        prev[j] = in ? (t > 0 ? x[(long long)(r - 1) * n + i] : reg[i]) : 0.0f;
    }
    if (ln_w) {
        float sc = 0.f, sp = 0.f;
#pragma unroll
        for (int j = 0; j < V; j++) { sc += cur[j]; sp += prev[j]; }
        float mc = block_sum(sc, red) / (float)n;
        float mp = t > 0 ? block_sum(sp, red) / (float)n : 0.0f;
        float qc = 0.f, qp = 0.f;
#pragma unroll
        for (int j = 0; j < V; j++) {
            bool in = threadIdx.x + j * blockDim.x < n;
            qc += in ? (cur[j] - mc) * (cur[j] - mc) : 0.0f;
            qp += in ? (prev[j] - mp) * (prev[j] - mp) : 0.0f;
        }
        float ic = rsqrtf(block_sum(qc, red) / (float)n + eps);
        float ip = t > 0 ? rsqrtf(block_sum(qp, red) / (float)n + eps) : 0.0f;
#pragma unroll
        for (int j = 0; j < V; j++) {
            cur[j] = (cur[j] - mc) * ic * wv[j] + bv[j];
            if (t > 0) prev[j] = (prev[j] - mp) * ip * wv[j] + bv[j];
        }
    }
#pragma unroll
    for (int j = 0; j < V; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < n) {
            float c = cur[j], d = prev[j] - c;
            if (ln_w) xn[(long long)r * n + i] = c;
#pragma unroll
            for (int m = 0; m < 6; m++)
                if (m < a.n_mix) a.out[m][(long long)r * n + i] = c + d * mx[m][j];
            if (n_tok == 1) reg[i] = c;
        }
    }
}

#define LN_SHIFT_ENTRY(VV)                                                                                        \
    extern "C" __global__ void __launch_bounds__(1024) ln_shift##VV##_kernel(                                     \
        const float* x, float* xn, const float* ln_w, const float* ln_b, float eps, int n, int n_tok,              \
        const int* slots, float* state, long long state_len, long long reg_off, ShiftArgs a) {                     \
        pdl_trigger();                                                                                            \
        ln_shift<VV>(x, xn, ln_w, ln_b, eps, n, n_tok, slots, state, state_len, reg_off, a);                       \
    }
LN_SHIFT_ENTRY(2)
LN_SHIFT_ENTRY(4)
LN_SHIFT_ENTRY(8)

// The same for widths that are a multiple of 4, with float4 loads and stores: a quarter of the
// instructions. At batch 1 this kernel is a single block, bound by its own instruction issue
// (ncu: 8 us for 4096 values with scalar accesses), so the instruction count is its time.
__device__ __forceinline__ float4 f4_ld(const float* p, long long i) { return *(const float4*)(p + i); }
__device__ __forceinline__ float f4_sum(float4 v) { return (v.x + v.y) + (v.z + v.w); }
__device__ __forceinline__ float f4_dev2(float4 v, float m) {
    float a = v.x - m, b = v.y - m, c = v.z - m, d = v.w - m;
    return (a * a + b * b) + (c * c + d * d);
}
__device__ __forceinline__ float4 f4_norm(float4 v, float m, float inv, float4 w, float4 b) {
    return make_float4((v.x - m) * inv * w.x + b.x, (v.y - m) * inv * w.y + b.y, (v.z - m) * inv * w.z + b.z,
                       (v.w - m) * inv * w.w + b.w);
}

template <int V>
__device__ __forceinline__ void ln_shift_vec(const float* x, float* xn, const float* ln_w, const float* ln_b, float eps,
                                             int n, int n_tok, const int* slots, float* state, long long state_len,
                                             long long reg_off, const ShiftArgs& a) {
    __shared__ float red[32];
    int r = blockIdx.x, t = r % n_tok, s = r / n_tok;
    int n4 = n / 4;
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    float4 cur[V], prev[V], wv[V], bv[V], mx[6][V];
#pragma unroll
    for (int j = 0; j < V; j++) {
        int i = threadIdx.x + j * blockDim.x;
        bool in = i < n4;
        wv[j] = in && ln_w ? f4_ld(ln_w, 4 * i) : zero;
        bv[j] = in && ln_w ? f4_ld(ln_b, 4 * i) : zero;
#pragma unroll
        for (int m = 0; m < 6; m++) mx[m][j] = in && m < a.n_mix ? f4_ld(a.mix[m], 4 * i) : zero;
    }
    pdl_wait();
    float* reg = state + (long long)slots[s] * state_len + reg_off;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int i = threadIdx.x + j * blockDim.x;
        bool in = i < n4;
        cur[j] = in ? f4_ld(x, (long long)r * n + 4 * i) : zero;
        prev[j] = in ? (t > 0 ? f4_ld(x, (long long)(r - 1) * n + 4 * i) : f4_ld(reg, 4 * i)) : zero;
    }
    if (ln_w) {
        float sc = 0.f, sp = 0.f;
#pragma unroll
        for (int j = 0; j < V; j++) { sc += f4_sum(cur[j]); sp += f4_sum(prev[j]); }
        float mc = block_sum(sc, red) / (float)n;
        float mp = t > 0 ? block_sum(sp, red) / (float)n : 0.0f;
        float qc = 0.f, qp = 0.f;
#pragma unroll
        for (int j = 0; j < V; j++) {
            bool in = threadIdx.x + j * blockDim.x < n4;
            qc += in ? f4_dev2(cur[j], mc) : 0.0f;
            qp += in ? f4_dev2(prev[j], mp) : 0.0f;
        }
        float ic = rsqrtf(block_sum(qc, red) / (float)n + eps);
        float ip = t > 0 ? rsqrtf(block_sum(qp, red) / (float)n + eps) : 0.0f;
#pragma unroll
        for (int j = 0; j < V; j++) {
            cur[j] = f4_norm(cur[j], mc, ic, wv[j], bv[j]);
            if (t > 0) prev[j] = f4_norm(prev[j], mp, ip, wv[j], bv[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < V; j++) {
        int i = threadIdx.x + j * blockDim.x;
        if (i < n4) {
            float4 c = cur[j], p = prev[j];
            float4 d = make_float4(p.x - c.x, p.y - c.y, p.z - c.z, p.w - c.w);
            long long o = (long long)r * n + 4 * i;
            if (ln_w) *(float4*)(xn + o) = c;
#pragma unroll
            for (int m = 0; m < 6; m++)
                if (m < a.n_mix) {
                    float4 k = mx[m][j];
                    *(float4*)(a.out[m] + o) = make_float4(c.x + d.x * k.x, c.y + d.y * k.y, c.z + d.z * k.z, c.w + d.w * k.w);
                }
            if (n_tok == 1) *(float4*)(reg + 4 * i) = c;
        }
    }
}

// Two float4 per thread: n / 8 threads (512 for 4096 values), n <= 4096.
extern "C" __global__ void __launch_bounds__(512) ln_shift_vec_kernel(
    const float* x, float* xn, const float* ln_w, const float* ln_b, float eps, int n, int n_tok, const int* slots,
    float* state, long long state_len, long long reg_off, ShiftArgs a) {
    pdl_trigger();
    ln_shift_vec<2>(x, xn, ln_w, ln_b, eps, n, n_tok, slots, state, state_len, reg_off, a);
}

// Register <- the last row of xn of each sequence (grid: n_seq blocks).
extern "C" __global__ void shift_store_kernel(const float* xn, int n, int n_tok, const int* slots, float* state,
                                              long long state_len, long long reg_off) {
    pdl_trigger();
    pdl_wait();
    int s = blockIdx.x;
    float* reg = state + (long long)slots[s] * state_len + reg_off;
    const float* src = xn + (long long)(s * n_tok + n_tok - 1) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) reg[i] = src[i];
}

extern "C" __global__ void last_rows_kernel(const float* x, float* out, int n, int n_tok) {
    pdl_trigger();
    pdl_wait();
    int s = blockIdx.x;
    const float* src = x + (long long)(s * n_tok + n_tok - 1) * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[(long long)s * n + i] = src[i];
}

// Index of the largest value of each row; ties go to the lowest index; NaN never wins.
extern "C" __global__ void __launch_bounds__(1024) argmax_kernel(const float* x, int n, u32* out) {
    pdl_trigger();
    pdl_wait();
    __shared__ float bv[32];
    __shared__ int bi[32];
    int r = blockIdx.x;
    const float* xr = x + (long long)r * n;
    float best = -__int_as_float(0x7f800000);
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        if (v > best) { best = v; idx = i; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { bv[warp] = best; bi[warp] = idx; }
    __syncthreads();
    if (warp == 0) {
        int nw = blockDim.x >> 5;
        best = lane < nw ? bv[lane] : -__int_as_float(0x7f800000);
        idx = lane < nw ? bi[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
        }
        if (lane == 0) out[r] = idx == 0x7fffffff ? 0u : (u32)idx;
    }
}

extern "C" __global__ void zero_kernel(float* p, long long n) {
    pdl_trigger();
    pdl_wait();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = 0.0f;
}

// out = act(out) over n values (after a split-K product whose activation could not be fused).
extern "C" __global__ void act_kernel(float* p, long long n, int act) {
    pdl_trigger();
    pdl_wait();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = apply_act(act, p[i]);
}
