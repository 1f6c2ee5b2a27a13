//! The library API, the same on every backend: load a model, open sessions (each a state),
//! feed tokens, sample, generate as a stream, save/restore state, run sessions as a batch.

use std::path::Path;

use rwkv_core::backend::{Backend, StepOutput};
use rwkv_core::formats::{self, LoadOptions};
use rwkv_core::runner::{block_on_ready, Chunking, FeedOutput, Runner};
use rwkv_core::tokenizer::Vocab;
use rwkv_core::{DType, Error, Model, ModelDesc, Result};

use crate::router::{self, BackendChoice};
use crate::sampler::{Sampler, SamplerParams};

/// Longest run of tokens one step takes; longer prompts go in several steps. Plans are compiled
/// for power-of-two lengths up to this, so at most log2(MAX_CHUNK)+1 prefill plans exist.
pub const MAX_CHUNK: usize = 512;

/// How to open a model.
#[derive(Clone)]
pub struct EngineOptions {
    pub backend: BackendChoice,
    /// Convert the large matrices at load (`--quant`).
    pub quant: Option<DType>,
    /// Sessions that can be alive at once (state slots on the device).
    pub max_sessions: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            backend: BackendChoice::Auto,
            quant: None,
            max_sessions: 8,
        }
    }
}

/// A sequence being generated: one state slot on the device.
#[derive(Debug)]
pub struct Session {
    slot: usize,
    /// Logits after the last token fed, if any.
    last_logits: Option<Vec<f32>>,
}

impl Session {
    pub fn slot(&self) -> usize {
        self.slot
    }
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.last_logits.as_deref()
    }
}

/// A model on a backend: sessions, sampling and batches over the shared engine core
/// ([`rwkv_core::runner::Runner`], which the browser bindings use too).
pub struct Engine {
    core: Runner<Box<dyn Backend>>,
    backend_why: String,
    desc: ModelDesc,
    vocab: Vocab,
    free_slots: Vec<usize>,
    n_slots: usize,
    /// Seconds spent loading (file read + upload).
    pub load_seconds: f64,
}

