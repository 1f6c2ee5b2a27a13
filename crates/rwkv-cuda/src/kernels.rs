//! The kernels of `kernels/*.cu` as a typed table, and the `#[repr(C)]` argument blocks some of
//! them take by value.
//!
//! A [`Kernel`] names one `extern "C"` entry point; its variants carry what selects among
//! instances of one template (head size, values per thread, activation rows), so a launch can
//! only name a kernel that exists. The argument structs mirror the `.cu` structs field for field
//! (same order, same C types: pointers as `u64`, `int` as `i32`, `long long` as `i64`); their
//! bytes are written field by field at the offsets `#[repr(C)]` gives them, padding left zero.

use std::mem::{offset_of, size_of};

/// Head sizes the WKV kernels are instantiated for (`WKV_SIZES` in wkv7.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HeadSize {
    H16,
    H32,
    H64,
    H128,
}

impl HeadSize {
    pub const ALL: [HeadSize; 4] = [HeadSize::H16, HeadSize::H32, HeadSize::H64, HeadSize::H128];

    /// The instance for `n` values per head, or None when wkv7.cu has none.
    pub fn of(n: usize) -> Option<HeadSize> {
        HeadSize::ALL.into_iter().find(|h| h.size() == n)
    }

    pub fn size(self) -> usize {
        match self {
            HeadSize::H16 => 16,
            HeadSize::H32 => 32,
            HeadSize::H64 => 64,
            HeadSize::H128 => 128,
        }
    }
}

/// Values per thread of the scalar token-shift kernels (`LN_SHIFT_ENTRY` in ops.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ShiftValues {
    V2,
    V4,
    V8,
}

impl ShiftValues {
    pub fn count(self) -> usize {
        match self {
            ShiftValues::V2 => 2,
            ShiftValues::V4 => 4,
            ShiftValues::V8 => 8,
        }
    }
}

/// Activation rows per block of the f32 SIMT products (`R` of matvec.cu's `matvec_impl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MatVecRows {
    R1,
    R2,
    R4,
    R8,
}

impl MatVecRows {
    /// The kernel for `rows` activation rows: up to 8 in one block row, more take several
    /// (grid y).
    pub fn for_rows(rows: usize) -> MatVecRows {
        match rows {
            1 => MatVecRows::R1,
            2 => MatVecRows::R2,
            3 | 4 => MatVecRows::R4,
            _ => MatVecRows::R8,
        }
    }

    pub fn count(self) -> usize {
        match self {
            MatVecRows::R1 => 1,
            MatVecRows::R2 => 2,
            MatVecRows::R4 => 4,
            MatVecRows::R8 => 8,
        }
    }
}

/// One entry point of the kernel module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// ops.cu: embedding rows, optionally layer-normed (ln0).
    Embed,
    /// ops.cu: a layer norm per row; with `in_mul`/`in_add` also of the last row per sequence.
    LayerNorm,
    /// ops.cu: (layer norm +) token shift, scalar accesses, this many values per thread.
    LnShift { values: ShiftValues },
    /// ops.cu: the same with float4 accesses (widths a multiple of 4, up to 4096).
    LnShiftVec,
    /// ops.cu: the last row of each sequence into its shift register (prefill).
    ShiftStore,
    /// ops.cu: the last row of each sequence.
    LastRows,
    /// ops.cu: index of the largest value of each row.
    Argmax,
    /// ops.cu: clears a buffer (before a split-K product adds into it).
    Zero,
    /// ops.cu: an activation in place (after a split-K product).
    Act,
    /// matvec.cu: the f32 SIMT product for this many activation rows per block.
    MatVec { rows: MatVecRows },
    /// matvec.cu: batch 1, both the int8 and the f32 paths (launches mixing both kinds of job).
    MatVec1Mix,
    /// matvec.cu: batch 1, the int8 path only.
    MatVec1Q8,
    /// mma.cu: tensor-core product.
    MatMulMma,
    /// sparse.cu: rearranges a Q4_K matrix by input column.
    Q4kTranspose,
    /// sparse.cu: the zero-skipping batch-1 product; `q8`: u8 inputs and integer products.
    SparseQ4k { q8: bool },
    /// wkv7.cu: decode, one kernel per token.
    Wkv7Fused { head: HeadSize },
    /// wkv7.cu: prefill, the state-independent vectors per (head, row).
    Wkv7Pre { head: HeadSize },
    /// wkv7.cu: prefill, the scan over tokens that updates the state.
    Wkv7Scan { head: HeadSize },
    /// wkv7.cu: prefill, group norm, bonus and gate per (head, row).
    Wkv7Post { head: HeadSize },
}

