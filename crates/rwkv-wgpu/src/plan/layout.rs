//! Where a step's data lives on the device: the activation arena (buffer offsets, argmax rows,
//! the prefill WKV's scratch arrays) and the working state chunks.
//!
//! All activation buffers of a plan live in one f32 "arena" buffer at fixed offsets, so every
//! kernel needs one activation binding (WebGPU guarantees only 8 storage bindings per stage; WKV
//! alone reads 8 activations and 5 vectors). The states of the step's sequences are copied from
//! their slot buffers into working state chunks at the start of the command buffer and back at
//! its end, so the bind groups never change.

use rwkv_core::backend::{BufId, Op, Plan, ShiftKind, StatePart};
use rwkv_core::Result;

use crate::gpu::{backend_err, out_of_memory, Gpu};

use super::record::u32_of;

/// Arrays [rows, C] the prefill WKV's first pass writes for the scan: kk, kk·a,
/// k·(1 + (a − 1)·k_a) and v after the v_first mix.
const WKV_SCRATCH: usize = 4;

/// Where the prefill WKV's scratch arrays are in the arena: the first at `offset`, each
/// `stride` values after the previous.
#[derive(Clone, Copy)]
pub(super) struct WkvScratch {
    pub offset: usize,
    pub stride: usize,
}

/// Offsets (in f32 values) of a plan's buffers in the arena.
pub(super) struct ArenaLayout {
    /// Start of each plan buffer.
    pub offsets: Vec<usize>,
    /// Start of the argmax results (one u32 per logit row).
    pub argmax_off: usize,
    /// Values in the arena.
    pub len: usize,
    /// Scratch rows of the prefill WKV kernels, if the plan has them.
    pub wkv_scratch: Option<WkvScratch>,
}

impl ArenaLayout {
    /// Buffers one after another, each at a 16-byte boundary, then the argmax rows, then (for
    /// prefill plans, where they fit the binding limit) the WKV scratch arrays.
    pub fn new(gpu: &Gpu, plan: &Plan) -> Result<ArenaLayout> {
        let bad = |what: &str| out_of_memory(format!("plan rejected: {what}"));
        let rows = plan.shape.rows();
        let n_buf = plan.buffers.len();
        let mut offsets = Vec::with_capacity(n_buf);
        let mut end = 0usize;
        for b in 0..n_buf {
            offsets.push(end);
            let len = plan
                .rows_of(b)
                .checked_mul(plan.buffers[b].width)
                .ok_or_else(|| bad("buffer too large"))?;
            end = end
                .checked_add(len.div_ceil(4) * 4)
                .ok_or_else(|| bad("activations too large"))?;
        }
        let argmax_off = end;
        let mut len = end + plan.rows_of(plan.logits).div_ceil(4) * 4;
        let bytes = (len as u64) * 4;
        if bytes > gpu.max_binding {
            return Err(out_of_memory(format!(
                "{}: activations of shape {:?} need {bytes} bytes, the device binds at most {}",
                gpu.info.name, plan.shape, gpu.max_binding
            )));
        }
        // Scratch rows of the prefill WKV (wkv7_prep.wgsl -> wkv7_scan.wgsl): WKV_SCRATCH
        // arrays [rows, C] after everything else, shared by every Wkv7 op (they run in order).
        // Only where they fit the binding too; otherwise WKV keeps the token-loop kernels.
        let wkv_width = plan
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Wkv7(a) => Some(plan.buffers[a.r].width),
                _ => None,
            })
            .max();
        let mut wkv_scratch = None;
        if let (Some(c), true) = (wkv_width, plan.shape.n_tok >= 2) {
            let stride = rows.checked_mul(c).map(|n| n.div_ceil(4) * 4);
            let with = stride
                .and_then(|st| st.checked_mul(WKV_SCRATCH))
                .and_then(|n| n.checked_add(len));
            if let (Some(stride), Some(with)) = (stride, with) {
                if (with as u64) * 4 <= gpu.max_binding {
                    wkv_scratch = Some(WkvScratch {
                        offset: len,
                        stride,
                    });
                    len = with;
                }
            }
        }
        Ok(ArenaLayout {
            offsets,
            argmax_off,
            len,
            wkv_scratch,
        })
    }

    /// Offset of buffer `b`, as a kernel parameter.
    pub fn off(&self, b: BufId) -> Result<u32> {
        u32_of(self.offsets[b], "arena offset")
    }
}

