//! `Op::Wkv7`: one fused kernel per token for decode; for prefill three (state-independent
//! vectors per row, the scan over tokens, group norm and gate per row), all taking one
//! [`WkvArgs`] block.

use rwkv_core::backend::{StatePart, Wkv7Args};
use rwkv_core::Result;

use super::Lowering;
use crate::gpu::err;
use crate::kernels::{HeadSize, Kernel, WkvArgs};
use crate::{i32_of, invalid, unsupported};

pub(super) fn wkv7(lw: &mut Lowering, wa: &Wkv7Args) -> Result<usize> {
    let Wkv7Args {
        layer,
        r,
        w,
        k,
        v,
        a,
        g,
        v_first,
        v_mix,
        out,
        ..
    } = wa;
    let shape = lw.plan.shape;
    let rows = shape.rows();
    let n_tok = shape.n_tok;
    let c = lw.width(*r);
    for bb in [*r, *w, *k, *v, *a, *g, *v_first, *out]
        .iter()
        .chain(v_mix.iter())
    {
        if lw.width(*bb) != c || lw.rows_of(*bb) != rows {
            return Err(invalid("Wkv7: every input must be [rows, C]"));
        }
    }
    // Layer geometry from the plan's state layout (validated at compile).
    let head_values = lw.plan.state.head_size;
    let head = HeadSize::of(head_values)
        .filter(|_| c % head_values == 0)
        .ok_or_else(|| {
            unsupported(format!(
                "Wkv7: head size {head_values} is not supported (16, 32, 64, 128)"
            ))
        })?;
    let h = c / head_values;
    let s_off = layer * lw.plan.state.layer_len()
        + lw.plan
            .state
            .part_offset(StatePart::WkvMatrix)
            .ok_or_else(|| invalid("Wkv7: the state has no WKV matrix"))?;
    let cp = lw.cp;
    let args = WkvArgs {
        r: lw.buf(*r)?,
        w: lw.buf(*w)?,
        k: lw.buf(*k)?,
        v: lw.buf(*v)?,
        a: lw.buf(*a)?,
        g: lw.buf(*g)?,
        v_first: lw.buf(*v_first)?,
        v_mix: match v_mix {
            Some(b) => lw.buf(*b)?,
            None => 0,
        },
        k_k: lw.vector(wa.k_k, c)?,
        k_a: lw.vector(wa.k_a, c)?,
        r_k: lw.vector(wa.r_k, c)?,
        ln_w: lw.vector(wa.ln_x_w, c)?,
        ln_b: lw.vector(wa.ln_x_b, c)?,
        out: lw.buf(*out)?,
        state: lw.state_ptr,
        slots: cp.slots.ptr,
        kk: cp.wkv_kk.ptr,
        b: cp.wkv_b.ptr,
        bonus: cp.wkv_bonus.ptr,
        state_len: lw.state_len as i64,
        s_off: s_off as i64,
        c: i32_of(c, "width")?,
        n_tok: i32_of(n_tok, "tokens")?,
        gn_eps: wa.gn_eps,
    }
    .to_bytes();
    let n = head_values as u32;
    if n_tok == 1 {
        // Four lanes per row of S (wkv7.cu).
        lw.push(
            Kernel::Wkv7Fused { head },
            (h as u32, shape.n_seq as u32, 1),
            (4 * n, 1, 1),
            vec![args],
        )?;
    } else {
        if cp.wkv_kk.bytes < rows * c * 4 || cp.wkv_bonus.bytes < rows * h * 4 {
            return Err(err("Wkv7: scratch buffers too small"));
        }
        let wide = n.max(32);
        lw.push(
            Kernel::Wkv7Pre { head },
            (h as u32, rows as u32, 1),
            (wide, 1, 1),
            vec![args.clone()],
        )?;
        // wkv7.cu's WKV_SCAN_ROWS (16) rows of S per block.
        lw.push(
            Kernel::Wkv7Scan { head },
            (
                h as u32,
                shape.n_seq as u32,
                (head_values / 16).max(1) as u32,
            ),
            (64, 1, 1),
            vec![args.clone()],
        )?;
        lw.push(
            Kernel::Wkv7Post { head },
            (h as u32, rows as u32, 1),
            (wide, 1, 1),
            vec![args],
        )?;
    }
    Ok(1)
}
