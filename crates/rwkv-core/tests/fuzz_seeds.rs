//! The fuzzers' seed corpora, `fuzz/corpus/<target>/`: small files made by the project's own
//! writers (a two-layer model 16 wide, as GGUF, safetensors, `.pth`, rwkv.cpp `.bin`) and by
//! hand (a GGUF of every value type and a quantized tensor, World vocabularies).
//!
//! `cargo test -p rwkv-core --test fuzz_seeds -- --ignored` rewrites them; the plain test checks
//! the committed ones still read as what they were made to be, so a format change that would
//! leave the fuzzers starting from junk fails here.

mod formats_util;

use std::path::{Path, PathBuf};

use formats_util::gguf_build::{self, kv, string_bytes, ty, GgufSpec, TensorSpec};
use formats_util::{random_model, rwkvcpp_bytes, tmpdir, Rng};
use rwkv_core::formats::{self, gguf::GgufFile, zip, Format, LoadOptions};
use rwkv_core::model::{LoraRanks, Model, ModelDesc, RwkvVersion, Tensor};
use rwkv_core::tokenizer::Vocab;
use rwkv_core::DType;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

/// Two layers (block 0 is special), one head of 16, unequal LoRA ranks: every tensor at most
/// 1 KiB in f16 (the pickle target's storages hold 1 KiB each).
fn seed_desc() -> ModelDesc {
    ModelDesc {
        version: RwkvVersion::V7,
        n_layer: 2,
        n_embd: 16,
        head_size: 16,
        vocab_size: 8,
        ffn_size: 32,
        lora: LoraRanks {
            w: 4,
            a: 2,
            v: 3,
            g: 5,
        },
    }
}

fn to_f16(model: &Model) -> Model {
    let mut m = model.clone();
    for t in m.tensors.values_mut() {
        let vals: Vec<f32> = t
            .data
            .as_slice()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bytes = vals
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        *t = Tensor::new(
            DType::F16,
            t.shape.clone(),
            rwkv_core::model::TensorBytes::owned(bytes),
        )
        .unwrap();
    }
    m
}

fn written(model: &Model, format: Format, ext: &str) -> Vec<u8> {
    let path = tmpdir(&format!("seeds-{ext}")).join(format!("m.{ext}"));
    formats::write(model, &path, format).unwrap();
    std::fs::read(&path).unwrap()
}

