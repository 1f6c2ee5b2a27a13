//! Kernel thresholds and choices: which kernel (and which of its variants) runs an op of a
//! given shape on this device. Pure functions of the device's limits and capabilities.

use crate::gpu::Gpu;
use crate::kernels::GemmTile;
use crate::weights::PackedKind;

use super::layout::StateAt;
use super::record::PARAM_WORDS;

/// Activation rows per matrix-product workgroup (TILE in matmul.wgsl).
pub(super) const MATMUL_TILE: usize = 4;
/// Rows of at most this many 16-value units use the one-invocation-per-row kernel: with
/// fewer units than a workgroup has invocations, the reduction kernel would leave most idle.
pub(super) const NARROW_UNITS: usize = 8;
/// Activation rows from which matrix products use the tiled kernel (matmul_tiled.wgsl): each
/// weight is then decoded once per 16 or 64 rows instead of once per MATMUL_TILE rows.
pub(super) const TILED_MIN_ROWS: usize = 8;
/// From this many rows the tiled kernel's tile has 64 activation rows, below it 16.
pub(super) const TILED_WIDE_ROWS: usize = 32;
/// Output rows of one Q4_K matrix-vector workgroup (ROWS in matvec_q4k.wgsl).
pub(super) const MATVEC_ROWS: usize = 4;
/// Invocations of a workgroup of matvec_q4k_sg.wgsl.
pub(super) const MATVEC_SG_WG: u32 = 256;
/// Output columns (rows of W) of one tiled workgroup.
pub(super) const TILED_COLS: usize = 64;

/// Rows per invocation (TM) of the tiled kernel for `rows` activation rows, or `None` for the
/// per-row kernels (few rows, or a device below WebGPU's default workgroup limits).
pub(super) fn tiled_rows_per_invocation(gpu: &Gpu, rows: usize) -> Option<u32> {
    let l = &gpu.limits;
    if rows < TILED_MIN_ROWS || l.max_compute_invocations_per_workgroup < 256 {
        return None;
    }
    // Workgroup memory: 32x64 f32 weights + 32x16·TM f32 activations.
    let bytes = |tm: u32| 32 * 64 * 4 + 32 * 16 * tm * 4;
    [4u32, 1]
        .into_iter()
        .filter(|&tm| tm == 1 || rows >= TILED_WIDE_ROWS)
        .find(|&tm| bytes(tm) <= l.max_compute_workgroup_storage_size)
}

/// Activation rows from which matrix products use the cooperative-matrix kernel when the device
/// has it (matmul_coop.wgsl, 64-row tiles): below, most of a tile would multiply zeros.
pub(super) const COOP_MIN_ROWS: usize = 16;
/// Workgroup memory of matmul_coop.wgsl: two pairs (double buffering) of f16 tiles, 64x40
/// activations and 32x72 weights, and a 32x68 f32 staging tile.
pub(crate) const COOP_WORKGROUP_BYTES: u32 = 2 * (64 * 40 + 32 * 72) * 2 + 32 * 68 * 4;

/// Whether a product of `rows` activation rows of `cols` values runs on cooperative matrices
/// (the kernel reads activations as vec4: rows must be whole vec4, as arena offsets are).
pub(super) fn use_coop(gpu: &Gpu, rows: usize, cols: usize) -> bool {
    let l = &gpu.limits;
    gpu.coop
        && rows >= COOP_MIN_ROWS
        && cols.is_multiple_of(4)
        && l.max_compute_invocations_per_workgroup >= 128
        && l.max_compute_workgroup_size_x >= 128
        && l.max_compute_workgroup_storage_size >= COOP_WORKGROUP_BYTES
}

/// Activation rows from which products run on f16 scratch copies of their operands
/// (to_f16.wgsl, dequant_f16.wgsl, gemm_f16.wgsl) when the device has cooperative matrices:
/// converting the weights costs one extra write and read of 2 bytes per weight, repaid once a
/// tile of rows reuses them (below, matmul_coop.wgsl decodes weights inside its tiles).
pub(super) const GEMM_MIN_ROWS: usize = 32;
/// Largest transposed f16 weight slice (bytes): a 7.2B FFN matrix (4096 x 16384) is 128 MiB;
/// larger matrices (the head, if all logits are wanted) are converted and multiplied in
/// slices of rows.
pub(super) const W16_CAP_BYTES: u64 = 128 << 20;
/// Fewer workgroups than this in a product split its K range (LoRA down-projections: 64..160
/// output columns over 2048..4096 inputs would otherwise run on a handful of SMs).
pub(super) const GEMM_MIN_TILES: usize = 128;
/// Smallest K range of one split (8 steps of 32).
pub(super) const GEMM_MIN_SPLIT_K: usize = 256;

