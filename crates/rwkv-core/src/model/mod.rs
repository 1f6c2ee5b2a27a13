//! One model description for every file format.
//!
//! A [`Model`] holds tensors under canonical names (the official checkpoint names, see
//! [`v7::canonical_tensors`]) in one canonical orientation: every matrix is stored the way
//! `nn.Linear` stores it, `[out, in]` row-major, so that `y = W·x` reads rows of `W`
//! (quantized blocks always run along a row). Format readers ([`crate::formats`]) do the renaming,
//! transposing and splitting; nothing after them knows where a model came from.

pub mod v7;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tokenizer::Vocab;

/// RWKV architecture generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RwkvVersion {
    V4,
    V5_1,
    V5_2,
    V6,
    V7,
}

impl RwkvVersion {
    pub fn name(self) -> &'static str {
        match self {
            RwkvVersion::V4 => "v4",
            RwkvVersion::V5_1 => "v5.1",
            RwkvVersion::V5_2 => "v5.2",
            RwkvVersion::V6 => "v6",
            RwkvVersion::V7 => "v7",
        }
    }
}

/// Low-rank (LoRA) dimensions of RWKV-7's data-dependent terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LoraRanks {
    /// decay (w1/w2)
    pub w: usize,
    /// in-context learning rate (a1/a2)
    pub a: usize,
    /// value residual mix (v1/v2)
    pub v: usize,
    /// gate (g1/g2)
    pub g: usize,
}

/// Shapes of a model: enough to allocate state and check every tensor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelDesc {
    pub version: RwkvVersion,
    pub n_layer: usize,
    /// C, the residual width.
    pub n_embd: usize,
    /// N, values per head (64 in released models).
    pub head_size: usize,
    pub vocab_size: usize,
    /// F, the channel-mix hidden width (4C in released models).
    pub ffn_size: usize,
    pub lora: LoraRanks,
}

impl ModelDesc {
    /// H = C / N.
    pub fn n_head(&self) -> usize {
        self.n_embd / self.head_size
    }

    /// f32 values of one sequence's state, per layer `[ffn_x (C), att_x (C), S (H·N·N)]`
    /// (rwkv.cpp's layout), layers one after another.
    pub fn state_len(&self) -> usize {
        self.n_layer * self.layer_state_len()
    }

    pub fn layer_state_len(&self) -> usize {
        (2 + self.head_size) * self.n_embd
    }

    /// Parameters (values, not bytes) of the tensors, for reports.
    pub fn n_params(&self) -> u64 {
        let c = self.n_embd as u64;
        let l = self.n_layer as u64;
        let f = self.ffn_size as u64;
        let r = self.lora;
        let lora = 2 * c * (r.w + r.a + r.v + r.g) as u64;
        let per_layer = 4 * c * c + 2 * c * f + lora + 20 * c;
        2 * self.vocab_size as u64 * c + l * per_layer
    }
}

/// Bytes of a tensor: a window of a memory-mapped file (a large file is never held twice) or
/// bytes made at load (transposed, split, converted or quantized tensors).
#[derive(Clone)]
pub enum TensorBytes {
    Mapped {
        map: Arc<memmap2::Mmap>,
        range: Range<usize>,
    },
    Owned(Arc<Vec<u8>>),
}

impl TensorBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            TensorBytes::Mapped { map, range } => &map[range.clone()],
            TensorBytes::Owned(v) => v,
        }
    }
    pub fn owned(v: Vec<u8>) -> Self {
        TensorBytes::Owned(Arc::new(v))
    }
}

impl std::fmt::Debug for TensorBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorBytes::Mapped { range, .. } => write!(f, "Mapped({range:?})"),
            TensorBytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
        }
    }
}

/// One stored tensor. `shape` is row-major with the innermost (contiguous) dimension last;
/// `data.as_slice().len() == dtype.tensor_bytes(&shape)` always holds (checked at construction).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: TensorBytes,
}

impl Tensor {
    /// Checks that the byte length matches dtype and shape.
    pub fn new(dtype: DType, shape: Vec<usize>, data: TensorBytes) -> Result<Tensor> {
        let want = dtype.tensor_bytes(&shape).ok_or_else(|| {
            Error::invalid(format!(
                "{dtype} tensor of shape {shape:?} is not whole blocks or too large"
            ))
        })?;
        let got = data.as_slice().len();
        if want != got {
            return Err(Error::invalid(format!(
                "{dtype} tensor of shape {shape:?} needs {want} bytes, has {got}"
            )));
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DType::F32, shape, TensorBytes::owned(bytes))
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Rows and row length when viewed as a matrix (1-D tensors are one row).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        let rows = self.shape.iter().rev().skip(1).product();
        (rows, cols)
    }

    /// All values as f32 (dequantized). For small tensors and for tests; large matrices should
    /// be read row by row.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.n_elements()];
        crate::quant::dequantize(self.dtype, self.data.as_slice(), &mut out)?;
        Ok(out)
    }
}

/// A loaded model: its description, canonical tensors, and the vocabulary when the file has one.
#[derive(Clone, Debug)]
pub struct Model {
    pub desc: ModelDesc,
    pub tensors: BTreeMap<String, Tensor>,
    /// Vocabulary from the file's metadata (GGUF), if any.
    pub vocab: Option<Vocab>,
    /// Where the model came from (for error messages and reports).
    pub source: PathBuf,
    /// The file's format, e.g. "gguf", "safetensors", "pth", "rwkv.cpp".
    pub format: &'static str,
}

impl Model {
    /// The tensor called `name`, or a model error naming the file.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::model(&self.source, format!("missing tensor '{name}'")))
    }

    /// Count of tensors per dtype, for `rwkv info`.
    pub fn dtype_counts(&self) -> BTreeMap<DType, usize> {
        let mut m = BTreeMap::new();
        for t in self.tensors.values() {
            *m.entry(t.dtype).or_insert(0) += 1;
        }
        m
    }

    /// Bytes of all tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| t.data.as_slice().len() as u64)
            .sum()
    }
}
