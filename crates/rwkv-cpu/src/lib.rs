//! The CPU reference backend: plain f32 code that mirrors docs/rwkv-math.md and the `Op` docs in
//! [`rwkv_core::backend`]. It is the oracle every GPU backend is tested against, so it favours
//! being obviously right over being fast:
//!
//! - weights stay in their stored dtype (a quantized 7B model fits in memory); a matrix product
//!   dequantizes one weight row at a time and dots it with every activation row;
//! - big matrix products split their output rows over threads (each dot product is computed the
//!   same way whatever the thread count, so results do not depend on it);
//! - states and activations are f32; the state layout is the contract's
//!   (`[ffn_x (C), att_x (C), S (H·N·N)]` per layer).
//!
//! The state geometry (layers, width, head size, where each part lies) comes from the plan's
//! [`rwkv_core::backend::StateLayout`]; the plan and step checks are rwkv-core's
//! ([`Plan::validate`], [`Plan::check_step`]).

mod ops;

use rwkv_core::backend::{
    Backend, DeviceInfo, MatJob, Op, Plan, PlanFacts, PlanId, ShiftKind, StatePart, StepOutput,
    WeightId, WeightMeta, Wkv7Args,
};
use rwkv_core::model::{Tensor, TensorBytes};
use rwkv_core::{BackendErrorKind, DType, Error, Result};

pub use ops::{dot, layer_norm, wkv7_token, Wkv7Weights};

const BACKEND: &str = "cpu";

fn fail(what: impl Into<String>) -> Error {
    Error::backend(BACKEND, what)
}

fn invalid(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND, BackendErrorKind::InvalidArgument, what)
}

fn out_of_memory(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND, BackendErrorKind::OutOfMemory, what)
}

/// Matrix products below this many multiply-adds run on the calling thread: spawning costs more
/// than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// An uploaded weight. The bytes are shared with the model (memory-mapped or owned), never
/// expanded; 1-D tensors also get an f32 copy because ops read them whole.
struct Weight {
    name: String,
    dtype: DType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    bytes: TensorBytes,
    vector: Option<Vec<f32>>,
}

impl Weight {
    /// Dequantizes row `i` into `out` (`cols` values).
    fn dequantize_row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let start = i * self.row_bytes;
        let bytes = self
            .bytes
            .as_slice()
            .get(start..start + self.row_bytes)
            .ok_or_else(|| fail(format!("weight '{}' has no row {i}", self.name)))?;
        dequantize(self.dtype, bytes, out).map_err(|e| fail(format!("weight '{}': {e}", self.name)))
    }
}

/// Bytes of `dtype` → f32 values (bit-exact with ggml).
fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    rwkv_core::quant::dequantize(dtype, bytes, out)
}

/// A compiled plan: the plan itself, its activation buffers, and what its check found.
struct Compiled {
    plan: Plan,
    buffers: Vec<Vec<f32>>,
    facts: PlanFacts,
}

/// The CPU backend. `CpuBackend::new()` uses every available core.
pub struct CpuBackend {
    threads: usize,
    weights: Vec<Weight>,
    metas: Vec<WeightMeta>,
    states: Vec<Vec<f32>>,
    state_len: usize,
    plans: Vec<Compiled>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

impl CpuBackend {
    /// A backend using `std::thread::available_parallelism` threads.
    pub fn new() -> CpuBackend {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        CpuBackend::with_threads(threads)
    }

    /// A backend splitting big matrix products over `threads` threads (at least 1).
    pub fn with_threads(threads: usize) -> CpuBackend {
        CpuBackend {
            threads: threads.max(1),
            weights: Vec::new(),
            metas: Vec::new(),
            states: Vec::new(),
            state_len: 0,
            plans: Vec::new(),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// The model name of the first CPU in /proc/cpuinfo (Linux), if readable.
fn cpu_model_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key.trim(), "model name" | "Model").then(|| value.trim().to_string())
    })
}

impl Backend for CpuBackend {
    fn info(&self) -> DeviceInfo {
        let device = cpu_model_name().unwrap_or_else(|| format!("{} CPU", std::env::consts::ARCH));
        let weight_bytes: usize = self.weights.iter().map(|w| w.bytes.len()).sum();
        DeviceInfo {
            backend: BACKEND.into(),
            device,
            properties: vec![
                ("threads".into(), self.threads.to_string()),
                ("arch".into(), std::env::consts::ARCH.into()),
                ("weight bytes".into(), weight_bytes.to_string()),
            ],
        }
    }

