//! Random canonical models written as GGUF, safetensors and .pth read back identical.

mod formats_util;

use std::cell::RefCell;

use formats_util::*;
use rwkv_core::dtype::DType;
use rwkv_core::formats::gguf::{GgufFile, GgufValue};
use rwkv_core::formats::safetensors::parse_header;
use rwkv_core::formats::{self, Format, LoadOptions};
use rwkv_core::model::{v7, Tensor, TensorBytes};

const WRITABLE: [(Format, &str); 3] = [
    (Format::Gguf, "gguf"),
    (Format::Safetensors, "st"),
    (Format::Pth, "pth"),
];

#[test]
fn random_f32_model_round_trips_through_every_writer() {
    let dir = tmpdir("roundtrip-f32");
    let model = random_model(0x5eed_0001, &small_desc());
    for (format, ext) in WRITABLE {
        let path = dir.join(format!("m.{ext}"));
        assert_eq!(Format::from_extension(&path), Some(format));
        formats::write(&model, &path, format).unwrap();
        let back = formats::load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(back.desc, model.desc, "{format}");
        assert_eq!(back.format, format.name());
        assert_eq!(back.source, path);
        assert_same_tensors(&model, &back);
    }
}

#[test]
fn half_precision_models_round_trip() {
    let dir = tmpdir("roundtrip-half");
    let mut model = random_model(0x5eed_0002, &small_desc());
    // Large matrices f16, everything else bf16: both 2-byte types through every writer.
    for (name, t) in model.tensors.iter_mut() {
        let to = if v7::is_large_matrix(name) {
            DType::F16
        } else {
            DType::BF16
        };
        *t = convert_plain(t, to);
    }
    for (format, ext) in WRITABLE {
        let path = dir.join(format!("m.{ext}"));
        formats::write(&model, &path, format).unwrap();
        let back = formats::load(&path, &LoadOptions::default()).unwrap();
        assert_eq!(back.desc, model.desc);
        assert_same_tensors(&model, &back);
    }
}

#[test]
fn chain_of_conversions_keeps_every_byte() {
    let dir = tmpdir("chain");
    let model = random_model(0x5eed_0003, &small_desc());
    let mut current = model.clone();
    for (i, (format, ext)) in WRITABLE.iter().chain(WRITABLE.iter()).enumerate() {
        let path = dir.join(format!("step{i}.{ext}"));
        formats::write(&current, &path, *format).unwrap();
        current = formats::load(&path, &LoadOptions::default()).unwrap();
    }
    assert_same_tensors(&model, &current);
}

#[test]
fn quantized_matrices_go_to_gguf_only() {
    let dir = tmpdir("quantized");
    let mut model = random_model(0x5eed_0004, &small_desc());
    let mut rng = Rng(77);
    // Random Q8_0 blocks with small finite scales.
    let key = "blocks.1.att.key.weight";
    let shape = model.tensors[key].shape.clone();
    let mut bytes = rng.bytes(DType::Q8_0.tensor_bytes(&shape).unwrap());
    for block in bytes.chunks_mut(34) {
        block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
    }
    model.tensors.insert(
        key.into(),
        Tensor::new(DType::Q8_0, shape, TensorBytes::owned(bytes)).unwrap(),
    );

    for (format, ext) in [(Format::Safetensors, "st"), (Format::Pth, "pth")] {
        let path = dir.join(format!("q.{ext}"));
        let e = formats::write(&model, &path, format)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(key) && e.contains("q8_0") && e.contains("gguf"),
            "{e}"
        );
        assert!(!path.exists());
    }
    let path = dir.join("q.gguf");
    formats::write(&model, &path, Format::Gguf).unwrap();
    let back = formats::load(&path, &LoadOptions::default()).unwrap();
    assert_same_tensors(&model, &back);
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(
        g.get("general.quantization_version")
            .and_then(GgufValue::as_u64),
        Some(2)
    );
    assert_eq!(
        g.tensor("blk.1.time_mix_key.weight").unwrap().type_name,
        "Q8_0"
    );
}

