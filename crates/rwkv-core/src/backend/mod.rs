//! The backend contract: what a device must do to run RWKV.
//!
//! A backend owns a device, the model's weights on it, a pool of per-sequence states, and
//! compiled [`Plan`]s. The model code ([`crate::model::v7`]) records one step of the network as a
//! `Plan`: a fixed list of [`Op`]s over activation buffers and weights. A backend compiles the plan
//! once (CUDA captures it in a graph, WebGPU encodes it into one command buffer, the CPU just keeps
//! it) and replays it every step with new token ids and state slots. No op reads back to the host
//! inside a step.
//!
//! ## Shapes and batching
//! A plan is made for one [`StepShape`]: `n_seq` sequences of `n_tok` tokens each, so
//! `rows = n_seq · n_tok`. Activation row `r` belongs to sequence `r / n_tok` and is its token
//! `r % n_tok`. Batched decode is `n_tok = 1`, prefill of one prompt is `n_seq = 1`.
//! Each sequence names a state slot at run time; slots are independent.
//!
//! ## Buffers
//! Every activation buffer is `f32 [rows_of(buffer), width]` row-major. Most buffers have
//! `rows` rows; buffers marked [`BufferDecl::last_only`] have `n_seq` rows (one per sequence: the
//! last token's row), used for the head when only the final logits are wanted.
//!
//! ## Weights
//! Weights are uploaded once, in plan order of [`WeightId`]s, from canonical [`crate::model::Tensor`]s
//! (any [`crate::DType`]; a backend may repack or convert them, but must compute with at least the
//! precision of the stored values). Matrices are `[out, in]`: `y = W·x` for each activation row.
//!
//! ## State
//! Each plan carries its [`StateLayout`]: layers, width, head size and the parts of a layer's
//! state (for RWKV-7 f32 `[ffn_x (C), att_x (C), S (H·N·N)]`, `S` per head as `S[p][q]`, `p` the
//! value channel (row), `q` the key channel (column)). Backends read geometry from it, never
//! infer it from a state length.
//!
//! ## Checks
//! [`Plan::validate`] checks a plan against the uploaded weights ([`WeightMeta`]) and
//! [`Plan::check_step`] a step's tokens, slots and output; every backend calls both, then checks
//! only what is its own (device limits, dtypes).
//!
//! ## Failure
//! Every method returns [`crate::Error::Backend`] with a [`crate::BackendErrorKind`] a caller can act on
//! and a one-line reason: `OutOfMemory`, `DeviceLost`, `Unsupported` (op, dtype or shape),
//! `InvalidArgument` (a contract violation: unknown plan, slot out of range, wrong lengths),
//! `Unavailable` (cannot start), `Failed` (anything else). After an error in `execute` the states
//! of the slots it touched are unspecified.

mod state;
mod validate;

pub use state::{StateLayout, StatePart};
pub use validate::{PlanFacts, WeightMeta};

use crate::error::Result;
use crate::model::Tensor;

/// Index of an activation buffer in [`Plan::buffers`].
pub type BufId = usize;
/// Index of a weight in [`Plan::weights`].
pub type WeightId = usize;

/// How many sequences and tokens per sequence one step processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepShape {
    pub n_seq: usize,
    pub n_tok: usize,
}

impl StepShape {
    pub fn rows(&self) -> usize {
        self.n_seq * self.n_tok
    }
}

/// An activation buffer: f32, `width` values per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferDecl {
    pub name: String,
    pub width: usize,
    /// One row per sequence instead of one per token.
    pub last_only: bool,
}

/// Elementwise function applied to a matrix product's output (after bias, before accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Tanh,
    Sigmoid,
    /// `relu(x)²`, the channel-mix activation.
    ReluSq,
    /// RWKV-7 decay: `exp(−e^{−1/2} · σ(x))`, in (0.545, 1).
    Decay,
}

