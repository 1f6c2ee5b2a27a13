//! The engine core every front end shares: it drives one backend through the contract
//! ([`crate::backend`]) for one model. It uploads the weights in plan order (one tensor in memory
//! at a time), keeps one compiled plan per step shape, feeds tokens in chunks and checks token
//! ids and state lengths. The native `rwkv::Engine` (sessions, sampling, batches) and the
//! browser bindings (rwkv-web) are thin layers over it.
//!
//! It is async because WebGPU in a browser cannot block: backends are driven through
//! [`AsyncBackend`], which every [`Backend`] gets for free (`Box<dyn Backend>`: its futures are
//! ready at once, see [`block_on_ready`]) and which rwkv-wgpu implements with its awaitable
//! methods.

use std::collections::HashMap;
use std::future::Future;

use crate::backend::{Backend, Plan, PlanId, StepOutput, StepShape};
use crate::error::{Error, Result};
use crate::model::{self, Model, ModelDesc, StepBuilder, Tensor};

/// The backend contract's device work as futures.
pub trait AsyncBackend {
    fn upload_weight(
        &mut self,
        id: usize,
        name: &str,
        tensor: &Tensor,
    ) -> impl Future<Output = Result<()>>;
    fn alloc_states(
        &mut self,
        n_slots: usize,
        state_len: usize,
    ) -> impl Future<Output = Result<()>>;
    fn compile(&mut self, plan: &Plan) -> impl Future<Output = Result<PlanId>>;
    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> impl Future<Output = Result<()>>;
    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> impl Future<Output = Result<()>>;
    fn write_state(&mut self, slot: usize, values: &[f32]) -> impl Future<Output = Result<()>>;
}

/// A blocking backend's calls, each a future that is ready at once.
impl AsyncBackend for Box<dyn Backend> {
    fn upload_weight(
        &mut self,
        id: usize,
        name: &str,
        tensor: &Tensor,
    ) -> impl Future<Output = Result<()>> {
        std::future::ready(Backend::upload_weight(&mut **self, id, name, tensor))
    }
    fn alloc_states(
        &mut self,
        n_slots: usize,
        state_len: usize,
    ) -> impl Future<Output = Result<()>> {
        std::future::ready(Backend::alloc_states(&mut **self, n_slots, state_len))
    }
    fn compile(&mut self, plan: &Plan) -> impl Future<Output = Result<PlanId>> {
        std::future::ready(Backend::compile(&mut **self, plan))
    }
    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> impl Future<Output = Result<()>> {
        std::future::ready(Backend::execute(&mut **self, plan, tokens, slots, out))
    }
    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> impl Future<Output = Result<()>> {
        std::future::ready(Backend::read_state(&mut **self, slot, out))
    }
    fn write_state(&mut self, slot: usize, values: &[f32]) -> impl Future<Output = Result<()>> {
        std::future::ready(Backend::write_state(&mut **self, slot, values))
    }
}

/// Runs a future that completes without waiting (the [`AsyncBackend`] of a blocking backend);
/// an `Invalid` error if it would wait, which no such future does.
pub fn block_on_ready<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => Err(Error::invalid(
            "a blocking backend's step did not complete at once",
        )),
    }
}

/// How a run of tokens is cut into steps. Each distinct length is a compiled plan, so the
/// policy bounds how many exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// The largest power of two ≤ min(rest, max): at most log2(max) + 1 plans, big steps.
    PowersOfTwo { max: usize },
    /// `max` tokens while that many are left, then one at a time: two plans.
    FixedThenOnes { max: usize },
}

impl Chunking {
    /// Tokens of the next step when `rest` (> 0) are left.
    pub fn next(self, rest: usize) -> usize {
        match self {
            Chunking::PowersOfTwo { max } => {
                let n = rest.min(max.max(1));
                1 << (usize::BITS - 1 - n.leading_zeros())
            }
            Chunking::FixedThenOnes { max } if rest >= max.max(1) => max.max(1),
            Chunking::FixedThenOnes { .. } => 1,
        }
    }
}