#[test]
fn gguf_uses_llama_cpp_names_dims_and_metadata() {
    let dir = tmpdir("gguf-layout");
    let d = small_desc();
    let model = random_model(0x5eed_0005, &d);
    let path = dir.join("m.gguf");
    formats::write(&model, &path, Format::Gguf).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    assert_eq!(g.data_start % 32, 0);
    let u = |k: &str| {
        g.get(k)
            .and_then(GgufValue::as_u64)
            .unwrap_or_else(|| panic!("{k}"))
    };
    assert_eq!(
        g.get("general.architecture").and_then(GgufValue::as_str),
        Some("rwkv7")
    );
    assert_eq!(u("rwkv7.embedding_length"), 128);
    assert_eq!(u("rwkv7.block_count"), 2);
    assert_eq!(u("rwkv7.feed_forward_length"), 256);
    assert_eq!(u("rwkv7.wkv.head_size"), 32);
    assert_eq!(u("rwkv7.attention.decay_lora_rank"), 32);
    assert_eq!(u("rwkv7.attention.iclr_lora_rank"), 16);
    assert_eq!(u("rwkv7.attention.value_residual_mix_lora_rank"), 8);
    assert_eq!(u("rwkv7.attention.gate_lora_rank"), 24);
    let dims = |n: &str| g.tensor(n).unwrap_or_else(|| panic!("{n}")).dims.clone();
    assert_eq!(dims("token_embd.weight"), vec![128, 64]);
    assert_eq!(dims("output.weight"), vec![128, 64]);
    assert_eq!(dims("blk.0.time_mix_lerp_fused.weight"), vec![128, 1, 1, 6]);
    assert_eq!(dims("blk.1.time_mix_w1.weight"), vec![128, 32]);
    assert_eq!(dims("blk.1.time_mix_w2.weight"), vec![32, 128]);
    assert_eq!(dims("blk.1.time_mix_v1.weight"), vec![128, 8]);
    // llama.cpp wants layer-0 v0/v1/v2: copies of a0/a1/a2 (iclr rank).
    assert_eq!(dims("blk.0.time_mix_v1.weight"), vec![128, 16]);
    assert_eq!(dims("blk.0.time_mix_r_k.weight"), vec![128]);
    assert_eq!(dims("blk.1.channel_mix_key.weight"), vec![128, 256]);
    assert!(g.tensors.iter().all(|t| t.offset % 32 == 0));
    // The fused mixes hold x_r..x_g in order.
    let fused = g.tensor_data(g.tensor("blk.1.time_mix_lerp_fused.weight").unwrap());
    for (i, m) in v7::ATT_MIXES.iter().enumerate() {
        let part = &fused.as_slice()[i * 512..(i + 1) * 512];
        assert_eq!(
            part,
            model.tensors[&format!("blocks.1.att.{m}")].data.as_slice(),
            "{m}"
        );
    }
    // w1 is stored [out,in] = canonical (D_w rows of C).
    let w1 = g.tensor_data(g.tensor("blk.0.time_mix_w1.weight").unwrap());
    assert_eq!(
        w1.as_slice(),
        model.tensors["blocks.0.att.w1"].data.as_slice()
    );
}

