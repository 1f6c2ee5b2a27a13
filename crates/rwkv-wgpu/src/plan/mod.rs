//! Compiled plans: a plan checked against the uploaded weights, lowered to pre-built dispatches
//! and encoded once per step.
//!
//! - `choice.rs`: kernel thresholds and choices (which kernel runs an op of a given shape).
//! - `layout.rs`: the activation arena and the working state chunks.
//! - `lower.rs`: one lowering function per op (`matmul.rs` for the products).
//! - `record.rs`: the dispatch records lowering produces.
//! - `device.rs`: pipelines, buffers and bind groups of the records.
//! - `encode.rs`: one step's command buffer, plain or profiled.

pub(crate) mod choice;
mod device;
mod encode;
mod layout;
mod lower;
mod matmul;
mod record;

use rwkv_core::backend::{Op, Plan, PlanFacts, WeightId};
use rwkv_core::Result;

use crate::gpu::{backend_err, Gpu};
use crate::kernels::{Kernel, Kernels};
use crate::weights::DeviceWeight;

pub(crate) use encode::{Profiler, ReadBack};
use layout::{ArenaLayout, StateChunk, WorkState};
use record::PARAM_WORDS;

/// A plan checked against the uploaded weights, with its arena layout.
pub(crate) struct Compiled {
    pub plan: Plan,
    arena: ArenaLayout,
    /// What [`Plan::validate`] found (token ids must be below `facts.vocab`).
    pub facts: PlanFacts,
    pub built: Option<Built>,
}

pub(crate) struct Built {
    pub state_len: usize,
    pub weights_generation: u64,
    pub tokens: wgpu::Buffer,
    work_states: Vec<StateChunk>,
    arena: wgpu::Buffer,
    _params: wgpu::Buffer,
    dispatches: Vec<Dispatch>,
    argmax: Dispatch,
    /// f16 operands and partial sums of the gemm_f16.wgsl products (kept alive with the plan).
    _scratch: [wgpu::Buffer; 3],
    staging: wgpu::Buffer,
}

struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// Index of the op in the plan (the argmax dispatch: `ops.len()`), and the kernel.
    op: usize,
    kernel: Kernel,
}

impl Compiled {
    /// Takes a plan that passed [`Plan::validate`] (`facts` is what it found), checks what is
    /// this backend's own (uploaded on the device, kernel parameter limits), lays out the arena.
    pub fn new(
        gpu: &Gpu,
        plan: &Plan,
        weights: &[Option<DeviceWeight>],
        facts: PlanFacts,
    ) -> Result<Compiled> {
        let bad = |what: String| backend_err(format!("plan rejected: {what}"));
        let uploaded = |w: WeightId| -> Result<()> {
            match weights.get(w) {
                Some(Some(_)) => Ok(()),
                _ => Err(bad(format!("weight {w} is not uploaded"))),
            }
        };
        for op in &plan.ops {
            match op {
                Op::Embed { table, .. } => uploaded(*table)?,
                Op::TokenShift { x, mixes, .. } => {
                    // Two parameter words per mix after the token-shift kernel's eight.
                    if mixes.len() > (PARAM_WORDS - 8) / 2 {
                        return Err(bad(format!(
                            "token shift of buffer {x}: {} mixes",
                            mixes.len()
                        )));
                    }
                }
                Op::MatMul { jobs } => {
                    for j in jobs {
                        uploaded(j.weight)?;
                    }
                }
                Op::LayerNorm { .. } | Op::Wkv7(_) | Op::LastRows { .. } => {}
            }
        }
        if facts.vocab == usize::MAX {
            return Err(bad("no embedding op".into()));
        }
        Ok(Compiled {
            plan: plan.clone(),
            arena: ArenaLayout::new(gpu, plan)?,
            facts,
            built: None,
        })
    }

    /// Values of the logits buffer.
    pub fn logits_len(&self) -> usize {
        self.plan.rows_of(self.plan.logits) * self.plan.buffers[self.plan.logits].width
    }

    pub fn logit_rows(&self) -> usize {
        self.plan.rows_of(self.plan.logits)
    }

    /// Builds pipelines, buffers and bind groups for states of `state_len` values.
    pub async fn build(
        &mut self,
        gpu: &Gpu,
        kernels: &mut Kernels,
        weights: &[Option<DeviceWeight>],
        vecs: &wgpu::Buffer,
        weights_generation: u64,
        state_len: usize,
    ) -> Result<()> {
        let work = WorkState::new(gpu, &self.plan, state_len)?;
        let (recs, scratch) =
            lower::lower(gpu, kernels, &self.plan, &self.arena, &work, weights).await?;
        let built = self
            .device_objects(
                gpu,
                kernels,
                recs,
                scratch,
                &work,
                vecs,
                weights_generation,
                state_len,
            )
            .await?;
        self.built = Some(built);
        Ok(())
    }
}
