//! Synthetic models: random weights of the released RWKV-7 shapes.
//!
//! For tests and benchmarks that need a model of a real size without a download. The weights are
//! random but scaled like a trained network's, so activations stay in range through every layer:
//! logits are finite, spread out, and depend on the input. Values come from a seeded PRNG per
//! (tensor name, row chunk), so a seed gives the same model whatever the thread count.
//!
//! Try it: `synth_model(SynthShape::Tiny, DType::F32, 42)`.

// The workspace's rust-version (1.85) predates `usize::is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::v7::{canonical_tensors, is_large_matrix};
use crate::model::{LoraRanks, Model, ModelDesc, RwkvVersion, Tensor, TensorBytes};
use crate::tokenizer::Vocab;

/// The released RWKV-7 sizes, plus a tiny one for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthShape {
    /// 2 layers, C = 256, vocabulary 512: fast enough for every test.
    Tiny,
    B0_1,
    B0_4,
    B1_5,
    B2_9,
    B7_2,
}

impl SynthShape {
    pub const ALL: [SynthShape; 6] = [
        SynthShape::Tiny,
        SynthShape::B0_1,
        SynthShape::B0_4,
        SynthShape::B1_5,
        SynthShape::B2_9,
        SynthShape::B7_2,
    ];

    /// Parses a name as [`SynthShape::name`] prints it (case-insensitive).
    pub fn parse(s: &str) -> Option<SynthShape> {
        let lower = s.to_ascii_lowercase();
        SynthShape::ALL
            .into_iter()
            .find(|shape| shape.name() == lower)
    }

    pub const fn name(self) -> &'static str {
        match self {
            SynthShape::Tiny => "tiny",
            SynthShape::B0_1 => "0.1b",
            SynthShape::B0_4 => "0.4b",
            SynthShape::B1_5 => "1.5b",
            SynthShape::B2_9 => "2.9b",
            SynthShape::B7_2 => "7.2b",
        }
    }
}

impl std::fmt::Display for SynthShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// LoRA rank for width `c` (docs/rwkv-math.md): `max(1, round(C^e · m / 32)) · 32`.
pub fn lora_rank(c: usize, exponent: f64, multiplier: f64) -> usize {
    let blocks = ((c as f64).powf(exponent) * multiplier / 32.0)
        .round()
        .max(1.0);
    blocks as usize * 32
}

/// The shape of `shape`: RWKV-7, head size 64, vocabulary 65536, FFN 4C, LoRA ranks by the rule.
pub fn desc(shape: SynthShape) -> ModelDesc {
    let (n_layer, c) = match shape {
        SynthShape::Tiny => {
            return ModelDesc {
                version: RwkvVersion::V7,
                n_layer: 2,
                n_embd: 256,
                head_size: 64,
                vocab_size: 512,
                ffn_size: 1024,
                lora: LoraRanks {
                    w: 32,
                    a: 32,
                    v: 32,
                    g: 64,
                },
            }
        }
        SynthShape::B0_1 => (12, 768),
        SynthShape::B0_4 => (24, 1024),
        SynthShape::B1_5 => (24, 2048),
        SynthShape::B2_9 => (32, 2560),
        SynthShape::B7_2 => (32, 4096),
    };
    ModelDesc {
        version: RwkvVersion::V7,
        n_layer,
        n_embd: c,
        head_size: 64,
        vocab_size: 65536,
        ffn_size: 4 * c,
        lora: LoraRanks {
            w: lora_rank(c, 0.5, 1.8),
            a: lora_rank(c, 0.5, 1.8),
            v: lora_rank(c, 0.5, 1.3),
            g: lora_rank(c, 0.8, 0.6),
        },
    }
}

/// A random model of `shape`: large matrices ([`is_large_matrix`]) in `dtype`, LoRA matrices in
/// f16 (f32 when `dtype` is f32), vectors in f32. Source `synth:<shape>:<dtype>:<seed>`, format "synth".
pub fn synth_model(shape: SynthShape, dtype: DType, seed: u64) -> Result<Model> {
    let source = format!("synth:{}:{}:{seed}", shape.name(), dtype.name());
    build(&desc(shape), dtype, seed, source)
}