#[test]
fn safetensors_uses_official_shapes_and_transposed_lora() {
    let dir = tmpdir("st-layout");
    let model = random_model(0x5eed_0006, &small_desc());
    let path = dir.join("m.safetensors");
    formats::write(&model, &path, Format::Safetensors).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let entries = parse_header(&path, &bytes).unwrap();
    let e = |n: &str| {
        entries
            .iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(e("blocks.0.att.x_r").shape, vec![1, 1, 128]);
    assert_eq!(e("blocks.0.att.r_k").shape, vec![4, 32]);
    assert_eq!(e("blocks.0.att.w1").shape, vec![128, 32]);
    assert_eq!(e("blocks.0.att.w2").shape, vec![32, 128]);
    assert_eq!(e("blocks.1.att.v1").shape, vec![128, 8]);
    assert!(entries.iter().all(|e| e.name != "blocks.0.att.v1"));
    // Official w1 (C, D) is the transpose of canonical [D, C]: element (c, d) == canonical (d, c).
    let canon = model.tensors["blocks.0.att.w1"].to_f32_plain();
    let st = &bytes[e("blocks.0.att.w1").range.clone()];
    let st: Vec<f32> = st
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (c, d) in [(0, 0), (5, 3), (127, 31), (64, 17)] {
        assert_eq!(st[c * 32 + d], canon[d * 128 + c]);
    }
    assert_eq!(
        (8 + u64::from_le_bytes(bytes[..8].try_into().unwrap())) % 8,
        0
    );
}

#[test]
fn load_reports_progress_up_to_the_total() {
    let dir = tmpdir("progress");
    let model = random_model(0x5eed_0007, &small_desc());
    let path = dir.join("m.st");
    formats::write(&model, &path, Format::Safetensors).unwrap();
    let calls = RefCell::new(Vec::new());
    let cb = |done: u64, total: u64| calls.borrow_mut().push((done, total));
    let m = formats::load(
        &path,
        &LoadOptions {
            quant: None,
            progress: Some(&cb),
        },
    )
    .unwrap();
    let calls = calls.into_inner();
    let total = m.total_bytes();
    assert!(calls.len() > 2);
    assert!(calls.iter().all(|&(_, t)| t == total));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
    assert_eq!(calls.last().unwrap().0, total);
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tmpdir("atomic");
    let model = random_model(0x5eed_0008, &small_desc());
    let path = dir.join("m.gguf");
    formats::write(&model, &path, Format::Gguf).unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut broken = model.clone();
    broken.tensors.remove("head.weight");
    for (format, _) in WRITABLE {
        let e = formats::write(&broken, &path, format)
            .unwrap_err()
            .to_string();
        assert!(e.contains("head.weight"), "{e}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let missing_dir = dir.join("no/such/dir/m.st");
    assert!(formats::write(&model, &missing_dir, Format::Safetensors).is_err());
}

trait PlainF32 {
    fn to_f32_plain(&self) -> Vec<f32>;
}

impl PlainF32 for Tensor {
    fn to_f32_plain(&self) -> Vec<f32> {
        assert_eq!(self.dtype, DType::F32);
        self.data
            .as_slice()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

#[test]
fn quant_option_converts_only_the_large_matrices() {
    let dir = tmpdir("quant-option");
    let model = random_model(0x5eed_0009, &small_desc());
    let path = dir.join("m.gguf");
    formats::write(&model, &path, Format::Gguf).unwrap();
    let q = formats::load(
        &path,
        &LoadOptions {
            quant: Some(DType::Q8_0),
            progress: None,
        },
    )
    .unwrap();
    for (name, t) in &q.tensors {
        let orig = &model.tensors[name];
        assert_eq!(t.shape, orig.shape, "{name}");
        if v7::is_large_matrix(name) {
            assert_eq!(t.dtype, DType::Q8_0, "{name}");
            // Q8_0 keeps each value within half a step (d = |max|/127 ≤ 1/127) plus the f16
            // rounding of d times 127: 1/254 + 2^-11 for values in [-1, 1).
            let (a, b) = (orig.to_f32().unwrap(), t.to_f32().unwrap());
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst > 0.0 && worst <= 1.0 / 254.0 + 1.0 / 2048.0,
                "{name}: {worst}"
            );
        } else {
            assert_eq!(t.dtype, DType::F32, "{name}");
            assert_eq!(t.data.as_slice(), orig.data.as_slice());
        }
    }
    // Rows of 128 are not whole Q4K blocks of 256: a clear error naming the tensor.
    let e = formats::load(
        &path,
        &LoadOptions {
            quant: Some(DType::Q4K),
            progress: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("m.gguf") && e.contains("cannot convert tensor") && e.contains("256"),
        "{e}"
    );
}

#[test]
fn gguf_carries_a_byte_level_vocabulary() {
    gguf_carries_the_vocabulary(
        "gguf-vocab-bytes",
        rwkv_core::tokenizer::Vocab::byte_level(300),
    );
}

#[test]
fn gguf_carries_the_world_vocabulary() {
    let Some(p) = shared("refdata/vocab/rwkv_vocab_v20230424.txt") else {
        return;
    };
    let vocab = rwkv_core::tokenizer::Vocab::from_file(&p).unwrap();
    gguf_carries_the_vocabulary("gguf-vocab-world", vocab);
}

fn gguf_carries_the_vocabulary(dir: &str, vocab: rwkv_core::tokenizer::Vocab) {
    let dir = tmpdir(dir);
    let mut model = random_model(0x5eed_000a, &small_desc());
    model.vocab = Some(vocab.clone());
    let path = dir.join("v.gguf");
    formats::write(&model, &path, Format::Gguf).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(
        g.get("tokenizer.ggml.model").and_then(GgufValue::as_str),
        Some("rwkv")
    );
    let back = formats::load(&path, &LoadOptions::default()).unwrap();
    let got = back.vocab.clone().expect("vocabulary read back");
    assert_eq!(got.len(), vocab.len());
    assert_eq!(got.to_gguf_tokens(), vocab.to_gguf_tokens());
    let text = "Hello, world! \u{4e16}\u{754c}\n\n".as_bytes();
    assert_eq!(got.encode(text), vocab.encode(text));
    assert_same_tensors(&model, &back);
}
