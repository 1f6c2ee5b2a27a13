//! Row ops: Embed (+ ln0), LayerNorm (+ the token shift it feeds), TokenShift, LastRows (+ the
//! final LayerNorm). All run one block per row (ops.cu).

use rwkv_core::backend::{BufId, Op, ShiftKind, StatePart, WeightId};
use rwkv_core::Result;

use super::Lowering;
use crate::gpu::ArgList;
use crate::kernels::{Kernel, ShiftArgs, ShiftValues, MAX_SHIFT_MIXES};
use crate::{i32_of, invalid, unsupported};

/// Widest row the row kernels take: at most LN_MAXV (8) values per thread of 1024 threads.
const MAX_ROW_WIDTH: usize = 8 * 1024;

/// Threads of a row kernel over `n` values (layer norm, embed): about 4 values per thread;
/// the kernels keep at most 8 per thread in registers (LN_MAXV).
fn ln_threads(n: usize) -> Result<u32> {
    let t = n.div_ceil(4).div_ceil(32).clamp(1, 32) * 32;
    if n > 8 * t {
        return Err(unsupported(format!(
            "row width {n} exceeds the row kernels' limit of {MAX_ROW_WIDTH}"
        )));
    }
    Ok(t as u32)
}

/// `Op::Embed`, with the LayerNorm after it fused when it normalizes the embedding in place.
pub(super) fn embed(lw: &mut Lowering, ops: &[Op], i: usize) -> Result<usize> {
    let Op::Embed { table, out } = &ops[i] else {
        return Err(invalid("embed: not an Embed op"));
    };
    let rows = lw.plan.shape.rows();
    let t = lw
        .weights
        .matrix(*table, "Embed")
        .map_err(|_| invalid("Embed: the table must be an uploaded matrix"))?;
    let cols = t.cols;
    if lw.width(*out) != cols || lw.rows_of(*out) != rows {
        return Err(invalid(
            "Embed: output buffer shape disagrees with the table",
        ));
    }
    // (ln weight, ln bias, eps); null weights: no norm.
    let mut ln = (0u64, 0u64, 0f32);
    let mut consumed = 1;
    if let Some(Op::LayerNorm {
        x,
        w,
        b,
        out: o2,
        eps,
    }) = ops.get(i + 1)
    {
        if x == out && o2 == out {
            ln = (lw.vector(*w, cols)?, lw.vector(*b, cols)?, *eps);
            consumed = 2;
        }
    }
    let args = ArgList::default()
        .ptr(lw.cp.tokens.ptr)
        .i32(t.dtype as i32)
        .ptr(t.q)
        .ptr(t.m)
        .i32(i32_of(cols, "width")?)
        .ptr(lw.buf(*out)?)
        .ptr(ln.0)
        .ptr(ln.1)
        .f32(ln.2)
        .0;
    lw.push(
        Kernel::Embed,
        (rows as u32, 1, 1),
        (ln_threads(cols)?, 1, 1),
        args,
    )?;
    Ok(consumed)
}

/// `Op::LayerNorm`; when the next op token-shifts its output (and the norm does not work in
/// place), both become one ln_shift launch.
pub(super) fn layer_norm(lw: &mut Lowering, ops: &[Op], i: usize) -> Result<usize> {
    let Op::LayerNorm { x, w, b, out, eps } = &ops[i] else {
        return Err(invalid("layer_norm: not a LayerNorm op"));
    };
    let rows = lw.plan.shape.rows();
    let n = lw.width(*x);
    if lw.width(*out) != n || lw.rows_of(*x) != lw.rows_of(*out) {
        return Err(invalid("LayerNorm: input and output shapes differ"));
    }
    let wp = lw.vector(*w, n)?;
    let bp = lw.vector(*b, n)?;
    if let Some(Op::TokenShift {
        x: sx,
        layer,
        kind,
        mixes,
    }) = ops.get(i + 1)
    {
        if sx == out && x != out && lw.rows_of(*x) == rows {
            let shift = Shift {
                x: lw.buf(*x)?,
                xn: lw.buf(*out)?,
                ln: (wp, bp, *eps),
                n,
                layer: *layer,
                kind: *kind,
                mixes,
            };
            push_shift(lw, &shift)?;
            return Ok(2);
        }
    }
    let args = ArgList::default()
        .ptr(lw.buf(*x)?)
        .ptr(lw.buf(*out)?)
        .ptr(wp)
        .ptr(bp)
        .i32(i32_of(n, "width")?)
        .f32(*eps)
        .i32(1)
        .i32(0)
        .ptr(0)
        .0;
    lw.push(
        Kernel::LayerNorm,
        (lw.rows_of(*x) as u32, 1, 1),
        (ln_threads(n)?, 1, 1),
        args,
    )?;
    Ok(1)
}

