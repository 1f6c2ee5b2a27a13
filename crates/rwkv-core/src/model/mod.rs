//! One model description for every file format.
//!
//! A [`Model`] holds tensors under canonical names (the official checkpoint names, see
//! [`v7::canonical_tensors`]) in one canonical orientation: every matrix is stored the way
//! `nn.Linear` stores it, `[out, in]` row-major, so that `y = W·x` reads rows of `W`
//! (quantized blocks always run along a row). Format readers ([`crate::formats`]) do the renaming,
//! transposing and splitting; nothing after them knows where a model came from.
//!
//! One file per RWKV version (`v7.rs`) holds that version's canonical tensors, its checks and
//! its [`StepBuilder`]; [`step_builder`], [`validate`] and [`is_large_matrix`] choose by
//! [`ModelDesc::version`], so nothing outside this module names a version's file.

pub mod v7;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{Plan, StateLayout, StepShape};
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

    /// Where each part of one sequence's state lies (for RWKV-7, per layer
    /// `[ffn_x (C), att_x (C), S (H·N·N)]`, rwkv.cpp's layout, layers one after another).
    pub fn state_layout(&self) -> StateLayout {
        StateLayout::matrix_state(self.n_layer, self.n_embd, self.head_size)
    }

    /// f32 values of one sequence's state.
    pub fn state_len(&self) -> usize {
        self.state_layout().len()
    }

    pub fn layer_state_len(&self) -> usize {
        self.state_layout().layer_len()
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

/// The bytes of a whole model file: memory-mapped (native) or held in memory (a browser, where
/// nothing can be mapped, or bytes that came from a network).
pub enum FileBytes {
    Mapped(memmap2::Mmap),
    Memory(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Memory(v) => v,
        }
    }
}

/// Random access to the bytes of a model file that is not held whole in memory: a browser's
/// `Uint8Array` outside wasm memory, a file read with `pread`, a network range request.
/// [`crate::formats::load_source`] reads only the header through it; tensor data stays there
/// ([`TensorBytes::Source`]) until [`TensorBytes::read`] fetches it.
///
/// `Send + Sync` so that a [`Model`] stays `Send + Sync` whatever its tensors are backed by.
/// Sources over single-threaded objects (a JS value in wasm) assert it for themselves; see
/// rwkv-web's `JsBytes`.
pub trait ByteSource: Send + Sync {
    /// Total bytes.
    fn len(&self) -> u64;

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`; an error (never a short read)
    /// when that range is not inside `0..len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes of a tensor: a window of a memory-mapped file (a large file is never held twice), bytes
/// made at load (transposed, split, converted or quantized tensors), or a window of a
/// [`ByteSource`] not yet fetched.
#[derive(Clone)]
pub enum TensorBytes {
    Mapped {
        map: Arc<FileBytes>,
        range: Range<usize>,
    },
    Owned(Arc<Vec<u8>>),
    /// Bytes `range` of `src`, fetched by [`TensorBytes::read`] each time they are needed.
    Source {
        src: Arc<dyn ByteSource>,
        range: Range<u64>,
    },
}

impl TensorBytes {
    /// The bytes of a resident tensor (`Mapped` or `Owned`).
    ///
    /// # Panics
    /// On `Source` bytes, which are not in memory: use [`TensorBytes::read`], or
    /// [`Tensor::resident`] before handing a tensor to code that wants a slice (backends).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            TensorBytes::Mapped { map, range } => &map[range.clone()],
            TensorBytes::Owned(v) => v,
            TensorBytes::Source { range, .. } => panic!(
                "TensorBytes::as_slice on source bytes {range:?}: call read() or Tensor::resident() first"
            ),
        }
    }

    /// The bytes: borrowed when resident (no copy), fetched from the source otherwise.
    pub fn read(&self) -> Result<Cow<'_, [u8]>> {
        match self {
            TensorBytes::Mapped { .. } | TensorBytes::Owned(_) => {
                Ok(Cow::Borrowed(self.as_slice()))
            }
            TensorBytes::Source { src, range } => {
                let n = source_window_len(src.as_ref(), range)?;
                // Checked against the source's length above, so this allocation is bounded by
                // what the source really holds.
                let mut buf = vec![0u8; n];
                src.read_at(range.start, &mut buf)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Byte count (without fetching anything).
    pub fn len(&self) -> usize {
        match self {
            TensorBytes::Mapped { range, .. } => range.len(),
            TensorBytes::Owned(v) => v.len(),
            // Never matches a real tensor's size when it does not fit: Tensor::new refuses it.
            TensorBytes::Source { range, .. } => {
                usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(usize::MAX)
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the bytes are in memory (`as_slice` works).
    pub fn is_resident(&self) -> bool {
        !matches!(self, TensorBytes::Source { .. })
    }

    pub fn owned(v: Vec<u8>) -> Self {
        TensorBytes::Owned(Arc::new(v))
    }
}

/// Length of `range` of `src`, checked to lie inside the source and to fit in memory.
fn source_window_len(src: &dyn ByteSource, range: &Range<u64>) -> Result<usize> {
    let len = src.len();
    if range.start > range.end || range.end > len {
        return Err(Error::invalid(format!(
            "tensor bytes {range:?} lie outside the {len}-byte source"
        )));
    }
    usize::try_from(range.end - range.start)
        .map_err(|_| Error::invalid(format!("tensor bytes {range:?} do not fit in memory")))
}

impl std::fmt::Debug for TensorBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorBytes::Mapped { range, .. } => write!(f, "Mapped({range:?})"),
            TensorBytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            TensorBytes::Source { range, .. } => write!(f, "Source({range:?})"),
        }
    }
}

/// One stored tensor. `shape` is row-major with the innermost (contiguous) dimension last;
/// `data.len() == dtype.tensor_bytes(&shape)` always holds (checked at construction).
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
        let got = data.len();
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
        crate::quant::dequantize(self.dtype, &self.data.read()?, &mut out)?;
        Ok(out)
    }

    /// This tensor with its bytes in memory: itself (borrowed, nothing copied) when resident,
    /// else a copy with the bytes fetched from its source. Backends take resident tensors; the
    /// caller drops the copy after the upload so only one tensor is in memory at a time.
    pub fn resident(&self) -> Result<Cow<'_, Tensor>> {
        if self.data.is_resident() {
            return Ok(Cow::Borrowed(self));
        }
        let bytes = self.data.read()?.into_owned();
        Ok(Cow::Owned(Tensor::new(
            self.dtype,
            self.shape.clone(),
            TensorBytes::owned(bytes),
        )?))
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
        self.tensors.values().map(|t| t.data.len() as u64).sum()
    }
}