/// A random model of any RWKV-7 description (odd widths, head sizes and LoRA ranks for tests),
/// scaled like [`synth_model`]. Source `synth:custom:<dtype>:<seed>`.
pub fn synth_model_with_desc(desc: &ModelDesc, dtype: DType, seed: u64) -> Result<Model> {
    if desc.version != RwkvVersion::V7 {
        return Err(Error::invalid(format!(
            "synthetic models are RWKV-7 only, not {}",
            desc.version.name()
        )));
    }
    if desc.head_size == 0
        || desc.n_embd % desc.head_size != 0
        || desc.n_layer == 0
        || desc.vocab_size == 0
    {
        return Err(Error::invalid(format!(
            "synthetic model: inconsistent description {desc:?}"
        )));
    }
    build(
        desc,
        dtype,
        seed,
        format!("synth:custom:{}:{seed}", dtype.name()),
    )
}

/// How one tensor's values are drawn.
#[derive(Debug, Clone, Copy)]
enum Init {
    /// Approximately normal (a sum of four uniforms, so bounded at ±3.5 std).
    Normal {
        mean: f32,
        std: f32,
    },
    Uniform {
        low: f32,
        high: f32,
    },
}

/// The distribution of a canonical tensor, chosen so a forward pass stays well scaled: inputs to
/// every nonlinearity are O(1), each residual update is O(0.5) (the stream grows only slowly over
/// 32 layers because every block reads a layer-normed copy), and logits have std of a few units.
fn init_for(name: &str, shape: &[usize]) -> Init {
    let fan_in = *shape.last().unwrap_or(&1) as f32;
    let matrix = |gain: f32| Init::Normal {
        mean: 0.0,
        std: gain / fan_in.sqrt(),
    };
    let field = name.rsplit_once("blocks.").map_or(name, |(_, rest)| {
        rest.split_once('.').map_or(rest, |(_, f)| f)
    });
    match field {
        "emb.weight" => Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
        "head.weight" => matrix(3.0),
        "ln0.weight" | "ln1.weight" | "ln2.weight" | "ln_out.weight" | "att.ln_x.weight" => {
            Init::Normal {
                mean: 1.0,
                std: 0.1,
            }
        }
        "ln0.bias" | "ln1.bias" | "ln2.bias" | "ln_out.bias" | "att.ln_x.bias" => Init::Normal {
            mean: 0.0,
            std: 0.05,
        },
        "att.x_r" | "att.x_w" | "att.x_k" | "att.x_v" | "att.x_a" | "att.x_g" | "ffn.x_k" => {
            Init::Uniform {
                low: 0.05,
                high: 0.95,
            }
        }
        // σ(w0) from 0.0025 to 0.73: decays per token from 0.9985 down to 0.64.
        "att.w0" => Init::Uniform {
            low: -6.0,
            high: 1.0,
        },
        "att.a0" | "att.v0" => Init::Normal {
            mean: 0.0,
            std: 0.5,
        },
        "att.w1" | "att.a1" | "att.v1" | "att.g1" => matrix(1.0),
        "att.w2" | "att.a2" | "att.v2" => matrix(0.5),
        "att.g2" => matrix(1.0),
        "att.k_k" => Init::Uniform {
            low: 0.8,
            high: 1.0,
        },
        "att.k_a" => Init::Normal {
            mean: 1.0,
            std: 0.05,
        },
        "att.r_k" => Init::Normal {
            mean: 0.0,
            std: 0.1,
        },
        "att.receptance.weight" | "att.key.weight" | "att.value.weight" | "ffn.key.weight" => {
            matrix(1.0)
        }
        "att.output.weight" | "ffn.value.weight" => matrix(0.5),
        _ => matrix(0.1),
    }
}

