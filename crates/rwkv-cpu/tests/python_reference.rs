//! The CPU backend against an independent float64 implementation (tests/ref_v7.py, pure Python
//! written from docs/rwkv-math.md in the official .pth orientation).

mod common;

use std::path::Path;
use std::process::Command;

use common::{max_abs_diff, Rng, Runner};
use rwkv_core::model::{LoraRanks, Model, ModelDesc, RwkvVersion};
use rwkv_core::synth::synth_model_with_desc;
use rwkv_core::DType;

/// Writes `model` in official orientation (LoRA matrices transposed back to (C, D)/(D, C),
/// r_k as (H, N)) as model.json + weights.bin, with the tokens to feed.
fn export(model: &Model, tokens: &[u32], dir: &Path) {
    let d = &model.desc;
    let mut bin: Vec<u8> = Vec::new();
    let mut index = serde_json::Map::new();
    for (name, tensor) in &model.tensors {
        assert_eq!(tensor.dtype, DType::F32);
        let values: Vec<f32> = tensor
            .data
            .as_slice()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let field = name.rsplit('.').next().unwrap();
        let lora = name.contains(".att.")
            && ["w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"].contains(&field);
        let (shape, values) = if lora {
            let (rows, cols) = (tensor.shape[0], tensor.shape[1]);
            let mut t = vec![0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = values[r * cols + c];
                }
            }
            (vec![cols, rows], t)
        } else if field == "r_k" {
            (vec![d.n_head(), d.head_size], values)
        } else {
            (tensor.shape.clone(), values)
        };
        index.insert(
            name.clone(),
            serde_json::json!({ "shape": shape, "offset": bin.len() }),
        );
        bin.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    let json = serde_json::json!({
        "n_layer": d.n_layer,
        "n_embd": d.n_embd,
        "head_size": d.head_size,
        "vocab_size": d.vocab_size,
        "ffn_size": d.ffn_size,
        "tokens": tokens,
        "tensors": index,
    });
    std::fs::write(dir.join("model.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    std::fs::write(dir.join("weights.bin"), bin).unwrap();
}

/// Logits after each token from ref_v7.py, or None after a skip without python3 (a failure
/// under RWKV_REQUIRE_REFDATA=1).
fn python_logits(model: &Model, tokens: &[u32]) -> Option<Vec<f32>> {
    if !rwkv_testing::python3_or_skip() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "rwkv-cpu-ref-{}-{}",
        std::process::id(),
        tokens.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    export(model, tokens, &dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ref_v7.py");
    let status = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "ref_v7.py failed");
    let raw = std::fs::read(dir.join("logits.bin")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let logits: Vec<f32> = raw
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
        .collect();
    assert_eq!(logits.len(), tokens.len() * model.desc.vocab_size);
    Some(logits)
}

/// Max |cpu − python| after each token, asserting ≤ 1e-4.
fn compare(model: &Model, tokens: &[u32], expected: &[f32]) -> f32 {
    let vocab = model.desc.vocab_size;
    let mut runner = Runner::new(model, 1).unwrap();
    let mut worst = 0f32;
    for (i, (&token, want)) in tokens.iter().zip(expected.chunks_exact(vocab)).enumerate() {
        let got = runner.step(1, false, &[token], &[0]).unwrap();
        let diff = max_abs_diff(&got, want);
        println!("token {i} ({token}): max |cpu − f64 reference| = {diff:.3e}");
        assert!(diff <= 1e-4, "token {i}: max abs diff {diff}");
        worst = worst.max(diff);
    }
    // The comparison is only meaningful if the logits are not tiny.
    assert!(expected.iter().any(|v| v.abs() > 1.0));
    worst
}

#[test]
fn logits_match_float64_python_reference_after_every_token() {
    // Several heads, head size 32, unequal LoRA ranks: orientation or rank mix-ups show up.
    let desc = ModelDesc {
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
    };
    let model = synth_model_with_desc(&desc, DType::F32, 0x5eed_0007).unwrap();
    let tokens = Rng(77).tokens(10, desc.vocab_size);
    let Some(expected) = python_logits(&model, &tokens) else {
        return;
    };
    let worst = compare(&model, &tokens, &expected);
    println!(
        "synthetic model, worst over {} tokens: {worst:.3e}",
        tokens.len()
    );
}

/// The trained rwkv.cpp RWKV-7 model (read by formats::load) through the same reference: checks
/// the reader's orientation independently of rwkv.cpp's expected logits.
#[test]
fn trained_rwkv_cpp_model_matches_float64_python_reference() {
    let Some(dir) = rwkv_testing::refdata("refdata/rwkv.cpp/tests") else {
        return;
    };
    let file = dir.join("tiny-rwkv-7v0-834K-FP32.bin");
    if !file.exists() {
        rwkv_testing::skip_refdata(&format!("{} not found", file.display()));
        return;
    }
    let model = rwkv_core::formats::load(&file, &Default::default()).unwrap();
    let tokens = [34, 105, 110, 32, 116, 104, 101];
    let Some(expected) = python_logits(&model, &tokens) else {
        return;
    };
    let worst = compare(&model, &tokens, &expected);
    println!(
        "rwkv.cpp 7v0 FP32, worst over {} tokens: {worst:.3e}",
        tokens.len()
    );
    // Python's logits after `"in` against rwkv.cpp's own.
    let raw = std::fs::read(dir.join("expected-logits-7v0-834K.bin")).unwrap();
    let rwkv_cpp: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let diff = max_abs_diff(&expected[2 * 256..3 * 256], &rwkv_cpp);
    println!("f64 reference vs rwkv.cpp expected logits: {diff:.3e}");
    assert!(diff <= 1e-4);
}