/// A GGUF that is no model but exercises the container: every value type, nested arrays, a
/// non-default alignment and Q4_K / Q8_0 / F16 tensors.
fn container_seed() -> Vec<u8> {
    let mut rng = Rng(0x5eed);
    let strings: Vec<u8> = [&b"a"[..], b"\xe4\xb8\xad", b""]
        .iter()
        .flat_map(|s| string_bytes(s))
        .collect();
    let inner = gguf_build::array_bytes(ty::I32, 2, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    let kvs = vec![
        kv("general.architecture", ty::STRING, string_bytes(b"llama")),
        kv("general.alignment", ty::U32, 64u32.to_le_bytes().to_vec()),
        kv("u8", ty::U8, vec![7]),
        kv("i8", ty::I8, vec![0x80]),
        kv("u16", ty::U16, vec![1, 2]),
        kv("i16", ty::I16, vec![3, 4]),
        kv("u32", ty::U32, vec![5, 6, 7, 8]),
        kv("i32", ty::I32, vec![9, 10, 11, 12]),
        kv("f32", ty::F32, 1.5f32.to_le_bytes().to_vec()),
        kv("bool", ty::BOOL, vec![1]),
        kv("u64", ty::U64, u64::MAX.to_le_bytes().to_vec()),
        kv("i64", ty::I64, (-2i64).to_le_bytes().to_vec()),
        kv("f64", ty::F64, 0.25f64.to_le_bytes().to_vec()),
        kv(
            "strings",
            ty::ARRAY,
            gguf_build::array_bytes(ty::STRING, 3, &strings),
        ),
        kv(
            "nested",
            ty::ARRAY,
            gguf_build::array_bytes(ty::ARRAY, 2, &[inner.clone(), inner].concat()),
        ),
    ];
    let tensors = vec![
        (b"q4k".to_vec(), vec![256, 2], 12, 2 * 144),
        (b"q8_0".to_vec(), vec![32, 3], 8, 3 * 34),
        (b"f16".to_vec(), vec![5], 1, 10),
    ];
    let mut offset = 0;
    let tensors = tensors
        .into_iter()
        .map(
            |(name, dims, ggml_type, n): (Vec<u8>, Vec<u64>, u32, usize)| {
                let t = TensorSpec {
                    name,
                    name_len: None,
                    n_dims: None,
                    dims,
                    ggml_type,
                    offset,
                    data: rng.bytes(n),
                };
                offset = (offset + n as u64).div_ceil(64) * 64;
                t
            },
        )
        .collect();
    GgufSpec {
        magic: *b"GGUF",
        version: 3,
        n_tensors: None,
        n_kv: None,
        kvs,
        tensors,
        alignment: 64,
    }
    .build()
}

/// Python's repr of one token, as rwkv_vocab_v20230424.txt writes it: a str literal when the
/// bytes are UTF-8, else a bytes literal.
fn py_literal(bytes: &[u8]) -> String {
    let (prefix, text) = match std::str::from_utf8(bytes) {
        Ok(s) => ("", s.chars().map(|c| c as u32).collect::<Vec<_>>()),
        Err(_) => ("b", bytes.iter().map(|&b| b as u32).collect()),
    };
    let mut s = format!("{prefix}'");
    for cp in text {
        match cp {
            0x5c => s.push_str("\\\\"),
            0x27 => s.push_str("\\'"),
            0x0a => s.push_str("\\n"),
            0x20..=0x7e => s.push(char::from_u32(cp).unwrap()),
            _ if prefix.is_empty() && cp > 0x7f => s.push(char::from_u32(cp).unwrap()),
            _ => s.push_str(&format!("\\x{cp:02x}")),
        }
    }
    s.push('\'');
    s
}

/// The 256 single bytes plus some multi-byte tokens (ASCII, CJK, a bare UTF-8 lead byte pair).
fn vocab_tokens() -> Vec<Vec<u8>> {
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for t in [
        &b"th"[..],
        b"the",
        b" the",
        b"\n\n",
        b"\xe4\xb8\xad",
        b"\xe4\xb8",
        b"'\\",
    ] {
        tokens.push(t.to_vec());
    }
    tokens
}

fn vocab_txt() -> Vec<u8> {
    let mut out = String::new();
    for (i, t) in vocab_tokens().iter().enumerate() {
        out.push_str(&format!("{} {} {}\n", i + 1, py_literal(t), t.len()));
    }
    out.into_bytes()
}

fn vocab_json() -> Vec<u8> {
    let entries: Vec<String> = vocab_tokens()
        .iter()
        .enumerate()
        .map(|(i, t)| match std::str::from_utf8(t) {
            Ok(s) => format!("\"{}\": {}", i + 1, serde_json::to_string(s).unwrap()),
            Err(_) => format!("\"{}\": {:?}", i + 1, t),
        })
        .collect();
    format!("{{{}}}", entries.join(",\n")).into_bytes()
}

/// The tokenizer target's input: token count, (length byte, bytes) per token, then text.
fn tokenizer_input(tokens: &[&[u8]], text: &[u8]) -> Vec<u8> {
    let mut out = vec![tokens.len() as u8];
    for t in tokens {
        out.push(t.len() as u8 - 1);
        out.extend_from_slice(t);
    }
    out.extend_from_slice(text);
    out
}

/// Every seed: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let desc = seed_desc();
    let f32_model = random_model(0x5eed_0001, &desc);
    let mut f16_model = to_f16(&f32_model);
    let gguf_f16 = {
        let mut with_vocab = f16_model.clone();
        // World ids (byte + 1, id 0 end of text): what GGUF's rwkv vocabulary can hold.
        with_vocab.vocab = Some(Vocab::byte_level(257));
        written(&with_vocab, Format::Gguf, "gguf")
    };
    let gguf_f32 = written(&f32_model, Format::Gguf, "gguf");
    f16_model.vocab = None;
    let st = written(&f16_model, Format::Safetensors, "st");
    let pth = written(&f16_model, Format::Pth, "pth");
    let pth64 = {
        let path = tmpdir("seeds-pth64").join("m.pth");
        formats::pth::write_with(&f16_model, &path, true).unwrap();
        std::fs::read(&path).unwrap()
    };
    let index = zip::read_index(Path::new("m.pth"), &pth).unwrap();
    let pkl = index.get("archive/data.pkl").unwrap().data.clone();
    vec![
        ("gguf", "model-f16-vocab", gguf_f16),
        ("gguf", "model-f32", gguf_f32),
        ("gguf", "container-every-type", container_seed()),
        ("safetensors", "model-f16", st),
        ("zip", "model-f16-pth", pth.clone()),
        ("zip", "model-f16-pth-zip64", pth64),
        ("pickle", "model-f16-data-pkl", pth[pkl].to_vec()),
        ("rwkvcpp", "model-f32", rwkvcpp_bytes(&f32_model)),
        ("vocab", "world-txt", vocab_txt()),
        ("vocab", "world-json", vocab_json()),
        (
            "tokenizer",
            "words",
            tokenizer_input(
                &[b"th", b"the", b" the", b"\xe4\xb8"],
                b"the theme of the \xe4\xb8\xad",
            ),
        ),
        (
            "tokenizer",
            "bytes-only",
            tokenizer_input(&[], b"\x00\xff plain"),
        ),
    ]
}

