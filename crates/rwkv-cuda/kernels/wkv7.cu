// RWKV-7 time-mix core (Op::Wkv7). One block per (head, sequence); thread p owns row p of the
// head's state S (N floats in registers). Decode uses wkv7_fused (everything per token in one
// kernel); prefill splits the per-token work that needs no state (normalisations, mixes) into
// parallel kernels around a scan that only updates S and computes S·r.

struct WkvArgs {
    const float* r;
    const float* w;
    float* k;        // prefill: replaced in place by the modified k
    float* v;        // prefill: replaced in place by the mixed v
    const float* a;
    const float* g;
    float* v_first;
    const float* v_mix;  // null on layer 0 (which writes v_first)
    const float* k_k;
    const float* k_a;
    const float* r_k;
    const float* ln_w;
    const float* ln_b;
    float* out;
    float* state;
    const int* slots;
    float* kk;     // prefill scratch: -kk (rows x C)
    float* b;      // prefill scratch: kk * a (rows x C)
    float* bonus;  // prefill scratch: per (row, head) sum r k r_k
    long long state_len;
    long long s_off;  // offset of this layer's S inside a slot's state
    int C;
    int n_tok;
    float gn_eps;
};

template <int N>
__device__ __forceinline__ void load_row(const float* S, float (&st)[N]) {
#pragma unroll
    for (int q = 0; q < N; q += 4) {
        float4 v = *(const float4*)(S + q);
        st[q] = v.x; st[q + 1] = v.y; st[q + 2] = v.z; st[q + 3] = v.w;
    }
}
template <int N>
__device__ __forceinline__ void store_row(float* S, const float (&st)[N]) {
#pragma unroll
    for (int q = 0; q < N; q += 4) *(float4*)(S + q) = make_float4(st[q], st[q + 1], st[q + 2], st[q + 3]);
}

// One token for a quarter of a state row (four consecutive lanes hold a row, Q columns each):
//   S <- S diag(w) + (S.(-kk)) (kk a)^T + v k^T,   returns y = S.r for the whole row.
// `vec` is the lane's quarter of the token's staged r, then w, k, -kk, kk*a, `stride` floats
// apart (16-byte aligned); the quarters meet through two shuffles per dot product.
template <int Q>
__device__ __forceinline__ float wkv_row_step(float (&st)[Q], const float* vec, int stride, float v) {
    float r_[Q], w_[Q], k_[Q], kk_[Q], b_[Q];
#pragma unroll
    for (int q = 0; q < Q; q += 4) {
        float4 x;
        x = *(const float4*)(vec + 3 * stride + q); kk_[q] = x.x; kk_[q + 1] = x.y; kk_[q + 2] = x.z; kk_[q + 3] = x.w;
        x = *(const float4*)(vec + 1 * stride + q); w_[q] = x.x; w_[q + 1] = x.y; w_[q + 2] = x.z; w_[q + 3] = x.w;
        x = *(const float4*)(vec + 4 * stride + q); b_[q] = x.x; b_[q + 1] = x.y; b_[q + 2] = x.z; b_[q + 3] = x.w;
        x = *(const float4*)(vec + 2 * stride + q); k_[q] = x.x; k_[q + 1] = x.y; k_[q + 2] = x.z; k_[q + 3] = x.w;
        x = *(const float4*)(vec + q); r_[q] = x.x; r_[q + 1] = x.y; r_[q + 2] = x.z; r_[q + 3] = x.w;
    }
    float sa = 0.0f;
#pragma unroll
    for (int q = 0; q < Q; q++) sa += st[q] * kk_[q];
    sa += __shfl_xor_sync(0xffffffffu, sa, 1);
    sa += __shfl_xor_sync(0xffffffffu, sa, 2);
    float y = 0.0f;
#pragma unroll
    for (int q = 0; q < Q; q++) {
        st[q] = st[q] * w_[q] + sa * b_[q] + v * k_[q];
        y += st[q] * r_[q];
    }
    y += __shfl_xor_sync(0xffffffffu, y, 1);
    y += __shfl_xor_sync(0xffffffffu, y, 2);
    return y;
}

