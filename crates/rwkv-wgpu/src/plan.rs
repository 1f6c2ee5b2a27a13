//! Compiled plans: the activation arena layout, and the pre-built dispatches of one step.
//!
//! All activation buffers of a plan live in one f32 "arena" buffer at fixed offsets, so every
//! kernel needs one activation binding (WebGPU guarantees only 8 storage bindings per stage; WKV
//! alone reads 8 activations and 5 vectors). The states of the step's sequences are copied from
//! their slot buffers into working state buffers at the start of the command buffer and back
//! at its end, so the bind groups never change. The working state is split by layers
//! ([`StateChunk`]) so that no buffer exceeds the device's binding limit.
//! Parameters of every dispatch are fixed at build time (one uniform slice each); only the token
//! ids change per step.

use rwkv_core::backend::{Act, BufId, Op, Plan, PlanFacts, ShiftKind, StatePart, WeightId};
use rwkv_core::Result;

use crate::gpu::{backend_err, env_off, Gpu};
use crate::kernels::{GemmTile, Kernel, Kernels};
use crate::weights::{DeviceMatrix, DeviceWeight, PackedKind, UNIT};

/// Bytes between the parameter blocks of two dispatches (the largest uniform offset alignment
/// WebGPU allows a device to ask for).
const PARAM_STRIDE: u64 = 256;
const PARAM_WORDS: usize = 64;
const PARAM_BYTES: u64 = (PARAM_WORDS * 4) as u64;
const NONE: u32 = u32::MAX;
/// Activation rows per matrix-product workgroup (TILE in matmul.wgsl).
const MATMUL_TILE: usize = 4;
/// Rows of at most this many 16-value units use the one-invocation-per-row kernel: with
/// fewer units than a workgroup has invocations, the reduction kernel would leave most idle.
const NARROW_UNITS: usize = 8;
/// Activation rows from which matrix products use the tiled kernel (matmul_tiled.wgsl): each
/// weight is then decoded once per 16 or 64 rows instead of once per MATMUL_TILE rows.
const TILED_MIN_ROWS: usize = 8;
/// From this many rows the tiled kernel's tile has 64 activation rows, below it 16.
const TILED_WIDE_ROWS: usize = 32;
/// Output rows of one Q4_K matrix-vector workgroup (ROWS in matvec_q4k.wgsl).
const MATVEC_ROWS: usize = 4;
/// Invocations of a workgroup of matvec_q4k_sg.wgsl.
const MATVEC_SG_WG: u32 = 256;
/// Output columns (rows of W) of one tiled workgroup.
const TILED_COLS: usize = 64;

