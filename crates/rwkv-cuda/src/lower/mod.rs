//! Lowering: a compiled plan's ops become a fixed list of kernel launches over its device
//! buffers, the uploaded weights and the slot states. One function per op, each returning how
//! many ops it consumed (fusions take the next op too): Embed(+LayerNorm ln0),
//! LayerNorm(+TokenShift), TokenShift, MatMul (with the independent MatMul ops after it),
//! Wkv7, LastRows(+LayerNorm).

mod matmul;
mod norm_shift;
mod wkv7;

use std::collections::HashMap;

use rwkv_core::backend::{BufId, Op, Plan, WeightId};
use rwkv_core::Result;

use crate::execute::CompiledPlan;
use crate::gpu::{Gpu, Launch};
use crate::kernels::Kernel;
use crate::options::CudaOptions;
use crate::sparse::SparseCols;
use crate::upload::{MatrixRef, Weights};
use crate::{invalid, CudaBackend};

/// What the op functions read while lowering one plan, and the launches they append.
pub(crate) struct Lowering<'a> {
    pub gpu: &'a mut Gpu,
    pub weights: &'a Weights,
    pub sparse: &'a HashMap<WeightId, SparseCols>,
    pub cp: &'a CompiledPlan,
    pub plan: &'a Plan,
    pub options: &'a CudaOptions,
    /// Device address of the slot states (0: none allocated yet; launches are then built only
    /// to check the plan, never run).
    pub state_ptr: u64,
    /// Values per slot state.
    pub state_len: usize,
    pub launches: Vec<Launch>,
}

impl Lowering<'_> {
    /// Device address of plan buffer `b`.
    pub fn buf(&self, b: BufId) -> Result<u64> {
        self.cp
            .bufs
            .get(b)
            .map(|d| d.ptr)
            .ok_or_else(|| invalid(format!("plan names buffer {b}, which it does not declare")))
    }

    /// Values per row of plan buffer `b` (0 when undeclared; `buf` reports that).
    pub fn width(&self, b: BufId) -> usize {
        self.plan.buffers.get(b).map(|d| d.width).unwrap_or(0)
    }

    pub fn rows_of(&self, b: BufId) -> usize {
        self.plan.rows_of(b)
    }

    /// Device address of vector weight `id` of `len` values.
    pub fn vector(&self, id: WeightId, len: usize) -> Result<u64> {
        self.weights.vector(id, len)
    }

    pub fn matrix(&self, id: WeightId, what: &str) -> Result<MatrixRef> {
        self.weights.matrix(id, what)
    }

    /// Appends a launch of `kernel`.
    pub fn push(
        &mut self,
        kernel: Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: Vec<Vec<u8>>,
    ) -> Result<()> {
        let l = Launch::new(self.gpu, kernel, grid, block, 0, args)?;
        self.launches.push(l);
        Ok(())
    }
}

impl CudaBackend {
    /// Builds the launch list of plan `pi` for the current state buffer (and its graph).
    pub(crate) fn build(&mut self, pi: usize) -> Result<()> {
        let state_ptr = self.states.as_ref().map(|s| s.ptr).unwrap_or(0);
        let cp = self
            .plans
            .get(pi)
            .ok_or_else(|| invalid(format!("unknown plan {pi}")))?;
        let options = cp.options;
        let mut lw = Lowering {
            gpu: &mut self.gpu,
            weights: &self.weights,
            sparse: &self.sparse,
            cp,
            plan: &cp.plan,
            options: &cp.options,
            state_ptr,
            state_len: self.state_len,
            launches: Vec::new(),
        };
        let ops = &cp.plan.ops;
        let mut i = 0;
        while i < ops.len() {
            i += match &ops[i] {
                Op::Embed { .. } => norm_shift::embed(&mut lw, ops, i)?,
                Op::LayerNorm { .. } => norm_shift::layer_norm(&mut lw, ops, i)?,
                Op::TokenShift { .. } => norm_shift::token_shift(&mut lw, ops, i)?,
                Op::MatMul { .. } => matmul::matmul(&mut lw, ops, i)?,
                Op::Wkv7(args) => wkv7::wkv7(&mut lw, args)?,
                Op::LastRows { .. } => norm_shift::last_rows(&mut lw, ops, i)?,
            };
        }
        let launches = lw.launches;
        let graph = self.capture_if_wanted(&options, state_ptr, &launches)?;
        let cp = &mut self.plans[pi];
        cp.launches = launches;
        cp.graph = graph;
        cp.built_gen = if state_ptr != 0 { self.state_gen } else { 0 };
        Ok(())
    }
}
