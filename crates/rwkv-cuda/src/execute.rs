//! Compiled plans and steps: the device buffers of a plan, its launches captured in a graph,
//! the step itself (inputs in, graph or launches, logits or argmax out) and the slot states.

use rwkv_core::backend::{Op, Plan, PlanFacts, PlanId, StepOutput};
use rwkv_core::Result;

use crate::gpu::{ArgList, DevBuf, Graph, Launch};
use crate::kernels::Kernel;
use crate::options::CudaOptions;
use crate::{i32_of, invalid, CudaBackend};

pub(crate) struct CompiledPlan {
    pub plan: Plan,
    /// The options the plan was compiled with (its launches are rebuilt with them).
    pub options: CudaOptions,
    pub bufs: Vec<DevBuf>,
    pub tokens: DevBuf,
    pub slots: DevBuf,
    pub argmax: DevBuf,
    pub wkv_kk: DevBuf,
    pub wkv_b: DevBuf,
    pub wkv_bonus: DevBuf,
    pub launches: Vec<Launch>,
    pub graph: Option<Graph>,
    /// `CudaBackend::state_gen` the launches were built for (0: not built).
    pub built_gen: u64,
    pub facts: PlanFacts,
}

/// Whether the plan reads or writes slot states.
pub(crate) fn uses_state(plan: &Plan) -> bool {
    plan.ops
        .iter()
        .any(|op| matches!(op, Op::TokenShift { .. } | Op::Wkv7(_)))
}

impl CudaBackend {
    /// `Backend::alloc_states`: `n_slots` zeroed states of `state_len` values; plans rebuild
    /// their launches for the new buffer at their next step.
    pub(crate) fn allocate_states(&mut self, n_slots: usize, state_len: usize) -> Result<()> {
        self.gpu.bind()?;
        self.states = None;
        let bytes = n_slots
            .checked_mul(state_len)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(|| invalid("state size overflows"))?;
        self.states = Some(DevBuf::zeroed(bytes)?);
        self.n_slots = n_slots;
        self.state_len = state_len;
        self.state_gen += 1;
        Ok(())
    }

    /// The plan's state must fit the allocated one (when there is one).
    fn check_state_fits(&self, plan: &Plan) -> Result<()> {
        if uses_state(plan) && self.states.is_some() && plan.state.len() > self.state_len {
            return Err(invalid(format!(
                "the plan's state has {} values, the allocated states {}",
                plan.state.len(),
                self.state_len
            )));
        }
        Ok(())
    }

    /// `Backend::compile`: device buffers for the plan, sparse layouts it can use, and its
    /// launches (built now so that every op is checked; rebuilt when the states change).
    pub(crate) fn compile_plan(&mut self, plan: &Plan) -> Result<PlanId> {
        self.gpu.bind()?;
        let facts = plan.validate("cuda", &self.metas)?;
        self.check_state_fits(plan)?;
        let shape = plan.shape;
        let rows = shape.rows();
        let mut bufs = Vec::with_capacity(plan.buffers.len());
        for b in 0..plan.buffers.len() {
            let n = plan
                .rows_of(b)
                .checked_mul(plan.buffers[b].width)
                .and_then(|v| v.checked_mul(4))
                .ok_or_else(|| invalid("buffer size overflows"))?;
            bufs.push(DevBuf::zeroed(n)?);
        }
        let c = if plan.ops.iter().any(|op| matches!(op, Op::Wkv7(_))) {
            plan.state.width
        } else {
            0
        };
        let logit_rows = plan.rows_of(plan.logits);
        // Prefill WKV scratch: -kk and kk*a per row, the bonus per (row, head of 16 or more).
        let (kk_n, bonus_n) = if shape.n_tok > 1 {
            (rows * c, rows * c.div_ceil(16))
        } else {
            (1, 1)
        };
        let options = self.options;
        let cp = CompiledPlan {
            plan: plan.clone(),
            options,
            bufs,
            tokens: DevBuf::zeroed(rows * 4)?,
            slots: DevBuf::zeroed(shape.n_seq * 4)?,
            argmax: DevBuf::zeroed(logit_rows * 4)?,
            wkv_kk: DevBuf::zeroed(kk_n * 4)?,
            wkv_b: DevBuf::zeroed(kk_n * 4)?,
            wkv_bonus: DevBuf::zeroed(bonus_n * 4)?,
            launches: Vec::new(),
            graph: None,
            built_gen: 0,
            facts,
        };
        self.ensure_sparse(plan, options.sparse)?;
        self.plans.push(cp);
        let pi = self.plans.len() - 1;
        // Validates every op now (with the current states, if any); rebuilt when states change.
        if let Err(e) = self.build(pi) {
            self.plans.pop();
            return Err(e);
        }
        Ok(PlanId(pi))
    }

