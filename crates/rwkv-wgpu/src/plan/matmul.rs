//! Lowering of MatMul ops: the kernel of each product (by rows, dtype and device), one
//! dispatch per (job, matrix chunk) merged into multi-product dispatches, and the products on
//! f16 scratch operands ([`GemmProduct`]).

use rwkv_core::backend::MatJob;
use rwkv_core::Result;

use crate::gpu::{backend_err, unsupported, Gpu};
use crate::kernels::{GemmTile, Kernel};
use crate::weights::{DeviceMatrix, PackedKind, UNIT};

use super::choice::{
    matvec_float_lanes, tiled_rows_per_invocation, use_coop, GEMM_MIN_ROWS, GEMM_MIN_SPLIT_K,
    GEMM_MIN_TILES, MATMUL_TILE, MATVEC_FLOAT_WG, MATVEC_ROWS, MATVEC_SG_WG, NARROW_UNITS,
    TILED_COLS, W16_CAP_BYTES,
};
use super::lower::Lowering;
use super::record::{act_code, params, u32_of, Bind, Grid, Rec, NONE};

impl Lowering<'_> {
    /// The products of one MatMul op: on f16 scratch operands where the plan has the tile and
    /// the product fits, else one single-product dispatch per (job, chunk), merged below.
    pub(super) fn lower_matmul(&mut self, op: usize, jobs: &[MatJob]) -> Result<()> {
        let gpu = self.gpu;
        let plan = self.plan;
        let mut singles: Vec<(Rec, u64)> = Vec::new();
        for j in jobs {
            let m = self.matrix(j.weight)?;
            let x_rows = plan.rows_of(j.x);
            let tile = self
                .gemm
                .filter(|_| x_rows >= GEMM_MIN_ROWS && m.cols % 4 == 0);
            if let Some(tile) = tile {
                let bias = j.bias.map(|b| self.vec_off(b)).transpose()?;
                let product = GemmProduct {
                    tile,
                    matrix: m,
                    x_rows,
                    x_off: self.off(j.x)?,
                    out_off: self.arena.offsets[j.out],
                    bias,
                    act: act_code(j.act),
                    accumulate: j.accumulate,
                };
                if let Some(mut more) = product.recs(gpu, op, self.grid, &mut self.scratch)? {
                    self.recs.append(&mut more);
                    continue;
                }
            }
            let units = m.cols.div_ceil(UNIT);
            let tiles = x_rows.div_ceil(MATMUL_TILE) as u64;
            let n_rows = u32_of(x_rows, "rows")?;
            if tiles > self.grid.max_dim {
                return Err(unsupported(format!(
                    "{n_rows} rows exceed the device's grid"
                )));
            }
            let tiled_tm = tiled_rows_per_invocation(gpu, x_rows);
            let narrow = units <= NARROW_UNITS;
            // Invocations per row: no more than the row has units (short rows of small
            // models); the rest of the 64 take further rows.
            let tpr = units.next_power_of_two().clamp(16, 64);
            let coop = use_coop(gpu, x_rows, m.cols);
            let matvec_lanes = matvec_float_lanes(gpu, m.kind, m.cols);
            // Word 11 of the parameters: units per row, or the float matrix-vector kernel's
            // invocations per row.
            let mut word11 = units;
            let (kernel, rows_per_group, tiles) = match (tiled_tm, matvec_lanes) {
                // Same tile of 64 x 64 and parameters as the tiled kernel at TM = 4.
                _ if coop => (
                    Kernel::MatMulCoop(m.kind),
                    TILED_COLS,
                    x_rows.div_ceil(64) as u64,
                ),
                (Some(tm), _) => (
                    Kernel::MatMulTiled(m.kind, tm),
                    TILED_COLS,
                    x_rows.div_ceil(16 * tm as usize) as u64,
                ),
                // Q4_K rows are whole 256-value blocks; arena offsets are multiples of 4
                // values, as its vec4 activation loads need.
                (None, _) if m.kind == PackedKind::Q4K => match gpu.matvec_sg {
                    // Subgroups of `size` lanes, each owning rows_per_subgroup rows.
                    Some(sg) => (
                        Kernel::MatVecQ4KSg {
                            sg: sg.size,
                            rps: sg.rows_per_subgroup,
                            jobs: 1,
                        },
                        (MATVEC_SG_WG / sg.size * sg.rows_per_subgroup) as usize,
                        x_rows as u64,
                    ),
                    None => (Kernel::MatVecQ4K(1), MATVEC_ROWS, x_rows as u64),
                },
                (None, Some(lanes)) => {
                    word11 = lanes;
                    (Kernel::MatVec(m.kind, 1), MATVEC_FLOAT_WG / lanes, tiles)
                }
                (None, None) if narrow => (Kernel::MatMulNarrow(m.kind, 1), 64, tiles),
                (None, None) => (Kernel::MatMul(m.kind, tpr as u32, 1), 64 / tpr, tiles),
            };
            for ch in &m.chunks {
                let groups = (ch.rows as u64).div_ceil(rows_per_group as u64);
                let (gx, gy) = self.grid.fit(groups)?;
                singles.push((
                    Rec {
                        op,
                        kernel,
                        params: params(&[
                            u32_of(ch.rows, "rows")?,
                            u32_of(m.cols, "cols")?,
                            u32_of(m.row_words, "row words")?,
                            n_rows,
                            self.off(j.x)?,
                            u32_of(self.arena.offsets[j.out] + ch.row_begin, "offset")?,
                            u32_of(m.rows, "out width")?,
                            match j.bias {
                                Some(b) => self.vec_off(b)? + u32_of(ch.row_begin, "row")?,
                                None => NONE,
                            },
                            act_code(j.act),
                            j.accumulate as u32,
                            gx,
                            u32_of(word11, "units")?,
                        ]),
                        binds: vec![Bind::Weight(ch.buffer.clone()), Bind::Arena, Bind::Vecs],
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
            let rec = merged_rec(group, self.grid)?;
            self.recs.push(rec);
        }
        Ok(())
    }
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
fn merged_rec(group: Vec<(Rec, u64)>, grid: Grid) -> Result<Rec> {
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
    let (gx, gy) = grid.fit(total)?;
    rec.params[10] = gx;
    rec.groups = [gx, gy, rec.groups[2]];
    let jobs = 1 + rest.len() as u32;
    rec.kernel = with_jobs(rec.kernel, jobs).unwrap_or(rec.kernel);
    Ok(rec)
}

/// Bytes of a plan's f16 scratch buffers: the largest any of its products needs.
#[derive(Default)]
pub(super) struct ScratchBytes {
    pub x16: u64,
    pub w16: u64,
    pub part: u64,
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
        grid: Grid,
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
        let (gx, gy) = grid.fit((x_bytes / 8).div_ceil(256))?;
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
                let (gx, gy) = grid.fit(((n_pad / 64) * (k32 / 32)) as u64)?;
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
                if col_tiles as u64 > grid.max_dim || row_tiles as u64 > grid.max_dim {
                    return Err(unsupported(format!(
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
                    let (gx, gy) = grid.fit(((self.x_rows * ns) as u64).div_ceil(256))?;
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
