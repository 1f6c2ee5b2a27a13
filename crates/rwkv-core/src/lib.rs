//! rwkv-core: everything about RWKV models that knows nothing of GPUs.
//!
//! Layers point one way: `formats` and `quant` read bytes, `model` turns them into one
//! [`model::Model`] (canonical tensor names, shapes and dtypes) and builds the per-step
//! [`backend::Plan`]; backends (`rwkv-cpu`, `rwkv-cuda`, `rwkv-wgpu`) implement
//! [`backend::Backend`] and never see a file format.

pub mod backend;
pub mod dtype;
pub mod error;
pub mod formats;
pub mod model;
pub mod quant;
pub mod runner;
pub mod sampler;
pub mod synth;
pub mod tokenizer;

pub use backend::{Backend, Plan};
pub use dtype::DType;
pub use error::{BackendErrorKind, Error, Result};
pub use model::{Model, ModelDesc, RwkvVersion};