/// Tile of gemm_f16.wgsl this device can run (the larger where it fits), if it has
/// cooperative matrices and [`crate::WgpuOptions::f16_gemm`] is on.
pub(super) fn gemm_tile(gpu: &Gpu) -> Option<GemmTile> {
    let l = &gpu.limits;
    if !gpu.coop || !gpu.f16_gemm {
        return None;
    }
    [GemmTile::LARGE, GemmTile::SMALL].into_iter().find(|t| {
        l.max_compute_invocations_per_workgroup >= t.invocations()
            && l.max_compute_workgroup_size_x >= t.invocations()
            && l.max_compute_workgroup_storage_size >= t.workgroup_bytes()
    })
}

/// Invocations of one float matrix-vector workgroup (WG in matvec_float.wgsl).
pub(super) const MATVEC_FLOAT_WG: usize = 256;

/// Invocations per output row of the float matrix-vector kernel (matvec_float.wgsl) for rows of
/// `cols` values, or `None` where it does not apply: other dtypes, columns not a multiple of 4
/// (its vec4 activation loads), or a device below WebGPU's default workgroup size.
/// One 16-byte weight word per invocation where the row allows (a power of two covering the
/// row's words, at most the workgroup): LoRA up rows of 64..480 f16 values get 8..64 lanes.
pub(super) fn matvec_float_lanes(gpu: &Gpu, kind: PackedKind, cols: usize) -> Option<usize> {
    let values_per_word = match kind {
        PackedKind::F32 => 4,
        PackedKind::F16 | PackedKind::BF16 => 8,
        _ => return None,
    };
    if !cols.is_multiple_of(4)
        || (gpu.limits.max_compute_invocations_per_workgroup as usize) < MATVEC_FLOAT_WG
        || (gpu.limits.max_compute_workgroup_size_x as usize) < MATVEC_FLOAT_WG
    {
        return None;
    }
    Some(
        cols.div_ceil(values_per_word)
            .next_power_of_two()
            .min(MATVEC_FLOAT_WG),
    )
}

/// Most mixes of one ln_shift.wgsl dispatch (two parameter words each from word 12).
pub(super) const LN_SHIFT_MAX_MIXES: usize = (PARAM_WORDS - 12) / 2;
/// Invocations of an ln_shift.wgsl workgroup (one row each).
pub(super) const LN_SHIFT_WG: usize = 256;
/// Most vec4 values one ln_shift.wgsl invocation keeps in registers (rows up to 16384 wide).
pub(super) const LN_SHIFT_MAX_VEC4S: usize = 16;

/// vec4 values per invocation of the one-row-per-workgroup LayerNorm / token-shift kernel
/// (ln_shift.wgsl) for rows of `width`, or `None` where it does not apply (widths not a multiple
/// of 4 or above 16384, a device below 256 invocations). With a token shift, the register
/// must also be whole vec4s ([`StateAt::vec4`]).
pub(super) fn ln_shift_vec4s(gpu: &Gpu, width: usize) -> Option<u32> {
    let vec4s = width.div_ceil(4 * LN_SHIFT_WG);
    (width.is_multiple_of(4)
        && vec4s <= LN_SHIFT_MAX_VEC4S
        && gpu.limits.max_compute_invocations_per_workgroup as usize >= LN_SHIFT_WG
        && gpu.limits.max_compute_workgroup_size_x as usize >= LN_SHIFT_WG)
        .then_some(vec4s.max(1) as u32)
}

/// Invocations per state row of the split WKV kernel (wkv7_split.wgsl) for head size `n`: 4
/// where the workgroup (4·N) fits WebGPU's default 256 (N ≤ 64), else 2 or 1; `None` (the
/// one-invocation-per-row kernel) where its vec4 state access does not fit: N, the state
/// stride or the layer's S offset not multiples of 4, or N columns not split in vec4s.
pub(super) fn wkv_lanes(gpu: &Gpu, n: usize, s: StateAt) -> Option<u32> {
    if !n.is_multiple_of(4) || !s.vec4() {
        return None;
    }
    let l = &gpu.limits;
    let max = (l.max_compute_invocations_per_workgroup).min(l.max_compute_workgroup_size_x);
    [4usize, 2, 1]
        .into_iter()
        .find(|&j| n.is_multiple_of(4 * j) && n * j <= 256 && n * j <= max as usize)
        .map(|j| j as u32)
}

