//! Per-type block dequantizers. Callers (`super::dequantize`) have checked that `src` holds
//! exactly `out.len() / block_elems` blocks, so every `chunks_exact` below pairs up fully.
//!
//! Arithmetic order follows ggml (`dequantize_row_*`) so results are bit-exact: integer quant
//! converted to f32, products evaluated left to right, no fused multiply-add.

/// IEEE half → f32, exact for every input (subnormals, infinities, NaN payloads).
///
/// Branch-free so row loops vectorize: the exponent/mantissa bits are moved into f32 position
/// and the bias difference (127 − 15 = 112) is applied by multiplying with 2^112, which is exact
/// and also normalizes half subnormals. Inf/NaN (exponent 31) get the f32 all-ones exponent.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    const POW2_112: f32 = f32::from_bits((127 + 112) << 23);
    let sign = ((h & 0x8000) as u32) << 16;
    let magnitude = (h & 0x7fff) as u32;
    let scaled = f32::from_bits(magnitude << 13) * POW2_112;
    let finite_bits = scaled.to_bits();
    let mantissa = magnitude & 0x03ff;
    // NaNs come out quiet, as F16C hardware and ggml's table produce them.
    let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
    let special_bits = 0x7f80_0000 | quiet | (mantissa << 13);
    let bits = if magnitude >= 0x7c00 {
        special_bits
    } else {
        finite_bits
    };
    f32::from_bits(sign | bits)
}

/// bfloat16 → f32 (the upper half of an f32; exact).
#[inline(always)]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub(super) fn f32s(src: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Values per staging buffer for the slice conversions (a few KB of stack).
pub(super) const STAGE: usize = 512;

pub(super) fn f16s(src: &[u8], out: &mut [f32]) {
    // Stage through an aligned buffer so `half` can use F16C (8 values per instruction, chosen
    // at run time); `src` may be unaligned.
    use half::slice::HalfFloatSliceExt;
    let mut stage = [half::f16::ZERO; STAGE];
    for (bytes, dst) in src.chunks(2 * STAGE).zip(out.chunks_mut(STAGE)) {
        let stage = &mut stage[..dst.len()];
        for (s, b) in stage.iter_mut().zip(bytes.chunks_exact(2)) {
            *s = half::f16::from_le_bytes([b[0], b[1]]);
        }
        stage.convert_to_f32_slice(dst);
    }
}

pub(super) fn bf16s(src: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

pub(super) fn q8_0(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..34]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

pub(super) fn q4_0(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let q = b[2 + j];
            lo[j] = ((q & 15) as i32 - 8) as f32 * d;
            hi[j] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(super) fn q4_1(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let q = b[4 + j];
            lo[j] = (q & 15) as f32 * d + m;
            hi[j] = (q >> 4) as f32 * d + m;
        }
    }
}

/// The 5-bit quants of a Q5_0/Q5_1 block: low nibbles from `qs`, fifth bits from `qh`.
#[inline(always)]
fn q5_quants(qh: u32, qs: &[u8], j: usize) -> (i32, i32) {
    let hi0 = ((qh >> j) << 4) & 16;
    let hi1 = (qh >> (j + 12)) & 16;
    let q0 = (qs[j] & 15) as u32 | hi0;
    let q1 = (qs[j] >> 4) as u32 | hi1;
    (q0 as i32, q1 as i32)
}

pub(super) fn q5_0(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let (q0, q1) = q5_quants(qh, qs, j);
            lo[j] = (q0 - 16) as f32 * d;
            hi[j] = (q1 - 16) as f32 * d;
        }
    }
}

pub(super) fn q5_1(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(out.chunks_exact_mut(32)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let (q0, q1) = q5_quants(qh, qs, j);
            lo[j] = q0 as f32 * d + m;
            hi[j] = q1 as f32 * d + m;
        }
    }
}

/// Unpacks the 12-byte K-quant scale field into 8 six-bit scales and 8 six-bit mins.
#[inline(always)]
pub(super) fn unpack_k_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    (sc, mn)
}

pub(super) fn q4_k(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, mn) = unpack_k_scales(&b[4..16]);
        let qs = &b[16..144];
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            let d1 = d * sc[2 * c] as f32;
            let m1 = dmin * mn[2 * c] as f32;
            let d2 = d * sc[2 * c + 1] as f32;
            let m2 = dmin * mn[2 * c + 1] as f32;
            let (lo, hi) = y[64 * c..64 * c + 64].split_at_mut(32);
            for l in 0..32 {
                lo[l] = d1 * (q[l] & 15) as f32 - m1;
                hi[l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub(super) fn q5_k(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(176).zip(out.chunks_exact_mut(256)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (sc, mn) = unpack_k_scales(&b[4..16]);
        let qh = &b[16..48];
        let qs = &b[48..176];
        for c in 0..4 {
            let q = &qs[32 * c..32 * c + 32];
            let bit_lo = 1u8 << (2 * c);
            let bit_hi = 2u8 << (2 * c);
            let d1 = d * sc[2 * c] as f32;
            let m1 = dmin * mn[2 * c] as f32;
            let d2 = d * sc[2 * c + 1] as f32;
            let m2 = dmin * mn[2 * c + 1] as f32;
            let (lo, hi) = y[64 * c..64 * c + 64].split_at_mut(32);
            for l in 0..32 {
                let h = qh[l];
                let q_lo = (q[l] & 15) + if h & bit_lo != 0 { 16 } else { 0 };
                let q_hi = (q[l] >> 4) + if h & bit_hi != 0 { 16 } else { 0 };
                lo[l] = d1 * q_lo as f32 - m1;
                hi[l] = d2 * q_hi as f32 - m2;
            }
        }
    }
}

pub(super) fn q6_k(src: &[u8], out: &mut [f32]) {
    for (b, y) in src.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
        let d = f16_at(b, 208);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let scales = &b[192 + 8 * n..192 + 8 * n + 8];
            let y = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let h = qh[l];
                let q1 = ((ql[l] & 15) | ((h & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 15) | (((h >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32;
                let s = |k: usize| (scales[is + k] as i8) as f32;
                y[l] = d * s(0) * q1 as f32;
                y[l + 32] = d * s(2) * q2 as f32;
                y[l + 64] = d * s(4) * q3 as f32;
                y[l + 96] = d * s(6) * q4 as f32;
            }
        }
    }
}
