//! Lowering: each op of a plan becomes the dispatch records that run it, one function per op
//! (matrix products in `matmul.rs`). Parameters are fixed here; only the token ids change per
//! step.

use rwkv_core::backend::{BufId, Op, Plan, ShiftKind, WeightId, Wkv7Args};
use rwkv_core::Result;

use crate::gpu::{backend_err, unsupported, Gpu};
use crate::kernels::{GemmTile, Kernel, Kernels};
use crate::weights::{DeviceMatrix, DeviceWeight, UNIT};

use super::choice::{
    gemm_tile, ln_shift_vec4s, wkv_lanes, wkv_scan_geometry, GEMM_MIN_ROWS, LN_SHIFT_MAX_MIXES,
    MAX_HEAD_SIZE,
};
use super::layout::{ArenaLayout, StateAt, WorkState};
use super::matmul::ScratchBytes;
use super::record::{params, u32_of, Bind, Grid, Rec, NONE};

/// What lowering needs to know and what it accumulates.
pub(super) struct Lowering<'a> {
    pub gpu: &'a Gpu,
    pub plan: &'a Plan,
    pub arena: &'a ArenaLayout,
    pub work: &'a WorkState<'a>,
    weights: &'a [Option<DeviceWeight>],
    pub grid: Grid,
    /// Activation rows of the step (tokens of all sequences).
    rows: usize,
    rows_u: u32,
    n_seq: u32,
    n_tok: u32,
    /// Tile of the products on f16 scratch operands, where the device compiles them.
    pub gemm: Option<GemmTile>,
    /// Bytes of the scratch buffers (the largest any product of the plan needs).
    pub scratch: ScratchBytes,
    pub recs: Vec<Rec>,
}

/// The dispatches of every op of `plan`, then the argmax over the logits (last), and the f16
/// scratch sizes the products need.
pub(super) async fn lower(
    gpu: &Gpu,
    kernels: &mut Kernels,
    plan: &Plan,
    arena: &ArenaLayout,
    work: &WorkState<'_>,
    weights: &[Option<DeviceWeight>],
) -> Result<(Vec<Rec>, ScratchBytes)> {
    let shape = plan.shape;
    let rows = shape.rows();
    let max_dim = gpu.limits.max_compute_workgroups_per_dimension.max(1) as u64;
    let rows_u = u32_of(rows, "rows")?;
    let n_seq = u32_of(shape.n_seq, "sequences")?;
    let n_tok = u32_of(shape.n_tok, "tokens")?;
    // Products on f16 scratch operands: the tile, if the device compiles the kernel (it is
    // built on wgpu's experimental cooperative matrices). Plans with fewer rows never use it,
    // so decode plans do not compile it.
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
    let mut l = Lowering {
        gpu,
        plan,
        arena,
        work,
        weights,
        grid: Grid { max_dim },
        rows,
        rows_u,
        n_seq,
        n_tok,
        gemm,
        scratch: ScratchBytes::default(),
        recs: Vec::new(),
    };
    // A TokenShift op already done by the LayerNorm dispatch before it.
    let mut fused_shift: Option<usize> = None;
    for (i, op) in plan.ops.iter().enumerate() {
        if fused_shift == Some(i) {
            continue;
        }
        match op {
            Op::Embed { table, out } => l.lower_embed(i, *table, *out)?,
            Op::LayerNorm { x, w, b, out, eps } => {
                if l.lower_layer_norm(i, *x, *w, *b, *out, *eps)? {
                    fused_shift = Some(i + 1);
                }
            }
            Op::TokenShift {
                x,
                layer,
                kind,
                mixes,
            } => l.lower_token_shift(i, *x, *layer, *kind, mixes)?,
            Op::MatMul { jobs } => l.lower_matmul(i, jobs)?,
            Op::Wkv7(args) => l.lower_wkv7(i, args)?,
            Op::LastRows { x, out } => l.lower_last_rows(i, *x, *out)?,
        }
    }
    l.lower_argmax()?;
    Ok((l.recs, l.scratch))
}

impl<'a> Lowering<'a> {
    pub fn off(&self, b: BufId) -> Result<u32> {
        self.arena.off(b)
    }

