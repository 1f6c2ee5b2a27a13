//! WGSL kernels: the table of kernels (each variant one compiled module), the assembly of
//! their source (`source.rs`) and the pipeline cache (`cache.rs`).

mod cache;
mod source;
#[cfg(test)]
mod tests;

use crate::weights::PackedKind;

pub(crate) use cache::Kernels;

/// Tile of gemm_f16.wgsl: SGM x SGN subgroups of 32, each owning FM x FN fragments of 16x16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GemmTile {
    pub sgm: u32,
    pub sgn: u32,
    pub fm: u32,
    pub fn_: u32,
}

impl GemmTile {
    /// 128 x 128 with 8 subgroups: 115 TFLOP/s on the H100 (examples/gemm_probe.rs; 64 x 64
    /// with 4 subgroups: 18), for devices with 48 KiB of workgroup memory.
    pub const LARGE: GemmTile = GemmTile {
        sgm: 2,
        sgn: 4,
        fm: 4,
        fn_: 2,
    };
    /// 64 x 64 with 4 subgroups, for 24 KiB (lavapipe has 32 KiB, WebGPU's default is 16).
    pub const SMALL: GemmTile = GemmTile {
        sgm: 2,
        sgn: 2,
        fm: 2,
        fn_: 2,
    };
    /// Activation rows of a tile.
    pub fn rows(self) -> u32 {
        16 * self.sgm * self.fm
    }
    /// Output columns of a tile.
    pub fn cols(self) -> u32 {
        16 * self.sgn * self.fn_
    }
    pub fn invocations(self) -> u32 {
        32 * self.sgm * self.sgn
    }
    /// Workgroup memory of gemm_f16.wgsl: two f16 tiles of each operand (rows of 40 and
    /// cols + 8 halves) and a 16 x 20 f32 staging tile per subgroup.
    pub fn workgroup_bytes(self) -> u32 {
        2 * self.rows() * 40 * 2 + 2 * 32 * (self.cols() + 8) * 2 + self.sgm * self.sgn * 320 * 4
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// 64 invocations per workgroup, `tpr` of them per output row; `jobs` products at once.
    MatMul(PackedKind, u32, u32),
    /// 256 invocations per workgroup, a tile of 64 output columns x 16·`tm` activation rows.
    MatMulTiled(PackedKind, u32),
    /// Cooperative-matrix (tensor core) product: 128 invocations = 4 subgroups of 32, a tile of
    /// 64 output columns x 64 activation rows, f16 operands, f32 accumulation. Same parameters
    /// and grid as `MatMulTiled(_, 4)`, which replaces it when the device rejects the module.
    MatMulCoop(PackedKind),
    /// Q4_K matrix-vector product: 64 invocations, 4 output rows, one activation row per z;
    /// this many products at once.
    MatVecQ4K(u32),
    /// Q4_K matrix-vector product with subgroup sums (`matvec_q4k_sg.wgsl`): 256 invocations =
    /// 256 / `sg` subgroups, `rps` output rows per subgroup, one activation row per z; `jobs`
    /// products at once.
    MatVecQ4KSg {
        sg: u32,
        rps: u32,
        jobs: u32,
    },
    /// Float (F32 / F16 / BF16) matrix-vector product: 256 invocations, a power of two of them
    /// per output row (per job), 4 activation rows per z; `jobs` products.
    MatVec(PackedKind, u32),
    /// One invocation per output row, for rows of at most NARROW_UNITS units; `jobs` products.
    MatMulNarrow(PackedKind, u32),
    Embed(PackedKind),
    LayerNorm,
    TokenShift,
    /// LayerNorm and/or token shift of one row per workgroup of 256, `vec4s` vec4 values per
    /// invocation in registers; `shift`: with the token-shift register (state binding).
    LnShift {
        vec4s: u32,
        shift: bool,
    },
    LastRows,
    Argmax,
    Wkv7 {
        head_size: u32,
    },
    /// WKV with `lanes` invocations per state row (`wkv7_split.wgsl`), state bound as vec4.
    Wkv7Split {
        head_size: u32,
        lanes: u32,
    },
    /// Prefill WKV, pass 1 (`wkv7_prep.wgsl`): per (head, row), the state-independent vectors
    /// into scratch rows of the arena.
    Wkv7Prep {
        head_size: u32,
    },
    /// Prefill WKV, pass 2 (`wkv7_scan.wgsl`): `lanes` invocations per state row (1: no
    /// communication at all inside a chunk; 2 or 4: lane sums by subgroup shuffles), tokens in
    /// chunks of `chunk` through workgroup memory.
    Wkv7Scan {
        head_size: u32,
        chunk: u32,
        lanes: u32,
    },
    /// Prefill WKV, pass 3 (`wkv7_post.wgsl`): per (head, row), GroupNorm, bonus and gate.
    Wkv7Post {
        head_size: u32,
    },
    /// Cooperative-matrix product of f16 scratch operands (gemm_f16.wgsl); `split`: partial
    /// sums over K ranges (grid z), finished by `SplitReduce`.
    GemmF16 {
        tile: GemmTile,
        split: bool,
    },
    /// Sum of a split product's partials, bias, activation, write (split_reduce.wgsl).
    SplitReduce,
    /// Activations to padded f16 (to_f16.wgsl).
    ToF16,
    /// One chunk's rows of a weight to padded, transposed f16 (dequant_f16.wgsl).
    DequantF16(PackedKind),
}