impl Act {
    /// Reference definition, in f32.
    pub fn apply(self, x: f32) -> f32 {
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        match self {
            Act::None => x,
            Act::Tanh => x.tanh(),
            Act::Sigmoid => sigmoid(x),
            Act::ReluSq => {
                let r = x.max(0.0);
                r * r
            }
            Act::Decay => (-(-0.5f32).exp() * sigmoid(x)).exp(),
        }
    }
}

/// One matrix product over all rows of `x`: `out[r] (=|+=) act(W · x[r] + bias)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatJob {
    pub weight: WeightId,
    pub x: BufId,
    pub out: BufId,
    /// Vector of length `out` width added before `act`.
    pub bias: Option<WeightId>,
    pub act: Act,
    /// Add into `out` (residual connection) instead of overwriting it.
    pub accumulate: bool,
}

/// Which token-shift register of a layer's state an op reads and updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftKind {
    /// `att_x`: the time-mix input of the previous token.
    Att,
    /// `ffn_x`: the channel-mix input of the previous token.
    Ffn,
}

/// Buffers and weights of one [`Op::Wkv7`]: the RWKV-7 time-mix core of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Wkv7Args {
    pub layer: usize,
    pub r: BufId,
    /// The decay `w`, already in (0, 1).
    pub w: BufId,
    pub k: BufId,
    pub v: BufId,
    /// The in-context learning rate `a`, already sigmoided.
    pub a: BufId,
    /// The output gate.
    pub g: BufId,
    /// Layer 0 writes it, later layers read it.
    pub v_first: BufId,
    /// The value-residual mix (already sigmoided); `None` in layer 0.
    pub v_mix: Option<BufId>,
    pub k_k: WeightId,
    pub k_a: WeightId,
    pub r_k: WeightId,
    pub ln_x_w: WeightId,
    pub ln_x_b: WeightId,
    pub gn_eps: f32,
    pub out: BufId,
}

impl Wkv7Args {
    /// Every activation buffer the op reads or writes (`out` last).
    pub fn buffers(&self) -> Vec<BufId> {
        let mut ids = vec![self.r, self.w, self.k, self.v, self.a, self.g, self.v_first];
        ids.extend(self.v_mix);
        ids.push(self.out);
        ids
    }

    /// The per-channel vectors, each of the layer's width.
    pub fn vectors(&self) -> [WeightId; 5] {
        [self.k_k, self.k_a, self.r_k, self.ln_x_w, self.ln_x_b]
    }
}

/// The fixed set of operations. Each documents its exact math; `rwkv-cpu` is the reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `out[r] = table[token[r]]` (row of `table`, `[vocab, C]`, any dtype).
    Embed { table: WeightId, out: BufId },
    /// `out[r] = (x[r] − mean) / sqrt(var + eps) · w + b`, population variance over the row.
    LayerNorm {
        x: BufId,
        w: WeightId,
        b: WeightId,
        out: BufId,
        eps: f32,
    },
    /// Token shift and mixing. For each row, `prev` is the previous row of the same sequence, or
    /// for its first token the slot's `layer`/`kind` register; then for each `(mix, out)`:
    /// `out[r] = x[r] + (prev − x[r]) · mix`. Afterwards the register holds the sequence's last
    /// row of `x`.
    TokenShift {
        x: BufId,
        layer: usize,
        kind: ShiftKind,
        mixes: Vec<(WeightId, BufId)>,
    },
    /// Independent matrix products, which a backend may run in one launch.
    MatMul { jobs: Vec<MatJob> },
    /// The RWKV-7 time-mix core for `layer` ([`Wkv7Args`]), all heads (see docs/rwkv-math.md), per row in token
    /// order within each sequence, state `S` of the slot updated in place:
    /// ```text
    /// if v_mix is Some:  v = v + (v_first − v) · v_mix      (v_mix already sigmoided)
    /// else:              v_first = v                        (layer 0 writes v_first)
    /// kk = normalize_per_head(k · k_k)                       (L2, min norm 1e-12)
    /// k  = k · (1 + (a − 1) · k_a)
    /// S  = S · diag(w) + (S · (−kk)) (kk · a)ᵀ + v kᵀ        (w = decay, already in (0,1))
    /// y  = S · r
    /// y  = GroupNorm_per_head(y, eps = gn_eps) · ln_x_w + ln_x_b
    /// y += (Σ_q r_q k_q r_k[h,q]) · v   (per head)
    /// out = y · g
    /// ```
    Wkv7(Wkv7Args),
    /// `out[s] = x[s · n_tok + n_tok − 1]`: the last token's row of each sequence
    /// (`out` is a [`BufferDecl::last_only`] buffer).
    LastRows { x: BufId, out: BufId },
}

