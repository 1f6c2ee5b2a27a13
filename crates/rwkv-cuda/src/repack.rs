//! Weight layouts on the device. Quantized blocks are split into a payload array (the quants,
//! 16-byte aligned per block so the kernels load them with 16-byte loads) and a metadata array
//! (scales); the bytes per weight stay those of the file (Q6_K: 212 instead of 210 per block,
//! for 4-byte aligned scales). Vectors become f32.

use half::{bf16, f16};
use rwkv_core::{DType, Result};

use crate::invalid;

/// Encodings the kernels read (the `DT_*` constants of kernels/common.cuh).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GpuDType {
    F32 = 0,
    F16 = 1,
    Q8_0 = 2,
    Q4K = 3,
    Q6K = 4,
}

/// A matrix repacked for the device, still on the host.
pub(crate) struct Repacked {
    pub dtype: GpuDType,
    pub q: Vec<u8>,
    pub m: Vec<u8>,
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Any stored tensor as f32 values (vectors, and matrices of encodings the kernels lack).
pub(crate) fn to_f32(dtype: DType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    match dtype {
        DType::F32 => Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        DType::F16 => Ok(data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        DType::BF16 => Ok(data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        _ => {
            let mut out = vec![0f32; n];
            rwkv_core::quant::dequantize(dtype, data, &mut out)?;
            Ok(out)
        }
    }
}

/// Repacks a `[rows, cols]` matrix. Encodings without a kernel (BF16, Q4_0, Q4_1, Q5_x) become
/// f32, which keeps their precision at a memory cost.
pub(crate) fn repack_matrix(
    dtype: DType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Repacked> {
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| invalid("matrix size overflows"))?;
    let want = dtype
        .tensor_bytes(&[rows, cols])
        .ok_or_else(|| invalid(format!("{dtype} matrix {rows}x{cols} is not whole blocks")))?;
    if data.len() != want {
        return Err(invalid(format!(
            "{dtype} matrix {rows}x{cols} has {} bytes, expected {want}",
            data.len()
        )));
    }
    let blocks = n / dtype.block_elems();
    match dtype {
        DType::F32 => Ok(Repacked {
            dtype: GpuDType::F32,
            q: data.to_vec(),
            m: Vec::new(),
        }),
        DType::F16 => Ok(Repacked {
            dtype: GpuDType::F16,
            q: data.to_vec(),
            m: Vec::new(),
        }),
        DType::Q8_0 => {
            let mut q = Vec::with_capacity(blocks * 32);
            let mut m = Vec::with_capacity(blocks * 2);
            for b in data.chunks_exact(34) {
                m.extend_from_slice(&b[0..2]);
                q.extend_from_slice(&b[2..34]);
            }
            Ok(Repacked {
                dtype: GpuDType::Q8_0,
                q,
                m,
            })
        }
        DType::Q4K => {
            let mut q = Vec::with_capacity(blocks * 128);
            let mut m = Vec::with_capacity(blocks * 16);
            for b in data.chunks_exact(144) {
                m.extend_from_slice(&b[0..16]);
                q.extend_from_slice(&b[16..144]);
            }
            Ok(Repacked {
                dtype: GpuDType::Q4K,
                q,
                m,
            })
        }
        DType::Q6K => {
            let mut q = Vec::with_capacity(blocks * 192);
            let mut m = Vec::with_capacity(blocks * 20);
            for b in data.chunks_exact(210) {
                q.extend_from_slice(&b[0..192]);
                m.extend_from_slice(&b[208..210]);
                m.extend_from_slice(&[0, 0]);
                m.extend_from_slice(&b[192..208]);
            }
            Ok(Repacked {
                dtype: GpuDType::Q6K,
                q,
                m,
            })
        }
        _ => {
            let v = to_f32(dtype, data, n)?;
            Ok(Repacked {
                dtype: GpuDType::F32,
                q: f32_bytes(&v),
                m: Vec::new(),
            })
        }
    }
}
