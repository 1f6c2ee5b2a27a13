//! Q4_K and Q5_K quantization (our own search; layouts in docs/gguf-formats.md §3).
//!
//! A 256-value super-block is 8 sub-blocks of 32. Each value is `d·sc[j]·q − dmin·mn[j]` with
//! `q` of 4 bits (Q4_K, levels 0..=15) or 5 bits (Q5_K, 0..=31), 6-bit `sc`/`mn` and f16
//! `d`/`dmin`. Both share the search, generic over the top level `NMAX`; only the packing
//! differs. We
//! 1. fit each sub-block's float scale and min (min >= 0, i.e. offset <= 0 as the format needs)
//!    by trying a fan of quantization grids and least-squares refitting on each,
//! 2. set `d`/`dmin` so the largest sub-block scale/min maps to 63,
//! 3. round each sub-block's scale/min to 6 bits, trying the neighbours ±1 of each and keeping
//!    the pair with the smallest squared error after re-quantizing,
//! 4. write the quants for the chosen pair.

use super::dequant::unpack_k_scales;
use crate::error::{Error, Result};

const SUB: usize = 32;
/// Grids tried per sub-block: (max − min)·iscale spans NMAX − 1 ..= NMAX − 1 + (GRIDS−1)·GRID_STEP
/// quant steps; spans above NMAX clip the extremes, which pays off for bell-shaped data.
const GRIDS: usize = 9;
const GRID_STEP: f32 = 0.25;
/// Top quant level of Q4_K (4 bits) and Q5_K (5 bits).
const Q4_NMAX: u8 = 15;
const Q5_NMAX: u8 = 31;

pub(super) fn quantize_q4_k(src: &[f32], dst: &mut [u8]) -> Result<()> {
    for (x, block) in src.chunks_exact(256).zip(dst.chunks_exact_mut(144)) {
        let fit = fit_block::<Q4_NMAX>(x, "q4k")?;
        fit.write_header(block);
        let qs = &mut block[16..144];
        for c in 0..4 {
            for l in 0..32 {
                qs[32 * c + l] = fit.quants[64 * c + l] | (fit.quants[64 * c + 32 + l] << 4);
            }
        }
    }
    Ok(())
}

