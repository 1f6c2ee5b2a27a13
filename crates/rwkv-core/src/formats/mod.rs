//! Model file formats: GGUF, safetensors, PyTorch `.pth`, rwkv.cpp `.bin`.
//! Each reader validates every count, length and offset against the file before it allocates,
//! and maps the file's own names and layouts onto the canonical [`Model`].

use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::Model;

/// Options for [`load`].
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Convert the large matrices (see [`crate::model::v7::is_large_matrix`]) to this dtype.
    pub quant: Option<DType>,
    /// Called with (bytes done, bytes total) while tensors are read/converted.
    pub progress: Option<&'a dyn Fn(u64, u64)>,
}

/// Reads any supported model file (format detected from its first bytes).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model> {
    let _ = opts;
    Err(Error::format(path, "model loading not implemented yet"))
}
