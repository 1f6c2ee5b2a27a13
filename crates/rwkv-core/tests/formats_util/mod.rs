//! Shared helpers for the formats_* integration tests.
#![allow(dead_code)]

pub mod gguf_build;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rwkv_core::dtype::DType;
use rwkv_core::model::{v7, LoraRanks, Model, ModelDesc, RwkvVersion, Tensor, TensorBytes};

/// splitmix64: a tiny seeded PRNG for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The small test shape: 2 layers, C=128, N=32 (H=4), unequal LoRA ranks, vocab 64, ffn 256.
pub fn small_desc() -> ModelDesc {
    ModelDesc {
        version: RwkvVersion::V7,
        n_layer: 2,
        n_embd: 128,
        head_size: 32,
        vocab_size: 64,
        ffn_size: 256,
        lora: LoraRanks {
            w: 32,
            a: 16,
            v: 8,
            g: 24,
        },
    }
}

/// A canonical model of `desc` with fresh random f32 weights.
pub fn random_model(seed: u64, desc: &ModelDesc) -> Model {
    let mut rng = Rng(seed);
    let mut tensors = BTreeMap::new();
    for (name, shape) in v7::canonical_tensors(desc) {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
        tensors.insert(name, Tensor::from_f32(shape, &vals).unwrap());
    }
    Model {
        desc: desc.clone(),
        tensors,
        vocab: None,
        source: PathBuf::from("random"),
        format: "synth",
    }
}

/// f32 → f16 / bf16 bytes.
pub fn convert_plain(t: &Tensor, to: DType) -> Tensor {
    let vals: Vec<f32> = t
        .data
        .as_slice()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let bytes: Vec<u8> = match to {
        DType::F16 => vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => vals
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => t.data.as_slice().to_vec(),
    };
    Tensor::new(to, t.shape.clone(), TensorBytes::owned(bytes)).unwrap()
}

/// Same tensor names, dtypes, shapes and bytes.
pub fn assert_same_tensors(a: &Model, b: &Model) {
    let ka: Vec<&String> = a.tensors.keys().collect();
    let kb: Vec<&String> = b.tensors.keys().collect();
    assert_eq!(ka, kb, "tensor names differ");
    for (name, ta) in &a.tensors {
        let tb = &b.tensors[name];
        assert_eq!(ta.dtype, tb.dtype, "{name} dtype");
        assert_eq!(ta.shape, tb.shape, "{name} shape");
        assert!(
            ta.data.as_slice() == tb.data.as_slice(),
            "{name} bytes differ"
        );
    }
}

/// A fresh empty directory for one test.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rwkv-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `../shared/<rel>` relative to the repository root, or None after a skip (a failure under
/// RWKV_REQUIRE_REFDATA=1).
pub fn shared(rel: &str) -> Option<PathBuf> {
    rwkv_testing::refdata(rel)
}

/// Position of `needle` in `hay` (first occurrence).
pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not found"))
}

/// Byte offset of the tensor-info fields right after `name` in a GGUF (n_dims follows).
pub fn gguf_info_after_name(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    find(bytes, &needle) + needle.len()
}

/// A tiny description for loops that write many files.
pub fn tiny_desc() -> ModelDesc {
    ModelDesc {
        version: RwkvVersion::V7,
        n_layer: 2,
        n_embd: 32,
        head_size: 16,
        vocab_size: 16,
        ffn_size: 64,
        lora: LoraRanks {
            w: 8,
            a: 4,
            v: 8,
            g: 12,
        },
    }
}

/// `model` (f32) in rwkv.cpp's .bin layout, written here independently of the library:
/// fused `att.x_rwkvag` (6,1,C), vectors (1,1,C), `r_k` (H,N), LoRA as canonical `[out,in]`.
pub fn rwkvcpp_bytes(model: &Model) -> Vec<u8> {
    let d = &model.desc;
    let c = d.n_embd;
    let mut out = Vec::new();
    for v in [0x6767_6d66u32, 100] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [d.vocab_size, c, d.n_layer, 0] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    let mut record = |name: &str, shape: &[usize], data: &[u8]| {
        out.extend_from_slice(&(shape.len() as i32).to_le_bytes());
        out.extend_from_slice(&(name.len() as i32).to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        for &dim in shape.iter().rev() {
            out.extend_from_slice(&(dim as i32).to_le_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
    };
    for (name, shape) in v7::canonical_tensors(d) {
        let t = &model.tensors[&name];
        let rest = name.splitn(3, '.').nth(2).unwrap_or("");
        if let Some(m) = rest.strip_prefix("att.x_") {
            if m == "r" {
                let block = &name[..name.len() - "att.x_r".len()];
                let fused: Vec<u8> = v7::ATT_MIXES
                    .iter()
                    .flat_map(|m| {
                        model.tensors[&format!("{block}att.{m}")]
                            .data
                            .as_slice()
                            .to_vec()
                    })
                    .collect();
                record(&format!("{block}att.x_rwkvag"), &[6, 1, c], &fused);
            }
            continue;
        }
        let shape = match rest {
            "att.r_k" => vec![d.n_head(), d.head_size],
            "att.w0" | "att.a0" | "att.v0" | "att.k_k" | "att.k_a" | "ffn.x_k" => vec![1, 1, c],
            _ => shape,
        };
        record(&name, &shape, t.data.as_slice());
    }
    out
}
