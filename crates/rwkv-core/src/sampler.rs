//! Sampling: logit bias, RWKV-style presence/frequency penalties with decay, temperature, top-k,
//! top-p, with a seeded generator (same seed, same logits, same text); and [`StopMatcher`], which
//! holds back streamed bytes that could still turn into a stop string.

use std::collections::HashMap;
use std::fmt;

/// Sampling settings. `temperature == 0` means greedy (argmax of the penalised, biased logits).
///
/// Penalties follow ChatRWKV / Ai00: every generated token's occurrence count is kept, all counts
/// are multiplied by `penalty_decay` after each token, and before each pick a token's logit is
/// lowered by `presence_penalty + count * frequency_penalty` when its count is non-zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    pub temperature: f32,
    /// Nucleus: keep the most likely tokens whose probabilities sum to at least this; 1 keeps all,
    /// 0 keeps only the most likely one.
    pub top_p: f32,
    /// 0 = no limit.
    pub top_k: usize,
    pub seed: u64,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Factor applied to every occurrence count after each token; 1 = counts never fade.
    pub penalty_decay: f32,
}

/// ChatRWKV's and Ai00's default occurrence decay.
pub const DEFAULT_PENALTY_DECAY: f32 = 0.996;

/// A bias table larger than this is refused: OpenAI allows 300 entries; 1024 leaves room while
/// keeping a hostile request from making every step walk a huge table.
pub const MAX_LOGIT_BIAS_ENTRIES: usize = 1024;

/// At most this many stop strings, as in OpenAI's API.
pub const MAX_STOP_STRINGS: usize = 4;

/// A stop string longer than this is refused: the matcher holds back up to this many bytes of
/// streamed text, and nobody stops on a paragraph.
pub const MAX_STOP_BYTES: usize = 256;

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 1.0,
            top_p: 0.85,
            top_k: 0,
            seed: 42,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_decay: DEFAULT_PENALTY_DECAY,
        }
    }
}

/// A sampling parameter outside its allowed range. `param` is the request field's name (OpenAI
/// spelling), so a server can report it as the error's `param`.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidParam {
    pub param: &'static str,
    pub message: String,
}

impl fmt::Display for InvalidParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

impl std::error::Error for InvalidParam {}

impl From<InvalidParam> for crate::Error {
    fn from(e: InvalidParam) -> Self {
        crate::Error::invalid(e.to_string())
    }
}

fn check_range(param: &'static str, v: f32, lo: f32, hi: f32) -> Result<(), InvalidParam> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(InvalidParam {
            param,
            message: format!("{v} is outside the allowed range [{lo}, {hi}]"),
        })
    }
}

impl SamplerParams {
    /// Checks every field; the error names the field and its allowed range.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        if !(self.penalty_decay.is_finite()
            && self.penalty_decay > 0.0
            && self.penalty_decay <= 1.0)
        {
            return Err(InvalidParam {
                param: "penalty_decay",
                message: format!("{} is outside the allowed range (0, 1]", self.penalty_decay),
            });
        }
        // top_k: every usize is meaningful (0 = off, larger than the vocabulary = off); seed: any.
        Ok(())
    }
}

/// Checks a logit bias table (token id, added logit) against the vocabulary size: ids in
/// `[0, vocab_size)`, values in [-100, 100] (OpenAI's range), at most
/// [`MAX_LOGIT_BIAS_ENTRIES`] entries.
pub fn validate_logit_bias(bias: &[(u32, f32)], vocab_size: usize) -> Result<(), InvalidParam> {
    if bias.len() > MAX_LOGIT_BIAS_ENTRIES {
        return Err(InvalidParam {
            param: "logit_bias",
            message: format!(
                "{} entries; at most {MAX_LOGIT_BIAS_ENTRIES} are allowed",
                bias.len()
            ),
        });
    }
    for &(id, v) in bias {
        if id as usize >= vocab_size {
            return Err(InvalidParam {
                param: "logit_bias",
                message: format!(
                    "token id {id} is outside the vocabulary [0, {})",
                    vocab_size
                ),
            });
        }
        check_range("logit_bias", v, -100.0, 100.0)?;
    }
    Ok(())
}