    fn upload_weight(&mut self, id: usize, name: &str, tensor: &Tensor) -> Result<()> {
        if id != self.weights.len() {
            return Err(invalid(format!(
                "weight '{name}' uploaded as id {id}, expected id {}",
                self.weights.len()
            )));
        }
        if !self.plans.is_empty() {
            return Err(invalid(
                "weights must be uploaded before any plan is compiled",
            ));
        }
        // Bytes streamed from a source are fetched now: the weight is kept, so it must be resident.
        let tensor = tensor.resident()?;
        let len = tensor.data.len();
        if tensor.shape.is_empty()
            || tensor.shape.contains(&0)
            || tensor.dtype.tensor_bytes(&tensor.shape) != Some(len)
        {
            return Err(invalid(format!(
                "weight '{name}': {} shape {:?} is empty or does not match its {len} bytes",
                tensor.dtype, tensor.shape
            )));
        }
        let (rows, cols) = tensor.rows_cols();
        let row_bytes = len.checked_div(rows).unwrap_or(0);
        let vector = if tensor.shape.len() == 1 {
            let mut values = vec![0f32; cols];
            dequantize(tensor.dtype, tensor.data.as_slice(), &mut values)
                .map_err(|e| fail(format!("weight '{name}': {e}")))?;
            Some(values)
        } else {
            None
        };
        self.metas.push(WeightMeta::of(name, &tensor));
        self.weights.push(Weight {
            name: name.to_string(),
            dtype: tensor.dtype,
            rows,
            cols,
            row_bytes,
            bytes: tensor.data.clone(),
            vector,
        });
        Ok(())
    }

    fn alloc_states(&mut self, n_slots: usize, state_len: usize) -> Result<()> {
        self.states = Vec::new();
        n_slots
            .checked_mul(state_len)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| invalid(format!("{n_slots} states of {state_len} values overflow")))?;
        let mut states = Vec::new();
        states
            .try_reserve_exact(n_slots)
            .map_err(|_| out_of_memory("out of memory for states"))?;
        for _ in 0..n_slots {
            let mut state = Vec::new();
            state
                .try_reserve_exact(state_len)
                .map_err(|_| out_of_memory("out of memory for states"))?;
            state.resize(state_len, 0f32);
            states.push(state);
        }
        self.states = states;
        self.state_len = state_len;
        Ok(())
    }

    fn compile(&mut self, plan: &Plan) -> Result<PlanId> {
        let compiled = compile(&self.metas, self.state_len, plan)?;
        self.plans.push(compiled);
        Ok(PlanId(self.plans.len() - 1))
    }

    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()> {
        let compiled = self
            .plans
            .get(plan.0)
            .ok_or_else(|| invalid(format!("unknown plan id {}", plan.0)))?;
        compiled.plan.check_step(
            BACKEND,
            &compiled.facts,
            tokens,
            slots,
            self.states.len(),
            &out,
        )?;
        if uses_state(&compiled.plan) && compiled.plan.state.len() > self.state_len {
            return Err(invalid(format!(
                "the plan's state has {} values, the allocated states {}",
                compiled.plan.state.len(),
                self.state_len
            )));
        }
        let logits_width = compiled.plan.buffers[compiled.plan.logits].width;

        let threads = self.threads;
        let weights = &self.weights;
        let states = &mut self.states;
        let compiled = &mut self.plans[plan.0];
        let step = Step {
            plan: &compiled.plan,
            weights,
            tokens,
            slots,
            threads,
        };
        for op in &compiled.plan.ops {
            step.run(op, &mut compiled.buffers, states)?;
        }

        let logits = &compiled.buffers[compiled.plan.logits];
        match out {
            StepOutput::None => {}
            StepOutput::Logits(values) => values.copy_from_slice(logits),
            StepOutput::Argmax(ids) => {
                for (id, row) in ids.iter_mut().zip(logits.chunks_exact(logits_width)) {
                    *id = argmax(row);
                }
            }
        }
        Ok(())
    }

    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> Result<()> {
        let state = self
            .states
            .get(slot)
            .ok_or_else(|| invalid(format!("slot {slot} out of range")))?;
        if out.len() != state.len() {
            return Err(invalid(format!(
                "state buffer holds {}, a state has {}",
                out.len(),
                state.len()
            )));
        }
        out.copy_from_slice(state);
        Ok(())
    }

    fn write_state(&mut self, slot: usize, values: &[f32]) -> Result<()> {
        let state = self
            .states
            .get_mut(slot)
            .ok_or_else(|| invalid(format!("slot {slot} out of range")))?;
        if values.len() != state.len() {
            return Err(invalid(format!(
                "{} state values given, a state has {}",
                values.len(),
                state.len()
            )));
        }
        state.copy_from_slice(values);
        Ok(())
    }
}

/// Index of the largest value; ties go to the lowest index (NaN never wins).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best as u32
}

/// Whether the plan reads or writes slot states.
fn uses_state(plan: &Plan) -> bool {
    plan.ops
        .iter()
        .any(|op| matches!(op, Op::TokenShift { .. } | Op::Wkv7(_)))
}

