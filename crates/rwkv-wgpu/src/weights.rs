//! Weights on the device.
//!
//! Matrices are repacked into `u32` words, row by row, in a format per dtype that keeps every
//! field word aligned (see the `decode_*.wgsl` files), and split by rows into chunks that each fit
//! one storage binding. Vectors (1-D tensors) are converted to f32 and concatenated into one
//! buffer, so a kernel reaches all of a layer's small parameters through one binding.

use rwkv_core::model::Tensor;
use rwkv_core::{DType, Result};

use crate::gpu::{backend_err, out_of_memory, Gpu};

/// How a matrix is stored on the device (one `decode_*.wgsl` each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PackedKind {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4K,
    Q6K,
}

/// Values per decode unit in the kernels.
pub(crate) const UNIT: usize = 16;

impl PackedKind {
    /// The device format for a stored dtype; `None`: converted to F32 at upload.
    pub fn for_dtype(d: DType) -> Option<PackedKind> {
        match d {
            DType::F32 => Some(PackedKind::F32),
            DType::F16 => Some(PackedKind::F16),
            DType::BF16 => Some(PackedKind::BF16),
            DType::Q8_0 => Some(PackedKind::Q8_0),
            DType::Q4K => Some(PackedKind::Q4K),
            DType::Q6K => Some(PackedKind::Q6K),
            _ => None,
        }
    }