impl Kernel {
    /// The symbol of the entry point in kernels/*.cu.
    pub fn name(self) -> &'static str {
        use HeadSize::*;
        match self {
            Kernel::Embed => "embed_kernel",
            Kernel::LayerNorm => "layernorm_kernel",
            Kernel::LnShift { values } => match values {
                ShiftValues::V2 => "ln_shift2_kernel",
                ShiftValues::V4 => "ln_shift4_kernel",
                ShiftValues::V8 => "ln_shift8_kernel",
            },
            Kernel::LnShiftVec => "ln_shift_vec_kernel",
            Kernel::ShiftStore => "shift_store_kernel",
            Kernel::LastRows => "last_rows_kernel",
            Kernel::Argmax => "argmax_kernel",
            Kernel::Zero => "zero_kernel",
            Kernel::Act => "act_kernel",
            Kernel::MatVec { rows } => match rows {
                MatVecRows::R1 => "matvec1_kernel",
                MatVecRows::R2 => "matvec2_kernel",
                MatVecRows::R4 => "matvec4_kernel",
                MatVecRows::R8 => "matvec8_kernel",
            },
            Kernel::MatVec1Mix => "matvec1mix_kernel",
            Kernel::MatVec1Q8 => "matvec1q8_kernel",
            Kernel::MatMulMma => "matmul_mma_kernel",
            Kernel::Q4kTranspose => "q4k_transpose_kernel",
            Kernel::SparseQ4k { q8: false } => "sparse_q4k_kernel",
            Kernel::SparseQ4k { q8: true } => "sparse_q4k_q8_kernel",
            Kernel::Wkv7Fused { head } => match head {
                H16 => "wkv7_fused_16",
                H32 => "wkv7_fused_32",
                H64 => "wkv7_fused_64",
                H128 => "wkv7_fused_128",
            },
            Kernel::Wkv7Pre { head } => match head {
                H16 => "wkv7_pre_16",
                H32 => "wkv7_pre_32",
                H64 => "wkv7_pre_64",
                H128 => "wkv7_pre_128",
            },
            Kernel::Wkv7Scan { head } => match head {
                H16 => "wkv7_scan_16",
                H32 => "wkv7_scan_32",
                H64 => "wkv7_scan_64",
                H128 => "wkv7_scan_128",
            },
            Kernel::Wkv7Post { head } => match head {
                H16 => "wkv7_post_16",
                H32 => "wkv7_post_32",
                H64 => "wkv7_post_64",
                H128 => "wkv7_post_128",
            },
        }
    }

    /// Every kernel (for the test that each one exists in the source).
    #[cfg(test)]
    pub fn all() -> Vec<Kernel> {
        let mut v = vec![
            Kernel::Embed,
            Kernel::LayerNorm,
            Kernel::LnShiftVec,
            Kernel::ShiftStore,
            Kernel::LastRows,
            Kernel::Argmax,
            Kernel::Zero,
            Kernel::Act,
            Kernel::MatVec1Mix,
            Kernel::MatVec1Q8,
            Kernel::MatMulMma,
            Kernel::Q4kTranspose,
            Kernel::SparseQ4k { q8: false },
            Kernel::SparseQ4k { q8: true },
        ];
        for values in [ShiftValues::V2, ShiftValues::V4, ShiftValues::V8] {
            v.push(Kernel::LnShift { values });
        }
        for rows in [
            MatVecRows::R1,
            MatVecRows::R2,
            MatVecRows::R4,
            MatVecRows::R8,
        ] {
            v.push(Kernel::MatVec { rows });
        }
        for head in HeadSize::ALL {
            v.extend([
                Kernel::Wkv7Fused { head },
                Kernel::Wkv7Pre { head },
                Kernel::Wkv7Scan { head },
                Kernel::Wkv7Post { head },
            ]);
        }
        v
    }
}

/// A plain value that a `#[repr(C)]` argument struct holds (native byte order, as the driver
/// copies kernel parameters from host memory).
pub(crate) trait CField {
    fn write(&self, out: &mut [u8]);
}