/// Largest head size of the prefill WKV scan (wkv7_scan.wgsl): an invocation of the
/// one-lane variant keeps a state row (N/4 vec4) and the next chunk's loads (6·T/4 vec4) in
/// registers; at N = 64, T = 8 that is 112 registers, more would spill on some GPUs. Larger
/// heads keep the token-loop kernels.
pub(super) const WKV_SCAN_MAX_HEAD: usize = 64;

/// Workgroups of the scan (heads x sequences) up to which it uses 2 lanes per state row where
/// subgroups allow: with few workgroups each row's chain of ~5·N dependent-ish instructions
/// per token is the step's critical path, and lanes split it (measured on the H100: 2 lanes
/// beat 1 and 4 at batch 1, see `wkv_scan_geometry`). With many workgroups the GPU is full
/// either way and 1 lane saves the shuffles.
pub(super) const WKV_SCAN_LANES_MAX_GROUPS: usize = 256;

/// (tokens per chunk, lanes per state row) of the prefill WKV scan for head size `n` and
/// `groups` workgroups, or `None` where it does not apply (see [`WKV_SCAN_MAX_HEAD`]; vec4
/// state and arena access: N, the state stride and the layer's S offset multiples of 4; a
/// workgroup of N·lanes invocations). A chunk holds six vectors per token in workgroup memory
/// (6·T·N floats: 12 KiB at N = 64, T = 8, under WebGPU's default 16 KiB); T a multiple of 4.
/// Lanes > 1 need N a multiple of 4·lanes and, with subgroups, subgroups of at least `lanes`
/// that divide the workgroup (the lanes of a row are consecutive lanes of one subgroup).
pub(super) fn wkv_scan_geometry(
    gpu: &Gpu,
    n: usize,
    s: StateAt,
    groups: usize,
) -> Option<(u32, u32)> {
    let l = &gpu.limits;
    let max_wg = l
        .max_compute_invocations_per_workgroup
        .min(l.max_compute_workgroup_size_x) as usize;
    if !n.is_multiple_of(4) || n > WKV_SCAN_MAX_HEAD || !s.vec4() || n > max_wg {
        return None;
    }
    let fits = |lanes: usize| {
        let wg = n * lanes;
        let (min_sg, max_sg) = (
            gpu.info.subgroup_min_size as usize,
            gpu.info.subgroup_max_size as usize,
        );
        lanes == 1
            || (n.is_multiple_of(4 * lanes)
                && wg <= max_wg
                && (!gpu.subgroups
                    || (min_sg >= lanes && max_sg >= min_sg && wg.is_multiple_of(max_sg))))
    };
    let lanes = match gpu.wkv_scan_lanes {
        Some(j @ (1 | 2 | 4)) if fits(j as usize) => j as usize,
        // H100 pp512 (Wkv7 ms per step, J = 1 / 2 / 4): 1.5B 6.65 / 5.63 / 7.14, 7.2B 9.54 /
        // 8.67 / 10.38: two lanes.
        _ if gpu.subgroups && groups <= WKV_SCAN_LANES_MAX_GROUPS && fits(2) => 2,
        _ => 1,
    };
    [8u32, 4]
        .into_iter()
        .find(|&t| {
            wkv_scan_workgroup_bytes(n as u32, t, lanes as u32)
                <= l.max_compute_workgroup_storage_size
        })
        .map(|t| (t, lanes as u32))
}

/// Workgroup memory of wkv7_scan.wgsl: six arrays of `chunk` tokens x N floats, and the lane
/// sums of its variant without subgroups (the fallback of a device that rejects subgroups).
pub(crate) fn wkv_scan_workgroup_bytes(head_size: u32, chunk: u32, lanes: u32) -> u32 {
    6 * chunk * head_size * 4 + if lanes > 1 { 4 * head_size * lanes } else { 0 }
}

/// Largest head size WKV supports: one invocation per channel of a head.
pub(super) const MAX_HEAD_SIZE: usize = 256;