    /// Words of one packed row of `cols` values (`cols` a whole number of blocks for quants).
    pub fn row_words(self, cols: usize) -> Option<usize> {
        let padded = cols.checked_add(UNIT - 1)? / UNIT * UNIT;
        match self {
            PackedKind::F32 => Some(padded),
            PackedKind::F16 | PackedKind::BF16 => Some(padded / 2),
            PackedKind::Q8_0 => cols.is_multiple_of(32).then(|| cols / 32 * 9),
            PackedKind::Q4K => cols.is_multiple_of(256).then(|| cols / 256 * 36),
            PackedKind::Q6K => cols.is_multiple_of(256).then(|| cols / 256 * 53),
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w[..b.len()].copy_from_slice(b);
    u32::from_le_bytes(w)
}

/// Appends one packed row to `out`. `src` is the row's stored bytes (already length-checked).
fn pack_row(kind: PackedKind, src: &[u8], cols: usize, out: &mut Vec<u32>) {
    let start = out.len();
    match kind {
        PackedKind::F32 => out.extend(src.chunks_exact(4).map(le_u32)),
        PackedKind::F16 | PackedKind::BF16 => out.extend(src.chunks(4).map(le_u32)),
        PackedKind::Q8_0 => {
            for block in src.chunks_exact(34) {
                out.push(le_u32(&block[0..2]));
                out.extend(block[2..34].chunks_exact(4).map(le_u32));
            }
        }
        PackedKind::Q4K => out.extend(src.chunks_exact(4).map(le_u32)),
        PackedKind::Q6K => {
            for block in src.chunks_exact(210) {
                out.extend(block[0..208].chunks_exact(4).map(le_u32));
                out.push(le_u32(&block[208..210]));
            }
        }
    }
    // Zero padding up to the row stride (float rows are padded to whole units).
    let words = kind.row_words(cols).unwrap_or(0);
    out.resize(start + words, 0);
}

/// Bytes packed on the host per `write_buffer` while uploading a matrix.
const STAGING_BYTES: usize = 8 << 20;

/// One buffer holding rows `row_begin .. row_begin + rows`.
pub(crate) struct Chunk {
    pub buffer: wgpu::Buffer,
    pub row_begin: usize,
    pub rows: usize,
}

pub(crate) struct DeviceMatrix {
    pub kind: PackedKind,
    pub rows: usize,
    pub cols: usize,
    pub row_words: usize,
    pub chunks: Vec<Chunk>,
}

pub(crate) enum DeviceWeight {
    Matrix(DeviceMatrix),
    /// Offset in the vector arena (f32 values; the length was checked by `Plan::validate`).
    Vector {
        offset: usize,
    },
}

/// Stored values of a tensor as f32 (for vectors and for dtypes without a device format).
pub(crate) fn to_f32(name: &str, t: &Tensor) -> Result<Vec<f32>> {
    // Streamed tensors (TensorBytes::Source) are fetched here; in-memory ones are borrowed.
    let data = t.data.read()?;
    let bytes: &[u8] = &data;
    match t.dtype {
        DType::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        DType::F16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        DType::BF16 => Ok(bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        d => {
            let mut out = vec![0f32; t.n_elements()];
            rwkv_core::quant::dequantize(d, bytes, &mut out).map_err(|e| {
                backend_err(format!("weight '{name}': cannot convert {d} to f32: {e}"))
            })?;
            Ok(out)
        }
    }
}

/// Packs and uploads a matrix, split into chunks of whole rows that each fit one binding.
pub(crate) fn upload_matrix(gpu: &Gpu, name: &str, t: &Tensor) -> Result<DeviceMatrix> {
    let (rows, cols) = t.rows_cols();
    let converted;
    let stored = t.data.read()?;
    let (kind, bytes, dtype): (PackedKind, &[u8], DType) = match PackedKind::for_dtype(t.dtype) {
        Some(k) => (k, &stored, t.dtype),
        None => {
            // Exact in f32 (every ggml quant value is d·q or d·q+m with an f16 d), 8x the memory.
            let values = to_f32(name, t)?;
            converted = values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>();
            (PackedKind::F32, &converted[..], DType::F32)
        }
    };
    let err = |what: String| backend_err(format!("weight '{name}': {what}"));
    let src_row = dtype
        .row_bytes(cols)
        .ok_or_else(|| err(format!("{cols} columns are not whole {dtype} blocks")))?;
    if rows.checked_mul(src_row) != Some(bytes.len()) {
        return Err(err(format!(
            "{} bytes for {rows}x{cols} {dtype}",
            bytes.len()
        )));
    }
    let row_words = kind
        .row_words(cols)
        .ok_or_else(|| err(format!("{cols} columns are not whole blocks")))?;
    let row_bytes = (row_words as u64) * 4;
    let rows_per_chunk = (gpu.max_binding / row_bytes.max(1)) as usize;
    if rows_per_chunk == 0 {
        return Err(out_of_memory(format!(
            "weight '{name}': one row takes {row_bytes} bytes, more than the device's {} bytes \
             per binding",
            gpu.max_binding
        )));
    }
    let mut chunks = Vec::new();
    let mut row_begin = 0;
    while row_begin < rows {
        let n = rows_per_chunk.min(rows - row_begin);
        let buffer = gpu.buffer(
            name,
            (n * row_words * 4) as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        // Pack and write a few MiB at a time: the host never holds a second copy of a chunk.
        let rows_per_write = (STAGING_BYTES / (row_words * 4).max(1)).max(1);
        let mut words = Vec::with_capacity(rows_per_write.min(n) * row_words);
        let mut r = row_begin;
        while r < row_begin + n {
            let m = rows_per_write.min(row_begin + n - r);
            words.clear();
            for row in r..r + m {
                pack_row(
                    kind,
                    &bytes[row * src_row..(row + 1) * src_row],
                    cols,
                    &mut words,
                );
            }
            let offset = ((r - row_begin) * row_words * 4) as u64;
            gpu.queue
                .write_buffer(&buffer, offset, bytemuck::cast_slice(&words));
            r += m;
        }
        chunks.push(Chunk {
            buffer,
            row_begin,
            rows: n,
        });
        row_begin += n;
    }
    Ok(DeviceMatrix {
        kind,
        rows,
        cols,
        row_words,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_words_pad_floats_and_need_whole_blocks() {
        assert_eq!(PackedKind::F32.row_words(20), Some(32));
        assert_eq!(PackedKind::F16.row_words(20), Some(16));
        assert_eq!(PackedKind::Q8_0.row_words(64), Some(18));
        assert_eq!(PackedKind::Q8_0.row_words(40), None);
        assert_eq!(PackedKind::Q4K.row_words(512), Some(72));
        assert_eq!(PackedKind::Q6K.row_words(256), Some(53));
        assert_eq!(PackedKind::Q6K.row_words(100), None);
    }

    #[test]
    fn q6k_row_keeps_d_in_its_own_word() {
        let block: Vec<u8> = (0..210u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut out = Vec::new();
        pack_row(PackedKind::Q6K, &block, 256, &mut out);
        assert_eq!(out.len(), 53);
        assert_eq!(
            out[0],
            u32::from_le_bytes([block[0], block[1], block[2], block[3]])
        );
        assert_eq!(out[52], u32::from_le_bytes([block[208], block[209], 0, 0]));
    }
}
