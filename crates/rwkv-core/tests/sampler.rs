//! The sampler's settings each change the distribution the way they say. Written against the
//! mutants a mutation run of src/sampler.rs leaves alive with its unit tests alone (docs/
//! TESTING.md): temperature 1 hides `/ temperature` vs `* temperature`, a top-k that never
//! binds hides its comparison, a top-p that keeps one token hides the renormalization.

use rwkv_core::sampler::{argmax, Sampler, SamplerParams};

/// Frequency of each token over `n` draws.
fn frequencies(params: SamplerParams, logits: &[f32], n: usize) -> Vec<f64> {
    let mut s = Sampler::new(params);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[s.sample(logits) as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplerParams {
    SamplerParams {
        temperature,
        top_p,
        top_k,
        seed,
        ..Default::default()
    }
}

/// Softmax of `logits / temperature`, in f64.
fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| (l as f64 / temperature).exp())
        .collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|x| x / total).collect()
}

// 20000 draws: the standard error of a frequency is at most 0.0035, so 0.02 is > 5 sigma.
const DRAWS: usize = 20000;
const CLOSE: f64 = 0.02;

#[test]
fn temperature_divides_the_logits() {
    let logits = [1.0, 0.0];
    for temperature in [0.5f32, 2.0] {
        let want = softmax(&logits, temperature as f64);
        let got = frequencies(params(temperature, 1.0, 0, 11), &logits, DRAWS);
        assert!(
            (got[0] - want[0]).abs() < CLOSE,
            "temperature {temperature}: token 0 drawn {:.3}, softmax says {:.3}",
            got[0],
            want[0]
        );
    }
}

#[test]
fn top_k_keeps_the_k_largest_and_their_proportions() {
    let logits = [1.7, 2.0, 1.8, 1.9];
    let got = frequencies(params(1.0, 1.0, 2, 12), &logits, DRAWS);
    assert_eq!((got[0], got[2]), (0.0, 0.0), "top-k 2 drew a third token");
    let want = softmax(&[2.0, 1.9], 1.0);
    assert!((got[1] - want[0]).abs() < CLOSE, "{got:?} vs {want:?}");
    assert!((got[3] - want[1]).abs() < CLOSE, "{got:?} vs {want:?}");
}

#[test]
fn top_p_cuts_the_tail_and_renormalizes_what_it_keeps() {
    // Probabilities 0.665, 0.245, 0.090: top-p 0.8 keeps two, renormalized to 0.731 / 0.269.
    let logits = [2.0, 1.0, 0.0];
    let got = frequencies(params(1.0, 0.8, 0, 13), &logits, DRAWS);
    assert_eq!(got[2], 0.0, "top-p 0.8 drew the tail token");
    let want = softmax(&[2.0, 1.0], 1.0);
    assert!((got[0] - want[0]).abs() < CLOSE, "{got:?} vs {want:?}");
    // top_p 1 means no cut: the tail token appears at its own probability.
    let got = frequencies(params(1.0, 1.0, 0, 14), &logits, DRAWS);
    let want = softmax(&logits, 1.0);
    assert!(
        (got[2] - want[2]).abs() < CLOSE,
        "top_p 1: {got:?} vs {want:?}"
    );
    // top_p 0 keeps only the most likely token (OpenAI's meaning, which the server serves).
    let got = frequencies(params(1.0, 0.0, 0, 14), &logits, DRAWS);
    assert_eq!(got, vec![1.0, 0.0, 0.0], "top_p 0: {got:?}");
}

#[test]
fn different_seeds_give_different_draws() {
    let logits: Vec<f32> = (0..32).map(|i| (i % 7) as f32 * 0.2).collect();
    let draws = |seed| {
        let mut s = Sampler::new(params(1.0, 1.0, 0, seed));
        (0..64).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
    };
    let seeds = [0u64, 2, 3, 7, 1 << 40];
    for (i, &a) in seeds.iter().enumerate() {
        for &b in &seeds[i + 1..] {
            assert_ne!(draws(a), draws(b), "seeds {a} and {b} drew the same tokens");
        }
    }
}

#[test]
fn settings_read_back_and_all_nan_rows_give_zero() {
    let p = params(0.7, 0.6, 5, 99);
    let mut s = Sampler::new(p);
    let q = s.params();
    assert_eq!((q.temperature, q.top_p, q.top_k, q.seed), (0.7, 0.6, 5, 99));
    s.params_mut().top_k = 3;
    assert_eq!(s.params().top_k, 3);
    // Sampling (not greedy) of a row with no number in it.
    let mut s = Sampler::new(params(1.0, 0.9, 0, 1));
    assert_eq!(s.sample(&[f32::NAN, f32::NAN, f32::NAN]), 0);
    assert_eq!(argmax(&[]), 0);
    assert_eq!(argmax(&[-1.0, f32::NAN, -0.5]), 2);
}

/// The random stream is splitmix64, pinned to its published outputs for state 0 (the same
/// seed must give the same text on every build): seed 0x9E37_79B9_7F4A_7C15 starts the
/// sampler's state at 0, so its draws are these outputs' top 53 bits over 2^53.
#[test]
fn the_random_stream_is_splitmix64() {
    const SPLITMIX64_FROM_0: [u64; 4] = [
        0xe220_a839_7b1d_cdaf,
        0x6e78_9e6a_a1b9_65f4,
        0x06c4_5d18_8009_454f,
        0xf88b_b8a8_724c_81ec,
    ];
    // 16 tokens in falling order (no ties for the sort), close to uniform.
    let logits: Vec<f32> = (0..16).map(|i| -0.1 * i as f32).collect();
    let probs = softmax(&logits, 1.0);
    let mut s = Sampler::new(params(1.0, 1.0, 0, 0x9E37_79B9_7F4A_7C15));
    for z in SPLITMIX64_FROM_0 {
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        let want = probs
            .iter()
            .position(|p| {
                acc += p;
                u < acc
            })
            .unwrap_or(15) as u32;
        assert_eq!(s.sample(&logits), want, "draw for u = {u}");
    }
}

/// Logits far from zero: the softmax subtracts the largest first, so nothing overflows.
#[test]
fn large_logits_sample_like_small_ones() {
    let logits = [400.0, 399.0];
    let want = softmax(&[1.0, 0.0], 0.5);
    let got = frequencies(params(0.5, 1.0, 0, 15), &logits, DRAWS);
    assert!((got[0] - want[0]).abs() < CLOSE, "{got:?} vs {want:?}");
}
