//! The zero-skipping batch-1 product (kernels/sparse.cu): which products take it, the column
//! layout of their matrices (built on the device at the first batch-1 plan) and its grid.

use std::collections::HashMap;

use rwkv_core::backend::{Act, MatJob, Op, Plan, WeightId};
use rwkv_core::Result;

use crate::gpu::{ArgList, DevBuf, Launch};
use crate::kernels::Kernel;
use crate::repack::GpuDType;
use crate::{i32_of, CudaBackend};

/// A Q4_K matrix rearranged by input column for the zero-skipping batch-1 product (sparse.cu):
/// quants `[cols][rows/8]` u32 words, sub-block scale/min `[cols/32][rows]` u16, block d/dmin
/// `[cols/256][rows]` u32. Built at the first batch-1 plan that can use it; the row layout stays
/// for batches and prefill.
pub(crate) struct SparseCols {
    pub nib: DevBuf,
    pub sc: DevBuf,
    pub dd: DevBuf,
    /// Partial sums of the kernel's column blocks, `[blocks][rows]` (enough for one group per
    /// warp), and per 256-row chunk the count of blocks done (zero between steps).
    pub scratch: DevBuf,
    pub counters: DevBuf,
}

/// Column layouts by weight id.
pub(crate) type SparseLayouts = HashMap<WeightId, SparseCols>;

/// Warps per block of sparse.cu (`SP_WARPS`).
pub(crate) const SPARSE_WARPS: usize = 8;

/// Whether a MatMul job takes the zero-skipping product: batch 1, Q4_K, no bias or activation,
/// and an input produced by a relu² product (the channel mix's value matrix), whose zeros are
/// what it skips. The result does not depend on this choice beyond rounding.
pub(crate) fn sparse_eligible(
    plan: &Plan,
    j: &MatJob,
    dtype: GpuDType,
    in_dim: usize,
    out_dim: usize,
) -> bool {
    dtype == GpuDType::Q4K
        && in_dim % 256 == 0
        && out_dim % 8 == 0
        && j.act == Act::None
        && j.bias.is_none()
        && plan.rows_of(j.x) == 1
        && plan.ops.iter().any(|op| {
            matches!(op, Op::MatMul { jobs } if jobs.iter().any(|p| p.out == j.x && p.act == Act::ReluSq))
        })
}

/// sparse.cu's grid: (column blocks, 256-row chunks) for `gpw` groups per warp.
pub(crate) fn sparse_grid(in_dim: usize, out_dim: usize, gpw: usize) -> (usize, usize) {
    (
        (in_dim / 32).div_ceil(SPARSE_WARPS * gpw.max(1)),
        out_dim.div_ceil(256),
    )
}

/// Groups of 32 columns per warp: the fewest that keep the launch within one wave of four
/// 256-thread blocks per SM. (Forced layouts measured slower than this choice on 7.2B: 1
/// group 305, 4 groups 290 against 314 tok/s for the 2 it picks; NOTES.md, v13.)
pub(crate) fn sparse_groups_per_warp(in_dim: usize, out_dim: usize, sm_count: usize) -> usize {
    let mut gpw = 1;
    while gpw < 64 && {
        let (x, y) = sparse_grid(in_dim, out_dim, gpw);
        x * y > 4 * sm_count.max(1)
    } {
        gpw *= 2;
    }
    gpw
}

impl CudaBackend {
    /// Builds the column layouts (sparse.cu) of the matrices whose batch-1 products in `plan`
    /// can skip zero inputs, unless `enabled` is off. Skipped, and the row layout used, when the
    /// device lacks the memory.
    pub(crate) fn ensure_sparse(&mut self, plan: &Plan, enabled: bool) -> Result<()> {
        if plan.shape.rows() != 1 || !enabled {
            return Ok(());
        }
        let mut built = false;
        for op in &plan.ops {
            let Op::MatMul { jobs } = op else { continue };
            for j in jobs {
                if self.sparse.contains_key(&j.weight) {
                    continue;
                }
                let w = self.weights.matrix(j.weight, "MatMul")?;
                let (out_dim, in_dim) = (w.rows, w.cols);
                if !sparse_eligible(plan, j, w.dtype, in_dim, out_dim) {
                    continue;
                }
                let nib = in_dim * out_dim / 2;
                let sc = in_dim / 32 * out_dim * 2;
                let dd = in_dim / 256 * out_dim * 4;
                // Keep a quarter of the free memory for plans and states.
                if (nib + sc + dd) * 4 / 3 > self.gpu.free_mem() {
                    continue;
                }
                let (max_blocks, chunks) = sparse_grid(in_dim, out_dim, 1);
                let cols = SparseCols {
                    nib: DevBuf::alloc(nib)?,
                    sc: DevBuf::alloc(sc)?,
                    dd: DevBuf::alloc(dd)?,
                    scratch: DevBuf::alloc(max_blocks * out_dim * 4)?,
                    counters: DevBuf::zeroed(chunks * 4)?,
                };
                let sms = self.gpu.sm_count.max(1) as usize;
                let l = Launch::new(
                    &mut self.gpu,
                    Kernel::Q4kTranspose,
                    ((nib / 4).div_ceil(256).min(sms * 16) as u32, 1, 1),
                    (256, 1, 1),
                    0,
                    ArgList::default()
                        .ptr(w.q)
                        .ptr(w.m)
                        .i32(i32_of(out_dim, "rows")?)
                        .i32(i32_of(in_dim, "cols")?)
                        .ptr(cols.nib.ptr)
                        .ptr(cols.sc.ptr)
                        .ptr(cols.dd.ptr)
                        .0,
                )?;
                self.gpu.launch(&l)?;
                self.sparse.insert(j.weight, cols);
                built = true;
            }
        }
        if built {
            self.gpu.sync()?;
        }
        Ok(())
    }
}