/// A sampler with its own random state and occurrence counts.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
    rng: u64,
    logit_bias: Vec<(u32, f32)>,
    /// Decayed occurrence count per generated token id (only ids seen so far).
    occurrences: HashMap<u32, f32>,
    /// Scratch: the adjusted logits, kept to avoid an allocation per token.
    adjusted: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        Sampler {
            params,
            rng: params.seed ^ 0x9E37_79B9_7F4A_7C15,
            logit_bias: Vec::new(),
            occurrences: HashMap::new(),
            adjusted: Vec::new(),
        }
    }

    /// Adds `bias` to the given token ids' logits before every pick (ids out of range of a
    /// logits row are ignored; check them first with [`validate_logit_bias`]).
    pub fn with_logit_bias(mut self, bias: Vec<(u32, f32)>) -> Sampler {
        self.logit_bias = bias;
        self
    }

    pub fn params(&self) -> SamplerParams {
        self.params
    }

    /// Settings can change between tokens (the browser API takes them per call); the random
    /// state and occurrence counts carry on.
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

    /// Counts `token` as generated: decays every count, then adds one to `token`'s. [`sample`]
    /// does this for the token it returns; call it for tokens chosen elsewhere (e.g. forced).
    ///
    /// [`sample`]: Sampler::sample
    pub fn record(&mut self, token: u32) {
        let decay = self.params.penalty_decay;
        if decay != 1.0 {
            self.occurrences.values_mut().for_each(|c| *c *= decay);
        }
        *self.occurrences.entry(token).or_insert(0.0) += 1.0;
    }

    /// Picks a token id from `logits` after bias and penalties (NaN logits are never picked) and
    /// records it for the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let token = self.pick(logits);
        self.record(token);
        token
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        let logits: &[f32] = if self.logit_bias.is_empty()
            && (self.occurrences.is_empty()
                || (p.presence_penalty == 0.0 && p.frequency_penalty == 0.0))
        {
            logits
        } else {
            self.adjusted.clear();
            self.adjusted.extend_from_slice(logits);
            for &(id, b) in &self.logit_bias {
                if let Some(l) = self.adjusted.get_mut(id as usize) {
                    *l += b;
                }
            }
            for (&id, &count) in &self.occurrences {
                if let Some(l) = self.adjusted.get_mut(id as usize) {
                    *l -= p.presence_penalty + count * p.frequency_penalty;
                }
            }
            &self.adjusted
        };
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
        // Total order (larger logit first, then lower id) so ties never depend on the sort.
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && cand.len() > p.top_k {
            cand.select_nth_unstable_by(p.top_k - 1, order);
            cand.truncate(p.top_k);
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        let weight = |l: f32| (((l - max) / p.temperature) as f64).exp();
        let total: f64 = cand.iter().map(|c| weight(c.1)).sum();
        let top_p = if p.top_p.is_nan() {
            1.0
        } else {
            p.top_p as f64
        };
        // Sort only as many of the most likely tokens as the nucleus needs: the head (found by
        // selection) grows until its mass reaches top_p, so a peaked distribution sorts a few
        // dozen tokens instead of the whole vocabulary.
        let mut head = if top_p >= 1.0 {
            cand.len()
        } else {
            64.min(cand.len())
        };
        loop {
            if head < cand.len() {
                cand.select_nth_unstable_by(head - 1, order);
            }
            let mass: f64 = cand[..head].iter().map(|c| weight(c.1)).sum::<f64>() / total;
            if head == cand.len() || mass >= top_p {
                break;
            }
            head = (head * 4).min(cand.len());
        }
        cand.truncate(head);
        cand.sort_unstable_by(order);
        let mut probs: Vec<f64> = cand.iter().map(|c| weight(c.1) / total).collect();
        if top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let kept: f64 = probs.iter().sum();
        let mut u = self.next_f64() * kept;
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

/// Holds back streamed bytes that could still become one of up to [`MAX_STOP_STRINGS`] stop
/// strings, so a stop never leaks partly into streamed text; it also never releases half of a
/// UTF-8 character.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<Vec<u8>>,
    held: Vec<u8>,
    stopped: bool,
}

/// What [`StopMatcher::push`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Bytes safe to show now (whole UTF-8 characters unless the stream itself is not UTF-8).
    pub bytes: Vec<u8>,
    /// A stop string was found: `bytes` ends just before it, and the generation should end.
    pub stopped: bool,
}

