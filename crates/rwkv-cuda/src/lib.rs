//! CUDA backend: RWKV-7 on NVIDIA GPUs.
//!
//! The driver and NVRTC are loaded at run time (cudarc, dynamic loading), so the crate builds with
//! no CUDA toolkit and [`CudaBackend::new`] fails with a one-line reason on machines without one.
//! Kernels (`kernels/*.cu`) are compiled by NVRTC for the device's own architecture and the CUBIN
//! is cached on disk (`~/.cache/rwkv-hybrid/cuda`). Each compiled plan becomes a fixed list of
//! launches over device buffers, captured once in a CUDA graph and replayed every step; token ids
//! and slots are copied into fixed device buffers before each replay.
//!
//! Fusions over the plan's ops: Embed+LayerNorm(ln0), LayerNorm+TokenShift, LastRows+LayerNorm;
//! each MatMul op is one launch (a job table), with bias, activation and residual accumulation in
//! the epilogue; Wkv7 is one kernel for decode (three for prefill).
//!
//! Modules: `probe` (devices, ahead-of-time compilation), `upload` (weights), `sparse` (the
//! zero-skipping column layouts), `lower` (ops to launches, one function per op), `execute`
//! (compiled plans, steps, states), `kernels` (the typed kernel table and argument blocks),
//! `gpu` (the driver), `repack` (device weight layouts), `options` ([`CudaOptions`]).

// `x % n == 0` rather than `is_multiple_of` (Rust 1.87): the workspace's MSRV is 1.85.
#![allow(clippy::manual_is_multiple_of)]

mod execute;
mod gpu;
mod kernels;
mod lower;
mod options;
mod probe;
mod repack;
mod sparse;
mod upload;

use rwkv_core::backend::{Backend, DeviceInfo, Plan, PlanId, StepOutput, WeightMeta};
use rwkv_core::model::Tensor;
use rwkv_core::{BackendErrorKind, Error, Result};

use execute::CompiledPlan;
use gpu::{err, DevBuf, Gpu};
use sparse::SparseLayouts;
use upload::Weights;

pub use options::{CudaOptions, MMA_MIN_ROWS};
pub use probe::{precompile_kernels, probe};

/// The CUDA backend. See the crate docs.
pub struct CudaBackend {
    weights: Weights,
    metas: Vec<WeightMeta>,
    /// Column layouts of the matrices whose batch-1 products skip zero inputs, by weight id.
    sparse: SparseLayouts,
    states: Option<DevBuf>,
    n_slots: usize,
    state_len: usize,
    state_gen: u64,
    plans: Vec<CompiledPlan>,
    /// Options of plans compiled from now on.
    options: CudaOptions,
    /// Last: dropped after every buffer, with the context still alive.
    gpu: Gpu,
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        self.plans.clear();
        self.sparse.clear();
        self.weights.0.clear();
        self.states = None;
    }
}

/// A request the backend refuses: bad ids, shapes that disagree, slots out of range.
pub(crate) fn invalid(what: impl Into<String>) -> Error {
    Error::backend_kind("cuda", BackendErrorKind::InvalidArgument, what)
}

/// Something valid that the kernels do not cover (head size, row width, tensor rank).
pub(crate) fn unsupported(what: impl Into<String>) -> Error {
    Error::backend_kind("cuda", BackendErrorKind::Unsupported, what)
}

/// `v` as a kernel `int`.
pub(crate) fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| unsupported(format!("{what} {v} too large for the kernels")))
}

impl CudaBackend {
    /// Opens CUDA device `device_index` with `options`. Fails with `Error::Backend` saying why:
    /// no driver, no NVRTC, no such device, too little memory, kernels failed to compile.
    pub fn new(device_index: usize, options: CudaOptions) -> Result<CudaBackend> {
        let gpu = std::panic::catch_unwind(|| Gpu::open(device_index)).unwrap_or_else(|_| {
            Err(err(
                "the CUDA driver library misbehaved (panic while opening the device)",
            ))
        })?;
        Ok(CudaBackend {
            weights: Weights::default(),
            metas: Vec::new(),
            sparse: SparseLayouts::new(),
            states: None,
            n_slots: 0,
            state_len: 0,
            state_gen: 0,
            plans: Vec::new(),
            options,
            gpu,
        })
    }

    /// The options plans compiled from now on get.
    pub fn options(&self) -> CudaOptions {
        self.options
    }

    /// Changes the options of plans compiled from now on (plans compiled before keep theirs):
    /// A/B measurements in one process over the same uploaded weights.
    pub fn set_options(&mut self, options: CudaOptions) {
        self.options = options;
    }

    /// Times each launch of a compiled plan on its own (after one normal step with these inputs):
    /// (kernel and job shapes, milliseconds). For benchmarks; states of `slots` advance.
    pub fn profile_step(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<(String, f32)>> {
        self.profile_plan(plan, tokens, slots)
    }

    /// How the kernels were obtained (compiled now / loaded from the disk cache).
    pub fn kernel_cache(&self) -> &str {
        &self.gpu.kernel_cache
    }
}

impl Backend for CudaBackend {
    fn info(&self) -> DeviceInfo {
        probe::describe(&self.gpu, &self.options)
    }

    fn upload_weight(&mut self, id: usize, name: &str, tensor: &Tensor) -> Result<()> {
        self.upload(id, name, tensor)
    }

    fn alloc_states(&mut self, n_slots: usize, state_len: usize) -> Result<()> {
        self.allocate_states(n_slots, state_len)
    }

    fn compile(&mut self, plan: &Plan) -> Result<PlanId> {
        self.compile_plan(plan)
    }

    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()> {
        self.execute_plan(plan, tokens, slots, out)
    }

    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> Result<()> {
        self.read_slot(slot, out)
    }

    fn write_state(&mut self, slot: usize, values: &[f32]) -> Result<()> {
        self.write_slot(slot, values)
    }
}
