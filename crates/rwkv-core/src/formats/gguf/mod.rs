//! GGUF v2/v3 (layout: ../shared/docs/gguf-formats.md §1): memory-mapped, every count, length and
//! offset validated against the file before anything is allocated. [`GgufFile`] gives the
//! metadata (for `rwkv info`); [`read_model`] maps llama.cpp's `rwkv7` tensors onto the canonical
//! model; [`write`] produces a file llama.cpp can load.
//!
//! `container` parses the file (header, metadata, tensor infos), `names` maps llama.cpp's
//! `rwkv7` names onto the canonical ones, `writer` goes the other way.

mod container;
mod names;
mod writer;

use std::path::Path;
use std::sync::Arc;

pub(crate) use container::parse;
pub use container::{
    tensor_type_counts, GgufArray, GgufFile, GgufTensorInfo, GgufValue, DEFAULT_ALIGNMENT,
    MAX_STREAMED_HEADER_BYTES,
};
pub use writer::write;

use crate::error::Result;
use crate::model::{ByteSource, FileBytes, Model};

/// Reads a llama.cpp `rwkv7` GGUF into the canonical model.
pub fn read_model(path: &Path) -> Result<Model> {
    GgufFile::open(path)?.to_model()
}

/// [`read_model`] over bytes already in memory; `path` names them in errors.
pub fn read_model_from(path: &Path, map: Arc<FileBytes>) -> Result<Model> {
    parse(path, map)?.to_model()
}

/// [`read_model`] through a byte source: the header is read, tensors stay in the source
/// ([`TensorBytes::Source`]); `path` names it in errors.
pub fn read_model_source(path: &Path, src: Arc<dyn ByteSource>) -> Result<Model> {
    GgufFile::open_source(path, src)?.to_model()
}
