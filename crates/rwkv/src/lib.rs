//! rwkv: one API over every backend.
//!
//! ```no_run
//! use rwkv::{Engine, EngineOptions, SamplerParams};
//! let mut engine = Engine::load("model.gguf".as_ref(), &EngineOptions::default(), None)?;
//! let mut s = engine.new_session()?;
//! let prompt = engine.tokenize("The Eiffel tower is in");
//! engine.generate(&mut s, &prompt, 32, SamplerParams::default(), |_, bytes| {
//!     print!("{}", String::from_utf8_lossy(bytes));
//!     true
//! })?;
//! # Ok::<(), rwkv::Error>(())
//! ```

pub mod bench;
pub mod cli_util;
pub mod engine;
pub mod router;
pub mod serve;
pub use rwkv_core::sampler;

pub use engine::{Engine, EngineOptions, Session};
pub use router::{BackendChoice, BackendReport};
pub use rwkv_core::{DType, Error, Model, ModelDesc, Result};
pub use sampler::{Sampler, SamplerParams};
