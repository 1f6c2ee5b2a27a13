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
//! The head size N is not part of a plan: it follows from the state length the caller allocates
//! (`state_len = n_layer · (2 + N) · C`).

mod ops;

use std::collections::HashSet;

use rwkv_core::backend::{
    Backend, BufId, DeviceInfo, MatJob, Op, Plan, PlanId, ShiftKind, StepOutput, WeightId,
};
use rwkv_core::model::{Tensor, TensorBytes};
use rwkv_core::{DType, Error, Result};

pub use ops::{dot, layer_norm, wkv7_token, Wkv7Weights};

const BACKEND: &str = "cpu";

fn fail(what: impl Into<String>) -> Error {
    Error::backend(BACKEND, what)
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

/// A compiled plan: the plan itself, its activation buffers, and what it needs of the state.
struct Compiled {
    plan: Plan,
    buffers: Vec<Vec<f32>>,
    /// Layers the state ops touch (1 + the highest layer index; 0 if none).
    n_layer: usize,
    /// C, the width of the token-shift registers and of the time-mix core (0 if no state ops).
    width: usize,
    /// Token ids must be below this (the smallest embedding table's row count; no limit
    /// without an Embed op).
    vocab: usize,
}

/// Where a layer's parts sit in a slot's state.
#[derive(Clone, Copy)]
struct StateGeometry {
    layer_len: usize,
    width: usize,
    head_size: usize,
}

/// The CPU backend. `CpuBackend::new()` uses every available core.
pub struct CpuBackend {
    threads: usize,
    weights: Vec<Weight>,
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
            states: Vec::new(),
            state_len: 0,
            plans: Vec::new(),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn geometry(&self, compiled: &Compiled) -> Result<Option<StateGeometry>> {
        if compiled.n_layer == 0 {
            return Ok(None);
        }
        let c = compiled.width;
        let layer_len = self.state_len / compiled.n_layer;
        if !self.state_len.is_multiple_of(compiled.n_layer)
            || !layer_len.is_multiple_of(c)
            || layer_len / c < 3
        {
            return Err(fail(format!(
                "state length {} is not {} layers of (2 + head size) · {c} values",
                self.state_len, compiled.n_layer
            )));
        }
        let head_size = layer_len / c - 2;
        if !c.is_multiple_of(head_size) {
            return Err(fail(format!(
                "width {c} is not a whole number of heads of size {head_size}"
            )));
        }
        Ok(Some(StateGeometry {
            layer_len,
            width: c,
            head_size,
        }))
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
            return Err(fail(format!(
                "weight '{name}' uploaded as id {id}, expected id {}",
                self.weights.len()
            )));
        }
        if !self.plans.is_empty() {
            return Err(fail("weights must be uploaded before any plan is compiled"));
        }
        // Bytes streamed from a source are fetched now: the weight is kept, so it must be resident.
        let tensor = tensor.resident()?;
        let len = tensor.data.len();
        if tensor.shape.is_empty()
            || tensor.shape.contains(&0)
            || tensor.dtype.tensor_bytes(&tensor.shape) != Some(len)
        {
            return Err(fail(format!(
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
            .ok_or_else(|| fail(format!("{n_slots} states of {state_len} values overflow")))?;
        let mut states = Vec::new();
        states
            .try_reserve_exact(n_slots)
            .map_err(|_| fail("out of memory for states"))?;
        for _ in 0..n_slots {
            let mut state = Vec::new();
            state
                .try_reserve_exact(state_len)
                .map_err(|_| fail("out of memory for states"))?;
            state.resize(state_len, 0f32);
            states.push(state);
        }
        self.states = states;
        self.state_len = state_len;
        Ok(())
    }

    fn compile(&mut self, plan: &Plan) -> Result<PlanId> {
        let compiled = compile(&self.weights, plan)?;
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
            .ok_or_else(|| fail(format!("unknown plan id {}", plan.0)))?;
        let shape = compiled.plan.shape;
        if tokens.len() != shape.rows() {
            return Err(fail(format!(
                "{} tokens for a step of {} rows",
                tokens.len(),
                shape.rows()
            )));
        }
        if slots.len() != shape.n_seq {
            return Err(fail(format!(
                "{} slots for a step of {} sequences",
                slots.len(),
                shape.n_seq
            )));
        }
        let mut seen = HashSet::new();
        for &slot in slots {
            if slot >= self.states.len() {
                return Err(fail(format!(
                    "slot {slot} out of range (0..{})",
                    self.states.len()
                )));
            }
            if !seen.insert(slot) {
                return Err(fail(format!("slot {slot} named twice in one step")));
            }
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= compiled.vocab) {
            return Err(fail(format!(
                "token id {bad} out of range (vocabulary {})",
                compiled.vocab
            )));
        }
        let geometry = self.geometry(compiled)?;
        let logits_rows = compiled.plan.rows_of(compiled.plan.logits);
        let logits_width = compiled.plan.buffers[compiled.plan.logits].width;
        match &out {
            StepOutput::None => {}
            StepOutput::Logits(values) if values.len() != logits_rows * logits_width => {
                return Err(fail(format!(
                    "logits output holds {}, the step makes {}",
                    values.len(),
                    logits_rows * logits_width
                )));
            }
            StepOutput::Argmax(ids) if ids.len() != logits_rows => {
                return Err(fail(format!(
                    "argmax output holds {}, the step makes {logits_rows}",
                    ids.len()
                )));
            }
            _ => {}
        }

        let threads = self.threads;
        let weights = &self.weights;
        let states = &mut self.states;
        let compiled = &mut self.plans[plan.0];
        let step = Step {
            plan: &compiled.plan,
            weights,
            tokens,
            slots,
            geometry,
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
            .ok_or_else(|| fail(format!("slot {slot} out of range")))?;
        if out.len() != state.len() {
            return Err(fail(format!(
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
            .ok_or_else(|| fail(format!("slot {slot} out of range")))?;
        if values.len() != state.len() {
            return Err(fail(format!(
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

/// Checks every op of `plan` against the uploaded weights and the buffer declarations, so that
/// `execute` only has run-time inputs (tokens, slots, output sizes) left to check.
fn compile(weights: &[Weight], plan: &Plan) -> Result<Compiled> {
    let shape = plan.shape;
    if shape.n_seq == 0 || shape.n_tok == 0 {
        return Err(fail(format!("empty step shape {shape:?}")));
    }
    if plan.weights.len() != weights.len() {
        return Err(fail(format!(
            "plan names {} weights, {} were uploaded",
            plan.weights.len(),
            weights.len()
        )));
    }
    if let Some((id, (name, w))) = plan
        .weights
        .iter()
        .zip(weights)
        .enumerate()
        .find(|(_, (n, w))| **n != w.name)
    {
        return Err(fail(format!(
            "plan weight {id} is '{name}', '{}' was uploaded as {id}",
            w.name
        )));
    }
    let buf = |b: BufId| {
        plan.buffers
            .get(b)
            .ok_or_else(|| fail(format!("buffer id {b} out of range")))
    };
    let weight = |w: WeightId| {
        weights
            .get(w)
            .ok_or_else(|| fail(format!("weight id {w} out of range")))
    };
    let vector = |w: WeightId, len: usize| -> Result<()> {
        let wt = weight(w)?;
        match &wt.vector {
            Some(v) if v.len() == len => Ok(()),
            _ => Err(fail(format!(
                "weight '{}' is not a vector of {len} values",
                wt.name
            ))),
        }
    };
    // Buffers that ops write must not be read by the same op (except LayerNorm in place).
    let distinct = |ids: &[BufId], what: &str| -> Result<()> {
        let set: HashSet<_> = ids.iter().collect();
        if set.len() == ids.len() {
            Ok(())
        } else {
            Err(fail(format!(
                "{what}: a buffer is both read and written, or written twice"
            )))
        }
    };
    let full_rows = |b: BufId, what: &str| -> Result<usize> {
        let d = buf(b)?;
        if d.last_only {
            return Err(fail(format!(
                "{what}: buffer '{}' must have one row per token",
                d.name
            )));
        }
        Ok(d.width)
    };

    let mut n_layer = 0;
    let mut width = None;
    let mut vocab = usize::MAX;
    let mut state_width = |layer: usize, c: usize| -> Result<()> {
        n_layer = n_layer.max(layer + 1);
        match width {
            Some(w) if w != c => Err(fail(format!(
                "state ops disagree on the width ({w} vs {c})"
            ))),
            _ => {
                width = Some(c);
                Ok(())
            }
        }
    };
    for op in &plan.ops {
        match op {
            Op::Embed { table, out } => {
                let t = weight(*table)?;
                let c = full_rows(*out, "Embed")?;
                if t.vector.is_some() || t.cols != c || t.rows == 0 {
                    return Err(fail(format!(
                        "Embed: table '{}' is not [vocab, {c}]",
                        t.name
                    )));
                }
                vocab = vocab.min(t.rows);
            }
            Op::LayerNorm { x, w, b, out, .. } => {
                let (xd, od) = (buf(*x)?, buf(*out)?);
                if xd.width != od.width || plan.rows_of(*x) != plan.rows_of(*out) {
                    return Err(fail(format!(
                        "LayerNorm: '{}' and '{}' differ in shape",
                        xd.name, od.name
                    )));
                }
                vector(*w, xd.width)?;
                vector(*b, xd.width)?;
            }
            Op::TokenShift {
                x, layer, mixes, ..
            } => {
                let c = full_rows(*x, "TokenShift")?;
                state_width(*layer, c)?;
                let mut ids = vec![*x];
                for &(mix, out) in mixes {
                    vector(mix, c)?;
                    if full_rows(out, "TokenShift")? != c {
                        return Err(fail("TokenShift: output width differs from input"));
                    }
                    ids.push(out);
                }
                distinct(&ids, "TokenShift")?;
            }
            Op::MatMul { jobs } => {
                for job in jobs {
                    let w = weight(job.weight)?;
                    let (xd, od) = (buf(job.x)?, buf(job.out)?);
                    if w.vector.is_some() || w.cols != xd.width || w.rows != od.width {
                        return Err(fail(format!(
                            "MatMul: weight '{}' [{}, {}] does not map '{}' ({}) to '{}' ({})",
                            w.name, w.rows, w.cols, xd.name, xd.width, od.name, od.width
                        )));
                    }
                    if plan.rows_of(job.x) != plan.rows_of(job.out) {
                        return Err(fail(format!(
                            "MatMul: '{}' and '{}' differ in rows",
                            xd.name, od.name
                        )));
                    }
                    if let Some(bias) = job.bias {
                        vector(bias, od.width)?;
                    }
                    distinct(&[job.x, job.out], "MatMul")?;
                }
            }
            Op::Wkv7 {
                layer,
                r,
                w,
                k,
                v,
                a,
                g,
                v_first,
                v_mix,
                k_k,
                k_a,
                r_k,
                ln_x_w,
                ln_x_b,
                out,
                ..
            } => {
                let c = full_rows(*r, "Wkv7")?;
                state_width(*layer, c)?;
                let mut ids = vec![*r, *w, *k, *v, *a, *g, *v_first, *out];
                ids.extend(v_mix);
                for &b in &ids {
                    if full_rows(b, "Wkv7")? != c {
                        return Err(fail("Wkv7: buffers differ in width"));
                    }
                }
                distinct(&ids, "Wkv7")?;
                for vec_id in [k_k, k_a, r_k, ln_x_w, ln_x_b] {
                    vector(*vec_id, c)?;
                }
            }
            Op::LastRows { x, out } => {
                let (xd, od) = (buf(*x)?, buf(*out)?);
                if xd.last_only || !od.last_only || xd.width != od.width || x == out {
                    return Err(fail(format!(
                        "LastRows: '{}' → '{}' is not per-token → per-sequence",
                        xd.name, od.name
                    )));
                }
            }
        }
    }
    buf(plan.logits)?;
    // Every row is walked with chunks of `width` values: an empty row has no meaning here.
    if let Some(empty) = plan.buffers.iter().find(|b| b.width == 0) {
        return Err(fail(format!("buffer '{}' has width 0", empty.name)));
    }

    let mut buffers = Vec::with_capacity(plan.buffers.len());
    for (b, decl) in plan.buffers.iter().enumerate() {
        let len = plan
            .rows_of(b)
            .checked_mul(decl.width)
            .ok_or_else(|| fail("buffer size overflows"))?;
        let mut values = Vec::new();
        values
            .try_reserve_exact(len)
            .map_err(|_| fail(format!("out of memory for buffer '{}'", decl.name)))?;
        values.resize(len, 0f32);
        buffers.push(values);
    }
    Ok(Compiled {
        plan: plan.clone(),
        buffers,
        n_layer,
        width: width.unwrap_or(0),
        vocab,
    })
}

/// One step being run: what every op needs besides its buffers and the states.
struct Step<'a> {
    plan: &'a Plan,
    weights: &'a [Weight],
    tokens: &'a [u32],
    slots: &'a [usize],
    geometry: Option<StateGeometry>,
    threads: usize,
}

impl Step<'_> {
    fn vector(&self, w: WeightId) -> &[f32] {
        // compile() checked that every vector operand has an f32 copy.
        self.weights[w].vector.as_deref().unwrap_or(&[])
    }

    fn geometry(&self) -> Result<StateGeometry> {
        self.geometry
            .ok_or_else(|| fail("state op in a plan without state geometry"))
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
                let g = self.geometry()?;
                let c = g.width;
                let register_at = layer * g.layer_len
                    + match kind {
                        ShiftKind::Ffn => 0,
                        ShiftKind::Att => c,
                    };
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
            Op::Wkv7 {
                layer,
                r,
                w,
                k,
                v,
                a,
                g,
                v_first,
                v_mix,
                k_k,
                k_a,
                r_k,
                ln_x_w,
                ln_x_b,
                gn_eps,
                out,
            } => {
                let geo = self.geometry()?;
                let c = geo.width;
                let weights = Wkv7Weights {
                    k_k: self.vector(*k_k),
                    k_a: self.vector(*k_a),
                    r_k: self.vector(*r_k),
                    ln_x_w: self.vector(*ln_x_w),
                    ln_x_b: self.vector(*ln_x_b),
                    gn_eps: *gn_eps,
                };
                let mut out_buf = std::mem::take(&mut bufs[*out]);
                let mut first_buf = std::mem::take(&mut bufs[*v_first]);
                let s_at = layer * geo.layer_len + 2 * c;
                let mut value = vec![0f32; c];
                for (s, &slot) in self.slots.iter().enumerate() {
                    let state = &mut states[slot][s_at..s_at + geo.layer_len - 2 * c];
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
                            geo.head_size,
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