    /// Offset of vector weight `w` in the vector buffer.
    pub fn vec_off(&self, w: WeightId) -> Result<u32> {
        match self.weights.get(w) {
            Some(Some(DeviceWeight::Vector { offset, .. })) => u32_of(*offset, "vector offset"),
            _ => Err(backend_err(format!("weight {w} is not a vector"))),
        }
    }

    pub fn matrix(&self, w: WeightId) -> Result<&'a DeviceMatrix> {
        match self.weights.get(w) {
            Some(Some(DeviceWeight::Matrix(m))) => Ok(m),
            _ => Err(backend_err(format!("weight {w} is not a matrix"))),
        }
    }

    /// Embed: one dispatch per chunk of the table, each writing the rows whose token falls in
    /// its chunk.
    fn lower_embed(&mut self, op: usize, table: WeightId, out: BufId) -> Result<()> {
        let m = self.matrix(table)?;
        let units = m.cols.div_ceil(UNIT);
        let (gx, gy) = self.grid.fit(((self.rows * units) as u64).div_ceil(64))?;
        let mut recs = Vec::with_capacity(m.chunks.len());
        for ch in &m.chunks {
            recs.push(Rec {
                op,
                kernel: Kernel::Embed(m.kind),
                params: params(&[
                    u32_of(ch.row_begin, "row")?,
                    u32_of(ch.row_begin + ch.rows, "row")?,
                    u32_of(m.cols, "cols")?,
                    u32_of(m.row_words, "row words")?,
                    self.rows_u,
                    self.off(out)?,
                    u32_of(units, "units")?,
                    gx,
                ]),
                binds: vec![Bind::Weight(ch.buffer.clone()), Bind::Arena, Bind::Tokens],
                groups: [gx, gy, 1],
            });
        }
        self.recs.append(&mut recs);
        Ok(())
    }

    /// LayerNorm, one workgroup per row; with the TokenShift op that follows when it shifts
    /// the normalized rows and nothing aliases (see ln_shift.wgsl). Returns whether it did
    /// that shift (the next op is then skipped).
    fn lower_layer_norm(
        &mut self,
        op: usize,
        x: BufId,
        w: WeightId,
        b: WeightId,
        out: BufId,
        eps: f32,
    ) -> Result<bool> {
        let plan = self.plan;
        let r = plan.rows_of(x);
        if r as u64 > self.grid.max_dim {
            return Err(unsupported(format!("{r} rows exceed the device's grid")));
        }
        let width = plan.buffers[x].width;
        let Some(vec4s) = ln_shift_vec4s(self.gpu, width) else {
            self.recs.push(Rec {
                op,
                kernel: Kernel::LayerNorm,
                params: params(&[
                    self.off(x)?,
                    self.off(out)?,
                    u32_of(width, "width")?,
                    self.vec_off(w)?,
                    self.vec_off(b)?,
                    eps.to_bits(),
                ]),
                binds: vec![Bind::Arena, Bind::Vecs],
                groups: [r as u32, 1, 1],
            });
            return Ok(false);
        };
        let work = self.work;
        let shift = match plan.ops.get(op + 1) {
            Some(Op::TokenShift {
                x: sx,
                layer,
                kind,
                mixes,
            }) if *sx == out
                && x != out
                && r == self.rows
                && mixes.len() <= LN_SHIFT_MAX_MIXES
                && mixes.iter().all(|(_, o)| *o != x && *o != out)
                && work
                    .shift_register(*layer, *kind, width)
                    .is_ok_and(StateAt::vec4) =>
            {
                Some((work.shift_register(*layer, *kind, width)?, mixes))
            }
            _ => None,
        };
        let (gx, gy) = self.grid.fit(r as u64)?;
        let mut p = vec![
            self.off(x)?,
            self.off(out)?,
            u32_of(width, "width")?,
            self.vec_off(w)?,
            self.vec_off(b)?,
            eps.to_bits(),
            if shift.is_some() { self.n_tok } else { 1 },
            shift.as_ref().map_or(0, |s| s.0.offset as u32),
            shift.as_ref().map_or(0, |s| s.0.stride as u32),
            shift.as_ref().map_or(0, |s| s.1.len() as u32),
            gx,
            u32_of(r, "rows")?,
        ];
        let mut binds = vec![Bind::Arena, Bind::Vecs];
        let fused = shift.is_some();
        if let Some((reg, mixes)) = shift {
            for (m, o) in mixes {
                p.push(self.vec_off(*m)?);
                p.push(self.off(*o)?);
            }
            binds.push(Bind::State(reg.chunk));
        }
        self.recs.push(Rec {
            op,
            kernel: Kernel::LnShift {
                vec4s,
                shift: fused,
            },
            params: params(&p),
            binds,
            groups: [gx, gy, 1],
        });
        Ok(fused)
    }

    /// A TokenShift not fused into a LayerNorm: the row-parallel kernel, unless an output is
    /// x itself (a later row would read it after it was overwritten); then one invocation per
    /// channel walks the tokens.
    fn lower_token_shift(
        &mut self,
        op: usize,
        x: BufId,
        layer: usize,
        kind: ShiftKind,
        mixes: &[(WeightId, BufId)],
    ) -> Result<()> {
        let width = self.plan.buffers[x].width;
        let reg = self.work.shift_register(layer, kind, width)?;
        let parallel = ln_shift_vec4s(self.gpu, width)
            .filter(|_| reg.vec4())
            .filter(|_| mixes.len() <= LN_SHIFT_MAX_MIXES)
            .filter(|_| mixes.iter().all(|(_, o)| *o != x));
        let mut mix_words = Vec::with_capacity(2 * mixes.len());
        for (m, o) in mixes {
            mix_words.push(self.vec_off(*m)?);
            mix_words.push(self.off(*o)?);
        }
        if let Some(vec4s) = parallel {
            let (gx, gy) = self.grid.fit(self.rows as u64)?;
            let mut p = vec![
                self.off(x)?,
                NONE,
                u32_of(width, "width")?,
                NONE,
                NONE,
                0,
                self.n_tok,
                reg.offset as u32,
                reg.stride as u32,
                mixes.len() as u32,
                gx,
                self.rows_u,
            ];
            p.extend(mix_words);
            self.recs.push(Rec {
                op,
                kernel: Kernel::LnShift { vec4s, shift: true },
                params: params(&p),
                binds: vec![Bind::Arena, Bind::Vecs, Bind::State(reg.chunk)],
                groups: [gx, gy, 1],
            });
            return Ok(());
        }
        let (gx, gy) = self
            .grid
            .fit(((self.plan.shape.n_seq * width) as u64).div_ceil(64))?;
        let mut p = vec![
            self.off(x)?,
            u32_of(width, "width")?,
            self.n_seq,
            self.n_tok,
            reg.offset as u32,
            reg.stride as u32,
            mixes.len() as u32,
            gx,
        ];
        p.extend(mix_words);
        self.recs.push(Rec {
            op,
            kernel: Kernel::TokenShift,
            params: params(&p),
            binds: vec![Bind::Arena, Bind::Vecs, Bind::State(reg.chunk)],
            groups: [gx, gy, 1],
        });
        Ok(())
    }

    /// WKV-7: for prefill three passes (wkv7_prep / wkv7_scan / wkv7_post.wgsl, the state
    /// recurrence with no barrier per token) where the scratch arrays and the scan fit, else
    /// one token-loop kernel (wkv7_split.wgsl with vec4 state access, or wkv7.wgsl).
    fn lower_wkv7(&mut self, op: usize, wa: &Wkv7Args) -> Result<()> {
        let plan = self.plan;
        let shape = plan.shape;
        let width = plan.buffers[wa.r].width;
        let n = plan.state.head_size;
        if n == 0 || n > MAX_HEAD_SIZE || !width.is_multiple_of(n) {
            return Err(unsupported(format!(
                "head size {n} is not supported (width {width})"
            )));
        }
        if n as u32 > self.gpu.limits.max_compute_invocations_per_workgroup {
            return Err(unsupported(format!(
                "head size {n} exceeds the device's workgroup size"
            )));
        }
        let s_at = self.work.wkv_matrix(wa.layer, width, n)?;
        let mut words = vec![
            self.off(wa.r)?,
            self.off(wa.w)?,
            self.off(wa.k)?,
            self.off(wa.v)?,
            self.off(wa.a)?,
            self.off(wa.g)?,
            self.off(wa.v_first)?,
            match wa.v_mix {
                Some(m) => self.off(m)?,
                None => NONE,
            },
            self.off(wa.out)?,
            u32_of(width, "width")?,
            self.n_tok,
            s_at.offset as u32,
            s_at.stride as u32,
            self.vec_off(wa.k_k)?,
            self.vec_off(wa.k_a)?,
            self.vec_off(wa.r_k)?,
            self.vec_off(wa.ln_x_w)?,
            self.vec_off(wa.ln_x_b)?,
            wa.gn_eps.to_bits(),
        ];
        // The scan writes raw y into `out` before its inputs are all read: `out` must be none
        // of them.
        let inputs = [wa.r, wa.w, wa.k, wa.v, wa.a, wa.g, wa.v_first];
        let max_dim = self.grid.max_dim;
        let scan = match self.arena.wkv_scratch {
            Some(scratch)
                if shape.n_tok >= 2
                    && !inputs.contains(&wa.out)
                    && wa.v_mix.is_none_or(|m| m != wa.out)
                    && (self.rows as u64) <= max_dim
                    && ((width / n) as u64) <= max_dim =>
            {
                wkv_scan_geometry(self.gpu, n, s_at, (width / n) * shape.n_seq)
                    .map(|geometry| (scratch, geometry))
            }
            _ => None,
        };
        let heads = u32_of(width / n, "heads")?;
        let head_size = n as u32;
        if let Some((scratch, (chunk, lanes))) = scan {
            let at = |i: usize| u32_of(scratch.offset + i * scratch.stride, "offset");
            words.resize(24, 0);
            words.extend([
                self.off(wa.r)?,
                self.off(wa.w)?,
                at(0)?,
                at(1)?,
                at(2)?,
                at(3)?,
            ]);
            for (kernel, binds, groups) in [
                (
                    Kernel::Wkv7Prep { head_size },
                    vec![Bind::Arena, Bind::Vecs],
                    [heads, self.rows_u, 1],
                ),
                (
                    Kernel::Wkv7Scan {
                        head_size,
                        chunk,
                        lanes,
                    },
                    vec![Bind::Arena, Bind::State(s_at.chunk)],
                    [heads, self.n_seq, 1],
                ),
                (
                    Kernel::Wkv7Post { head_size },
                    vec![Bind::Arena, Bind::Vecs],
                    [heads, self.rows_u, 1],
                ),
            ] {
                self.recs.push(Rec {
                    op,
                    kernel,
                    params: params(&words),
                    binds,
                    groups,
                });
            }
            return Ok(());
        }
        let kernel = match wkv_lanes(self.gpu, n, s_at) {
            Some(lanes) => Kernel::Wkv7Split { head_size, lanes },
            None => Kernel::Wkv7 { head_size },
        };
        self.recs.push(Rec {
            op,
            kernel,
            params: params(&words),
            binds: vec![Bind::Arena, Bind::Vecs, Bind::State(s_at.chunk)],
            groups: [heads, self.n_seq, 1],
        });
        Ok(())
    }

    fn lower_last_rows(&mut self, op: usize, x: BufId, out: BufId) -> Result<()> {
        let width = self.plan.buffers[x].width;
        let (gx, gy) = self
            .grid
            .fit(((self.plan.shape.n_seq * width) as u64).div_ceil(64))?;
        self.recs.push(Rec {
            op,
            kernel: Kernel::LastRows,
            params: params(&[
                self.off(x)?,
                self.off(out)?,
                u32_of(width, "width")?,
                self.n_seq,
                self.n_tok,
                gx,
            ]),
            binds: vec![Bind::Arena],
            groups: [gx, gy, 1],
        });
        Ok(())
    }

    /// The argmax of every logit row (dispatched only by steps that ask for it).
    fn lower_argmax(&mut self) -> Result<()> {
        let plan = self.plan;
        let logit_rows = plan.rows_of(plan.logits);
        if logit_rows as u64 > self.grid.max_dim {
            return Err(unsupported(format!(
                "{logit_rows} logit rows exceed the device's grid"
            )));
        }
        self.recs.push(Rec {
            op: plan.ops.len(),
            kernel: Kernel::Argmax,
            params: params(&[
                self.off(plan.logits)?,
                u32_of(plan.buffers[plan.logits].width, "vocab")?,
                u32_of(self.arena.argmax_off, "offset")?,
            ]),
            binds: vec![Bind::Arena],
            groups: [logit_rows as u32, 1, 1],
        });
        Ok(())
    }
}