/// Rows per invocation (TM) of the tiled kernel for `rows` activation rows, or `None` for the
/// per-row kernels (few rows, or a device below WebGPU's default workgroup limits).
fn tiled_rows_per_invocation(gpu: &Gpu, rows: usize) -> Option<u32> {
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
const COOP_MIN_ROWS: usize = 16;
/// Workgroup memory of matmul_coop.wgsl: two pairs (double buffering) of f16 tiles, 64x40
/// activations and 32x72 weights, and a 32x68 f32 staging tile.
pub(crate) const COOP_WORKGROUP_BYTES: u32 = 2 * (64 * 40 + 32 * 72) * 2 + 32 * 68 * 4;

/// Whether a product of `rows` activation rows of `cols` values runs on cooperative matrices
/// (the kernel reads activations as vec4: rows must be whole vec4, as arena offsets are).
fn use_coop(gpu: &Gpu, rows: usize, cols: usize) -> bool {
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
const GEMM_MIN_ROWS: usize = 32;
/// Largest transposed f16 weight slice (bytes): a 7.2B FFN matrix (4096 x 16384) is 128 MiB;
/// larger matrices (the head, if all logits are wanted) are converted and multiplied in
/// slices of rows.
const W16_CAP_BYTES: u64 = 128 << 20;
/// Fewer workgroups than this in a product split its K range (LoRA down-projections: 64..160
/// output columns over 2048..4096 inputs would otherwise run on a handful of SMs).
const GEMM_MIN_TILES: usize = 128;
/// Smallest K range of one split (8 steps of 32).
const GEMM_MIN_SPLIT_K: usize = 256;

/// `RWKV_WGPU_GEMM=0` (or "off", "false") keeps matmul_coop.wgsl for every product, for A/B
/// measurements.
fn gemm_env_allows() -> bool {
    !env_off("RWKV_WGPU_GEMM")
}

/// Tile of gemm_f16.wgsl this device can run (the larger where it fits), if it has
/// cooperative matrices.
fn gemm_tile(gpu: &Gpu) -> Option<GemmTile> {
    let l = &gpu.limits;
    if !gpu.coop || !gemm_env_allows() {
        return None;
    }
    [GemmTile::LARGE, GemmTile::SMALL].into_iter().find(|t| {
        l.max_compute_invocations_per_workgroup >= t.invocations()
            && l.max_compute_workgroup_size_x >= t.invocations()
            && l.max_compute_workgroup_storage_size >= t.workgroup_bytes()
    })
}

/// Invocations of one float matrix-vector workgroup (WG in matvec_float.wgsl).
const MATVEC_FLOAT_WG: usize = 256;

/// Invocations per output row of the float matrix-vector kernel (matvec_float.wgsl) for rows of
/// `cols` values, or `None` where it does not apply: other dtypes, columns not a multiple of 4
/// (its vec4 activation loads), or a device below WebGPU's default workgroup size.
/// One 16-byte weight word per invocation where the row allows (a power of two covering the
/// row's words, at most the workgroup): LoRA up rows of 64..480 f16 values get 8..64 lanes.
fn matvec_float_lanes(gpu: &Gpu, kind: PackedKind, cols: usize) -> Option<usize> {
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
const LN_SHIFT_MAX_MIXES: usize = (PARAM_WORDS - 12) / 2;
/// Invocations of an ln_shift.wgsl workgroup (one row each).
const LN_SHIFT_WG: usize = 256;
/// Most vec4 values one ln_shift.wgsl invocation keeps in registers (rows up to 16384 wide).
const LN_SHIFT_MAX_VEC4S: usize = 16;

/// vec4 values per invocation of the one-row-per-workgroup LayerNorm / token-shift kernel
/// (ln_shift.wgsl) for rows of `width`, or `None` where it does not apply (widths not a multiple
/// of 4 or above 16384, a device below 256 invocations). With a token shift, the register
/// must also be whole vec4s ([`StateAt::vec4`]).
fn ln_shift_vec4s(gpu: &Gpu, width: usize) -> Option<u32> {
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
fn wkv_lanes(gpu: &Gpu, n: usize, s: StateAt) -> Option<u32> {
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
const WKV_SCAN_MAX_HEAD: usize = 64;

/// Workgroups of the scan (heads x sequences) up to which it uses 4 lanes per state row where
/// subgroups allow: with few workgroups each row's chain of ~5·N dependent-ish instructions
/// per token is the step's critical path, and 4 lanes split it (one H100 SM per workgroup at
/// 7.2B batch 1: 2 warps of 1 lane vs 8 warps of 4). With many workgroups the GPU is full
/// either way and 1 lane saves the shuffles.
const WKV_SCAN_LANES_MAX_GROUPS: usize = 256;

/// (tokens per chunk, lanes per state row) of the prefill WKV scan for head size `n` and
/// `groups` workgroups, or `None` where it does not apply (see [`WKV_SCAN_MAX_HEAD`]; vec4
/// state and arena access: N, the state stride and the layer's S offset multiples of 4; a
/// workgroup of N·lanes invocations). A chunk holds six vectors per token in workgroup memory
/// (6·T·N floats: 12 KiB at N = 64, T = 8, under WebGPU's default 16 KiB); T a multiple of 4.
/// Lanes > 1 need N a multiple of 4·lanes and, with subgroups, subgroups of at least `lanes`
/// that divide the workgroup (the lanes of a row are consecutive lanes of one subgroup).
fn wkv_scan_geometry(gpu: &Gpu, n: usize, s: StateAt, groups: usize) -> Option<(u32, u32)> {
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

/// Most products one matrix dispatch computes (weight bindings 1, 4, 5, 6 in jobs.wgsl).
const MAX_JOBS: usize = 4;

/// `kernel` computing `jobs` products, or `None` when it has no multi-product form.
fn with_jobs(kernel: Kernel, jobs: u32) -> Option<Kernel> {
    match kernel {
        Kernel::MatMul(k, tpr, _) => Some(Kernel::MatMul(k, tpr, jobs)),
        Kernel::MatMulNarrow(k, _) => Some(Kernel::MatMulNarrow(k, jobs)),
        Kernel::MatVecQ4K(_) => Some(Kernel::MatVecQ4K(jobs)),
        Kernel::MatVecQ4KSg { sg, rps, .. } => Some(Kernel::MatVecQ4KSg { sg, rps, jobs }),
        Kernel::MatVec(k, _) => Some(Kernel::MatVec(k, jobs)),
        _ => None,
    }
}

/// Groups consecutive single-product dispatches of one op (independent products: the op's jobs
/// and the chunks of their matrices) that run the same kernel over the same activation tiles.
fn merge_jobs(singles: Vec<(Rec, u64)>, max_jobs: usize) -> Vec<Vec<(Rec, u64)>> {
    let mut out: Vec<Vec<(Rec, u64)>> = Vec::new();
    for single in singles {
        if let Some(last) = out.last_mut() {
            let (first, _) = &last[0];
            if last.len() < max_jobs
                && first.kernel == single.0.kernel
                && first.groups[2] == single.0.groups[2]
                && with_jobs(first.kernel, 2).is_some()
            {
                last.push(single);
                continue;
            }
        }
        out.push(vec![single]);
    }
    out
}

/// One dispatch for a group from [`merge_jobs`]: job j's parameters at word 16j, its first
/// workgroup at word 12 + j, the grid's width at word 10 (jobs.wgsl).
fn merged_rec(group: Vec<(Rec, u64)>, grid: &dyn Fn(u64) -> Result<(u32, u32)>) -> Result<Rec> {
    let mut group = group.into_iter();
    let (mut rec, groups) = group
        .next()
        .ok_or_else(|| backend_err("empty matrix dispatch group"))?;
    let rest: Vec<(Rec, u64)> = group.collect();
    if rest.is_empty() {
        return Ok(rec);
    }
    let mut total = groups;
    for (j, (r, g)) in rest.iter().enumerate() {
        let base = 16 * (j + 1);
        rec.params[base..base + 12].copy_from_slice(&r.params[..12]);
        rec.params[13 + j] = u32_of(total as usize, "workgroups")?;
        total += g;
        if let Some(Bind::Weight(w)) = r.binds.first() {
            rec.binds.push(Bind::Weight(w.clone()));
        }
    }
    let (gx, gy) = grid(total)?;
    rec.params[10] = gx;
    rec.groups = [gx, gy, rec.groups[2]];
    let jobs = 1 + rest.len() as u32;
    rec.kernel = with_jobs(rec.kernel, jobs).unwrap_or(rec.kernel);
    Ok(rec)
}

/// Largest head size WKV supports: one invocation per channel of a head.
const MAX_HEAD_SIZE: usize = 256;

fn act_code(a: Act) -> u32 {
    match a {
        Act::None => 0,
        Act::Tanh => 1,
        Act::Sigmoid => 2,
        Act::ReluSq => 3,
        Act::Decay => 4,
    }
}

/// Arrays [rows, C] the prefill WKV's first pass writes for the scan: kk, kk·a,
/// k·(1 + (a − 1)·k_a) and v after the v_first mix.
const WKV_SCRATCH: usize = 4;

/// Where the prefill WKV's scratch arrays are in the arena: the first at `offset`, each
/// `stride` values after the previous.
#[derive(Clone, Copy)]
struct WkvScratch {
    offset: usize,
    stride: usize,
}

/// Bytes of a plan's f16 scratch buffers: the largest any of its products needs.
#[derive(Default)]
struct ScratchBytes {
    x16: u64,
    w16: u64,
    part: u64,
}

/// One product of a MatMul job on f16 scratch operands (to_f16.wgsl, dequant_f16.wgsl,
/// gemm_f16.wgsl, split_reduce.wgsl).
struct GemmProduct<'a> {
    tile: GemmTile,
    matrix: &'a DeviceMatrix,
    x_rows: usize,
    x_off: u32,
    /// Arena offset of the output buffer (its column 0).
    out_off: usize,
    /// Vector offset of the bias (its element 0).
    bias: Option<u32>,
    act: u32,
    accumulate: bool,
}

impl GemmProduct<'_> {
    /// The dispatches of the product, growing `scratch` to what they need; `None` where its f16
    /// activations or one tile column of its weights would not fit a binding (the caller then
    /// uses the other kernels).
    fn recs(
        &self,
        gpu: &Gpu,
        op: usize,
        grid: &dyn Fn(u64) -> Result<(u32, u32)>,
        max_dim: u64,
        scratch: &mut ScratchBytes,
    ) -> Result<Option<Vec<Rec>>> {
        let m = self.matrix;
        let (bm, bn) = (self.tile.rows() as usize, self.tile.cols() as usize);
        let k32 = m.cols.div_ceil(32) * 32;
        let rows_pad = self.x_rows.div_ceil(bm) * bm;
        let x_bytes = (rows_pad as u64) * (k32 as u64) * 2;
        let w_cap = gpu.max_binding.min(W16_CAP_BYTES);
        let slice_rows = (w_cap / (k32 as u64 * 2)) as usize / bn * bn;
        if x_bytes > gpu.max_binding || slice_rows < bn {
            return Ok(None);
        }
        scratch.x16 = scratch.x16.max(x_bytes);
        let n_rows = u32_of(self.x_rows, "rows")?;
        let k32_u = u32_of(k32, "columns")?;
        let (gx, gy) = grid((x_bytes / 8).div_ceil(256))?;
        let mut recs = vec![Rec {
            op,
            kernel: Kernel::ToF16,
            params: params(&[
                self.x_off,
                u32_of(m.cols, "cols")?,
                n_rows,
                k32_u,
                u32_of(rows_pad, "rows")?,
                gx,
            ]),
            binds: vec![Bind::Arena, Bind::X16],
            groups: [gx, gy, 1],
        }];
        for ch in &m.chunks {
            let mut n0 = 0;
            while n0 < ch.rows {
                let ns = slice_rows.min(ch.rows - n0);
                let n_pad = ns.div_ceil(bn) * bn;
                let w_bytes = (k32 as u64) * (n_pad as u64) * 2;
                scratch.w16 = scratch.w16.max(w_bytes);
                // dequant_f16.wgsl: tiles of 64 rows x 32 values.
                let (gx, gy) = grid(((n_pad / 64) * (k32 / 32)) as u64)?;
                let ns_u = u32_of(ns, "rows")?;
                let n_pad_u = u32_of(n_pad, "rows")?;
                recs.push(Rec {
                    op,
                    kernel: Kernel::DequantF16(m.kind),
                    params: params(&[
                        ns_u,
                        u32_of(n0, "row")?,
                        u32_of(m.row_words, "row words")?,
                        n_pad_u,
                        k32_u,
                        u32_of(m.cols.div_ceil(UNIT), "units")?,
                        gx,
                    ]),
                    binds: vec![Bind::Weight(ch.buffer.clone()), Bind::W16],
                    groups: [gx, gy, 1],
                });
                // Split K where the tiles alone would leave the GPU mostly idle, if the
                // partial sums fit one binding.
                let tiles = (n_pad / bn) * (rows_pad / bm);
                let mut splits = 1;
                if tiles < GEMM_MIN_TILES {
                    splits = GEMM_MIN_TILES
                        .div_ceil(tiles)
                        .min(k32 / GEMM_MIN_SPLIT_K)
                        .max(1);
                }
                let k_split = k32.div_ceil(splits).div_ceil(32) * 32;
                splits = k32.div_ceil(k_split);
                let p_bytes = (splits * self.x_rows * ns) as u64 * 4;
                if p_bytes > gpu.max_binding {
                    splits = 1;
                }
                let out_off = u32_of(self.out_off + ch.row_begin + n0, "offset")?;
                let bias = match self.bias {
                    Some(b) => b + u32_of(ch.row_begin + n0, "row")?,
                    None => NONE,
                };
                let out_width = u32_of(m.rows, "out width")?;
                let col_tiles = u32_of(n_pad / bn, "tiles")?;
                let row_tiles = u32_of(rows_pad / bm, "tiles")?;
                if col_tiles as u64 > max_dim || row_tiles as u64 > max_dim {
                    return Err(backend_err(format!(
                        "{} x {ns} product exceeds the device's grid",
                        self.x_rows
                    )));
                }
                let split = splits > 1;
                let k_split = if split { k_split } else { k32 };
                // Without a split the product finishes the output itself (words 4..8); with
                // one it writes partial sums that split_reduce.wgsl finishes.
                let finish = [out_off, out_width, bias, self.act, self.accumulate as u32];
                let gemm_params = [
                    [n_rows, ns_u, k32_u, n_pad_u].as_slice(),
                    if split { &[0, 0, NONE, 0, 0] } else { &finish },
                    &[col_tiles, u32_of(k_split, "columns")?],
                ]
                .concat();
                recs.push(Rec {
                    op,
                    kernel: Kernel::GemmF16 {
                        tile: self.tile,
                        split,
                    },
                    params: params(&gemm_params),
                    binds: if split {
                        vec![Bind::X16, Bind::Part, Bind::W16]
                    } else {
                        vec![Bind::X16, Bind::Arena, Bind::Vecs, Bind::W16]
                    },
                    groups: [col_tiles, row_tiles, u32_of(splits, "splits")?],
                });
                if split {
                    scratch.part = scratch.part.max(p_bytes);
                    let (gx, gy) = grid(((self.x_rows * ns) as u64).div_ceil(256))?;
                    recs.push(Rec {
                        op,
                        kernel: Kernel::SplitReduce,
                        params: params(
                            &[
                                [n_rows, ns_u, u32_of(splits, "splits")?].as_slice(),
                                &finish,
                                &[gx],
                            ]
                            .concat(),
                        ),
                        binds: vec![Bind::Part, Bind::Arena, Bind::Vecs],
                        groups: [gx, gy, 1],
                    });
                }
                n0 += ns;
            }
        }
        Ok(Some(recs))
    }
}

/// A plan checked against the uploaded weights, with its arena layout.
pub(crate) struct Compiled {
    pub plan: Plan,
    offsets: Vec<usize>,
    argmax_off: usize,
    arena_len: usize,
    /// Scratch rows of the prefill WKV kernels, if the plan has them.
    wkv_scratch: Option<WkvScratch>,
    /// What [`Plan::validate`] found (token ids must be below `facts.vocab`).
    pub facts: PlanFacts,
    pub built: Option<Built>,
}

pub(crate) struct Built {
    pub state_len: usize,
    pub weights_generation: u64,
    pub tokens: wgpu::Buffer,
    work_states: Vec<StateChunk>,
    arena: wgpu::Buffer,
    _params: wgpu::Buffer,
    dispatches: Vec<Dispatch>,
    argmax: Dispatch,
    /// f16 operands and partial sums of the gemm_f16.wgsl products (kept alive with the plan).
    _scratch: [wgpu::Buffer; 3],
    staging: wgpu::Buffer,
}

struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    /// Index of the op in the plan (the argmax dispatch: `ops.len()`), and the kernel.
    op: usize,
    kernel: Kernel,
}

/// Part of the step's working state: consecutive layers `[n_seq, len]`, holding values
/// `first..first + len` of each sequence's slot state. A single `[n_seq, state_len]` buffer
/// would exceed WebGPU's per-buffer and per-binding limits for large models and batches (7.2B:
/// 34.6 MB per sequence; browsers bind 128 MiB by default), so layers are grouped as many per
/// chunk as fit the limit (all of them when they do: one copy per sequence and direction).
struct StateChunk {
    buffer: wgpu::Buffer,
    first: usize,
    len: usize,
}

/// Where a kernel finds a piece of a layer's state: working chunk, values per sequence in that
/// chunk (the stride), offset within a sequence's part.
#[derive(Clone, Copy)]
struct StateAt {
    chunk: usize,
    stride: usize,
    offset: usize,
}

impl StateAt {
    /// Whether the piece can be read as vec4s (stride and offset whole vec4s).
    fn vec4(self) -> bool {
        self.stride.is_multiple_of(4) && self.offset.is_multiple_of(4)
    }
}

#[derive(Clone)]
enum Bind {
    Arena,
    Vecs,
    State(usize),
    Tokens,
    Weight(wgpu::Buffer),
    /// f16 scratch copies of a product's activations / weights, and split partial sums.
    X16,
    W16,
    Part,
}

struct Rec {
    op: usize,
    kernel: Kernel,
    params: [u32; PARAM_WORDS],
    binds: Vec<Bind>,
    groups: [u32; 3],
}

fn params(values: &[u32]) -> [u32; PARAM_WORDS] {
    let mut p = [0u32; PARAM_WORDS];
    p[..values.len()].copy_from_slice(values);
    p
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        backend_err(format!(
            "{what} ({v}) does not fit the kernels' 32-bit indices"
        ))
    })
}

impl Compiled {
    /// Checks every op against buffer widths and uploaded weights; lays out the arena.
    /// Takes a plan that passed [`Plan::validate`] (`facts` is what it found), checks what is
    /// this backend's own (uploaded on the device, kernel parameter limits), lays out the arena.
    pub fn new(
        gpu: &Gpu,
        plan: &Plan,
        weights: &[Option<DeviceWeight>],
        facts: PlanFacts,
    ) -> Result<Compiled> {
        let bad = |what: String| backend_err(format!("plan rejected: {what}"));
        let n_buf = plan.buffers.len();
        let rows = plan.shape.rows();
        let uploaded = |w: WeightId| -> Result<()> {
            match weights.get(w) {
                Some(Some(_)) => Ok(()),
                _ => Err(bad(format!("weight {w} is not uploaded"))),
            }
        };
        for op in &plan.ops {
            match op {
                Op::Embed { table, .. } => uploaded(*table)?,
                Op::TokenShift { x, mixes, .. } => {
                    if mixes.len() > (PARAM_WORDS - 8) / 2 {
                        return Err(bad(format!(
                            "token shift of buffer {x}: {} mixes",
                            mixes.len()
                        )));
                    }
                }
                Op::MatMul { jobs } => {
                    for j in jobs {
                        uploaded(j.weight)?;
                    }
                }
                Op::LayerNorm { .. } | Op::Wkv7(_) | Op::LastRows { .. } => {}
            }
        }
        if facts.vocab == usize::MAX {
            return Err(bad("no embedding op".into()));
        }

        // Arena layout: buffers one after another, each at a 16-byte boundary.
        let mut offsets = Vec::with_capacity(n_buf);
        let mut end = 0usize;
        for b in 0..n_buf {
            offsets.push(end);
            let len = plan
                .rows_of(b)
                .checked_mul(plan.buffers[b].width)
                .ok_or_else(|| bad("buffer too large".into()))?;
            end = end
                .checked_add(len.div_ceil(4) * 4)
                .ok_or_else(|| bad("activations too large".into()))?;
        }
        let argmax_off = end;
        let mut arena_len = end + plan.rows_of(plan.logits).div_ceil(4) * 4;
        let bytes = (arena_len as u64) * 4;
        if bytes > gpu.max_binding {
            return Err(backend_err(format!(
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
                .and_then(|n| n.checked_add(arena_len));
            if let (Some(stride), Some(with)) = (stride, with) {
                if (with as u64) * 4 <= gpu.max_binding {
                    wkv_scratch = Some(WkvScratch {
                        offset: arena_len,
                        stride,
                    });
                    arena_len = with;
                }
            }
        }
        Ok(Compiled {
            plan: plan.clone(),
            offsets,
            argmax_off,
            arena_len,
            wkv_scratch,
            facts,
            built: None,
        })
    }

    fn off(&self, b: BufId) -> Result<u32> {
        u32_of(self.offsets[b], "arena offset")
    }

    /// Bytes of the logits buffer and of its argmax row indices.
    pub fn logits_len(&self) -> usize {
        self.plan.rows_of(self.plan.logits) * self.plan.buffers[self.plan.logits].width
    }

    pub fn logit_rows(&self) -> usize {
        self.plan.rows_of(self.plan.logits)
    }

    /// Builds pipelines, buffers and bind groups for states of `state_len` values.
    #[allow(clippy::too_many_arguments)]
    pub async fn build(
        &mut self,
        gpu: &Gpu,
        kernels: &mut Kernels,
        weights: &[Option<DeviceWeight>],
        vecs: &wgpu::Buffer,
        weights_generation: u64,
        state_len: usize,
    ) -> Result<()> {
        let plan = &self.plan;
        let shape = plan.shape;
        let rows = shape.rows();
        let vec_off = |w: WeightId| -> Result<u32> {
            match weights.get(w) {
                Some(Some(DeviceWeight::Vector { offset, .. })) => u32_of(*offset, "vector offset"),
                _ => Err(backend_err(format!("weight {w} is not a vector"))),
            }
        };
        let matrix = |w: WeightId| -> Result<&DeviceMatrix> {
            match weights.get(w) {
                Some(Some(DeviceWeight::Matrix(m))) => Ok(m),
                _ => Err(backend_err(format!("weight {w} is not a matrix"))),
            }
        };
        // State geometry from the plan's layout (checked against `state_len` at compile).
        let n_layer = plan.state.n_layer.max(1);
        let head_size = plan.state.head_size;
        if plan.state.len() > state_len {
            return Err(backend_err(format!(
                "the plan's state has {} values, the allocated states {state_len}",
                plan.state.len()
            )));
        }
        let layer_state = plan.state.layer_len().max(1);

        // Working state chunks: as many consecutive layers per chunk as fit one binding for
        // the step's sequences (values past n_layer · layer_state, if any, are never touched by
        // a kernel and stay in the slots).
        let layer_bytes = (shape.n_seq as u64) * (layer_state as u64) * 4;
        if layer_bytes > gpu.max_binding {
            return Err(backend_err(format!(
                "{}: the state of one layer for {} sequences needs {layer_bytes} bytes, the \
                 device binds at most {} per buffer; run fewer sequences per step",
                gpu.info.name, shape.n_seq, gpu.max_binding
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
        let max_dim = gpu.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        let grid = |total: u64| -> Result<(u32, u32)> {
            let x = total.clamp(1, max_dim);
            let y = total.div_ceil(x).max(1);
            if y > max_dim {
                return Err(backend_err(format!(
                    "{total} workgroups exceed the device's grid"
                )));
            }
            Ok((x as u32, y as u32))
        };
        let rows_u = u32_of(rows, "rows")?;
        let n_seq = u32_of(shape.n_seq, "sequences")?;
        let n_tok = u32_of(shape.n_tok, "tokens")?;

        // `len` values at `offset` within the state of `layer`, in the working chunks.
        let state_at = |layer: usize, offset: usize, len: usize, what: &str| -> Result<StateAt> {
            if layer >= n_layer || offset + len > layer_state {
                return Err(backend_err(format!(
                    "{what} of layer {layer} is outside the state"
                )));
            }
            let chunk = layer / layers_per_chunk;
            let (first, stride) = chunk_spans[chunk];
            let at = StateAt {
                chunk,
                stride,
                offset: layer * layer_state + offset - first,
            };
            u32_of(at.stride, "state stride")?;
            u32_of(at.offset, "state offset")?;
            Ok(at)
        };
        // Token-shift register of `layer`.
        let reg_of = |layer: usize, kind: ShiftKind, width: usize| -> Result<StateAt> {
            let part = match kind {
                ShiftKind::Att => StatePart::AttShift,
                ShiftKind::Ffn => StatePart::FfnShift,
            };
            let offset = plan
                .state
                .part_offset(part)
                .ok_or_else(|| backend_err(format!("the plan's state has no {part:?}")))?;
            state_at(layer, offset, width, "token shift")
        };

        // Products on f16 scratch operands: the tile, if the device compiles the kernel (it is
        // built on wgpu's experimental cooperative matrices). Plans with fewer rows never use
        // it, so decode plans do not compile it.
        let gemm = match gemm_tile(gpu).filter(|_| rows >= GEMM_MIN_ROWS) {
            Some(tile) => match kernels
                .get(gpu, Kernel::GemmF16 { tile, split: false })
                .await
            {
                Ok(_) => Some(tile),
                Err(e) => {
                    kernels.fallbacks.push(format!("GemmF16: {e}"));
                    None
                }
            },
            None => None,
        };
        // Bytes of the scratch buffers (the largest any product of the plan needs).
        let mut scratch = ScratchBytes::default();
        let mut recs: Vec<Rec> = Vec::new();
        // A TokenShift op already done by the LayerNorm dispatch before it.
        let mut fused_shift: Option<usize> = None;
        for (op_index, op) in plan.ops.iter().enumerate() {
            if fused_shift == Some(op_index) {
                continue;
            }
            match op {
                Op::Embed { table, out } => {
                    let m = matrix(*table)?;
                    let units = m.cols.div_ceil(UNIT);
                    let (gx, gy) = grid(((rows * units) as u64).div_ceil(64))?;
                    for ch in &m.chunks {
                        recs.push(Rec {
                            op: op_index,
                            kernel: Kernel::Embed(m.kind),
                            params: params(&[
                                u32_of(ch.row_begin, "row")?,
                                u32_of(ch.row_begin + ch.rows, "row")?,
                                u32_of(m.cols, "cols")?,
                                u32_of(m.row_words, "row words")?,
                                rows_u,
                                self.off(*out)?,
                                u32_of(units, "units")?,
                                gx,
                            ]),
                            binds: vec![Bind::Weight(ch.buffer.clone()), Bind::Arena, Bind::Tokens],
                            groups: [gx, gy, 1],
                        });
                    }
                }
                Op::LayerNorm { x, w, b, out, eps } => {
                    let r = plan.rows_of(*x);
                    if r as u64 > max_dim {
                        return Err(backend_err(format!("{r} rows exceed the device's grid")));
                    }
                    let width = plan.buffers[*x].width;
                    let Some(vec4s) = ln_shift_vec4s(gpu, width) else {
                        recs.push(Rec {
                            op: op_index,
                            kernel: Kernel::LayerNorm,
                            params: params(&[
                                self.off(*x)?,
                                self.off(*out)?,
                                u32_of(width, "width")?,
                                vec_off(*w)?,
                                vec_off(*b)?,
                                eps.to_bits(),
                            ]),
                            binds: vec![Bind::Arena, Bind::Vecs],
                            groups: [r as u32, 1, 1],
                        });
                        continue;
                    };
                    // The token shift of the normalized rows that follows, done by the same
                    // workgroups when nothing aliases (see ln_shift.wgsl).
                    let shift = match plan.ops.get(op_index + 1) {
                        Some(Op::TokenShift {
                            x: sx,
                            layer,
                            kind,
                            mixes,
                        }) if sx == out
                            && x != out
                            && r == rows
                            && mixes.len() <= LN_SHIFT_MAX_MIXES
                            && mixes.iter().all(|(_, o)| o != x && o != out)
                            && reg_of(*layer, *kind, width).is_ok_and(StateAt::vec4) =>
                        {
                            fused_shift = Some(op_index + 1);
                            Some((reg_of(*layer, *kind, width)?, mixes))
                        }
                        _ => None,
                    };
                    let (gx, gy) = grid(r as u64)?;
                    let mut p = vec![
                        self.off(*x)?,
                        self.off(*out)?,
                        u32_of(width, "width")?,
                        vec_off(*w)?,
                        vec_off(*b)?,
                        eps.to_bits(),
                        if shift.is_some() { n_tok } else { 1 },
                        shift.as_ref().map_or(0, |s| s.0.offset as u32),
                        shift.as_ref().map_or(0, |s| s.0.stride as u32),
                        shift.as_ref().map_or(0, |s| s.1.len() as u32),
                        gx,
                        u32_of(r, "rows")?,
                    ];
                    let mut binds = vec![Bind::Arena, Bind::Vecs];
                    if let Some((reg, mixes)) = shift {
                        for (m, o) in mixes {
                            p.push(vec_off(*m)?);
                            p.push(self.off(*o)?);
                        }
                        binds.push(Bind::State(reg.chunk));
                    }
                    recs.push(Rec {
                        op: op_index,
                        kernel: Kernel::LnShift {
                            vec4s,
                            shift: binds.len() == 3,
                        },
                        params: params(&p),
                        binds,
                        groups: [gx, gy, 1],
                    });
                }
                Op::TokenShift {
                    x,
                    layer,
                    kind,
                    mixes,
                } => {
                    let width = plan.buffers[*x].width;
                    let reg = reg_of(*layer, *kind, width)?;
                    // The row-parallel kernel, unless an output is x itself (a later row
                    // would read it after it was overwritten); then one invocation per channel
                    // walks the tokens.
                    let parallel = ln_shift_vec4s(gpu, width)
                        .filter(|_| reg.vec4())
                        .filter(|_| mixes.len() <= LN_SHIFT_MAX_MIXES)
                        .filter(|_| mixes.iter().all(|(_, o)| o != x));
                    if let Some(vec4s) = parallel {
                        let (gx, gy) = grid(rows as u64)?;
                        let mut p = vec![
                            self.off(*x)?,
                            NONE,
                            u32_of(width, "width")?,
                            NONE,
                            NONE,
                            0,
                            n_tok,
                            reg.offset as u32,
                            reg.stride as u32,
                            mixes.len() as u32,
                            gx,
                            rows_u,
                        ];
                        for (m, o) in mixes {
                            p.push(vec_off(*m)?);
                            p.push(self.off(*o)?);
                        }
                        recs.push(Rec {
                            op: op_index,
                            kernel: Kernel::LnShift { vec4s, shift: true },
                            params: params(&p),
                            binds: vec![Bind::Arena, Bind::Vecs, Bind::State(reg.chunk)],
                            groups: [gx, gy, 1],
                        });
                        continue;
                    }
                    let (gx, gy) = grid(((shape.n_seq * width) as u64).div_ceil(64))?;
                    let mut p = vec![
                        self.off(*x)?,
                        u32_of(width, "width")?,
                        n_seq,
                        n_tok,
                        reg.offset as u32,
                        reg.stride as u32,
                        mixes.len() as u32,
                        gx,
                    ];
                    for (m, o) in mixes {
                        p.push(vec_off(*m)?);
                        p.push(self.off(*o)?);
                    }
                    recs.push(Rec {
                        op: op_index,
                        kernel: Kernel::TokenShift,
                        params: params(&p),
                        binds: vec![Bind::Arena, Bind::Vecs, Bind::State(reg.chunk)],
                        groups: [gx, gy, 1],
                    });
                }
                Op::MatMul { jobs } => {
                    // One single-product dispatch per (job, chunk), then merged below.
                    let mut singles: Vec<(Rec, u64)> = Vec::new();
                    for j in jobs {
                        let m = matrix(j.weight)?;
                        let x_rows = plan.rows_of(j.x);
                        let tile = gemm.filter(|_| x_rows >= GEMM_MIN_ROWS && m.cols % 4 == 0);
                        if let Some(tile) = tile {
                            let bias = j.bias.map(&vec_off).transpose()?;
                            let product = GemmProduct {
                                tile,
                                matrix: m,
                                x_rows,
                                x_off: self.off(j.x)?,
                                out_off: self.offsets[j.out],
                                bias,
                                act: act_code(j.act),
                                accumulate: j.accumulate,
                            };
                            if let Some(mut more) =
                                product.recs(gpu, op_index, &grid, max_dim, &mut scratch)?
                            {
                                recs.append(&mut more);
                                continue;
                            }
                        }
                        let units = m.cols.div_ceil(UNIT);
                        let tiles = plan.rows_of(j.x).div_ceil(MATMUL_TILE) as u64;
                        let n_rows = u32_of(plan.rows_of(j.x), "rows")?;
                        if tiles > max_dim {
                            return Err(backend_err(format!(
                                "{n_rows} rows exceed the device's grid"
                            )));
                        }
                        let tiled_tm = tiled_rows_per_invocation(gpu, plan.rows_of(j.x));
                        let narrow = units <= NARROW_UNITS;
                        // Invocations per row: no more than the row has units (short rows of
                        // small models); the rest of the 64 take further rows.
                        let tpr = units.next_power_of_two().clamp(16, 64);
                        let coop = use_coop(gpu, plan.rows_of(j.x), m.cols);
                        let matvec_lanes = matvec_float_lanes(gpu, m.kind, m.cols);
                        // Word 11 of the parameters: units per row, or the float matrix-vector
                        // kernel's invocations per row.
                        let mut word11 = units;
                        let (kernel, rows_per_group, tiles) = match (tiled_tm, matvec_lanes) {
                            // Same tile of 64 x 64 and parameters as the tiled kernel at TM = 4.
                            _ if coop => (
                                Kernel::MatMulCoop(m.kind),
                                TILED_COLS,
                                plan.rows_of(j.x).div_ceil(64) as u64,
                            ),
                            (Some(tm), _) => (
                                Kernel::MatMulTiled(m.kind, tm),
                                TILED_COLS,
                                plan.rows_of(j.x).div_ceil(16 * tm as usize) as u64,
                            ),
                            // Q4_K rows are whole 256-value blocks; arena offsets are
                            // multiples of 4 values, as its vec4 activation loads need.
                            (None, _) if m.kind == PackedKind::Q4K => match gpu.matvec_sg {
                                // Subgroups of `size` lanes, each owning rows_per_subgroup rows.
                                Some(sg) => (
                                    Kernel::MatVecQ4KSg {
                                        sg: sg.size,
                                        rps: sg.rows_per_subgroup,
                                        jobs: 1,
                                    },
                                    (MATVEC_SG_WG / sg.size * sg.rows_per_subgroup) as usize,
                                    plan.rows_of(j.x) as u64,
                                ),
                                None => {
                                    (Kernel::MatVecQ4K(1), MATVEC_ROWS, plan.rows_of(j.x) as u64)
                                }
                            },
                            (None, Some(lanes)) => {
                                word11 = lanes;
                                (Kernel::MatVec(m.kind, 1), MATVEC_FLOAT_WG / lanes, tiles)
                            }
                            (None, None) if narrow => (Kernel::MatMulNarrow(m.kind, 1), 64, tiles),
                            (None, None) => {
                                (Kernel::MatMul(m.kind, tpr as u32, 1), 64 / tpr, tiles)
                            }
                        };
                        for ch in &m.chunks {
                            let groups = (ch.rows as u64).div_ceil(rows_per_group as u64);
                            let (gx, gy) = grid(groups)?;
                            singles.push((
                                Rec {
                                    op: op_index,
                                    kernel,
                                    params: params(&[
                                        u32_of(ch.rows, "rows")?,
                                        u32_of(m.cols, "cols")?,
                                        u32_of(m.row_words, "row words")?,
                                        n_rows,
                                        self.off(j.x)?,
                                        u32_of(self.offsets[j.out] + ch.row_begin, "offset")?,
                                        u32_of(m.rows, "out width")?,
                                        match j.bias {
                                            Some(b) => vec_off(b)? + u32_of(ch.row_begin, "row")?,
                                            None => NONE,
                                        },
                                        act_code(j.act),
                                        j.accumulate as u32,
                                        gx,
                                        u32_of(word11, "units")?,
                                    ]),
                                    binds: vec![
                                        Bind::Weight(ch.buffer.clone()),
                                        Bind::Arena,
                                        Bind::Vecs,
                                    ],
                                    groups: [gx, gy, tiles as u32],
                                },
                                groups,
                            ));
                        }
                    }
                    let max_jobs = (gpu.limits.max_storage_buffers_per_shader_stage as usize)
                        .saturating_sub(2)
                        .min(MAX_JOBS);
                    for group in merge_jobs(singles, max_jobs) {
                        recs.push(merged_rec(group, &grid)?);
                    }
                }
                Op::Wkv7(wa) => {
                    let (layer, r, w, k, v, a, g) =
                        (&wa.layer, &wa.r, &wa.w, &wa.k, &wa.v, &wa.a, &wa.g);
                    let (v_first, v_mix, out) = (&wa.v_first, &wa.v_mix, &wa.out);
                    let width = plan.buffers[*r].width;
                    let n = head_size;
                    if n == 0 || n > MAX_HEAD_SIZE || !width.is_multiple_of(n) {
                        return Err(backend_err(format!(
                            "head size {n} is not supported (width {width})"
                        )));
                    }
                    if n as u32 > gpu.limits.max_compute_invocations_per_workgroup {
                        return Err(backend_err(format!(
                            "head size {n} exceeds the device's workgroup size"
                        )));
                    }
                    let matrix_at = plan
                        .state
                        .part_offset(StatePart::WkvMatrix)
                        .ok_or_else(|| backend_err("the plan's state has no WKV matrix"))?;
                    let s_at = state_at(*layer, matrix_at, width * n, "wkv")?;
                    let mut words = vec![
                        self.off(*r)?,
                        self.off(*w)?,
                        self.off(*k)?,
                        self.off(*v)?,
                        self.off(*a)?,
                        self.off(*g)?,
                        self.off(*v_first)?,
                        match v_mix {
                            Some(m) => self.off(*m)?,
                            None => NONE,
                        },
                        self.off(*out)?,
                        u32_of(width, "width")?,
                        n_tok,
                        s_at.offset as u32,
                        s_at.stride as u32,
                        vec_off(wa.k_k)?,
                        vec_off(wa.k_a)?,
                        vec_off(wa.r_k)?,
                        vec_off(wa.ln_x_w)?,
                        vec_off(wa.ln_x_b)?,
                        wa.gn_eps.to_bits(),
                    ];
                    // Prefill: three passes, the state recurrence with no barrier per token
                    // (wkv7_prep / wkv7_scan / wkv7_post.wgsl). It writes raw y into `out`
                    // before its inputs are all read: `out` must be none of them.
                    let inputs = [*r, *w, *k, *v, *a, *g, *v_first];
                    let scan = match self.wkv_scratch {
                        Some(scratch)
                            if shape.n_tok >= 2
                                && !inputs.contains(out)
                                && v_mix.is_none_or(|m| m != *out)
                                && (rows as u64) <= max_dim
                                && ((width / n) as u64) <= max_dim =>
                        {
                            wkv_scan_geometry(gpu, n, s_at, (width / n) * shape.n_seq)
                                .map(|geometry| (scratch, geometry))
                        }
                        _ => None,
                    };
                    if let Some((scratch, (chunk, lanes))) = scan {
                        let at = |i: usize| u32_of(scratch.offset + i * scratch.stride, "offset");
                        words.resize(24, 0);
                        words.extend([
                            self.off(*r)?,
                            self.off(*w)?,
                            at(0)?,
                            at(1)?,
                            at(2)?,
                            at(3)?,
                        ]);
                        let heads = u32_of(width / n, "heads")?;
                        let head_size = n as u32;
                        for (kernel, binds, groups) in [
                            (
                                Kernel::Wkv7Prep { head_size },
                                vec![Bind::Arena, Bind::Vecs],
                                [heads, rows_u, 1],
                            ),
                            (
                                Kernel::Wkv7Scan {
                                    head_size,
                                    chunk,
                                    lanes,
                                },
                                vec![Bind::Arena, Bind::State(s_at.chunk)],
                                [heads, n_seq, 1],
                            ),
                            (
                                Kernel::Wkv7Post { head_size },
                                vec![Bind::Arena, Bind::Vecs],
                                [heads, rows_u, 1],
                            ),
                        ] {
                            recs.push(Rec {
                                op: op_index,
                                kernel,
                                params: params(&words),
                                binds,
                                groups,
                            });
                        }
                        continue;
                    }
                    let kernel = match wkv_lanes(gpu, n, s_at) {
                        Some(lanes) => Kernel::Wkv7Split {
                            head_size: n as u32,
                            lanes,
                        },
                        None => Kernel::Wkv7 {
                            head_size: n as u32,
                        },
                    };
                    recs.push(Rec {
                        op: op_index,
                        kernel,
                        params: params(&words),
                        binds: vec![Bind::Arena, Bind::Vecs, Bind::State(s_at.chunk)],
                        groups: [u32_of(width / n, "heads")?, n_seq, 1],
                    });
                }
                Op::LastRows { x, out } => {
                    let width = plan.buffers[*x].width;
                    let (gx, gy) = grid(((shape.n_seq * width) as u64).div_ceil(64))?;
                    recs.push(Rec {
                        op: op_index,
                        kernel: Kernel::LastRows,
                        params: params(&[
                            self.off(*x)?,
                            self.off(*out)?,
                            u32_of(width, "width")?,
                            n_seq,
                            n_tok,
                            gx,
                        ]),
                        binds: vec![Bind::Arena],
                        groups: [gx, gy, 1],
                    });
                }
            }
        }
        let logit_rows = plan.rows_of(plan.logits);
        if logit_rows as u64 > max_dim {
            return Err(backend_err(format!(
                "{logit_rows} logit rows exceed the device's grid"
            )));
        }
        recs.push(Rec {
            op: plan.ops.len(),
            kernel: Kernel::Argmax,
            params: params(&[
                self.off(plan.logits)?,
                u32_of(plan.buffers[plan.logits].width, "vocab")?,
                u32_of(self.argmax_off, "offset")?,
            ]),
            binds: vec![Bind::Arena],
            groups: [logit_rows as u32, 1, 1],
        });

        let mut pipelines = Vec::with_capacity(recs.len());
        for r in &recs {
            pipelines.push(kernels.get(gpu, r.kernel).await?);
        }
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let built = gpu
            .scoped("building plan", || -> Result<Built> {
                let arena = gpu.buffer("activations", self.arena_len as u64 * 4, storage)?;
                let tokens = gpu.buffer("tokens", rows as u64 * 4, storage)?;
                // f16 operands of the products on gemm_f16.wgsl (none in plans without them).
                let scratch_buffer = |label, bytes: u64| gpu.buffer(label, bytes.max(16), storage);
                let x16 = scratch_buffer("f16 activations", scratch.x16)?;
                let w16 = scratch_buffer("f16 weights", scratch.w16)?;
                let part = scratch_buffer("partial sums", scratch.part)?;
                let work_states = chunk_spans
                    .iter()
                    .map(|&(first, len)| {
                        let bytes = (shape.n_seq as u64) * (len as u64) * 4;
                        Ok(StateChunk {
                            buffer: gpu.buffer("step states", bytes, storage)?,
                            first,
                            len,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let staging_len = (self.logits_len().max(logit_rows) as u64) * 4;
                let staging = gpu.buffer(
                    "read-back",
                    staging_len,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                )?;
                let param_buf = gpu.buffer(
                    "params",
                    recs.len() as u64 * PARAM_STRIDE,
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                )?;
                let mut bytes = vec![0u8; recs.len() * PARAM_STRIDE as usize];
                for (i, rec) in recs.iter().enumerate() {
                    let at = i * PARAM_STRIDE as usize;
                    bytes[at..at + PARAM_BYTES as usize]
                        .copy_from_slice(bytemuck::cast_slice(&rec.params));
                }
                gpu.queue.write_buffer(&param_buf, 0, &bytes);
                let mut dispatches = Vec::with_capacity(recs.len());
                for (i, (rec, pipeline)) in recs.iter().zip(pipelines).enumerate() {
                    let layout = pipeline.get_bind_group_layout(0);
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &param_buf,
                            offset: i as u64 * PARAM_STRIDE,
                            size: wgpu::BufferSize::new(PARAM_BYTES),
                        }),
                    }];
                    for (j, b) in rec.binds.iter().enumerate() {
                        let buffer = match b {
                            Bind::Arena => &arena,
                            Bind::Vecs => vecs,
                            Bind::State(c) => &work_states[*c].buffer,
                            Bind::Tokens => &tokens,
                            Bind::Weight(w) => w,
                            Bind::X16 => &x16,
                            Bind::W16 => &w16,
                            Bind::Part => &part,
                        };
                        entries.push(wgpu::BindGroupEntry {
                            binding: j as u32 + 1,
                            resource: buffer.as_entire_binding(),
                        });
                    }
                    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &layout,
                        entries: &entries,
                    });
                    dispatches.push(Dispatch {
                        pipeline,
                        bind_group,
                        groups: rec.groups,
                        op: rec.op,
                        kernel: rec.kernel,
                    });
                }
                let argmax = dispatches
                    .pop()
                    .ok_or_else(|| backend_err("no argmax dispatch"))?;
                Ok(Built {
                    _scratch: [x16, w16, part],
                    state_len,
                    weights_generation,
                    tokens,
                    work_states,
                    arena,
                    _params: param_buf,
                    dispatches,
                    argmax,
                    staging,
                })
            })
            .await??;
        self.built = Some(built);
        Ok(())
    }
}

/// What the step copies back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBack {
    None,
    Logits,
    Argmax,
}

impl Compiled {
    /// Encodes one step into one command buffer: states in, every dispatch, states out, result
    /// to the read-back buffer. Returns the read-back buffer and its byte length.
    pub fn encode(
        &self,
        gpu: &Gpu,
        states: &[wgpu::Buffer],
        slots: &[usize],
        read: ReadBack,
        profile: Option<&Profiler>,
    ) -> Result<(wgpu::CommandBuffer, u64)> {
        let built = self
            .built
            .as_ref()
            .ok_or_else(|| backend_err("plan not built"))?;
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("rwkv step"),
            });
        // One copy per (sequence, chunk) and direction: a sequence's part of a chunk is
        // contiguous both in its slot and in the chunk.
        let state_copies = || {
            slots.iter().enumerate().flat_map(move |(s, &slot)| {
                built
                    .work_states
                    .iter()
                    .filter(|c| c.len > 0)
                    .map(move |c| {
                        let bytes = c.len as u64 * 4;
                        (
                            &states[slot],
                            c.first as u64 * 4,
                            &c.buffer,
                            s as u64 * bytes,
                            bytes,
                        )
                    })
            })
        };
        for (slot, slot_at, chunk, chunk_at, bytes) in state_copies() {
            enc.copy_buffer_to_buffer(slot, slot_at, chunk, chunk_at, bytes);
        }
        let run = |pass: &mut wgpu::ComputePass<'_>, d: &Dispatch| {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        };
        if let Some(p) = profile {
            // One pass per dispatch with timestamps at its start and end: pass-level timestamps
            // are what WebGPU offers (in-pass ones are a native extension).
            for (i, d) in built.dispatches.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("rwkv op (profiled)"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &p.queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                run(&mut pass, d);
            }
            let n = 2 * built.dispatches.len() as u32;
            enc.resolve_query_set(&p.queries, 0..n, &p.resolve, 0);
            enc.copy_buffer_to_buffer(&p.resolve, 0, &p.staging, 0, n as u64 * 8);
        } else {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rwkv ops"),
                timestamp_writes: None,
            });
            for d in &built.dispatches {
                run(&mut pass, d);
            }
            if read == ReadBack::Argmax {
                run(&mut pass, &built.argmax);
            }
        }
        for (slot, slot_at, chunk, chunk_at, bytes) in state_copies() {
            enc.copy_buffer_to_buffer(chunk, chunk_at, slot, slot_at, bytes);
        }
        let len = match read {
            ReadBack::None => 0,
            ReadBack::Logits => {
                let len = self.logits_len() as u64 * 4;
                enc.copy_buffer_to_buffer(
                    &built.arena,
                    self.offsets[self.plan.logits] as u64 * 4,
                    &built.staging,
                    0,
                    len,
                );
                len
            }
            ReadBack::Argmax => {
                let len = self.logit_rows() as u64 * 4;
                enc.copy_buffer_to_buffer(
                    &built.arena,
                    self.argmax_off as u64 * 4,
                    &built.staging,
                    0,
                    len,
                );
                len
            }
        };
        Ok((enc.finish(), len))
    }

    /// (op index, kernel) of every dispatch of a step, in order (without the argmax).
    pub fn dispatch_ops(&self) -> Vec<(usize, Kernel)> {
        self.built
            .as_ref()
            .map(|b| b.dispatches.iter().map(|d| (d.op, d.kernel)).collect())
            .unwrap_or_default()
    }

    pub fn staging(&self) -> Option<&wgpu::Buffer> {
        self.built.as_ref().map(|b| &b.staging)
    }
}

/// Timestamp queries around every dispatch of one step (see `WgpuBackend::profile_step`).
pub(crate) struct Profiler {
    pub queries: wgpu::QuerySet,
    pub resolve: wgpu::Buffer,
    pub staging: wgpu::Buffer,
}
