//! Token sampling and streaming UTF-8 decoding: plain Rust, tested natively.

/// Temperature + top-p sampling with a seeded splitmix64 generator (same seed, same text).
#[derive(Debug, Clone)]
pub struct Sampler {
    state: u64,
}

impl Sampler {
    pub fn new(seed: u64) -> Sampler {
        Sampler {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a token from `logits`. `temperature <= 0` (or a `top_p` that keeps one token) is
    /// greedy; NaN logits are never picked; an empty or all-NaN row gives 0.
    pub fn sample(&mut self, logits: &[f32], temperature: f32, top_p: f32) -> u32 {
        if temperature.is_nan() || temperature <= 0.0 {
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
        let max = cand[0].1;
        let inv_t = 1.0 / temperature as f64;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|&(_, l)| ((l - max) as f64 * inv_t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        // Keep the smallest head whose mass reaches top_p (at least one token).
        let keep_mass = (top_p.clamp(0.0, 1.0) as f64) * total;
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            mass += p;
            kept += 1;
            if mass >= keep_mass {
                break;
            }
        }
        probs.truncate(kept);
        let mut target = self.next_f64() * mass;
        for (i, p) in probs.iter().enumerate() {
            target -= p;
            if target < 0.0 {
                return cand[i].0;
            }
        }
        cand[kept - 1].0
    }
}

/// Index of the largest logit (ties: lowest index; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_nan() && best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// Turns token bytes into text pieces without splitting a UTF-8 character between two pieces
/// (one character often spans tokens). Invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Valid by construction (from_utf8 said so up to `good`).
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        // Invalid sequence: replace it and go on.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left (an unfinished character) as replacement text.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| (splitmix(&mut s) >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0)
            .collect()
    }

    #[test]
    fn greedy_and_tiny_top_p_pick_the_argmax() {
        let logits = random_logits(11, 300);
        let best = argmax(&logits);
        assert_eq!(
            logits[best as usize],
            logits.iter().cloned().fold(f32::MIN, f32::max)
        );
        let mut s = Sampler::new(3);
        assert_eq!(s.sample(&logits, 0.0, 0.9), best);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, 1.0, 1e-9), best);
        }
    }

    #[test]
    fn top_p_only_picks_from_the_nucleus_and_is_seeded() {
        let logits = random_logits(5, 200);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let max = logits[order[0]];
        let p: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] - max) as f64).exp())
            .collect();
        let total: f64 = p.iter().sum();
        let mut mass = 0.0;
        let mut nucleus = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            mass += p[k];
            nucleus.push(i as u32);
            if mass >= 0.5 * total {
                break;
            }
        }
        let (mut a, mut b) = (Sampler::new(9), Sampler::new(9));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let t = a.sample(&logits, 1.0, 0.5);
            assert!(
                nucleus.contains(&t),
                "token {t} outside the top-p nucleus {nucleus:?}"
            );
            assert_eq!(t, b.sample(&logits, 1.0, 0.5));
            seen.insert(t);
        }
        assert!(seen.len() > 1 || nucleus.len() == 1);
    }

    #[test]
    fn nan_logits_are_never_sampled() {
        let mut logits = random_logits(8, 64);
        for l in logits.iter_mut().step_by(2) {
            *l = f32::NAN;
        }
        let mut s = Sampler::new(1);
        for _ in 0..200 {
            assert_eq!(s.sample(&logits, 1.5, 1.0) % 2, 1);
        }
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
    }

    #[test]
    fn utf8_stream_never_splits_a_character() {
        let text = "héllo wörld ✓ 日本語 🙂 end";
        let bytes = text.as_bytes();
        let mut seed = 77u64;
        for _ in 0..50 {
            let mut stream = Utf8Stream::default();
            let mut out = String::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = 1 + (splitmix(&mut seed) % 4) as usize;
                let end = (at + n).min(bytes.len());
                out.push_str(&stream.push(&bytes[at..end]));
                at = end;
            }
            out.push_str(&stream.finish());
            assert_eq!(out, text);
        }
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb\xe6\x97"), "a\u{FFFD}b");
        assert_eq!(stream.push(b"\xa5"), "日");
    }
}