impl Engine {
    /// Loads a model file and uploads it to the chosen backend. `progress` gets (done, total) bytes.
    pub fn load(
        path: &Path,
        opts: &EngineOptions,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Engine> {
        let t0 = std::time::Instant::now();
        let model = formats::load(
            path,
            &LoadOptions {
                quant: opts.quant,
                progress,
            },
        )?;
        let mut e = Engine::from_model(&model, opts, progress)?;
        e.load_seconds = t0.elapsed().as_secs_f64();
        Ok(e)
    }

    /// Uploads an in-memory model (e.g. from `rwkv_core::synth`).
    pub fn from_model(
        model: &Model,
        opts: &EngineOptions,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Engine> {
        if opts.backend != BackendChoice::Auto {
            let opened = router::open(opts.backend)?;
            return Engine::with_backend(model, opened.backend, opened.why, opts, progress);
        }
        // Auto: the fastest backend that opens and takes the model; a GPU that lacks the memory
        // or an op gives way to the next one, and the message says why it was skipped.
        let mut skipped = Vec::new();
        for choice in router::AUTO_ORDER {
            let opened = match router::open_candidate(choice) {
                Ok(o) => router::auto_opened(o, &skipped),
                Err(e) => {
                    skipped.push(e.to_string());
                    continue;
                }
            };
            match Engine::with_backend(model, opened.backend, opened.why, opts, progress) {
                Err(e) if choice != BackendChoice::Cpu && router::falls_back_on(&e) => {
                    skipped.push(e.to_string())
                }
                result => return result,
            }
        }
        Err(Error::invalid(format!(
            "no backend could run the model: {}",
            skipped.join("; ")
        )))
    }

    /// Uploads a model to a backend the caller opened (tests run the same code on every backend).
    pub fn with_backend(
        model: &Model,
        backend: Box<dyn Backend>,
        why: String,
        opts: &EngineOptions,
        progress: Option<&dyn Fn(u64, u64)>,
    ) -> Result<Engine> {
        let t0 = std::time::Instant::now();
        if opts.max_sessions == 0 {
            return Err(Error::invalid("max_sessions must be at least 1"));
        }
        let chunking = Chunking::PowersOfTwo { max: MAX_CHUNK };
        let mut core = Runner::new(backend, model, opts.max_sessions, chunking)?;
        // The core takes each tensor out of its copy as it uploads it; the copy shares the
        // tensors' bytes (mapped or reference-counted) with `model`.
        let mut pending = model.clone();
        while let Some((done, total)) = block_on_ready(core.upload_next(&mut pending))? {
            if let Some(p) = progress {
                p(done, total);
            }
        }
        let vocab = match &model.vocab {
            Some(v) => v.clone(),
            None => Vocab::byte_level(model.desc.vocab_size),
        };
        Ok(Engine {
            core,
            backend_why: why,
            desc: model.desc.clone(),
            vocab,
            free_slots: (0..opts.max_sessions).rev().collect(),
            n_slots: opts.max_sessions,
            load_seconds: t0.elapsed().as_secs_f64(),
        })
    }

    pub fn desc(&self) -> &ModelDesc {
        &self.desc
    }
    /// Sessions that can be open at once (`EngineOptions::max_sessions`).
    pub fn max_sessions(&self) -> usize {
        self.n_slots
    }
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    /// Replaces the vocabulary (e.g. `--vocab FILE` for a model file without one).
    pub fn set_vocab(&mut self, vocab: Vocab) {
        self.vocab = vocab;
    }
    /// One line: which backend runs and why it was chosen.
    pub fn backend_choice(&self) -> &str {
        &self.backend_why
    }
    pub fn device_info(&self) -> rwkv_core::backend::DeviceInfo {
        self.core.backend.info()
    }

    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.vocab.encode(text.as_bytes())
    }

    pub fn detokenize(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.vocab.decode(ids)
    }

    /// Opens a session with a zeroed state.
    pub fn new_session(&mut self) -> Result<Session> {
        let slot = self.free_slots.pop().ok_or_else(|| {
            Error::invalid(format!(
                "all {} sessions are in use (raise max_sessions)",
                self.n_slots
            ))
        })?;
        block_on_ready(self.core.reset(slot))?;
        Ok(Session {
            slot,
            last_logits: None,
        })
    }

    /// Closes a session, freeing its slot.
    pub fn close_session(&mut self, s: Session) {
        self.free_slots.push(s.slot);
    }

    /// Feeds tokens to a session; returns the logits after the last one.
    pub fn feed(&mut self, s: &mut Session, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut logits = vec![0f32; self.desc.vocab_size];
        block_on_ready(
            self.core
                .feed(s.slot, tokens, FeedOutput::Last(&mut logits)),
        )?;
        s.last_logits = Some(logits.clone());
        Ok(logits)
    }

    /// Feeds tokens and returns the logits after every one of them (`tokens.len() · vocab`).
    pub fn feed_all(&mut self, s: &mut Session, tokens: &[u32]) -> Result<Vec<f32>> {
        let v = self.desc.vocab_size;
        let mut all = vec![0f32; tokens.len() * v];
        block_on_ready(self.core.feed(s.slot, tokens, FeedOutput::All(&mut all)))?;
        s.last_logits = Some(all[(tokens.len() - 1) * v..].to_vec());
        Ok(all)
    }

    /// One token for each of several sessions in one step (batched decode). Returns the logits
    /// of each (`sessions.len() · vocab`).
    pub fn feed_batch(
        &mut self,
        sessions: &mut [&mut Session],
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        let v = self.desc.vocab_size;
        let mut logits = vec![0f32; sessions.len() * v];
        self.batch_step(sessions, tokens, 1, StepOutput::Logits(&mut logits))?;
        for (i, s) in sessions.iter_mut().enumerate() {
            s.last_logits = Some(logits[i * v..(i + 1) * v].to_vec());
        }
        Ok(logits)
    }

    /// Batched greedy step computed on the device: the next token of each session.
    pub fn feed_batch_argmax(
        &mut self,
        sessions: &mut [&mut Session],
        tokens: &[u32],
    ) -> Result<Vec<u32>> {
        let mut next = vec![0u32; sessions.len()];
        self.batch_step(sessions, tokens, 1, StepOutput::Argmax(&mut next))?;
        for s in sessions.iter_mut() {
            s.last_logits = None;
        }
        Ok(next)
    }

    /// Prefill for several sessions at once, `n_tok` tokens each (`tokens` sequence-major);
    /// the logits are not read back.
    pub fn prefill_batch(
        &mut self,
        sessions: &mut [&mut Session],
        tokens: &[u32],
        n_tok: usize,
    ) -> Result<()> {
        self.batch_step(sessions, tokens, n_tok, StepOutput::None)
    }

    /// One step of `n_tok` tokens per session with the given output.
    fn batch_step(
        &mut self,
        sessions: &[&mut Session],
        tokens: &[u32],
        n_tok: usize,
        out: StepOutput<'_>,
    ) -> Result<()> {
        let slots: Vec<usize> = sessions.iter().map(|s| s.slot).collect();
        block_on_ready(self.core.step(&slots, tokens, n_tok, out))
    }

    /// The session's state (`desc().state_len()` values), e.g. to save a prompt's state.
    pub fn save_state(&mut self, s: &Session) -> Result<Vec<f32>> {
        block_on_ready(self.core.read_state(s.slot))
    }

    /// Restores a state saved by [`Engine::save_state`].
    pub fn restore_state(&mut self, s: &mut Session, state: &[f32]) -> Result<()> {
        block_on_ready(self.core.write_state(s.slot, state))?;
        s.last_logits = None;
        Ok(())
    }

    /// Generates up to `max_tokens` after `prompt`, calling `on_token(id, bytes)` as each comes;
    /// stops early when `on_token` returns false or the end-of-text token (0) is sampled.
    /// Returns the generated ids.
    pub fn generate(
        &mut self,
        s: &mut Session,
        prompt: &[u32],
        max_tokens: usize,
        params: SamplerParams,
        mut on_token: impl FnMut(u32, &[u8]) -> bool,
    ) -> Result<Vec<u32>> {
        let mut sampler = Sampler::new(params);
        let mut logits = match (prompt.is_empty(), &s.last_logits) {
            (false, _) => self.feed(s, prompt)?,
            (true, Some(l)) => l.clone(),
            (true, None) => return Err(Error::invalid("empty prompt and nothing fed before")),
        };
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            let next = sampler.sample(&logits);
            if next == 0 {
                break;
            }
            out.push(next);
            let bytes = self.vocab.token_bytes(next).unwrap_or(&[]).to_vec();
            if !on_token(next, &bytes) {
                break;
            }
            logits = self.feed(s, &[next])?;
        }
        Ok(out)
    }
}