impl CField for u64 {
    fn write(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.to_ne_bytes());
    }
}
impl CField for i64 {
    fn write(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.to_ne_bytes());
    }
}
impl CField for i32 {
    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.to_ne_bytes());
    }
}
impl CField for f32 {
    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.to_ne_bytes());
    }
}
impl<T: CField, const N: usize> CField for [T; N] {
    fn write(&self, out: &mut [u8]) {
        for (i, v) in self.iter().enumerate() {
            v.write(&mut out[i * size_of::<T>()..]);
        }
    }
}

/// The bytes of a `#[repr(C)]` struct: `size_of` zeros, then each listed field written at its
/// `offset_of`. Reading the struct's memory instead would read its padding, which is
/// uninitialised.
macro_rules! c_struct_bytes {
    ($value:expr, $ty:ty { $($field:ident),* $(,)? }) => {{
        let v: &$ty = $value;
        let mut b = vec![0u8; size_of::<$ty>()];
        $( CField::write(&v.$field, &mut b[offset_of!($ty, $field)..]); )*
        b
    }};
}

/// wkv7.cu's `WkvArgs`, passed by value to every WKV kernel (184 bytes: 19 pointers, two
/// `long long`, two `int`, a `float`, 4 bytes of padding).
#[repr(C)]
#[derive(Debug, Clone, Default)]
pub(crate) struct WkvArgs {
    pub r: u64,
    pub w: u64,
    /// Prefill replaces k by the modified k, in place.
    pub k: u64,
    /// Prefill replaces v by the mixed v, in place.
    pub v: u64,
    pub a: u64,
    pub g: u64,
    pub v_first: u64,
    /// 0 on layer 0, which writes v_first instead.
    pub v_mix: u64,
    pub k_k: u64,
    pub k_a: u64,
    pub r_k: u64,
    pub ln_w: u64,
    pub ln_b: u64,
    pub out: u64,
    pub state: u64,
    pub slots: u64,
    /// Prefill scratch: -kk, `[rows, C]`.
    pub kk: u64,
    /// Prefill scratch: kk * a, `[rows, C]`.
    pub b: u64,
    /// Prefill scratch: per (row, head) sum of r k r_k.
    pub bonus: u64,
    pub state_len: i64,
    /// Offset of this layer's WKV matrix inside a slot's state.
    pub s_off: i64,
    pub c: i32,
    pub n_tok: i32,
    pub gn_eps: f32,
}

const _: () = assert!(size_of::<WkvArgs>() == 184);

impl WkvArgs {
    pub fn to_bytes(&self) -> Vec<u8> {
        c_struct_bytes!(
            self,
            WkvArgs {
                r,
                w,
                k,
                v,
                a,
                g,
                v_first,
                v_mix,
                k_k,
                k_a,
                r_k,
                ln_w,
                ln_b,
                out,
                state,
                slots,
                kk,
                b,
                bonus,
                state_len,
                s_off,
                c,
                n_tok,
                gn_eps,
            }
        )
    }
}

/// Most mixes one token shift writes (the time mix's six: r, w, k, v, a, g).
pub(crate) const MAX_SHIFT_MIXES: usize = 6;

/// ops.cu's `ShiftArgs`, the last argument of the token-shift kernels (104 bytes: 12 pointers,
/// an `int`, 4 bytes of padding). Unused entries stay 0.
#[repr(C)]
#[derive(Debug, Clone, Default)]
pub(crate) struct ShiftArgs {
    pub mix: [u64; MAX_SHIFT_MIXES],
    pub out: [u64; MAX_SHIFT_MIXES],
    pub n_mix: i32,
}

const _: () = assert!(size_of::<ShiftArgs>() == 104);

impl ShiftArgs {
    pub fn to_bytes(&self) -> Vec<u8> {
        c_struct_bytes!(self, ShiftArgs { mix, out, n_mix })
    }
}