/// Q5_K: the Q4_K header and nibbles, plus the fifth bits in `qh` (bit 2c for the low half of
/// 64-value chunk c, bit 2c+1 for its high half).
pub(super) fn quantize_q5_k(src: &[f32], dst: &mut [u8]) -> Result<()> {
    for (x, block) in src.chunks_exact(256).zip(dst.chunks_exact_mut(176)) {
        let fit = fit_block::<Q5_NMAX>(x, "q5k")?;
        fit.write_header(block);
        let (qh, qs) = block[16..176].split_at_mut(32);
        qh.fill(0);
        for c in 0..4 {
            for l in 0..32 {
                let lo = fit.quants[64 * c + l];
                let hi = fit.quants[64 * c + 32 + l];
                qs[32 * c + l] = (lo & 15) | ((hi & 15) << 4);
                qh[l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            }
        }
    }
    Ok(())
}

/// Nearest level 0..=NMAX of `t` (already scaled into quant units), as a float. Adding and
/// subtracting 1.5·2^23 rounds to an integer (ties to even) in plain float arithmetic, so the
/// loops below vectorize; `f32::round` would be a libm call and `as` casts saturate.
#[inline(always)]
fn nearest_level<const NMAX: u8>(t: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0;
    (t.clamp(0.0, NMAX as f32) + ROUNDER) - ROUNDER
}

/// Lanes the sub-block loops accumulate in: independent partial sums let them vectorize.
const LANES: usize = 8;

fn lane_sum(v: [f32; LANES]) -> f32 {
    v.iter().sum()
}

/// Squared error of `x` against `scale·q − min` with q the nearest level.
#[inline]
fn requantized_error<const NMAX: u8>(x: &[f32], scale: f32, min: f32) -> f32 {
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut err = [0f32; LANES];
    for chunk in x.chunks_exact(LANES) {
        for (e, &v) in err.iter_mut().zip(chunk) {
            let diff = scale * nearest_level::<NMAX>((v + min) * inv) - min - v;
            *e += diff * diff;
        }
    }
    lane_sum(err)
}

/// The nearest levels of `x` for `scale`/`min`, as `requantized_error` picks them.
fn levels<const NMAX: u8>(x: &[f32], scale: f32, min: f32, q_out: &mut [u8]) {
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (q, &v) in q_out.iter_mut().zip(x) {
        *q = nearest_level::<NMAX>((v + min) * inv) as u8;
    }
}

/// Best float (scale, min) for one sub-block, value ≈ scale·q − min, scale >= 0, min >= 0.
///
/// Each grid fixes the quants; for fixed quants the least-squares (scale, offset) and its
/// squared error have closed forms in a few sums, so a candidate costs one pass over the values.
fn fit_sub_block<const NMAX: u8>(x: &[f32]) -> (f32, f32) {
    let lo = x.iter().fold(0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let range = hi - lo;
    if range <= 0.0 {
        // Constant non-positive sub-block: the min alone represents it.
        return (0.0, -lo);
    }
    let n = x.len() as f32;
    let sum_x: f32 = x.iter().sum();
    let sum_xx: f32 = x.iter().map(|v| v * v).sum();
    let nmax = NMAX as f32;
    let mut best = (range / nmax, -lo);
    let mut best_err = f32::INFINITY;
    for g in 0..GRIDS {
        let iscale = (nmax - 1.0 + g as f32 * GRID_STEP) / range;
        let (mut sq, mut sqq, mut sxq) = ([0f32; LANES], [0f32; LANES], [0f32; LANES]);
        for chunk in x.chunks_exact(LANES) {
            for (l, &v) in chunk.iter().enumerate() {
                let qi = nearest_level::<NMAX>((v - lo) * iscale);
                sq[l] += qi;
                sqq[l] += qi * qi;
                sxq[l] += v * qi;
            }
        }
        let (sq, sqq, sxq) = (lane_sum(sq), lane_sum(sqq), lane_sum(sxq));
        // Least squares for x ≈ s·q + o; the format needs o <= 0, else refit with o = 0.
        let det = n * sqq - sq * sq;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (n * sxq - sq * sum_x) / det;
        let mut offset = (sqq * sum_x - sq * sxq) / det;
        if offset > 0.0 {
            offset = 0.0;
            scale = sxq / sqq;
        }
        // Also rejects NaN from a degenerate fit.
        if scale.is_nan() || scale <= 0.0 {
            continue;
        }
        // Σ (s·q + o − x)², expanded.
        let err = scale * scale * sqq + 2.0 * scale * offset * sq + n * offset * offset
            - 2.0 * scale * sxq
            - 2.0 * offset * sum_x
            + sum_xx;
        if err < best_err {
            best_err = err;
            best = (scale, -offset);
        }
    }
    best
}

/// One super-block's chosen scales and quants, before packing.
struct BlockFit {
    d: half::f16,
    dmin: half::f16,
    sc: [u8; 8],
    mn: [u8; 8],
    quants: [u8; 256],
}

impl BlockFit {
    /// `d`, `dmin` and the packed 6-bit scales: the first 16 bytes of Q4_K and Q5_K blocks.
    fn write_header(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.d.to_le_bytes());
        out[2..4].copy_from_slice(&self.dmin.to_le_bytes());
        let packed = pack_k_scales(&self.sc, &self.mn);
        out[4..16].copy_from_slice(&packed);
        debug_assert_eq!(unpack_k_scales(&packed), (self.sc, self.mn));
    }
}

fn fit_block<const NMAX: u8>(x: &[f32], type_name: &str) -> Result<BlockFit> {
    if !x.iter().all(|v| v.is_finite()) {
        return Err(Error::invalid(format!(
            "quantize {type_name}: non-finite value"
        )));
    }
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        (scales[j], mins[j]) = fit_sub_block::<NMAX>(&x[SUB * j..SUB * (j + 1)]);
    }
    let max_scale = scales.iter().fold(0f32, |m, &v| m.max(v));
    let max_min = mins.iter().fold(0f32, |m, &v| m.max(v));
    let d = half::f16::from_f32(max_scale / 63.0);
    let dmin = half::f16::from_f32(max_min / 63.0);
    if !d.is_finite() || !dmin.is_finite() {
        return Err(Error::invalid(format!(
            "quantize {type_name}: values too large for f16 super-scales"
        )));
    }
    let (df, dminf) = (d.to_f32(), dmin.to_f32());

    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    let mut quants = [0u8; 256];
    for j in 0..8 {
        let xs = &x[SUB * j..SUB * (j + 1)];
        let start_sc = if df > 0.0 {
            (scales[j] / df).round().clamp(0.0, 63.0) as i32
        } else {
            0
        };
        let start_mn = if dminf > 0.0 {
            (mins[j] / dminf).round().clamp(0.0, 63.0) as i32
        } else {
            0
        };
        let mut best_err = f32::INFINITY;
        for try_sc in (start_sc - 1).max(0)..=(start_sc + 1).min(63) {
            for try_mn in (start_mn - 1).max(0)..=(start_mn + 1).min(63) {
                // Same f32 products the dequantizer forms.
                let eff_scale = df * try_sc as f32;
                let eff_min = dminf * try_mn as f32;
                let err = requantized_error::<NMAX>(xs, eff_scale, eff_min);
                if err < best_err {
                    best_err = err;
                    sc[j] = try_sc as u8;
                    mn[j] = try_mn as u8;
                }
            }
        }
        let eff_scale = df * sc[j] as f32;
        let eff_min = dminf * mn[j] as f32;
        levels::<NMAX>(xs, eff_scale, eff_min, &mut quants[SUB * j..SUB * (j + 1)]);
    }

    Ok(BlockFit {
        d,
        dmin,
        sc,
        mn,
        quants,
    })
}

/// Inverse of `unpack_k_scales`: 8 six-bit scales and mins into 12 bytes.
fn pack_k_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4);
    }
    s
}
