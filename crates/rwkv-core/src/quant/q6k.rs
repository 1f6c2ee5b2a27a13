//! Q6_K quantization (our own search; layout in docs/gguf-formats.md §3).
//!
//! A 256-value super-block is 16 sub-blocks of 16. Each value is `d·sc[j]·q` with signed 6-bit
//! `q` (−32..=31), a signed 8-bit sub-block scale `sc[j]` and an f16 `d`. We
//! 1. fit each sub-block's float scale: the value of largest magnitude is mapped near −32 (the
//!    longer side of the signed range; the scale's sign follows that value), trying a fan of
//!    targets and refitting the scale by least squares for each,
//! 2. set `d` so the largest |scale| maps to 127,
//! 3. round each scale to 8 bits, trying the neighbours ±1 and keeping the one with the smallest
//!    squared error after re-quantizing,
//! 4. write the quants for the chosen scales.

use crate::error::{Error, Result};

const SUB: usize = 16;
/// Targets tried for the largest-magnitude value: TARGET_LO ..= TARGET_LO + (TARGETS−1)·STEP
/// quant steps from zero (above 32 the extremes clip, which can pay off for bell-shaped data).
const TARGETS: usize = 9;
const TARGET_LO: f32 = 30.0;
const TARGET_STEP: f32 = 0.375;

pub(super) fn quantize_q6_k(src: &[f32], dst: &mut [u8]) -> Result<()> {
    for (x, block) in src.chunks_exact(256).zip(dst.chunks_exact_mut(210)) {
        quantize_block(x, block)?;
    }
    Ok(())
}

/// Nearest level −32..=31 of `t` (in quant units), as a float; the same add-and-subtract
/// rounding as Q4_K's (ties to even, vectorizes).
#[inline(always)]
fn nearest_level(t: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0;
    (t.clamp(-32.0, 31.0) + ROUNDER) - ROUNDER
}

/// Squared error of `x` against `scale·q` with q the nearest level.
fn requantized_error(x: &[f32], scale: f32) -> f32 {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    x.iter()
        .map(|&v| {
            let diff = scale * nearest_level(v * inv) - v;
            diff * diff
        })
        .sum()
}

/// Best float scale for one sub-block (value ≈ scale·q).
fn fit_sub_block(x: &[f32]) -> f32 {
    let extreme = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    if extreme == 0.0 {
        return 0.0;
    }
    let mut best = -extreme / 32.0;
    let mut best_err = f32::INFINITY;
    for t in 0..TARGETS {
        let iscale = -(TARGET_LO + t as f32 * TARGET_STEP) / extreme;
        let (mut sxq, mut sqq) = (0f32, 0f32);
        for &v in x {
            let q = nearest_level(v * iscale);
            sxq += v * q;
            sqq += q * q;
        }
        if sqq <= 0.0 {
            continue;
        }
        let scale = sxq / sqq;
        // For fixed quants, Σ(s·q − x)² at the least-squares s is Σx² − (Σxq)²/Σq²; the
        // refit scale may move some quants, so measure the real error.
        let err = requantized_error(x, scale);
        if scale.is_finite() && err < best_err {
            best_err = err;
            best = scale;
        }
    }
    best
}

fn quantize_block(x: &[f32], out: &mut [u8]) -> Result<()> {
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::invalid("quantize q6k: non-finite value"));
    }
    let mut scales = [0f32; 16];
    for (j, s) in scales.iter_mut().enumerate() {
        *s = fit_sub_block(&x[SUB * j..SUB * (j + 1)]);
    }
    let max_abs = scales.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = half::f16::from_f32(max_abs / 127.0);
    if !d.is_finite() {
        return Err(Error::invalid(
            "quantize q6k: values too large for an f16 super-scale",
        ));
    }
    let df = d.to_f32();
    let mut sc = [0i8; 16];
    let mut quants = [0u8; 256];
    for j in 0..16 {
        let xs = &x[SUB * j..SUB * (j + 1)];
        let start = if df > 0.0 {
            (scales[j] / df).round().clamp(-128.0, 127.0) as i32
        } else {
            0
        };
        let mut best_err = f32::INFINITY;
        for try_sc in (start - 1).max(-128)..=(start + 1).min(127) {
            // The same f32 product the dequantizer forms first.
            let err = requantized_error(xs, df * try_sc as f32);
            if err < best_err {
                best_err = err;
                sc[j] = try_sc as i8;
            }
        }
        let eff = df * sc[j] as f32;
        let inv = if eff != 0.0 { 1.0 / eff } else { 0.0 };
        for (q, &v) in quants[SUB * j..SUB * (j + 1)].iter_mut().zip(xs) {
            // −32..=31 stored with a +32 offset as 0..=63.
            *q = (nearest_level(v * inv) + 32.0) as u8;
        }
    }

    // Packing, the inverse of the dequantizer: each 128-value half n holds four 32-value rows
    // k = 0..4; low nibbles go to ql (rows 0/1 low, 2/3 high), the top two bits to qh.
    for n in 0..2 {
        for l in 0..32 {
            let q = |k: usize| quants[128 * n + 32 * k + l];
            out[64 * n + l] = (q(0) & 15) | ((q(2) & 15) << 4);
            out[64 * n + l + 32] = (q(1) & 15) | ((q(3) & 15) << 4);
            out[128 + 32 * n + l] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
    for (o, s) in out[192..208].iter_mut().zip(sc) {
        *o = s as u8;
    }
    out[208..210].copy_from_slice(&d.to_le_bytes());
    Ok(())
}