/// splitmix64: a fast, well-mixed 64-bit generator (one multiply-xorshift chain per draw).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn sample(&mut self, init: Init) -> f32 {
        let bits = self.next();
        match init {
            Init::Normal { mean, std } => {
                // Four 16-bit uniforms: mean 2, variance 4/12, so (sum − 2)·√3 has unit variance.
                let sum: u64 = (0..4).map(|i| (bits >> (16 * i)) & 0xffff).sum();
                let z = (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt();
                mean + std * z
            }
            Init::Uniform { low, high } => {
                low + (high - low) * ((bits >> 40) as f32 / (1u64 << 24) as f32)
            }
        }
    }
}

/// FNV-1a of a tensor name: its values depend on the name, not on the order of tensors.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values generated and converted at once: bounds the f32 scratch per thread (2 MB) and stays
/// below the size at which `quant::quantize` starts threads of its own (2^20 values), so the
/// workers here do not oversubscribe the cores.
const CHUNK_VALUES: usize = 1 << 19;

/// One chunk of rows of one tensor, with the bytes it fills.
struct Job<'a> {
    name: &'a str,
    init: Init,
    dtype: DType,
    cols: usize,
    chunk: u64,
    seed: u64,
    out: &'a mut [u8],
}

impl Job<'_> {
    /// Fills the job's bytes; `values` is the worker's reusable scratch (fresh allocations per
    /// chunk cost more in page faults than the generation itself).
    fn run(self, values: &mut Vec<f32>) -> Result<()> {
        let row_bytes = self.dtype.row_bytes(self.cols).unwrap_or(usize::MAX).max(1);
        let rows = self.out.len() / row_bytes;
        let mut rng = SplitMix64(
            self.seed
                ^ name_hash(self.name).rotate_left(17)
                ^ self.chunk.wrapping_mul(0xa076_1d64_78bd_642f),
        );
        if self.dtype == DType::F32 {
            // The bytes quantize(F32) would give, written in place without a copy.
            for dst in self.out.chunks_exact_mut(4) {
                dst.copy_from_slice(&rng.sample(self.init).to_le_bytes());
            }
            return Ok(());
        }
        values.clear();
        values.extend((0..rows * self.cols).map(|_| rng.sample(self.init)));
        let bytes = crate::quant::quantize(self.dtype, values, self.cols)?;
        if bytes.len() != self.out.len() {
            return Err(Error::invalid(format!(
                "synthetic tensor '{}': {} gave {} bytes for {} expected",
                self.name,
                self.dtype,
                bytes.len(),
                self.out.len()
            )));
        }
        self.out.copy_from_slice(&bytes);
        Ok(())
    }
}