    /// `Backend::execute`: copies the tokens and slots in, replays the plan, copies out what
    /// `out` asks for.
    pub(crate) fn execute_plan(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()> {
        self.gpu.bind()?;
        let pi = plan.0;
        let cp = self
            .plans
            .get(pi)
            .ok_or_else(|| invalid(format!("unknown plan {pi}")))?;
        if self.states.is_none() {
            return Err(invalid("execute: no states allocated"));
        }
        cp.plan
            .check_step("cuda", &cp.facts, tokens, slots, self.n_slots, &out)?;
        self.check_state_fits(&cp.plan)?;
        if cp.built_gen != self.state_gen {
            self.build(pi)?;
        }
        let cp = &self.plans[pi];
        // check_step bounded every slot by n_slots, which fits the kernels' int.
        let slots32: Vec<i32> = slots.iter().map(|&s| s as i32).collect();
        self.gpu.htod(cp.tokens.ptr, tokens)?;
        self.gpu.htod(cp.slots.ptr, &slots32)?;
        match &cp.graph {
            Some(g) => g.launch(&self.gpu)?,
            None => {
                for l in &cp.launches {
                    self.gpu.launch(l)?;
                }
            }
        }
        let logit_rows = cp.plan.rows_of(cp.plan.logits);
        let width = cp.plan.buffers[cp.plan.logits].width;
        let logits_ptr = cp.bufs[cp.plan.logits].ptr;
        match out {
            StepOutput::None => self.gpu.sync(),
            StepOutput::Logits(buf) => self.gpu.dtoh(buf, logits_ptr),
            StepOutput::Argmax(buf) => {
                let argmax_ptr = cp.argmax.ptr;
                let l = Launch::new(
                    &mut self.gpu,
                    Kernel::Argmax,
                    (logit_rows as u32, 1, 1),
                    (1024, 1, 1),
                    0,
                    ArgList::default()
                        .ptr(logits_ptr)
                        .i32(i32_of(width, "vocab")?)
                        .ptr(argmax_ptr)
                        .0,
                )?;
                self.gpu.launch(&l)?;
                self.gpu.dtoh(buf, argmax_ptr)
            }
        }
    }

    /// Times each launch of a compiled plan on its own (after one normal step with these inputs).
    pub(crate) fn profile_plan(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<(String, f32)>> {
        self.execute_plan(plan, tokens, slots, StepOutput::None)?;
        let cp = &self.plans[plan.0];
        self.gpu.profile(&cp.launches)
    }

    /// Device address of state `slot`, after checking the slot and a host buffer of `len` values.
    fn slot_ptr(&self, what: &str, slot: usize, len: usize) -> Result<u64> {
        let st = self
            .states
            .as_ref()
            .ok_or_else(|| invalid(format!("{what}: no states allocated")))?;
        if slot >= self.n_slots || len != self.state_len {
            return Err(invalid(format!(
                "{what}: slot {slot} of {} or length {len} != {}",
                self.n_slots, self.state_len
            )));
        }
        Ok(st.ptr + (slot * self.state_len * 4) as u64)
    }

    pub(crate) fn read_slot(&mut self, slot: usize, out: &mut [f32]) -> Result<()> {
        self.gpu.bind()?;
        let ptr = self.slot_ptr("read_state", slot, out.len())?;
        self.gpu.dtoh(out, ptr)
    }

    pub(crate) fn write_slot(&mut self, slot: usize, values: &[f32]) -> Result<()> {
        self.gpu.bind()?;
        let ptr = self.slot_ptr("write_state", slot, values.len())?;
        self.gpu.htod(ptr, values)?;
        self.gpu.sync()
    }

    /// Captures the launches of a plan in a graph when the options ask for one and the states
    /// exist (without them the launches are only validated, never run).
    pub(crate) fn capture_if_wanted(
        &self,
        options: &CudaOptions,
        state_ptr: u64,
        launches: &[Launch],
    ) -> Result<Option<Graph>> {
        if options.graphs && state_ptr != 0 {
            Ok(Some(self.gpu.capture(launches)?))
        } else {
            Ok(None)
        }
    }
}
