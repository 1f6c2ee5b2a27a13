//! rwkv-hybrid in the browser: the WebGPU backend (`rwkv-wgpu`) compiled to wasm32, driven by
//! `rwkv_core::model::step_builder` through the backend's async methods (nothing may block the
//! browser's event loop). `web/rwkv.js` wraps the exported [`WebModel`] in the JS API
//! (`Model.load`, `logits`, `generate`, `stop`). On native targets this crate is empty.

mod text;

#[cfg(target_arch = "wasm32")]
mod bindings;

pub use text::Utf8Stream;