/// One step of the network, recorded once per [`StepShape`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub shape: StepShape,
    pub buffers: Vec<BufferDecl>,
    /// Canonical tensor names, in [`WeightId`] order; the same list for every plan of a model.
    pub weights: Vec<String>,
    pub ops: Vec<Op>,
    /// Where each layer's state lies in a slot; `alloc_states` is called with its `len()`.
    pub state: StateLayout,
    /// The buffer holding the logits at the end of the step (`[n_seq or rows, vocab]`).
    pub logits: BufId,
}

impl Plan {
    /// Rows of buffer `b` in this plan.
    pub fn rows_of(&self, b: BufId) -> usize {
        if self.buffers[b].last_only {
            self.shape.n_seq
        } else {
            self.shape.rows()
        }
    }
}

/// Handle to a plan compiled by one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanId(pub usize);

/// What [`Backend::execute`] copies back to the host after a step.
#[derive(Debug)]
pub enum StepOutput<'a> {
    /// Nothing (prefill of a prompt whose logits are not needed).
    None,
    /// The plan's logits buffer, `rows_of(logits) · vocab` values.
    Logits(&'a mut [f32]),
    /// The index of the largest logit of each row of the logits buffer (greedy decoding on the
    /// device; ties go to the lowest index).
    Argmax(&'a mut [u32]),
}

/// What a backend reports about itself and its device (for `rwkv doctor` and bench tables).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeviceInfo {
    /// Backend name: "cpu", "cuda", "webgpu".
    pub backend: String,
    /// Device name, e.g. "NVIDIA H100 80GB HBM3" or "llvmpipe (LLVM 16)".
    pub device: String,
    /// Free-form properties (memory, compute capability, features).
    pub properties: Vec<(String, String)>,
}

/// The contract. Object safe: the router hands out `Box<dyn Backend>`.
pub trait Backend: Send {
    fn info(&self) -> DeviceInfo;

    /// Uploads weight `id` (called once per id, ids `0..n` in order, before any `compile`).
    /// `name` is the canonical name. Fails when the device lacks memory or the dtype is not
    /// supported by this backend.
    fn upload_weight(&mut self, id: usize, name: &str, tensor: &Tensor) -> Result<()>;

    /// Allocates `n_slots` zeroed states of `state_len` f32 each (at least the plans'
    /// `state.len()`; values past a plan's layout are kept and never touched), dropping earlier
    /// ones. `OutOfMemory` when they do not fit.
    fn alloc_states(&mut self, n_slots: usize, state_len: usize) -> Result<()>;

    /// Compiles a plan (allocates its buffers, builds graphs/pipelines). `InvalidArgument` for a
    /// plan that [`Plan::validate`] refuses or whose state layout is longer than the states,
    /// `Unsupported` for an op or shape the backend cannot run, `OutOfMemory`.
    fn compile(&mut self, plan: &Plan) -> Result<PlanId>;

    /// Runs one step: `tokens` has `shape.rows()` ids (sequence-major), `slots` has `n_seq` distinct
    /// state slots in `0..n_slots`. Token ids are checked against the vocabulary. `out` says what
    /// comes back to the host. `InvalidArgument` for arguments [`Plan::check_step`] refuses,
    /// `DeviceLost` / `Failed` for the device.
    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()>;

    /// Copies the state of `slot` out (`state_len` values).
    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> Result<()>;

    /// Overwrites the state of `slot`.
    fn write_state(&mut self, slot: usize, values: &[f32]) -> Result<()>;
}
