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

// Block of max(N, 32) threads; threads p >= N only take part in reductions.
template <int N>
__device__ void wkv7_fused(const WkvArgs& A) {
    pdl_trigger();
    pdl_wait();
    __shared__ float sr[N], sw[N], sk[N], skk[N], sb[N];
    __shared__ float red[32];
    int h = blockIdx.x, s = blockIdx.y, p = threadIdx.x;
    bool on = p < N;
    int c = h * N + (on ? p : 0);
    float* S = A.state + (long long)A.slots[s] * A.state_len + A.s_off + (long long)h * N * N + (long long)(on ? p : 0) * N;
    float st[N];
    if (on) load_row<N>(S, st);
    float kkw = A.k_k[c], ka = A.k_a[c], rk = A.r_k[c], lw = A.ln_w[c], lb = A.ln_b[c];
    for (int t = 0; t < A.n_tok; t++) {
        long long idx = ((long long)s * A.n_tok + t) * A.C + c;
        float r = A.r[idx], w = A.w[idx], k = A.k[idx], v = A.v[idx], a = A.a[idx], g = A.g[idx];
        if (A.v_mix) {
            v = v + (A.v_first[idx] - v) * A.v_mix[idx];
        } else if (on) {
            A.v_first[idx] = v;
        }
        float kk = k * kkw;
        float nrm = sqrtf(block_sum(on ? kk * kk : 0.0f, red));
        kk = kk / fmaxf(nrm, 1e-12f);
        k = k * (1.0f + (a - 1.0f) * ka);
        if (on) { sr[p] = r; sw[p] = w; sk[p] = k; skk[p] = -kk; sb[p] = kk * a; }
        __syncthreads();
        float y = 0.0f;
        if (on) {
            float sa = 0.0f;
#pragma unroll
            for (int q = 0; q < N; q++) sa += st[q] * skk[q];
#pragma unroll
            for (int q = 0; q < N; q++) {
                st[q] = st[q] * sw[q] + sa * sb[q] + v * sk[q];
                y += st[q] * sr[q];
            }
        }
        float mean = block_sum(on ? y : 0.0f, red) / (float)N;
        float dv = y - mean;
        float var = block_sum(on ? dv * dv : 0.0f, red) / (float)N;
        float bonus = block_sum(on ? r * k * rk : 0.0f, red);
        if (on) A.out[idx] = ((dv * rsqrtf(var + A.gn_eps)) * lw + lb + bonus * v) * g;
        __syncthreads();
    }
    if (on) store_row<N>(S, st);
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
// time. Block of 4N threads: four consecutive lanes share row p, N/4 columns each, and combine
// their partial dot products with two shuffles (shorter dependency chains, 4x the warps).
template <int N>
__device__ void wkv7_scan(const WkvArgs& A) {
    pdl_trigger();
    pdl_wait();
    const int T = 16;
    constexpr int Q = N / 4;
    __shared__ __align__(16) float sh[6][T][N];
    int h = blockIdx.x, s = blockIdx.y, t = threadIdx.x, p = t >> 2, part = t & 3;
    float* S = A.state + (long long)A.slots[s] * A.state_len + A.s_off + (long long)h * N * N + (long long)p * N + part * Q;
    float st[Q];
    load_row<Q>(S, st);
    for (int t0 = 0; t0 < A.n_tok; t0 += T) {
        int nt = min(T, A.n_tok - t0);
        __syncthreads();
        for (int i = t; i < nt * N; i += 4 * N) {
            int tt = i / N, q = i % N;
            long long idx = ((long long)s * A.n_tok + t0 + tt) * A.C + h * N + q;
            sh[0][tt][q] = A.r[idx];
            sh[1][tt][q] = A.w[idx];
            sh[2][tt][q] = A.k[idx];
            sh[3][tt][q] = A.kk[idx];
            sh[4][tt][q] = A.b[idx];
            sh[5][tt][q] = A.v[idx];
        }
        __syncthreads();
        for (int tt = 0; tt < nt; tt++) {
            long long idx = ((long long)s * A.n_tok + t0 + tt) * A.C + h * N + p;
            float v = sh[5][tt][p];
            const float* r_ = &sh[0][tt][part * Q];
            const float* w_ = &sh[1][tt][part * Q];
            const float* k_ = &sh[2][tt][part * Q];
            const float* kk_ = &sh[3][tt][part * Q];
            const float* b_ = &sh[4][tt][part * Q];
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