/// matvec.cu's `MatJob` (72 bytes), one product of a launch's job table. The SIMT kernels read
/// `n_tiles_n` as lanes per row | passes << 8 | flag bits from 24 ([`Q8_BIT`]) and `pad` as
/// warps per row; the tensor-core kernel as tiles along out_dim and K splits.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MatJobArgs {
    pub wq: u64,
    pub wm: u64,
    pub bias: u64,
    pub x: u64,
    pub out: u64,
    pub dtype: i32,
    pub in_dim: i32,
    pub out_dim: i32,
    pub act: i32,
    pub accumulate: i32,
    /// First block of this job in the launch.
    pub block_start: i32,
    pub n_tiles_n: i32,
    pub pad: i32,
}

const _: () = assert!(size_of::<MatJobArgs>() == 72);

/// Flag bit of a SIMT job's `n_tiles_n`: the int8-activation path (matvec.cu).
pub(crate) const Q8_BIT: i32 = 1 << 24;

/// Jobs per launch (`MAX_JOBS` in matvec.cu).
pub(crate) const MAX_JOBS: usize = 8;

/// matvec.cu's `JobTable` (584 bytes: 8 jobs, the count, 4 bytes of padding), passed by value
/// to the SIMT and tensor-core product kernels.
#[repr(C)]
#[derive(Debug, Clone, Default)]
pub(crate) struct JobTable {
    pub job: [MatJobArgs; MAX_JOBS],
    pub n: i32,
}

const _: () = assert!(size_of::<JobTable>() == MAX_JOBS * 72 + 8);

impl CField for MatJobArgs {
    fn write(&self, out: &mut [u8]) {
        let b = c_struct_bytes!(
            self,
            MatJobArgs {
                wq,
                wm,
                bias,
                x,
                out,
                dtype,
                in_dim,
                out_dim,
                act,
                accumulate,
                block_start,
                n_tiles_n,
                pad,
            }
        );
        out[..b.len()].copy_from_slice(&b);
    }
}

impl JobTable {
    /// The table of up to [`MAX_JOBS`] jobs (the caller splits longer lists).
    pub fn of(jobs: &[MatJobArgs]) -> JobTable {
        let mut t = JobTable::default();
        let n = jobs.len().min(MAX_JOBS);
        t.job[..n].copy_from_slice(&jobs[..n]);
        t.n = n as i32;
        t
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        c_struct_bytes!(self, JobTable { job, n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Kernel names defined in the source: every `extern "C" __global__` entry point, with the
    /// two entry macros expanded for the arguments the source instantiates them with.
    fn defined_kernels(src: &str) -> HashSet<String> {
        let ln_values: Vec<&str> = src
            .lines()
            .filter_map(|l| l.trim().strip_prefix("LN_SHIFT_ENTRY(")?.strip_suffix(')'))
            .collect();
        let heads: Vec<&str> = src
            .lines()
            .find_map(|l| l.strip_prefix("#define WKV_SIZES(X) "))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|x| x.strip_prefix("X(")?.strip_suffix(')'))
                    .collect()
            })
            .unwrap_or_default();
        let mut names = HashSet::new();
        for line in src.lines() {
            let Some(at) = line.find("__global__ void ") else {
                continue;
            };
            let decl = &line[at + "__global__ void ".len()..];
            // Skip `__launch_bounds__(...)`; the name is the first word opening a parenthesis.
            let name = decl
                .split_whitespace()
                .filter(|t| !t.starts_with("__launch_bounds__") && !t.ends_with(')'))
                .find_map(|t| t.split_once('(').map(|(n, _)| n));
            let Some(name) = name else { continue };
            if name.contains("##VV##") {
                for v in &ln_values {
                    names.insert(name.replace("##VV##", v));
                }
            } else if name.contains("##NN") {
                for h in &heads {
                    names.insert(name.replace("##NN", h));
                }
            } else {
                names.insert(name.to_string());
            }
        }
        names
    }

