//! Shared test helpers: a seeded PRNG, backends with and without optional features, random
//! quantized blocks and an independent reference dequantizer (docs/gguf-formats.md §3).
#![allow(dead_code)]

use rwkv_core::model::{Tensor, TensorBytes};
use rwkv_core::DType;
use rwkv_wgpu::{WgpuBackend, WgpuOptions};

/// splitmix64: small, seeded, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub use rwkv_testing::seed;

/// Backends to test: the adapter with its optional features, and the same with none.
/// Empty after a skip (rwkv_testing::skip_gpu) when there is no adapter; the caller returns.
pub fn backends(options: WgpuOptions) -> Vec<(String, WgpuBackend)> {
    let mut out = Vec::new();
    let plain = WgpuOptions {
        allow_f16: false,
        allow_subgroups: false,
        allow_coop: false,
        ..options.clone()
    };
    for (label, opts) in [("features", options), ("plain", plain)] {
        match WgpuBackend::new(opts) {
            Ok(b) => {
                let label = format!(
                    "{label} (f16 {}, subgroups {}, coop {})",
                    b.uses_f16(),
                    b.uses_subgroups(),
                    b.uses_coop()
                );
                out.push((label, b));
            }
            Err(e) => {
                // Counted as a skip by scripts/test.sh; a failure under RWKV_REQUIRE_GPU=webgpu.
                rwkv_testing::skip_gpu("webgpu", &format!("no wgpu adapter: {e}"));
                return Vec::new();
            }
        }
    }
    out
}

/// `list` plus, where its first backend has no cooperative matrices but has shader-f16, one
/// that runs the cooperative-matrix kernel with those operations emulated in plain WGSL.
pub fn with_emulated_coop(mut list: Vec<(String, WgpuBackend)>) -> Vec<(String, WgpuBackend)> {
    let emulate = list
        .first()
        .is_some_and(|(_, b)| !b.uses_coop() && b.uses_f16());
    if emulate {
        let options = WgpuOptions {
            emulate_coop: true,
            ..Default::default()
        };
        if let Ok(b) = WgpuBackend::new(options) {
            list.push(("coop emulated".to_string(), b));
        }
    }
    list
}

pub fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Random blocks of `dtype` for `n` values: random quants, sane f16 scales.
pub fn random_blocks(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let blocks = n / dtype.block_elems();
    let mut out = Vec::with_capacity(blocks * dtype.block_bytes());
    for _ in 0..blocks {
        match dtype {
            DType::Q8_0 => {
                out.extend(f16_bits(rng.uniform(0.002, 0.02)));
                out.extend((0..32).map(|_| rng.byte()));
            }
            DType::Q4K => {
                out.extend(f16_bits(rng.uniform(0.001, 0.01)));
                out.extend(f16_bits(rng.uniform(0.001, 0.01)));
                out.extend((0..140).map(|_| rng.byte()));
            }
            DType::Q6K => {
                out.extend((0..192).map(|_| rng.byte()));
                out.extend((0..16).map(|_| (rng.below(255) as i32 - 127) as i8 as u8));
                out.extend(f16_bits(rng.uniform(0.0005, 0.005)));
            }
            DType::F16 => out.extend(f16_bits(rng.uniform(-1.0, 1.0))),
            DType::BF16 => out.extend(half::bf16::from_f32(rng.uniform(-1.0, 1.0)).to_le_bytes()),
            DType::F32 => out.extend(rng.uniform(-1.0, 1.0).to_le_bytes()),
            d => panic!("no generator for {d}"),
        }
    }
    out
}

/// Independent reference dequantization (written from docs/gguf-formats.md).
pub fn dequant(dtype: DType, src: &[u8]) -> Vec<f32> {
    let mut y = Vec::new();
    match dtype {
        DType::F32 => y.extend(
            src.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        DType::F16 => y.extend(
            src.chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        DType::BF16 => y.extend(
            src.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        DType::Q8_0 => {
            for b in src.chunks_exact(34) {
                let d = f16_at(b, 0);
                y.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        DType::Q4K => {
            for b in src.chunks_exact(144) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let s = &b[4..16];
                let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
                for j in 0..8 {
                    if j < 4 {
                        sc[j] = s[j] & 63;
                        mn[j] = s[j + 4] & 63;
                    } else {
                        sc[j] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
                        mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
                    }
                }
                let qs = &b[16..144];
                for c in 0..4 {
                    let q = &qs[32 * c..32 * c + 32];
                    let (d1, m1) = (d * sc[2 * c] as f32, dmin * mn[2 * c] as f32);
                    y.extend(q.iter().map(|&v| d1 * (v & 15) as f32 - m1));
                    let (d2, m2) = (d * sc[2 * c + 1] as f32, dmin * mn[2 * c + 1] as f32);
                    y.extend(q.iter().map(|&v| d2 * (v >> 4) as f32 - m2));
                }
            }
        }
        DType::Q6K => {
            for b in src.chunks_exact(210) {
                let d = f16_at(b, 208);
                let mut out = [0f32; 256];
                for n in 0..2 {
                    let l0 = &b[64 * n..];
                    let h0 = &b[128 + 32 * n..];
                    let s = &b[192 + 8 * n..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((l0[l] & 15) | ((h0[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((l0[l + 32] & 15) | (((h0[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((l0[l] >> 4) | (((h0[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((l0[l + 32] >> 4) | (((h0[l] >> 6) & 3) << 4)) as i32 - 32;
                        out[128 * n + l] = d * (s[is] as i8) as f32 * q1 as f32;
                        out[128 * n + l + 32] = d * (s[is + 2] as i8) as f32 * q2 as f32;
                        out[128 * n + l + 64] = d * (s[is + 4] as i8) as f32 * q3 as f32;
                        out[128 * n + l + 96] = d * (s[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                y.extend_from_slice(&out);
            }
        }
        d => panic!("no reference dequantizer for {d}"),
    }
    y
}

pub fn tensor(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Tensor {
    Tensor::new(dtype, shape, TensorBytes::owned(bytes)).expect("test tensor")
}

pub fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
    Tensor::from_f32(shape, values).expect("test tensor")
}

/// Largest |a − b| and the index where it occurs.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        if d > worst.0 || d.is_nan() {
            worst = (if d.is_nan() { f32::INFINITY } else { d }, i);
        }
    }
    worst
}
