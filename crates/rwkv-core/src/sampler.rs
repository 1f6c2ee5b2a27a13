//! Sampling: temperature, top-k, top-p, with a seeded generator (same seed, same text).

/// Sampling settings. `temperature <= 0` means greedy (argmax).
#[derive(Debug, Clone, Copy)]
pub struct SamplerParams {
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = no limit.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 1.0,
            top_p: 0.85,
            top_k: 0,
            seed: 42,
        }
    }
}

/// A sampler with its own random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: u64,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        Sampler {
            params,
            rng: params.seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn params(&self) -> SamplerParams {
        self.params
    }

    /// Settings can change between tokens (the browser API takes them per call); the random
    /// state carries on.
    pub fn params_mut(&mut self) -> &mut SamplerParams {
        &mut self.params
    }

    /// Uniform in [0, 1) from splitmix64.
    fn next_f64(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a token id from `logits` (NaN logits are never picked).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        if p.temperature.is_nan() || p.temperature <= 0.0 || p.top_k == 1 {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cand.is_empty() {
            return 0;
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 && cand.len() > p.top_k {
            cand.truncate(p.top_k);
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|&(_, l)| (((l - max) / p.temperature) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
        if p.top_p > 0.0 && p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let t: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= t);
        }
        let mut u = self.next_f64();
        for (i, q) in probs.iter().enumerate() {
            if u < *q {
                return cand[i].0;
            }
            u -= q;
        }
        cand[probs.len() - 1].0
    }
}

/// Index of the largest value; ties go to the lowest index; NaN is never the maximum (an empty or
/// all-NaN row gives 0).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in v.iter().enumerate() {
        if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_topk1_take_the_maximum() {
        let logits = [0.1, 3.0, -2.0, 3.0, 1.0];
        let mut s = Sampler::new(SamplerParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 1);
        let mut s = Sampler::new(SamplerParams {
            top_k: 1,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 2);
    }

    #[test]
    fn sampling_follows_the_distribution_and_top_p_cuts_the_tail() {
        // Two tokens with probabilities ~0.73 / ~0.27 at temperature 1.
        let logits = [1.0, 0.0, -30.0];
        let mut s = Sampler::new(SamplerParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 7,
        });
        let n = 20000;
        let zeros = (0..n).filter(|_| s.sample(&logits) == 0).count() as f64 / n as f64;
        assert!(
            (zeros - 0.731).abs() < 0.02,
            "frequency of token 0 was {zeros}"
        );
        // top_p 0.5 keeps only the first token.
        let mut s = Sampler::new(SamplerParams {
            temperature: 1.0,
            top_p: 0.5,
            top_k: 0,
            seed: 7,
        });
        assert!((0..1000).all(|_| s.sample(&logits) == 0));
    }

    #[test]
    fn nan_logits_and_nan_temperature_are_safe() {
        let logits = [f32::NAN, 0.5, f32::NAN, 0.4];
        let mut s = Sampler::new(SamplerParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 1,
        });
        assert!((0..200).all(|_| matches!(s.sample(&logits), 1 | 3)));
        let mut s = Sampler::new(SamplerParams {
            temperature: f32::NAN,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits), 1);
        assert_eq!(s.sample(&[f32::NAN, f32::NAN]), 0);
        s.params_mut().temperature = 0.0;
        assert_eq!(s.sample(&[0.0, 2.0]), 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplerParams {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 20,
            seed: 3,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(p);
            (0..100).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(p);
            (0..100).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&t| t != a[0]),
            "sampling at temperature 0.8 never varied"
        );
    }
}