impl StopMatcher {
    /// Up to [`MAX_STOP_STRINGS`] non-empty strings of at most [`MAX_STOP_BYTES`] bytes each.
    pub fn new<S: AsRef<str>>(stops: &[S]) -> Result<StopMatcher, InvalidParam> {
        if stops.len() > MAX_STOP_STRINGS {
            return Err(InvalidParam {
                param: "stop",
                message: format!(
                    "{} stop strings; at most {MAX_STOP_STRINGS} are allowed",
                    stops.len()
                ),
            });
        }
        let mut out = Vec::with_capacity(stops.len());
        for s in stops {
            let b = s.as_ref().as_bytes();
            if b.is_empty() || b.len() > MAX_STOP_BYTES {
                return Err(InvalidParam {
                    param: "stop",
                    message: format!(
                        "a stop string must be 1 to {MAX_STOP_BYTES} bytes long, got {}",
                        b.len()
                    ),
                });
            }
            out.push(b.to_vec());
        }
        Ok(StopMatcher {
            stops: out,
            held: Vec::new(),
            stopped: false,
        })
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the next streamed bytes; returns what can be shown now. After a stop, everything
    /// is swallowed.
    pub fn push(&mut self, bytes: &[u8]) -> Released {
        if self.stopped {
            return Released {
                bytes: Vec::new(),
                stopped: true,
            };
        }
        self.held.extend_from_slice(bytes);
        // The earliest complete stop wins; held bytes never contain a complete stop from before,
        // so searching all of them finds the first in the stream.
        let first_stop = self.stops.iter().filter_map(|s| find(&self.held, s)).min();
        if let Some(at) = first_stop {
            self.stopped = true;
            let out = self.held[..at].to_vec();
            self.held.clear();
            return Released {
                bytes: out,
                stopped: true,
            };
        }
        // Keep the longest tail that is a proper prefix of a stop string.
        let mut safe = self.held.len();
        for start in 0..self.held.len() {
            let tail = &self.held[start..];
            if self
                .stops
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
            {
                safe = start;
                break;
            }
        }
        let cut = utf8_complete_prefix(&self.held[..safe]);
        let out: Vec<u8> = self.held.drain(..cut).collect();
        Released {
            bytes: out,
            stopped: false,
        }
    }

    /// The generation ended without a stop: everything still held (a stop-string prefix, or a
    /// character the stream never finished).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest prefix of `b` that does not end inside an unfinished UTF-8 character
/// (bytes that can never be valid UTF-8 are let through; the reader replaces them).
pub fn utf8_complete_prefix(b: &[u8]) -> usize {
    // A character is at most 4 bytes: look at the last 3 for a lead byte whose character is cut.
    let n = b.len();
    for back in 1..=3.min(n) {
        let c = b[n - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte: look further back for its lead
        }
        let need = match c {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1, // ASCII or a byte that can never start a character
        };
        return if need > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random logits from splitmix64 (tests use fresh random inputs, never constants).
    fn random_logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = Sampler::new(SamplerParams {
            seed,
            ..Default::default()
        });
        (0..n)
            .map(|_| (s.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
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

    #[test]
    fn greedy_and_topk1_take_the_maximum() {
        let logits = [0.1, 3.0, -2.0, 3.0, 1.0];
        let mut s = Sampler::new(params(0.0, 0.85, 0, 42));
        assert_eq!(s.sample(&logits), 1);
        let mut s = Sampler::new(params(1.0, 0.85, 1, 42));
        assert_eq!(s.sample(&logits), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 2);
        let r = random_logits(1000, 5, 4.0);
        let mut s = Sampler::new(params(0.0, 1.0, 0, 1));
        assert_eq!(s.sample(&r), argmax(&r));
    }

    #[test]
    fn sampling_follows_the_distribution_and_top_p_cuts_the_tail() {
        // Two tokens with probabilities ~0.73 / ~0.27 at temperature 1.
        let logits = [1.0, 0.0, -30.0];
        let mut s = Sampler::new(params(1.0, 1.0, 0, 7));
        let n = 20000;
        let zeros = (0..n).filter(|_| s.sample(&logits) == 0).count() as f64 / n as f64;
        assert!(
            (zeros - 0.731).abs() < 0.02,
            "frequency of token 0 was {zeros}"
        );
        // top_p 0.5 keeps only the first token.
        let mut s = Sampler::new(params(1.0, 0.5, 0, 7));
        assert!((0..1000).all(|_| s.sample(&logits) == 0));
    }

    /// The partial-selection nucleus picks exactly the set a full sort would: every sampled
    /// token lies in the nucleus computed the slow way, and more than one token is seen.
    #[test]
    fn nucleus_matches_a_full_sort_on_random_logits() {
        for seed in 0..6u64 {
            let logits = random_logits(5000, 100 + seed, 8.0);
            let top_p = 0.3 + 0.1 * seed as f32;
            let t = 0.7;
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let w: Vec<f64> = order
                .iter()
                .map(|&i| (((logits[i] - max) / t) as f64).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut acc = 0.0;
            let mut nucleus = std::collections::HashSet::new();
            for (k, &i) in order.iter().enumerate() {
                acc += w[k] / total;
                nucleus.insert(i as u32);
                if acc >= top_p as f64 {
                    break;
                }
            }
            let mut s = Sampler::new(params(t, top_p, 0, seed));
            let picks: Vec<u32> = (0..300).map(|_| s.sample(&logits)).collect();
            assert!(picks.iter().all(|p| nucleus.contains(p)), "seed {seed}");
            if nucleus.len() > 3 {
                assert!(picks.iter().any(|&p| p != picks[0]), "seed {seed}");
            }
        }
    }

    #[test]
    fn top_k_limits_choices_to_the_k_largest() {
        let logits = random_logits(2000, 9, 2.0);
        let mut order: Vec<u32> = (0..2000).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let top: std::collections::HashSet<u32> = order[..5].iter().copied().collect();
        let mut s = Sampler::new(params(2.0, 1.0, 5, 3));
        let picks: Vec<u32> = (0..500).map(|_| s.sample(&logits)).collect();
        assert!(picks.iter().all(|p| top.contains(p)));
        let distinct: std::collections::HashSet<u32> = picks.iter().copied().collect();
        assert_eq!(distinct.len(), 5, "temperature 2 over 5 close tokens");
    }

    #[test]
    fn nan_logits_and_nan_temperature_are_safe() {
        let logits = [f32::NAN, 0.5, f32::NAN, 0.4];
        let mut s = Sampler::new(params(1.0, 1.0, 0, 1));
        assert!((0..200).all(|_| matches!(s.sample(&logits), 1 | 3)));
        let mut s = Sampler::new(params(f32::NAN, 0.85, 0, 42));
        assert_eq!(s.sample(&logits), 1);
        assert_eq!(s.sample(&[f32::NAN, f32::NAN]), 0);
        s.params_mut().temperature = 0.0;
        assert_eq!(s.sample(&[0.0, 2.0]), 1);
        let mut s = Sampler::new(params(1.0, 0.9, 0, 1));
        assert_eq!(s.sample(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits = random_logits(50, 11, 1.5);
        let p = SamplerParams {
            presence_penalty: 0.3,
            frequency_penalty: 0.2,
            ..params(0.8, 0.9, 20, 3)
        };
        let run = |p: SamplerParams| -> Vec<u32> {
            let mut s = Sampler::new(p).with_logit_bias(vec![(4, 1.0)]);
            (0..100).map(|_| s.sample(&logits)).collect()
        };
        let a = run(p);
        assert_eq!(a, run(p));
        assert!(
            a.iter().any(|&t| t != a[0]),
            "sampling at temperature 0.8 never varied"
        );
        assert_ne!(a, run(SamplerParams { seed: 4, ..p }));
    }

    /// Greedy with penalties: each pick equals the argmax of logits minus
    /// `presence + count * frequency`, with counts decayed as ChatRWKV does, computed here
    /// independently of the sampler.
    #[test]
    fn penalties_decay_as_chatrwkv_does() {
        let logits = random_logits(40, 21, 1.0);
        let (presence, frequency, decay) = (0.4f32, 0.3f32, 0.9f32);
        let mut s = Sampler::new(SamplerParams {
            presence_penalty: presence,
            frequency_penalty: frequency,
            penalty_decay: decay,
            ..params(0.0, 1.0, 0, 1)
        });
        let mut counts = vec![0f32; logits.len()];
        let mut picks = Vec::new();
        for _ in 0..60 {
            let adjusted: Vec<f32> = logits
                .iter()
                .zip(&counts)
                .map(|(&l, &c)| {
                    if c > 0.0 {
                        l - presence - c * frequency
                    } else {
                        l
                    }
                })
                .collect();
            let expected = argmax(&adjusted);
            assert_eq!(s.sample(&logits), expected);
            counts.iter_mut().for_each(|c| *c *= decay);
            counts[expected as usize] += 1.0;
            picks.push(expected);
        }
        let distinct: std::collections::HashSet<u32> = picks.iter().copied().collect();
        assert!(
            distinct.len() > 3,
            "penalties never moved greedy off one token"
        );
        // Without penalties greedy repeats one token forever.
        let mut plain = Sampler::new(params(0.0, 1.0, 0, 1));
        assert!((0..20).all(|_| plain.sample(&logits) == argmax(&logits)));
    }

    #[test]
    fn logit_bias_moves_the_choice() {
        let logits = random_logits(100, 31, 1.0);
        let best = argmax(&logits);
        let target = (best + 17) % 100;
        let mut s = Sampler::new(params(0.0, 1.0, 0, 1)).with_logit_bias(vec![(target, 5.0)]);
        assert_eq!(s.sample(&logits), target);
        let mut s = Sampler::new(params(0.0, 1.0, 0, 1)).with_logit_bias(vec![(best, -100.0)]);
        assert_ne!(s.sample(&logits), best);
    }

    #[test]
    fn validation_names_the_parameter_and_range() {
        assert!(SamplerParams::default().validate().is_ok());
        let cases: [(SamplerParams, &str); 6] = [
            (params(2.5, 1.0, 0, 0), "temperature"),
            (params(-0.1, 1.0, 0, 0), "temperature"),
            (params(1.0, 1.5, 0, 0), "top_p"),
            (
                SamplerParams {
                    presence_penalty: f32::NAN,
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                SamplerParams {
                    frequency_penalty: -3.0,
                    ..Default::default()
                },
                "frequency_penalty",
            ),
            (
                SamplerParams {
                    penalty_decay: 0.0,
                    ..Default::default()
                },
                "penalty_decay",
            ),
        ];
        for (p, name) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.param, name);
            assert!(e.to_string().contains("range"), "{e}");
        }
        assert!(validate_logit_bias(&[(3, 1.0)], 10).is_ok());
        assert_eq!(
            validate_logit_bias(&[(10, 1.0)], 10).unwrap_err().param,
            "logit_bias"
        );
        assert!(validate_logit_bias(&[(1, 101.0)], 10).is_err());
        let big: Vec<(u32, f32)> = (0..=MAX_LOGIT_BIAS_ENTRIES as u32)
            .map(|i| (i, 0.0))
            .collect();
        assert!(validate_logit_bias(&big, 1 << 20).is_err());
    }

    /// Feeds `text` to a matcher in pieces of the given sizes; returns (released, stopped).
    fn stream(stops: &[&str], text: &[u8], pieces: &[usize]) -> (Vec<u8>, bool) {
        let mut m = StopMatcher::new(stops).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < text.len() {
            let n = pieces[i % pieces.len()].min(text.len() - at);
            i += 1;
            let r = m.push(&text[at..at + n]);
            at += n;
            // Released text never ends inside a character.
            assert!(std::str::from_utf8(&r.bytes).is_ok(), "cut a character");
            out.extend_from_slice(&r.bytes);
            if r.stopped {
                return (out, true);
            }
        }
        out.extend(m.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_never_leak_and_text_before_them_is_kept() {
        let text = "héllo wörld\n\nUser: ok 日本".as_bytes();
        for pieces in [&[1usize][..], &[2, 3], &[5], &[100]] {
            let (out, stopped) = stream(&["\n\n", "xyz"], text, pieces);
            assert!(stopped);
            assert_eq!(out, "héllo wörld".as_bytes(), "pieces {pieces:?}");
            // A stop that never comes: everything is released, in order.
            let (out, stopped) = stream(&["zzz"], text, pieces);
            assert!(!stopped);
            assert_eq!(out, text);
            // The earliest of two stops wins even when the later one completes first in a push.
            let (out, _) = stream(&["wörld\n\nUser", "llo"], text, pieces);
            assert_eq!(out, "hé".as_bytes());
        }
        // A partial prefix is held, then released once it can no longer be a stop.
        let mut m = StopMatcher::new(&["\n\nUser"]).unwrap();
        assert_eq!(m.push(b"ab\n").bytes, b"ab");
        assert_eq!(m.push(b"\nUs").bytes, b"");
        assert_eq!(m.push(b"x").bytes, b"\n\nUsx");
        assert!(StopMatcher::new(&["a", "b", "c", "d", "e"]).is_err());
        assert!(StopMatcher::new(&[""]).is_err());
    }

    #[test]
    fn utf8_prefix_keeps_unfinished_characters_back() {
        let s = "a€日😀".as_bytes();
        for cut in 0..=s.len() {
            let p = utf8_complete_prefix(&s[..cut]);
            assert!(std::str::from_utf8(&s[..p]).is_ok());
            assert!(cut - p < 4);
            if std::str::from_utf8(&s[..cut]).is_ok() {
                assert_eq!(p, cut);
            }
        }
        // Invalid bytes pass through rather than being held forever.
        assert_eq!(utf8_complete_prefix(&[0xFF, 0xFE]), 2);
    }
}