/// Part of the step's working state: consecutive layers `[n_seq, len]`, holding values
/// `first..first + len` of each sequence's slot state. A single `[n_seq, state_len]` buffer
/// would exceed WebGPU's per-buffer and per-binding limits for large models and batches (7.2B:
/// 34.6 MB per sequence; browsers bind 128 MiB by default), so layers are grouped as many per
/// chunk as fit the limit (all of them when they do: one copy per sequence and direction).
pub(super) struct StateChunk {
    pub buffer: wgpu::Buffer,
    pub first: usize,
    pub len: usize,
}

/// Where a kernel finds a piece of a layer's state: working chunk, values per sequence in that
/// chunk (the stride), offset within a sequence's part.
#[derive(Clone, Copy)]
pub(super) struct StateAt {
    pub chunk: usize,
    pub stride: usize,
    pub offset: usize,
}

impl StateAt {
    /// Whether the piece can be read as vec4s (stride and offset whole vec4s).
    pub fn vec4(self) -> bool {
        self.stride.is_multiple_of(4) && self.offset.is_multiple_of(4)
    }
}

/// How the states of a step's sequences are split into working chunks.
pub(super) struct WorkState<'a> {
    plan: &'a Plan,
    n_layer: usize,
    layer_state: usize,
    layers_per_chunk: usize,
    /// (first value, values) of each chunk within a sequence's state.
    pub chunk_spans: Vec<(usize, usize)>,
}

impl<'a> WorkState<'a> {
    /// As many consecutive layers per chunk as fit one binding for the step's sequences
    /// (values past n_layer · layer_state, if any, are never touched by a kernel and stay in
    /// the slots). `state_len`: values of the allocated slot states.
    pub fn new(gpu: &Gpu, plan: &'a Plan, state_len: usize) -> Result<WorkState<'a>> {
        // State geometry from the plan's layout (checked against `state_len` at compile).
        let n_layer = plan.state.n_layer.max(1);
        if plan.state.len() > state_len {
            return Err(backend_err(format!(
                "the plan's state has {} values, the allocated states {state_len}",
                plan.state.len()
            )));
        }
        let layer_state = plan.state.layer_len().max(1);
        let layer_bytes = (plan.shape.n_seq as u64) * (layer_state as u64) * 4;
        if layer_bytes > gpu.max_binding {
            return Err(out_of_memory(format!(
                "{}: the state of one layer for {} sequences needs {layer_bytes} bytes, the \
                 device binds at most {} per buffer; run fewer sequences per step",
                gpu.info.name, plan.shape.n_seq, gpu.max_binding
            )));
        }
        let layers_per_chunk = match layer_bytes {
            0 => n_layer,
            b => ((gpu.max_binding / b) as usize).clamp(1, n_layer),
        };
        let chunk_spans: Vec<(usize, usize)> = (0..n_layer)
            .step_by(layers_per_chunk)
            .map(|l| {
                let layers = layers_per_chunk.min(n_layer - l);
                (l * layer_state, layers * layer_state)
            })
            .collect();
        Ok(WorkState {
            plan,
            n_layer,
            layer_state,
            layers_per_chunk,
            chunk_spans,
        })
    }

    /// `len` values at `offset` within the state of `layer`, in the working chunks.
    pub fn at(&self, layer: usize, offset: usize, len: usize, what: &str) -> Result<StateAt> {
        if layer >= self.n_layer || offset + len > self.layer_state {
            return Err(backend_err(format!(
                "{what} of layer {layer} is outside the state"
            )));
        }
        let chunk = layer / self.layers_per_chunk;
        let (first, stride) = self.chunk_spans[chunk];
        let at = StateAt {
            chunk,
            stride,
            offset: layer * self.layer_state + offset - first,
        };
        u32_of(at.stride, "state stride")?;
        u32_of(at.offset, "state offset")?;
        Ok(at)
    }

    /// The token-shift register of `layer` for rows of `width`.
    pub fn shift_register(&self, layer: usize, kind: ShiftKind, width: usize) -> Result<StateAt> {
        let part = match kind {
            ShiftKind::Att => StatePart::AttShift,
            ShiftKind::Ffn => StatePart::FfnShift,
        };
        let offset = self
            .plan
            .state
            .part_offset(part)
            .ok_or_else(|| backend_err(format!("the plan's state has no {part:?}")))?;
        self.at(layer, offset, width, "token shift")
    }

    /// The WKV matrix of `layer` for rows of `width` channels and heads of `head_size`.
    pub fn wkv_matrix(&self, layer: usize, width: usize, head_size: usize) -> Result<StateAt> {
        let matrix_at = self
            .plan
            .state
            .part_offset(StatePart::WkvMatrix)
            .ok_or_else(|| backend_err("the plan's state has no WKV matrix"))?;
        self.at(layer, matrix_at, width * head_size, "wkv")
    }
}
