//! Shared test helpers: load a model into the CPU backend and run steps by shape.
#![allow(dead_code)]

use std::collections::HashMap;

use rwkv_core::backend::{Backend, PlanId, StepOutput, StepShape};
use rwkv_core::model::v7::PlanBuilder;
use rwkv_core::{Model, ModelDesc, Result};
use rwkv_cpu::CpuBackend;

/// A seeded test PRNG (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn tokens(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(vocab) as u32).collect()
    }
}

/// A CPU backend with a model's weights uploaded and plans compiled on demand.
pub struct Runner {
    pub backend: CpuBackend,
    pub desc: ModelDesc,
    builder: PlanBuilder,
    plans: HashMap<(StepShape, bool), PlanId>,
}

impl Runner {
    pub fn new(model: &Model, n_slots: usize) -> Result<Runner> {
        Runner::with_backend(CpuBackend::new(), model, n_slots)
    }

    pub fn with_backend(mut backend: CpuBackend, model: &Model, n_slots: usize) -> Result<Runner> {
        let builder = PlanBuilder::new(&model.desc);
        for (id, name) in builder.weights().iter().enumerate() {
            backend.upload_weight(id, name, model.tensor(name)?)?;
        }
        backend.alloc_states(n_slots, model.desc.state_len())?;
        Ok(Runner {
            backend,
            desc: model.desc.clone(),
            builder,
            plans: HashMap::new(),
        })
    }

    pub fn plan(&mut self, n_seq: usize, n_tok: usize, all_logits: bool) -> Result<PlanId> {
        let shape = StepShape { n_seq, n_tok };
        if let Some(&id) = self.plans.get(&(shape, all_logits)) {
            return Ok(id);
        }
        let id = self
            .backend
            .compile(&self.builder.build(shape, all_logits))?;
        self.plans.insert((shape, all_logits), id);
        Ok(id)
    }

    /// One step; returns logits (`n_seq` rows, or all `n_seq·n_tok` rows with `all_logits`).
    pub fn step(
        &mut self,
        n_tok: usize,
        all_logits: bool,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<f32>> {
        let plan = self.plan(slots.len(), n_tok, all_logits)?;
        let rows = if all_logits {
            tokens.len()
        } else {
            slots.len()
        };
        let mut logits = vec![0f32; rows * self.desc.vocab_size];
        self.backend
            .execute(plan, tokens, slots, StepOutput::Logits(&mut logits))?;
        Ok(logits)
    }

    pub fn reset(&mut self, slot: usize) -> Result<()> {
        self.backend
            .write_state(slot, &vec![0f32; self.desc.state_len()])
    }

    /// Feeds `tokens` one at a time into `slot`; logits after each, concatenated.
    pub fn one_by_one(&mut self, tokens: &[u32], slot: usize) -> Result<Vec<f32>> {
        let mut all = Vec::new();
        for &t in tokens {
            all.extend(self.step(1, false, &[t], &[slot])?);
        }
        Ok(all)
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Index of the largest value, lowest index on ties.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Mean and standard deviation.
pub fn mean_std(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var.sqrt() as f32)
}
