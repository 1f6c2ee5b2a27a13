//! Block (de)quantization of ggml's types (layouts: docs/gguf-formats.md §3).
//!
//! Dequantization is bit-exact with ggml/gguf-py. Quantization supports what `--quant` and
//! `rwkv quantize` offer: F32, F16, BF16, Q8_0 (ggml's reference formula) and Q4K, Q5K, Q6K
//! (our own scale searches).

// The workspace's rust-version (1.85) predates `usize::is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

mod dequant;
mod k_affine;
mod q6k;

use crate::dtype::DType;
use crate::error::{Error, Result};

pub use dequant::{bf16_bits_to_f32, f16_bits_to_f32};

/// Dequantizes `src` (whole blocks of `dtype`) into `out`; `out.len()` values must be exactly
/// what `src` holds, else an error.
///
/// Blocks never straddle rows, so a caller may pass one row at a time (the CPU backend does).
/// No allocation; one straight loop per block type.
pub fn dequantize(dtype: DType, src: &[u8], out: &mut [f32]) -> Result<()> {
    let elems = dtype.block_elems();
    let bytes = dtype.block_bytes();
    if out.len() % elems != 0 {
        return Err(Error::invalid(format!(
            "dequantize {dtype}: {} values is not a whole number of {elems}-value blocks",
            out.len()
        )));
    }
    let blocks = out.len() / elems;
    if blocks.checked_mul(bytes) != Some(src.len()) {
        return Err(Error::invalid(format!(
            "dequantize {dtype}: {} bytes given, {} values need {blocks} blocks of {bytes} bytes",
            src.len(),
            out.len()
        )));
    }
    match dtype {
        DType::F32 => dequant::f32s(src, out),
        DType::F16 => dequant::f16s(src, out),
        DType::BF16 => dequant::bf16s(src, out),
        DType::Q4_0 => dequant::q4_0(src, out),
        DType::Q4_1 => dequant::q4_1(src, out),
        DType::Q5_0 => dequant::q5_0(src, out),
        DType::Q5_1 => dequant::q5_1(src, out),
        DType::Q8_0 => dequant::q8_0(src, out),
        DType::Q4K => dequant::q4_k(src, out),
        DType::Q5K => dequant::q5_k(src, out),
        DType::Q6K => dequant::q6_k(src, out),
    }
    Ok(())
}

/// Below this many values one thread quantizes everything: spawning threads costs more than the
/// work (tens of microseconds against ~1 ms for 2^20 Q4K values).
const PARALLEL_MIN_VALUES: usize = 1 << 20;

/// Quantizes `src` (a whole number of rows of `cols` values) to `dtype`
/// (F32, F16, BF16, Q8_0, Q4K, Q5K, Q6K; others are an error).
///
/// Rows are quantized independently, in parallel over `available_parallelism()` threads when the
/// tensor is large. F16/BF16 round to nearest even. Q8_0 and the K types reject non-finite values
/// (a scale cannot represent them) and values too large for their f16 scales.
pub fn quantize(dtype: DType, src: &[f32], cols: usize) -> Result<Vec<u8>> {
    let quantize_rows: fn(&[f32], &mut [u8]) -> Result<()> = match dtype {
        DType::F32 => |src, dst| {
            for (v, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
                d.copy_from_slice(&v.to_le_bytes());
            }
            Ok(())
        },
        DType::F16 => |src, dst| {
            // Staged so `half` can convert 8 values per F16C instruction.
            use half::slice::HalfFloatSliceExt;
            let mut stage = [half::f16::ZERO; dequant::STAGE];
            for (vals, bytes) in src
                .chunks(dequant::STAGE)
                .zip(dst.chunks_mut(2 * dequant::STAGE))
            {
                let stage = &mut stage[..vals.len()];
                stage.convert_from_f32_slice(vals);
                for (h, d) in stage.iter().zip(bytes.chunks_exact_mut(2)) {
                    d.copy_from_slice(&h.to_le_bytes());
                }
            }
            Ok(())
        },
        DType::BF16 => |src, dst| {
            for (v, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
                d.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            }
            Ok(())
        },
        DType::Q8_0 => quantize_q8_0,
        DType::Q4K => k_affine::quantize_q4_k,
        DType::Q5K => k_affine::quantize_q5_k,
        DType::Q6K => q6k::quantize_q6_k,
        other => {
            return Err(Error::invalid(format!(
                "quantize: {other} is not supported (use f32, f16, bf16, q8_0, q4k, q5k or q6k)"
            )))
        }
    };
    if cols == 0 || cols % dtype.block_elems() != 0 {
        return Err(Error::invalid(format!(
            "quantize {dtype}: row length {cols} is not a positive multiple of {}",
            dtype.block_elems()
        )));
    }
    if src.len() % cols != 0 {
        return Err(Error::invalid(format!(
            "quantize {dtype}: {} values is not a whole number of rows of {cols}",
            src.len()
        )));
    }
    let rows = src.len() / cols;
    let row_bytes = dtype
        .row_bytes(cols)
        .ok_or_else(|| Error::invalid(format!("quantize {dtype}: row of {cols} overflows")))?;
    let total = rows
        .checked_mul(row_bytes)
        .ok_or_else(|| Error::invalid(format!("quantize {dtype}: {rows} rows overflow")))?;
    let mut out = vec![0u8; total];
    if rows == 0 {
        return Ok(out);
    }

    let threads = if src.len() < PARALLEL_MIN_VALUES {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(rows)
    };
    if threads <= 1 {
        quantize_rows(src, &mut out)?;
        return Ok(out);
    }
    let rows_per_thread = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = src
            .chunks(rows_per_thread * cols)
            .zip(out.chunks_mut(rows_per_thread * row_bytes))
            .map(|(s, d)| scope.spawn(move || quantize_rows(s, d)))
            .collect();
        // Join all before reporting so no thread outlives an early return.
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        for r in results {
            match r {
                Ok(res) => res?,
                Err(_) => return Err(Error::invalid(format!("quantize {dtype}: worker panicked"))),
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// ggml's `quantize_row_q8_0_ref`: d = amax/127 (stored as f16), q = round(x · (1/d)) with the
/// f32 (unrounded) d, rounding half away from zero.
fn quantize_q8_0(src: &[f32], dst: &mut [u8]) -> Result<()> {
    for (x, block) in src.chunks_exact(32).zip(dst.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        if !x.iter().all(|v| v.is_finite()) {
            return Err(Error::invalid("quantize q8_0: non-finite value"));
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d_half = half::f16::from_f32(d);
        if !d_half.is_finite() {
            return Err(Error::invalid(
                "quantize q8_0: values too large for an f16 scale",
            ));
        }
        block[..2].copy_from_slice(&d_half.to_le_bytes());
        for (q, v) in block[2..].iter_mut().zip(x) {
            // |v·id| <= 127 (+ rounding), so the cast cannot saturate in a harmful way.
            *q = ((v * id).round() as i8) as u8;
        }
    }
    Ok(())
}