/// `Op::TokenShift` on its own (its input not produced by a LayerNorm just before).
pub(super) fn token_shift(lw: &mut Lowering, ops: &[Op], i: usize) -> Result<usize> {
    let Op::TokenShift {
        x,
        layer,
        kind,
        mixes,
    } = &ops[i]
    else {
        return Err(invalid("token_shift: not a TokenShift op"));
    };
    let n = lw.width(*x);
    if lw.rows_of(*x) != lw.plan.shape.rows() {
        return Err(invalid("TokenShift: input must have one row per token"));
    }
    let shift = Shift {
        x: lw.buf(*x)?,
        xn: lw.buf(*x)?,
        ln: (0, 0, 0.0),
        n,
        layer: *layer,
        kind: *kind,
        mixes,
    };
    push_shift(lw, &shift)?;
    Ok(1)
}

/// One token shift: `xn` the shifted rows (the norm's output when `ln` has weights, else the
/// input itself), `n` values per row.
struct Shift<'m> {
    x: u64,
    xn: u64,
    /// (ln weight, ln bias, eps); null weights: no norm.
    ln: (u64, u64, f32),
    n: usize,
    layer: usize,
    kind: ShiftKind,
    mixes: &'m [(WeightId, BufId)],
}

/// The ln_shift launch of `s` (float4 or scalar kernel), then for prefill the store of each
/// sequence's last row into its register.
fn push_shift(lw: &mut Lowering, s: &Shift) -> Result<()> {
    let plan = lw.plan;
    let rows = plan.shape.rows();
    let n_tok = plan.shape.n_tok;
    let n = s.n;
    if s.mixes.len() > MAX_SHIFT_MIXES {
        return Err(unsupported(format!(
            "TokenShift: at most {MAX_SHIFT_MIXES} mixes"
        )));
    }
    let state_len = lw.state_len;
    let part = match s.kind {
        ShiftKind::Ffn => StatePart::FfnShift,
        ShiftKind::Att => StatePart::AttShift,
    };
    let register = plan
        .state
        .range(s.layer, part)
        .filter(|r| r.end <= state_len || state_len == 0)
        .ok_or_else(|| invalid(format!("TokenShift: layer {} is beyond the state", s.layer)))?;
    let mut shift_args = ShiftArgs {
        n_mix: s.mixes.len() as i32,
        ..ShiftArgs::default()
    };
    for (j, (wid, ob)) in s.mixes.iter().enumerate() {
        if lw.width(*ob) != n || plan.rows_of(*ob) != rows {
            return Err(invalid("TokenShift: output buffer shape"));
        }
        shift_args.mix[j] = lw.vector(*wid, n)?;
        shift_args.out[j] = lw.buf(*ob)?;
    }
    let reg_off = register.start;
    if n > MAX_ROW_WIDTH {
        return Err(unsupported(format!(
            "TokenShift: width {n} exceeds {MAX_ROW_WIDTH}"
        )));
    }
    // Widths that are a multiple of 4, up to 4096 (every released model), take the float4
    // kernel, 8 values per thread; the others the scalar one with 2, 4 or 8.
    let (kernel, per_thread) = if n % 4 == 0 && n <= 4096 && lw.options.ln_shift_vec {
        (Kernel::LnShiftVec, 8)
    } else {
        let values = if n <= 2048 {
            ShiftValues::V2
        } else if n <= 4096 {
            ShiftValues::V4
        } else {
            ShiftValues::V8
        };
        (Kernel::LnShift { values }, values.count())
    };
    let slots_ptr = lw.cp.slots.ptr;
    let args = ArgList::default()
        .ptr(s.x)
        .ptr(s.xn)
        .ptr(s.ln.0)
        .ptr(s.ln.1)
        .f32(s.ln.2)
        .i32(i32_of(n, "width")?)
        .i32(i32_of(n_tok, "tokens")?)
        .ptr(slots_ptr)
        .ptr(lw.state_ptr)
        .i64(state_len as i64)
        .i64(reg_off as i64)
        .bytes(shift_args.to_bytes())
        .0;
    lw.push(
        kernel,
        (rows as u32, 1, 1),
        ((n.div_ceil(per_thread).div_ceil(32) * 32) as u32, 1, 1),
        args,
    )?;
    if n_tok > 1 {
        let args = ArgList::default()
            .ptr(s.xn)
            .i32(i32_of(n, "width")?)
            .i32(i32_of(n_tok, "tokens")?)
            .ptr(slots_ptr)
            .ptr(lw.state_ptr)
            .i64(state_len as i64)
            .i64(reg_off as i64)
            .0;
        lw.push(
            Kernel::ShiftStore,
            (plan.shape.n_seq as u32, 1, 1),
            (256, 1, 1),
            args,
        )?;
    }
    Ok(())
}