/// Builds one step of a model's network as a [`Plan`]; one implementation per RWKV version.
pub trait StepBuilder: Send + Sync {
    /// Canonical tensor names in [`crate::backend::WeightId`] order: upload them in this order.
    /// The same list for every plan of one model.
    fn weights(&self) -> &[String];

    /// The state of one sequence (every plan carries the same layout).
    fn state_layout(&self) -> &StateLayout;

    /// One step for `shape`. With `all_logits`, logits for every row; otherwise for the last
    /// token of each sequence.
    fn build(&self, shape: StepShape, all_logits: bool) -> Plan;
}

fn unsupported(version: RwkvVersion) -> String {
    format!("RWKV {} is not supported yet (only v7)", version.name())
}

/// The step builder of `desc.version`; an `Invalid` error naming the version when it has none.
pub fn step_builder(desc: &ModelDesc) -> Result<Box<dyn StepBuilder>> {
    match desc.version {
        RwkvVersion::V7 => Ok(Box::new(v7::PlanBuilder::new(desc))),
        v => Err(Error::invalid(unsupported(v))),
    }
}

/// Checks that `model` has exactly the canonical tensors of its version with the right shapes.
/// Errors name the file and the first problem.
pub fn validate(model: &Model) -> Result<()> {
    match model.desc.version {
        RwkvVersion::V7 => v7::validate(model),
        v => Err(Error::model(&model.source, unsupported(v))),
    }
}

/// Whether `name` is one of the large matrices of `version` (what `--quant` converts and what a
/// token's decode reads from memory).
pub fn is_large_matrix(version: RwkvVersion, name: &str) -> bool {
    match version {
        RwkvVersion::V7 => v7::is_large_matrix(name),
        // Other versions share the names of their large products with v7.
        _ => v7::is_large_matrix(name),
    }
}