/// How each seed must read: models load (GGUF and safetensors streamed too), the container
/// parses, the vocabularies and the pickle archive load.
fn check_seed(target: &str, name: &str, bytes: &[u8]) {
    let load = || formats::load_bytes(bytes.to_vec(), name, &LoadOptions::default());
    match (target, name) {
        ("gguf", "container-every-type") => {
            let path = tmpdir("seed-container").join("c.gguf");
            std::fs::write(&path, bytes).unwrap();
            let g = GgufFile::open(&path).unwrap();
            assert_eq!((g.kv.len(), g.tensors.len(), g.alignment), (15, 3, 64));
        }
        ("gguf" | "safetensors" | "zip" | "rwkvcpp", _) => {
            let m = load().unwrap_or_else(|e| panic!("seed {target}/{name}: {e}"));
            assert_eq!(m.desc, seed_desc(), "seed {target}/{name}");
        }
        ("pickle", _) => assert!(bytes.starts_with(b"\x80\x02"), "seed {target}/{name}"),
        ("vocab", _) => {
            let v = Vocab::from_bytes(Path::new(name), bytes).unwrap();
            assert_eq!(v.len(), vocab_tokens().len() + 1);
        }
        ("tokenizer", _) => assert!(!bytes.is_empty()),
        _ => panic!("unknown seed {target}/{name}"),
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus; run by hand after a format change"]
fn write_fuzz_seeds() {
    for (target, name, bytes) in seeds() {
        check_seed(target, name, &bytes);
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), &bytes).unwrap();
    }
}

#[test]
fn committed_fuzz_seeds_still_read() {
    let dir = corpus_dir();
    if !dir.exists() {
        println!("skipping: {} is absent", dir.display());
        return;
    }
    let mut checked = 0usize;
    let mut total_bytes = 0;
    for (target, name, _) in seeds() {
        let path = dir.join(target).join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_seed(target, name, &bytes);
        checked += 1;
        total_bytes += bytes.len();
    }
    assert_eq!(checked, seeds().len());
    // The corpus is committed: keep it small.
    assert!(total_bytes < 2 << 20, "{total_bytes} bytes of seeds");
}