/// `Op::LastRows`; when the next op layer-norms its output into another buffer, one
/// layernorm launch reads the last rows directly.
pub(super) fn last_rows(lw: &mut Lowering, ops: &[Op], i: usize) -> Result<usize> {
    let Op::LastRows { x, out } = &ops[i] else {
        return Err(invalid("last_rows: not a LastRows op"));
    };
    let shape = lw.plan.shape;
    let n_tok = shape.n_tok;
    let n = lw.width(*x);
    if lw.width(*out) != n || lw.rows_of(*out) != shape.n_seq || lw.rows_of(*x) != shape.rows() {
        return Err(invalid("LastRows: shapes disagree"));
    }
    if let Some(Op::LayerNorm {
        x: lx,
        w,
        b,
        out: lo,
        eps,
    }) = ops.get(i + 1)
    {
        if lx == out && lo != out && lw.width(*lo) == n && lw.rows_of(*lo) == shape.n_seq {
            // Row s of the norm reads row s * n_tok + n_tok - 1 of x and copies it to `out`.
            let args = ArgList::default()
                .ptr(lw.buf(*x)?)
                .ptr(lw.buf(*lo)?)
                .ptr(lw.vector(*w, n)?)
                .ptr(lw.vector(*b, n)?)
                .i32(i32_of(n, "width")?)
                .f32(*eps)
                .i32(i32_of(n_tok, "tokens")?)
                .i32(i32_of(n_tok - 1, "tokens")?)
                .ptr(lw.buf(*out)?)
                .0;
            lw.push(
                Kernel::LayerNorm,
                (shape.n_seq as u32, 1, 1),
                (ln_threads(n)?, 1, 1),
                args,
            )?;
            return Ok(2);
        }
    }
    let args = ArgList::default()
        .ptr(lw.buf(*x)?)
        .ptr(lw.buf(*out)?)
        .i32(i32_of(n, "width")?)
        .i32(i32_of(n_tok, "tokens")?)
        .0;
    lw.push(
        Kernel::LastRows,
        (shape.n_seq as u32, 1, 1),
        (256, 1, 1),
        args,
    )?;
    Ok(1)
}