    #[test]
    fn every_kernel_of_the_table_is_defined_in_the_source() {
        let defined = defined_kernels(&crate::gpu::kernel_source());
        // The parser itself must find the plain, macro and launch-bounded entries.
        for probe in [
            "argmax_kernel",
            "ln_shift8_kernel",
            "wkv7_scan_128",
            "matvec8_kernel",
        ] {
            assert!(
                defined.contains(probe),
                "parser missed {probe}: {defined:?}"
            );
        }
        let all = Kernel::all();
        for k in &all {
            assert!(defined.contains(k.name()), "{k:?}: no kernel {}", k.name());
        }
        let names: HashSet<&str> = all.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), all.len(), "two kernels share a name");
    }

    #[test]
    fn head_sizes_round_trip() {
        for h in HeadSize::ALL {
            assert_eq!(HeadSize::of(h.size()), Some(h));
        }
        assert_eq!(HeadSize::of(48), None);
        assert_eq!(HeadSize::of(256), None);
    }

    /// Bytes of a struct whose every field holds `fill` bytes: those at the field offsets must
    /// be `fill`, the padding zero, and the count of `fill` bytes the fields' total size (a
    /// field left out of `to_bytes` would leave zeros).
    fn check_fields(bytes: &[u8], fields: &[(usize, usize)], size: usize) {
        assert_eq!(bytes.len(), size);
        let mut covered = vec![false; size];
        for &(off, len) in fields {
            assert!(
                bytes[off..off + len].iter().all(|&b| b == 0x5a),
                "field at {off}"
            );
            covered[off..off + len].iter_mut().for_each(|c| *c = true);
        }
        for (i, (&b, &c)) in bytes.iter().zip(&covered).enumerate() {
            if !c {
                assert_eq!(b, 0, "padding byte {i} not zero");
            }
        }
        let total: usize = fields.iter().map(|f| f.1).sum();
        assert_eq!(bytes.iter().filter(|&&b| b == 0x5a).count(), total);
    }

    #[test]
    fn wkv_args_match_the_cu_layout() {
        let p = u64::from_ne_bytes([0x5a; 8]);
        let i = i64::from_ne_bytes([0x5a; 8]);
        let n = i32::from_ne_bytes([0x5a; 4]);
        let f = f32::from_ne_bytes([0x5a; 4]);
        let a = WkvArgs {
            r: p,
            w: p,
            k: p,
            v: p,
            a: p,
            g: p,
            v_first: p,
            v_mix: p,
            k_k: p,
            k_a: p,
            r_k: p,
            ln_w: p,
            ln_b: p,
            out: p,
            state: p,
            slots: p,
            kk: p,
            b: p,
            bonus: p,
            state_len: i,
            s_off: i,
            c: n,
            n_tok: n,
            gn_eps: f,
        };
        // The .cu struct: 19 pointers, then state_len, s_off, C, n_tok, gn_eps in this order.
        let mut fields: Vec<(usize, usize)> = (0..19).map(|k| (8 * k, 8)).collect();
        fields.extend([(152, 8), (160, 8), (168, 4), (172, 4), (176, 4)]);
        check_fields(&a.to_bytes(), &fields, 184);
        assert_eq!(offset_of!(WkvArgs, gn_eps), 176);
    }

    #[test]
    fn shift_args_match_the_cu_layout() {
        let p = u64::from_ne_bytes([0x5a; 8]);
        let a = ShiftArgs {
            mix: [p; 6],
            out: [p; 6],
            n_mix: i32::from_ne_bytes([0x5a; 4]),
        };
        let mut fields: Vec<(usize, usize)> = (0..12).map(|k| (8 * k, 8)).collect();
        fields.push((96, 4));
        check_fields(&a.to_bytes(), &fields, 104);
    }

    #[test]
    fn job_table_matches_the_cu_layout() {
        let p = u64::from_ne_bytes([0x5a; 8]);
        let n = i32::from_ne_bytes([0x5a; 4]);
        let job = MatJobArgs {
            wq: p,
            wm: p,
            bias: p,
            x: p,
            out: p,
            dtype: n,
            in_dim: n,
            out_dim: n,
            act: n,
            accumulate: n,
            block_start: n,
            n_tiles_n: n,
            pad: n,
        };
        let mut t = JobTable::of(&[job; MAX_JOBS]);
        t.n = n;
        let mut fields = Vec::new();
        for j in 0..MAX_JOBS {
            fields.extend((0..5).map(|k| (72 * j + 8 * k, 8)));
            fields.extend((0..8).map(|k| (72 * j + 40 + 4 * k, 4)));
        }
        fields.push((576, 4));
        check_fields(&t.to_bytes(), &fields, 584);
        // A short table: the count, and zeros for the missing jobs.
        let short = JobTable::of(&[job; 3]).to_bytes();
        assert_eq!(&short[576..580], &3i32.to_ne_bytes());
        assert!(short[3 * 72..576].iter().all(|&b| b == 0));
    }
}
