//! Block (de)quantization of ggml's types (layouts: docs/gguf-formats.md §3).
//!
//! Dequantization is bit-exact with ggml/gguf-py. Quantization supports what `--quant` offers.

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Dequantizes `src` (whole blocks of `dtype`) into `out`; `out.len()` values must be exactly
/// what `src` holds, else an error.
pub fn dequantize(dtype: DType, src: &[u8], out: &mut [f32]) -> Result<()> {
    let _ = (dtype, src, out);
    Err(Error::invalid("dequantize: not implemented yet"))
}

/// Quantizes `src` (a whole number of rows of `cols` values) to `dtype`
/// (F32, F16, BF16, Q8_0, Q4K; others are an error).
pub fn quantize(dtype: DType, src: &[f32], cols: usize) -> Result<Vec<u8>> {
    let _ = (dtype, src, cols);
    Err(Error::invalid("quantize: not implemented yet"))
}
