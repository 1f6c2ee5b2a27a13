//! wgpu backend (work in progress).
