//! rwkv.cpp's tiny trained RWKV-7 model (../shared/refdata/rwkv.cpp/tests) gives rwkv.cpp's
//! expected logits after the bytes `"in` (ids 34, 105, 110), read through `formats::load`.

mod common;

use std::path::{Path, PathBuf};

use common::{max_abs_diff, Runner};
use rwkv_core::formats::{load, LoadOptions};

const TOKENS: [u32; 3] = [34, 105, 110];

fn refdata() -> Option<PathBuf> {
    rwkv_testing::refdata("refdata/rwkv.cpp/tests/expected-logits-7v0-834K.bin")?;
    rwkv_testing::refdata("refdata/rwkv.cpp/tests")
}

/// Max |logit − expected| after the three tokens fed one at a time.
fn max_diff(dir: &Path, file: &str) -> f32 {
    let model = load(&dir.join(file), &LoadOptions::default()).unwrap();
    assert_eq!(
        (model.desc.n_embd, model.desc.n_layer, model.desc.vocab_size),
        (64, 12, 256)
    );
    let raw = std::fs::read(dir.join("expected-logits-7v0-834K.bin")).unwrap();
    let expected: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut runner = Runner::new(&model, 1).unwrap();
    let logits = runner.one_by_one(&TOKENS, 0).unwrap();
    let last = &logits[2 * 256..];
    let diff = max_abs_diff(last, &expected);
    println!("{file}: max |cpu − rwkv.cpp expected| = {diff:.3e}");
    diff
}

// Measured on these files: FP32 4.8e-7, FP16 4.8e-7 (its f16 weights are within 3e-8 of the
// FP32 ones), Q5_0 3.7e-3, Q5_1 4.2e-3 (weights off by up to 1.6e-3). Bounds leave ~5× margin
// over the quantized figures; the FP16 bound is what f16 rounding of any trained model allows.

#[test]
fn fp32_model_matches_expected_logits() {
    let Some(dir) = refdata() else { return };
    assert!(max_diff(&dir, "tiny-rwkv-7v0-834K-FP32.bin") <= 1e-4);
}

#[test]
fn fp16_model_is_close_to_expected_logits() {
    let Some(dir) = refdata() else { return };
    assert!(max_diff(&dir, "tiny-rwkv-7v0-834K-FP16.bin") <= 1e-3);
}

#[test]
fn q5_models_are_close_to_expected_logits() {
    let Some(dir) = refdata() else { return };
    for file in ["tiny-rwkv-7v0-834K-Q5_0.bin", "tiny-rwkv-7v0-834K-Q5_1.bin"] {
        let diff = max_diff(&dir, file);
        // Nonzero: the quantized matrices were really used, not the FP32 values.
        assert!((1e-5..=0.02).contains(&diff), "{file}: {diff}");
    }
}