fn build(desc: &ModelDesc, dtype: DType, seed: u64, source: String) -> Result<Model> {
    let specs = canonical_tensors(desc);
    let mut datas = Vec::with_capacity(specs.len());
    for (name, shape) in &specs {
        // LoRA matrices in f16 when the model is not f32, as released checkpoints (bf16/fp16) and
        // llama.cpp's quantized files keep them; vectors always f32.
        let tensor_dtype = if is_large_matrix(name) {
            dtype
        } else if shape.len() == 2 && dtype != DType::F32 {
            DType::F16
        } else {
            DType::F32
        };
        let len = tensor_dtype.tensor_bytes(shape).ok_or_else(|| {
            Error::invalid(format!(
                "synthetic tensor '{name}' {shape:?} is not whole {tensor_dtype} blocks"
            ))
        })?;
        datas.push((tensor_dtype, vec![0u8; len]));
    }

    let mut jobs = Vec::new();
    for ((name, shape), (tensor_dtype, data)) in specs.iter().zip(datas.iter_mut()) {
        let cols = *shape.last().unwrap_or(&1);
        // row_bytes is Some: tensor_bytes succeeded above for the same dtype and row length.
        let row_bytes = tensor_dtype.row_bytes(cols).unwrap_or(0).max(1);
        let rows_per_chunk = (CHUNK_VALUES / cols.max(1)).max(1);
        for (chunk, out) in data.chunks_mut(rows_per_chunk * row_bytes).enumerate() {
            jobs.push(Job {
                name,
                init: init_for(name, shape),
                dtype: *tensor_dtype,
                cols,
                chunk: chunk as u64,
                seed,
                out,
            });
        }
    }

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len().max(1));
    let queue = Mutex::new(jobs);
    let work = || -> Result<()> {
        let mut values = Vec::new();
        loop {
            let job = match queue.lock() {
                Ok(mut q) => q.pop(),
                Err(_) => return Err(Error::invalid("synthetic model: a worker panicked")),
            };
            match job {
                Some(job) => job.run(&mut values)?,
                None => return Ok(()),
            }
        }
    };
    // One worker runs here: wasm32 (the browser) has no threads, and spawning one panics there.
    let results: Vec<Result<()>> = if threads <= 1 {
        vec![work()]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(Error::invalid("synthetic model: a worker panicked"))
                    })
                })
                .collect()
        })
    };
    results.into_iter().collect::<Result<()>>()?;

    let mut tensors = BTreeMap::new();
    for ((name, shape), (tensor_dtype, data)) in specs.into_iter().zip(datas) {
        tensors.insert(
            name,
            Tensor::new(tensor_dtype, shape, TensorBytes::owned(data))?,
        );
    }
    Ok(Model {
        desc: desc.clone(),
        tensors,
        vocab: Some(Vocab::byte_level(desc.vocab_size)),
        source: PathBuf::from(source),
        format: "synth",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_name_round_trip() {
        for shape in SynthShape::ALL {
            assert_eq!(SynthShape::parse(shape.name()), Some(shape));
        }
        assert_eq!(SynthShape::parse("1.5B"), Some(SynthShape::B1_5));
        assert_eq!(SynthShape::parse("3b"), None);
    }

    #[test]
    fn lora_ranks_follow_the_released_models() {
        // docs/rwkv-math.md: C = 768 has 64/64/32/128.
        let d = desc(SynthShape::B0_1);
        assert_eq!((d.lora.w, d.lora.a, d.lora.v, d.lora.g), (64, 64, 32, 128));
        for shape in SynthShape::ALL {
            let d = desc(shape);
            assert_eq!(
                d.n_embd % 256,
                0,
                "{shape}: Q4_K needs whole 256-value blocks"
            );
            assert_eq!(d.n_embd % d.head_size, 0);
        }
    }

    #[test]
    fn tiny_model_is_valid_and_deterministic() {
        let a = synth_model(SynthShape::Tiny, DType::F32, 7).unwrap();
        crate::model::validate(&a).unwrap();
        let b = synth_model(SynthShape::Tiny, DType::F32, 7).unwrap();
        let c = synth_model(SynthShape::Tiny, DType::F32, 8).unwrap();
        let emb = |m: &Model| m.tensors["emb.weight"].data.as_slice().to_vec();
        assert_eq!(emb(&a), emb(&b));
        assert_ne!(emb(&a), emb(&c));
        assert_eq!(a.source, PathBuf::from("synth:tiny:f32:7"));
        assert_eq!(a.vocab.as_ref().map(|v| v.len()), Some(512));
        // Two tensors of one shape get different values.
        let r = a.tensors["blocks.0.att.receptance.weight"].data.as_slice();
        let k = a.tensors["blocks.0.att.key.weight"].data.as_slice();
        assert_ne!(r, k);
    }

    #[test]
    fn quantized_tiny_model_keeps_small_tensors_f32() {
        let m = synth_model(SynthShape::Tiny, DType::Q4K, 3).unwrap();
        crate::model::validate(&m).unwrap();
        assert_eq!(m.tensors["emb.weight"].dtype, DType::Q4K);
        assert_eq!(m.tensors["blocks.1.ffn.value.weight"].dtype, DType::Q4K);
        assert_eq!(m.tensors["blocks.1.att.g2"].dtype, DType::F16);
        assert_eq!(m.tensors["blocks.1.att.w0"].dtype, DType::F32);
        assert_eq!(m.source, PathBuf::from("synth:tiny:q4k:3"));
        // Q4K needs whole 256-value rows: a width of 128 is refused, not mangled.
        let mut d = desc(SynthShape::Tiny);
        d.n_embd = 128;
        d.head_size = 64;
        assert!(synth_model_with_desc(&d, DType::Q4K, 1).is_err());
    }
}