// Decode (one token per sequence). Block of 4N threads: thread t < N computes the per-channel
// quantities of channel t (k normalisation, modified k, kk*a, the v mix) into shared memory;
// four consecutive lanes own row p = t/4 of S, N/4 columns each, so the two dot products per
// row are chains of N/4 (two shuffles join the quarters) instead of N; the row's output is then
// group-normed over the head's rows. (One thread per row, 64 columns in a chain: 5.9 us per
// layer on 1.5B.) The staged vectors use the scan's bank-padded quarter layout.
template <int N>
__device__ void wkv7_fused(const WkvArgs& A) {
    pdl_trigger();
    pdl_wait();
    constexpr int Q = N / 4;
    constexpr int QP = Q + 4;
    __shared__ __align__(16) float sh[5][4 * QP];  // r, w, k, -kk, kk*a
    __shared__ float sv[N];
    __shared__ float red[32];
    int h = blockIdx.x, s = blockIdx.y, t = threadIdx.x;
    int p = t >> 2, part = t & 3;
    bool col = t < N;
    int c = h * N + (col ? t : 0);
    int crow = h * N + p;
    float* S = A.state + (long long)A.slots[s] * A.state_len + A.s_off + (long long)h * N * N + (long long)p * N + part * Q;
    float st[Q];
    load_row<Q>(S, st);
    float kkw = col ? A.k_k[c] : 0.0f, ka = col ? A.k_a[c] : 0.0f, rk = col ? A.r_k[c] : 0.0f;
    float lw = A.ln_w[crow], lb = A.ln_b[crow];
    int d = (t / Q) * QP + t % Q;  // column t's slot in the padded layout
    for (int tok = 0; tok < A.n_tok; tok++) {
        long long base = ((long long)s * A.n_tok + tok) * A.C;
        float r = 0.0f, w = 0.0f, k = 0.0f, v = 0.0f, a = 0.0f;
        if (col) {
            long long idx = base + c;
            r = A.r[idx];
            w = A.w[idx];
            k = A.k[idx];
            v = A.v[idx];
            a = A.a[idx];
            if (A.v_mix) v = v + (A.v_first[idx] - v) * A.v_mix[idx];
            else A.v_first[idx] = v;
        }
        float kk = k * kkw;
        float nrm = sqrtf(block_sum(kk * kk, red));
        kk = kk / fmaxf(nrm, 1e-12f);
        k = k * (1.0f + (a - 1.0f) * ka);
        if (col) {
            sh[0][d] = r;
            sh[1][d] = w;
            sh[2][d] = k;
            sh[3][d] = -kk;
            sh[4][d] = kk * a;
            sv[t] = v;
        }
        float bonus = block_sum(r * k * rk, red);  // its barriers publish the stores above
        float vp = sv[p];
        float y = wkv_row_step<Q>(st, &sh[0][part * QP], 4 * QP, vp);
        // GroupNorm over the head's rows: one lane per row contributes.
        float mean = block_sum(part == 0 ? y : 0.0f, red) / (float)N;
        float dv = y - mean;
        float var = block_sum(part == 0 ? dv * dv : 0.0f, red) / (float)N;
        if (part == 0) A.out[base + crow] = ((dv * rsqrtf(var + A.gn_eps)) * lw + lb + bonus * vp) * A.g[base + crow];
        __syncthreads();
    }
    store_row<Q>(S, st);
}

// Prefill, before the scan: per (head, row): v mix / v_first, -kk, kk*a, modified k, bonus.
template <int N>
__device__ void wkv7_pre(const WkvArgs& A) {
    pdl_trigger();
    pdl_wait();
    __shared__ float red[32];
    int h = blockIdx.x, row = blockIdx.y, p = threadIdx.x;
    bool on = p < N;
    int c = h * N + (on ? p : 0);
    long long idx = (long long)row * A.C + c;
    float r = A.r[idx], k = A.k[idx], v = A.v[idx], a = A.a[idx];
    if (A.v_mix) {
        v = v + (A.v_first[idx] - v) * A.v_mix[idx];
    }
    float kk = k * A.k_k[c];
    float nrm = sqrtf(block_sum(on ? kk * kk : 0.0f, red));
    kk = kk / fmaxf(nrm, 1e-12f);
    k = k * (1.0f + (a - 1.0f) * A.k_a[c]);
    float bonus = block_sum(on ? r * k * A.r_k[c] : 0.0f, red);
    if (on) {
        if (A.v_mix) A.v[idx] = v;
        else A.v_first[idx] = v;
        A.k[idx] = k;
        A.kk[idx] = -kk;
        A.b[idx] = kk * a;
        if (p == 0) A.bonus[(long long)row * (A.C / N) + h] = bonus;
    }
}

