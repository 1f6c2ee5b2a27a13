//! The math of each op on plain f32 slices, one row (one token) at a time.
//!
//! Written to be read next to docs/rwkv-math.md and the `Op` docs in `rwkv_core::backend`;
//! nothing here knows about plans, buffers or slots.

/// `Σ a_i · b_i`. Eight partial sums let the compiler vectorise the loop and keep the rounding
/// error of long rows (up to 4·C values) small; the order is fixed, so results are reproducible.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let pairs = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

/// Mean and population variance of `x` (two passes, so a large mean does not cost precision).
fn mean_var(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, var)
}

/// `out = (x − mean) / sqrt(var + eps) · w + b` over one row.
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let (mean, var) = mean_var(x);
    let inv_std = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv_std * w[i] + b[i];
    }
}

/// The per-layer vectors of the RWKV-7 time-mix core, each of length C.
pub struct Wkv7Weights<'a> {
    pub k_k: &'a [f32],
    pub k_a: &'a [f32],
    /// The bonus weights `r_k[h, q]`, flattened head-major.
    pub r_k: &'a [f32],
    pub ln_x_w: &'a [f32],
    pub ln_x_b: &'a [f32],
    pub gn_eps: f32,
}

/// One token of the RWKV-7 time-mix core, all heads (docs/rwkv-math.md, "WKV" and "Output").
///
/// `state` is the layer's `S`, per head `N×N` with `S[p][q]` at `p·N + q` (`p` value channel,
/// `q` key channel), updated in place. `v` is the value after the v_first mix. Writes
/// `out = (GroupNorm(S·r) · ln_x_w + ln_x_b + bonus · v) · g`.
#[allow(clippy::too_many_arguments)]
pub fn wkv7_token(
    state: &mut [f32],
    head_size: usize,
    weights: &Wkv7Weights,
    r: &[f32],
    decay: &[f32],
    k: &[f32],
    v: &[f32],
    a: &[f32],
    g: &[f32],
    out: &mut [f32],
) {
    let n = head_size;
    let mut kk = vec![0f32; n];
    let mut k_mixed = vec![0f32; n];
    let mut y = vec![0f32; n];
    for (h, s) in state.chunks_exact_mut(n * n).enumerate() {
        let base = h * n;
        let head = base..base + n;
        let (r, decay, k, v, a, g) = (
            &r[head.clone()],
            &decay[head.clone()],
            &k[head.clone()],
            &v[head.clone()],
            &a[head.clone()],
            &g[head.clone()],
        );

        // kk = normalize(k · k_k) over the head (L2, norm at least 1e-12).
        for q in 0..n {
            kk[q] = k[q] * weights.k_k[base + q];
        }
        let norm = kk.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        for x in kk.iter_mut() {
            *x /= norm;
        }
        // k = k · (1 + (a − 1) · k_a)
        for q in 0..n {
            k_mixed[q] = k[q] * (1.0 + (a[q] - 1.0) * weights.k_a[base + q]);
        }

        // S = S·diag(decay) + (S·(−kk)) (kk·a)ᵀ + v kᵀ, then y = S·r with the updated S.
        for p in 0..n {
            let row = &mut s[p * n..(p + 1) * n];
            let sa: f32 = row.iter().zip(&kk).map(|(s, kk)| s * -kk).sum();
            for q in 0..n {
                row[q] = row[q] * decay[q] + sa * (kk[q] * a[q]) + v[p] * k_mixed[q];
            }
            y[p] = row.iter().zip(r).map(|(s, r)| s * r).sum();
        }

        // GroupNorm over the head, then the bonus Σ_q r_q k_q r_k[h,q] times the head's v, then g.
        let (mean, var) = mean_var(&y);
        let inv_std = 1.0 / (var + weights.gn_eps).sqrt();
        let bonus: f32 = (0..n)
            .map(|q| r[q] * k_mixed[q] * weights.r_k[base + q])
            .sum();
        for p in 0..n {
            let normed =
                (y[p] - mean) * inv_std * weights.ln_x_w[base + p] + weights.ln_x_b[base + p];
            out[base + p] = (normed + bonus * v[p]) * g[p];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_for_every_tail_length() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5, "len {len}");
        }
    }

    #[test]
    fn layer_norm_output_has_zero_mean_and_unit_variance_before_affine() {
        let x = [3.0f32, -1.0, 7.5, 0.25, 2.0];
        let ones = [1.0f32; 5];
        let zeros = [0.0f32; 5];
        let mut out = [0f32; 5];
        layer_norm(&x, &ones, &zeros, 0.0, &mut out);
        let (mean, var) = mean_var(&out);
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
    }
}
