//! What a caller may switch on the backend: every fast path is on by default and may be turned
//! off (A/B measurements, or a way around a fast path that misbehaves on some device), and the
//! tensor-core threshold may move. This crate reads no environment for them: the `rwkv` CLI
//! maps `RWKV_CUDA_*` variables onto them (`cuda_options_from_env` in crates/rwkv/src/router.rs),
//! `examples/cuda_bench.rs --opt` sets them per run.

/// Default of [`CudaOptions::mma_min_rows`]: from this many activation rows on, matrix products
/// take the tensor-core kernel (f16 operands, f32 accumulation). The SIMT matvec kernels keep
/// R ≤ 8 rows in registers and slow down past 4: at 8 sequences the tensor cores gave 2,395 vs
/// 1,191 tok/s (1.5B) and 752 vs 191 (7.2B) on the H100.
#[doc(hidden)]
pub const MMA_MIN_ROWS: usize = 5;

/// Options of [`crate::CudaBackend`]. A compiled plan keeps the options it was compiled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOptions {
    /// Capture each plan's launches in a CUDA graph and replay that (on); off launches them one
    /// by one every step.
    pub graphs: bool,
    /// Activation rows from which a product takes the tensor-core kernel ([`MMA_MIN_ROWS`]).
    pub mma_min_rows: usize,
    /// Zero-skipping batch-1 products of the matrices that read a relu² output (sparse.cu,
    /// built at the first batch-1 plan; on). Off keeps the row layout (and its memory).
    pub sparse: bool,
    /// The float4 token-shift kernel for widths that are a multiple of 4 up to 4096 (on); off
    /// takes the scalar kernels, which serve the other widths anyway.
    pub ln_shift_vec: bool,
    /// Batch-1 Q4_K products with activations quantized to int8 in the kernel (dp4a), and u8
    /// inputs in the zero-skipping product (on); off keeps f32 activations (more precise,
    /// slower: 199 vs 279 tok/s on 7.2B).
    pub q8x: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            graphs: true,
            mma_min_rows: MMA_MIN_ROWS,
            sparse: true,
            ln_shift_vec: true,
            q8x: true,
        }
    }
}