/// Where a feed's logits go.
pub enum FeedOutput<'a> {
    /// Nothing read back (prefill).
    None,
    /// The logits after the last token (`vocab` values).
    Last(&'a mut [f32]),
    /// The logits after every token (`tokens · vocab` values).
    All(&'a mut [f32]),
}

/// One model on one backend: the shared core of every engine front end.
pub struct Runner<B> {
    pub backend: B,
    desc: ModelDesc,
    builder: Box<dyn StepBuilder>,
    plans: HashMap<(StepShape, bool), PlanId>,
    chunking: Chunking,
    n_slots: usize,
    /// Next weight to upload (`builder.weights().len()` when done).
    uploaded: usize,
    uploaded_bytes: u64,
    total_bytes: u64,
}

impl<B: AsyncBackend> Runner<B> {
    /// A runner for `model` on `backend` with `n_slots` state slots; weights are uploaded by
    /// [`Runner::upload_next`]. Fails for a model version without a step builder.
    pub fn new(backend: B, model: &Model, n_slots: usize, chunking: Chunking) -> Result<Self> {
        let builder = model::step_builder(&model.desc)
            .map_err(|e| Error::model(&model.source, e.to_string()))?;
        if n_slots == 0 {
            return Err(Error::invalid("a model needs at least one state slot"));
        }
        Ok(Runner {
            backend,
            desc: model.desc.clone(),
            builder,
            plans: HashMap::new(),
            chunking,
            n_slots,
            uploaded: 0,
            uploaded_bytes: 0,
            total_bytes: model.total_bytes(),
        })
    }

    /// Uploads the next weight in plan order, taking it out of `model` so that memory holds
    /// about one tensor at a time (a streamed tensor is fetched here and dropped after its
    /// upload). Returns `(bytes done, bytes total)`, or `None` once every weight is up and the
    /// states are allocated. Call it until `None` (reporting progress in between).
    pub async fn upload_next(&mut self, model: &mut Model) -> Result<Option<(u64, u64)>> {
        let weights = self.builder.weights();
        let Some(name) = weights.get(self.uploaded).cloned() else {
            if self.uploaded == weights.len() {
                let len = self.builder.state_layout().len();
                self.backend.alloc_states(self.n_slots, len).await?;
                self.uploaded += 1;
            }
            return Ok(None);
        };
        let tensor = model
            .tensors
            .remove(&name)
            .ok_or_else(|| Error::model(&model.source, format!("missing tensor '{name}'")))?;
        let resident = tensor.resident()?;
        self.backend
            .upload_weight(self.uploaded, &name, &resident)
            .await?;
        self.uploaded += 1;
        self.uploaded_bytes += resident.data.len() as u64;
        Ok(Some((self.uploaded_bytes, self.total_bytes)))
    }

    pub fn desc(&self) -> &ModelDesc {
        &self.desc
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// Values of one slot's state.
    pub fn state_len(&self) -> usize {
        self.builder.state_layout().len()
    }

    /// The compiled plan for `shape` (compiled on first use).
    pub async fn plan(&mut self, shape: StepShape, all_logits: bool) -> Result<PlanId> {
        if let Some(&p) = self.plans.get(&(shape, all_logits)) {
            return Ok(p);
        }
        let plan = self.builder.build(shape, all_logits);
        let id = self.backend.compile(&plan).await?;
        self.plans.insert((shape, all_logits), id);
        Ok(id)
    }

    /// An `Invalid` error for the first token id outside the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        match tokens.iter().find(|&&t| t as usize >= self.desc.vocab_size) {
            Some(t) => Err(Error::invalid(format!(
                "token id {t} is outside the vocabulary (size {})",
                self.desc.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Runs `tokens` through the model on `slot`'s state, in steps cut by the chunking policy.
    pub async fn feed(&mut self, slot: usize, tokens: &[u32], out: FeedOutput<'_>) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::invalid("no tokens to feed"));
        }
        self.check_tokens(tokens)?;
        let v = self.desc.vocab_size;
        let (mut last, mut all) = (None, None);
        match out {
            FeedOutput::None => {}
            FeedOutput::Last(l) if l.len() == v => last = Some(l),
            FeedOutput::All(a) if a.len() == tokens.len() * v => all = Some(a),
            _ => return Err(Error::invalid("logits buffer of the wrong length")),
        }
        let mut start = 0;
        while start < tokens.len() {
            let n = self.chunking.next(tokens.len() - start);
            let end = start + n;
            let plan = self
                .plan(StepShape { n_seq: 1, n_tok: n }, all.is_some())
                .await?;
            let step_out = match (&mut last, &mut all) {
                (Some(l), _) if end == tokens.len() => StepOutput::Logits(l),
                (_, Some(a)) => StepOutput::Logits(&mut a[start * v..end * v]),
                _ => StepOutput::None,
            };
            self.backend
                .execute(plan, &tokens[start..end], &[slot], step_out)
                .await?;
            start = end;
        }
        Ok(())
    }

    /// One step of `n_tok` tokens for each of `slots` (`tokens` sequence-major).
    pub async fn step(
        &mut self,
        slots: &[usize],
        tokens: &[u32],
        n_tok: usize,
        out: StepOutput<'_>,
    ) -> Result<()> {
        if slots.is_empty() || n_tok == 0 || Some(tokens.len()) != slots.len().checked_mul(n_tok) {
            return Err(Error::invalid(
                "a batch step takes n_tok tokens for each sequence",
            ));
        }
        self.check_tokens(tokens)?;
        let all = false;
        let plan = self
            .plan(
                StepShape {
                    n_seq: slots.len(),
                    n_tok,
                },
                all,
            )
            .await?;
        self.backend.execute(plan, tokens, slots, out).await
    }

    /// Copies `slot`'s state out.
    pub async fn read_state(&mut self, slot: usize) -> Result<Vec<f32>> {
        let mut v = vec![0f32; self.state_len()];
        self.backend.read_state(slot, &mut v).await?;
        Ok(v)
    }

    /// Overwrites `slot`'s state; an `Invalid` error naming both lengths when they differ.
    pub async fn write_state(&mut self, slot: usize, state: &[f32]) -> Result<()> {
        if state.len() != self.state_len() {
            return Err(Error::invalid(format!(
                "state has {} values, this model's has {}",
                state.len(),
                self.state_len()
            )));
        }
        self.backend.write_state(slot, state).await
    }

    /// Zeroes `slot`'s state.
    pub async fn reset(&mut self, slot: usize) -> Result<()> {
        let zeros = vec![0f32; self.state_len()];
        self.backend.write_state(slot, &zeros).await
    }
}

#[cfg(test)]
mod tests {
    use super::Chunking;

    #[test]
    fn chunking_policies() {
        let p = Chunking::PowersOfTwo { max: 512 };
        assert_eq!(p.next(1), 1);
        assert_eq!(p.next(700), 512);
        assert_eq!(p.next(3), 2);
        let f = Chunking::FixedThenOnes { max: 16 };
        assert_eq!(f.next(40), 16);
        assert_eq!(f.next(15), 1);
    }
}