// Prefill scan: S update and raw y = S·r for every token, T tokens staged in shared memory at a
// time. The rows of S are independent, so a head's rows are split over N/16 blocks (grid z) of
// 64 threads: four consecutive lanes share row p, N/4 columns each, and combine their partial
// dot products with two shuffles. Per token a lane reads 5 x N/4 staged values: float4 reads
// from a layout padded by 4 floats per quarter, so that the four quarters a warp reads at once
// sit in distinct banks (scalar, unpadded reads made the scan shared-memory bound: 0.4 ms per
// layer for 512 tokens on 1.5B, 35 % of prefill).
#define WKV_SCAN_ROWS 16
// Asynchronous 16-byte copy global -> shared (sm_80+), and the wait for all of a thread's copies.
__device__ __forceinline__ void cp_async16(float* smem, const float* gmem) {
    unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

template <int N>
__device__ void wkv7_scan(const WkvArgs& A) {
    pdl_trigger();
    pdl_wait();
    const int T = 16;
    constexpr int Q = N / 4;
    constexpr int QP = Q + 4;      // padded quarter
    constexpr int TOK = 4 * QP;    // floats per staged token vector
    __shared__ __align__(16) float sh[5][T][TOK];
    __shared__ __align__(16) float shv[T][WKV_SCAN_ROWS];
    int h = blockIdx.x, s = blockIdx.y, t = threadIdx.x, part = t & 3;
    int p = blockIdx.z * WKV_SCAN_ROWS + (t >> 2);
    float* S = A.state + (long long)A.slots[s] * A.state_len + A.s_off + (long long)h * N * N + (long long)p * N + part * Q;
    float st[Q];
    load_row<Q>(S, st);
    for (int t0 = 0; t0 < A.n_tok; t0 += T) {
        int nt = min(T, A.n_tok - t0);
        __syncthreads();
        // Every copy of the chunk in flight at once (cp.async, 16 bytes each): one L2 round trip
        // per T tokens. Loads in a loop with stores between them cost one round trip per trip
        // (measured: 0.4 ms per layer for 512 tokens, whatever the arithmetic).
        constexpr int CH = N / 4;  // 16-byte chunks per token vector
        for (int i = t; i < 5 * nt * CH; i += blockDim.x) {
            int arr = i / (nt * CH), rem = i % (nt * CH), tt = rem / CH, c4 = rem % CH;
            int q = 4 * c4;
            long long g = ((long long)s * A.n_tok + t0 + tt) * A.C + h * N + q;
            const float* src = arr == 0 ? A.r : arr == 1 ? A.w : arr == 2 ? A.k : arr == 3 ? A.kk : A.b;
            cp_async16(&sh[arr][tt][(q / Q) * QP + q % Q], src + g);
        }
        for (int i = t; i < nt * (WKV_SCAN_ROWS / 4); i += blockDim.x) {
            int tt = i / (WKV_SCAN_ROWS / 4), c4 = i % (WKV_SCAN_ROWS / 4);
            long long g = ((long long)s * A.n_tok + t0 + tt) * A.C + h * N + blockIdx.z * WKV_SCAN_ROWS + 4 * c4;
            cp_async16(&shv[tt][4 * c4], A.v + g);
        }
        cp_async_wait_all();
        __syncthreads();
        for (int tt = 0; tt < nt; tt++) {
            long long idx = ((long long)s * A.n_tok + t0 + tt) * A.C + h * N + p;
            float v = shv[tt][t >> 2];
            float y = wkv_row_step<Q>(st, &sh[0][tt][part * QP], T * TOK, v);
            if (part == 0) A.out[idx] = y;
        }
    }
    store_row<Q>(S, st);
}

// Prefill, after the scan: GroupNorm of raw y, bonus * v, times g (in place on out).
template <int N>
__device__ void wkv7_post(const WkvArgs& A) {
    pdl_trigger();
    pdl_wait();
    __shared__ float red[32];
    int h = blockIdx.x, row = blockIdx.y, p = threadIdx.x;
    bool on = p < N;
    int c = h * N + (on ? p : 0);
    long long idx = (long long)row * A.C + c;
    float y = A.out[idx];
    float mean = block_sum(on ? y : 0.0f, red) / (float)N;
    float dv = y - mean;
    float var = block_sum(on ? dv * dv : 0.0f, red) / (float)N;
    if (on) {
        float bonus = A.bonus[(long long)row * (A.C / N) + h];
        A.out[idx] = ((dv * rsqrtf(var + A.gn_eps)) * A.ln_w[c] + A.ln_b[c] + bonus * A.v[idx]) * A.g[idx];
    }
}

#define WKV_SIZES(X) X(16) X(32) X(64) X(128)
#define WKV_ENTRY(NN)                                                                          \
    extern "C" __global__ void wkv7_fused_##NN(WkvArgs a) { wkv7_fused<NN>(a); }               \
    extern "C" __global__ void wkv7_pre_##NN(WkvArgs a) { wkv7_pre<NN>(a); }                   \
    extern "C" __global__ void wkv7_scan_##NN(WkvArgs a) { wkv7_scan<NN>(a); }                 \
    extern "C" __global__ void wkv7_post_##NN(WkvArgs a) { wkv7_post<NN>(a); }
WKV_SIZES(WKV_ENTRY)