/// Checks `plan` ([`Plan::validate`] and the state length) and allocates its buffers.
fn compile(metas: &[WeightMeta], state_len: usize, plan: &Plan) -> Result<Compiled> {
    let facts = plan.validate(BACKEND, metas)?;
    if uses_state(plan) && state_len > 0 && plan.state.len() > state_len {
        return Err(invalid(format!(
            "the plan's state has {} values, the allocated states {state_len}",
            plan.state.len()
        )));
    }
    let mut buffers = Vec::with_capacity(plan.buffers.len());
    for (b, decl) in plan.buffers.iter().enumerate() {
        // validate() checked that this product does not overflow.
        let len = plan.rows_of(b) * decl.width;
        let mut values = Vec::new();
        values
            .try_reserve_exact(len)
            .map_err(|_| out_of_memory(format!("out of memory for buffer '{}'", decl.name)))?;
        values.resize(len, 0f32);
        buffers.push(values);
    }
    Ok(Compiled {
        plan: plan.clone(),
        buffers,
        facts,
    })
}

/// One step being run: what every op needs besides its buffers and the states.
struct Step<'a> {
    plan: &'a Plan,
    weights: &'a [Weight],
    tokens: &'a [u32],
    slots: &'a [usize],
    threads: usize,
}

impl Step<'_> {
    fn vector(&self, w: WeightId) -> &[f32] {
        // compile() checked that every vector operand has an f32 copy.
        self.weights[w].vector.as_deref().unwrap_or(&[])
    }

    /// Where `part` of `layer` lies in a slot's state (validate() checked it exists).
    fn state_range(&self, layer: usize, part: StatePart) -> Result<std::ops::Range<usize>> {
        self.plan
            .state
            .range(layer, part)
            .ok_or_else(|| invalid(format!("layer {layer} has no {part:?} in the plan's state")))
    }

    fn run(&self, op: &Op, bufs: &mut [Vec<f32>], states: &mut [Vec<f32>]) -> Result<()> {
        let n_tok = self.plan.shape.n_tok;
        match op {
            Op::Embed { table, out } => {
                let table = &self.weights[*table];
                let width = table.cols;
                for (row, &token) in bufs[*out].chunks_exact_mut(width).zip(self.tokens) {
                    table.dequantize_row(token as usize, row)?;
                }
            }
            Op::LayerNorm { x, w, b, out, eps } => {
                let (w, b) = (self.vector(*w), self.vector(*b));
                let width = w.len();
                let mut input = vec![0f32; width];
                for r in 0..self.plan.rows_of(*x) {
                    input.copy_from_slice(&bufs[*x][r * width..(r + 1) * width]);
                    layer_norm(
                        &input,
                        w,
                        b,
                        *eps,
                        &mut bufs[*out][r * width..(r + 1) * width],
                    );
                }
            }
            Op::TokenShift {
                x,
                layer,
                kind,
                mixes,
            } => {
                let c = self.plan.state.width;
                let register_at = self
                    .state_range(
                        *layer,
                        match kind {
                            ShiftKind::Ffn => StatePart::FfnShift,
                            ShiftKind::Att => StatePart::AttShift,
                        },
                    )?
                    .start;
                let mut outs: Vec<(&[f32], Vec<f32>)> = mixes
                    .iter()
                    .map(|&(mix, out)| (self.vector(mix), std::mem::take(&mut bufs[out])))
                    .collect();
                let xb = &bufs[*x];
                for (s, &slot) in self.slots.iter().enumerate() {
                    let register = &mut states[slot][register_at..register_at + c];
                    for t in 0..n_tok {
                        let r = s * n_tok + t;
                        let cur = &xb[r * c..(r + 1) * c];
                        let prev = if t == 0 {
                            &*register
                        } else {
                            &xb[(r - 1) * c..r * c]
                        };
                        for (mix, out) in outs.iter_mut() {
                            let out = &mut out[r * c..(r + 1) * c];
                            for i in 0..c {
                                out[i] = cur[i] + (prev[i] - cur[i]) * mix[i];
                            }
                        }
                    }
                    let last = s * n_tok + n_tok - 1;
                    register.copy_from_slice(&xb[last * c..(last + 1) * c]);
                }
                for (&(_, out), (_, values)) in mixes.iter().zip(outs) {
                    bufs[out] = values;
                }
            }
            Op::MatMul { jobs } => {
                for job in jobs {
                    let mut out = std::mem::take(&mut bufs[job.out]);
                    let result = self.matmul(job, &bufs[job.x], &mut out);
                    bufs[job.out] = out;
                    result?;
                }
            }
            Op::Wkv7(args) => {
                let Wkv7Args {
                    layer,
                    r,
                    w,
                    k,
                    v,
                    a,
                    g,
                    v_first,
                    v_mix,
                    out,
                    ..
                } = args;
                let c = self.plan.state.width;
                let head_size = self.plan.state.head_size;
                let weights = Wkv7Weights {
                    k_k: self.vector(args.k_k),
                    k_a: self.vector(args.k_a),
                    r_k: self.vector(args.r_k),
                    ln_x_w: self.vector(args.ln_x_w),
                    ln_x_b: self.vector(args.ln_x_b),
                    gn_eps: args.gn_eps,
                };
                let mut out_buf = std::mem::take(&mut bufs[*out]);
                let mut first_buf = std::mem::take(&mut bufs[*v_first]);
                let s_range = self.state_range(*layer, StatePart::WkvMatrix)?;
                let mut value = vec![0f32; c];
                for (s, &slot) in self.slots.iter().enumerate() {
                    let state = &mut states[slot][s_range.clone()];
                    for t in 0..n_tok {
                        let row = (s * n_tok + t) * c..(s * n_tok + t + 1) * c;
                        value.copy_from_slice(&bufs[*v][row.clone()]);
                        let first = &mut first_buf[row.clone()];
                        match v_mix {
                            Some(mix) => {
                                let mix = &bufs[*mix][row.clone()];
                                for i in 0..c {
                                    value[i] += (first[i] - value[i]) * mix[i];
                                }
                            }
                            None => first.copy_from_slice(&value),
                        }
                        wkv7_token(
                            state,
                            head_size,
                            &weights,
                            &bufs[*r][row.clone()],
                            &bufs[*w][row.clone()],
                            &bufs[*k][row.clone()],
                            &value,
                            &bufs[*a][row.clone()],
                            &bufs[*g][row.clone()],
                            &mut out_buf[row],
                        );
                    }
                }
                bufs[*out] = out_buf;
                bufs[*v_first] = first_buf;
            }
            Op::LastRows { x, out } => {
                let width = self.plan.buffers[*x].width;
                let mut out_buf = std::mem::take(&mut bufs[*out]);
                for (s, dst) in out_buf.chunks_exact_mut(width).enumerate() {
                    let last = s * n_tok + n_tok - 1;
                    dst.copy_from_slice(&bufs[*x][last * width..(last + 1) * width]);
                }
                bufs[*out] = out_buf;
            }
        }
        Ok(())
    }

    /// `out[r] (=|+=) act(W · x[r] + bias)` for every row, output rows of `W` split over threads.
    fn matmul(&self, job: &MatJob, x: &[f32], out: &mut [f32]) -> Result<()> {
        let w = &self.weights[job.weight];
        let rows = self.plan.rows_of(job.x);
        let work = w.rows.saturating_mul(w.cols).saturating_mul(rows);
        let n_parts = if work >= PARALLEL_MIN_MACS {
            self.threads.min(w.rows).max(1)
        } else {
            1
        };
        let part_len = w.rows.div_ceil(n_parts);
        let ranges: Vec<_> = (0..n_parts)
            .map(|p| p * part_len..((p + 1) * part_len).min(w.rows))
            .collect();

        // Each part returns its dot products laid out [output row][activation row].
        let parts: Vec<Result<Vec<f32>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges[1..]
                .iter()
                .map(|range| {
                    let range = range.clone();
                    scope.spawn(move || dots(w, x, rows, range))
                })
                .collect();
            let mut parts = vec![dots(w, x, rows, ranges[0].clone())];
            for handle in handles {
                parts.push(
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(fail("matrix product thread panicked"))),
                );
            }
            parts
        });

        let bias = job.bias.map(|b| self.vector(b));
        let width = w.rows;
        for (range, part) in ranges.into_iter().zip(parts) {
            let part = part?;
            for (j, products) in range.zip(part.chunks_exact(rows)) {
                let b = bias.map_or(0.0, |b| b[j]);
                for (r, &product) in products.iter().enumerate() {
                    let y = job.act.apply(product + b);
                    let slot = &mut out[r * width + j];
                    *slot = if job.accumulate { *slot + y } else { y };
                }
            }
        }
        Ok(())
    }
}

/// `W[j] · x[r]` for `j` in `range` and every activation row `r`, one dequantized weight row at a
/// time; laid out `[j − range.start][r]`.
fn dots(w: &Weight, x: &[f32], rows: usize, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
    let mut row = vec![0f32; w.cols];
    let mut products = Vec::with_capacity(range.len() * rows);
    for j in range {
        w.dequantize_row(j, &mut row)?;
        for input in x.chunks_exact(w.cols).take(rows) {
            products.push(dot(&row, input));
        }
    }
    Ok(products)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, -1.0]), 1);
        assert_eq!(argmax(&[-2.0]), 0);
    }
}
