//! What lowering produces: one record per dispatch (kernel, parameter block, bindings, grid),
//! turned into pipelines and bind groups by `build`.

use rwkv_core::backend::Act;
use rwkv_core::Result;

use crate::gpu::{backend_err, unsupported};
use crate::kernels::Kernel;

/// Bytes between the parameter blocks of two dispatches (the largest uniform offset alignment
/// WebGPU allows a device to ask for).
pub(super) const PARAM_STRIDE: u64 = 256;
pub(super) const PARAM_WORDS: usize = 64;
pub(super) const PARAM_BYTES: u64 = (PARAM_WORDS * 4) as u64;
/// "No such buffer / vector" in a parameter word.
pub(super) const NONE: u32 = u32::MAX;

/// A buffer bound to a dispatch (binding j + 1 for the j-th entry; binding 0 is the parameters).
#[derive(Clone)]
pub(super) enum Bind {
    Arena,
    Vecs,
    /// Working state chunk (index into the step's chunks).
    State(usize),
    Tokens,
    Weight(wgpu::Buffer),
    /// f16 scratch copies of a product's activations / weights, and split partial sums.
    X16,
    W16,
    Part,
}

/// One dispatch of a step, before it has a pipeline and a bind group.
pub(super) struct Rec {
    /// Index of the op in the plan (the argmax: `ops.len()`).
    pub op: usize,
    pub kernel: Kernel,
    pub params: [u32; PARAM_WORDS],
    pub binds: Vec<Bind>,
    pub groups: [u32; 3],
}

/// A parameter block with `values` at its start, zeros after.
pub(super) fn params(values: &[u32]) -> [u32; PARAM_WORDS] {
    let mut p = [0u32; PARAM_WORDS];
    p[..values.len()].copy_from_slice(values);
    p
}

pub(super) fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        backend_err(format!(
            "{what} ({v}) does not fit the kernels' 32-bit indices"
        ))
    })
}

/// The epilogue activation's code in the matrix kernels' parameters.
pub(super) fn act_code(a: Act) -> u32 {
    match a {
        Act::None => 0,
        Act::Tanh => 1,
        Act::Sigmoid => 2,
        Act::ReluSq => 3,
        Act::Decay => 4,
    }
}

/// The device's limit on workgroups per grid dimension.
#[derive(Clone, Copy)]
pub(super) struct Grid {
    pub max_dim: u64,
}

impl Grid {
    /// `total` workgroups as an (x, y) grid within the device's per-dimension limit.
    pub fn fit(self, total: u64) -> Result<(u32, u32)> {
        let x = total.clamp(1, self.max_dim);
        let y = total.div_ceil(x).max(1);
        if y > self.max_dim {
            return Err(unsupported(format!(
                "{total} workgroups exceed the device's grid"
            )));
        }
        Ok((x as u32, y as u32))
    }
}
