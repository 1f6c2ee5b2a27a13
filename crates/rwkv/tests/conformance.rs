//! One conformance suite, the same code on every backend: the library API on a synthetic model
//! must give the CPU reference's logits, and sessions, batches and saved states must behave the
//! same everywhere. Each backend has its own tests (modules `cpu`, `cuda`, `webgpu`), so a
//! backend this machine lacks skips only its own (rwkv_testing::skip_gpu: counted by
//! scripts/test.sh, a failure under RWKV_REQUIRE_GPU=cuda,webgpu).
//!
//! Every comparison checks two norms against a bound of its backend, kernel path and dtype
//! ([`bound`]): the largest |Δlogit| and the relative L2 error ‖Δ‖₂/‖reference‖₂, and prints
//! one `MEASURED` line with both, so a device run gives the table the bounds come from. Each
//! bound is the worst value measured over fresh seeds times a small stated factor: tight enough
//! that a 2 % error in one term of the network fails (scripts/mutation-check.sh checks that).
//!
//! The model is the tiny synthetic RWKV-7 with a fresh seed each run (printed; replay with
//! RWKV_TEST_SEED), and prompts are drawn from the same seed.

use rwkv::router::{self, BackendChoice};
use rwkv::{Engine, EngineOptions, SamplerParams};
use rwkv_core::synth::{self, SynthShape};
use rwkv_core::DType;

/// The kernels an engine runs, as far as their rounding goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernels {
    /// The f32 reference itself.
    Cpu,
    /// CUDA: tensor cores with f16 operands from 5 rows; batch-1 Q4_K with int8 activations.
    Cuda,
    /// WebGPU without cooperative matrices: f32 arithmetic everywhere (lavapipe, most GPUs).
    WebGpuF32,
    /// WebGPU with cooperative matrices: products of 16+ rows with f16 operands.
    WebGpuCoop,
}

fn kernels(e: &Engine) -> Kernels {
    let info = e.device_info();
    let has = |key: &str| {
        info.properties
            .iter()
            .any(|(k, v)| k == key && v.as_str() == "true")
    };
    match info.backend.as_str() {
        "cpu" => Kernels::Cpu,
        "cuda" => Kernels::Cuda,
        _ if has("cooperative_matrix") => Kernels::WebGpuCoop,
        _ => Kernels::WebGpuF32,
    }
}

/// What a comparison checks.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Check {
    /// `feed_all` of 20 tokens (chunks of 16 and 4) against the CPU's.
    Prefill,
    /// One token at a time against the CPU's `feed_all` rows.
    Decode,
    /// `feed` of 13 tokens (chunks 8 + 4 + 1) against 13 single steps on the same backend.
    Chunked,
    /// One batched step of three sessions against three single steps on the same backend.
    Batch,
    /// A restored state's next logits against the same prompt fed in one go, same backend.
    Restore,
}

/// A bound on both norms of a difference of logits.
#[derive(Clone, Copy, Debug)]
struct Bound {
    max_abs: f32,
    rel_l2: f32,
}

const fn b(max_abs: f32, rel_l2: f32) -> Bound {
    Bound { max_abs, rel_l2 }
}

/// The bound of one backend, check and dtype. Logits of the tiny synthetic model are of size
/// ~1-10, so 1e-3 relative L2 is ~1e-2 on the largest logit.
///
/// "m:" is the worst measured over 6 fresh seeds (20:40 UTC 2026-12-07, lavapipe for WebGPU
/// f32, the CPU here), all dtypes; each bound is that times the factor stated. CUDA's and
/// WebGPU coop's come from the device notes (crates/rwkv-cuda/NOTES.md, crates/rwkv-wgpu/
/// NOTES.md) and stay provisional until the device run's MEASURED lines replace them.
fn bound(k: Kernels, check: Check, dtype: DType) -> Bound {
    use Check::*;
    use Kernels::*;
    match (k, check) {
        // The CPU against itself: prefill, decode, chunks, batches and restored states run the
        // same per-token arithmetic, so the bits are identical (m: 0 everywhere).
        (Cpu, _) => b(0.0, 0.0),

        // WebGPU f32: other summation orders only. m: prefill 1.6e-5 max / 6.6e-7 rel, decode
        // 9.5e-6 / 5.5e-7. x3.
        (WebGpuF32, Prefill | Decode) => b(5e-5, 2e-6),
        // m: chunked 2.6e-6 / 2.8e-7; batch and restore 0 on lavapipe (the same kernels as a
        // single step there; not on every GPU, so the chunked bound). x3.
        (WebGpuF32, Chunked | Batch | Restore) => b(8e-6, 1e-6),

        // WebGPU coop: 16-row products take f16 operands. m: the tiny model 2.5e-3..3.5e-3 max
        // |Δ| on the H100 (NOTES), 3.7e-3 with the kernel emulated on lavapipe (rwkv-wgpu
        // tests/model.rs). x3; relative L2 estimated, to be measured on the device.
        (WebGpuCoop, Prefill | Chunked) => b(1.1e-2, 1e-3),
        // Decode and batches of 3 stay under 16 rows: the f32 kernels (as WebGpuF32), x3.
        (WebGpuCoop, Decode) => b(5e-5, 2e-6),
        (WebGpuCoop, Batch | Restore) => b(8e-6, 1e-6),

        // CUDA prefill: f16 tensor-core operands; NOTES: tiny-model oracle 4e-4 relative. x2.5;
        // max |Δ| estimated like WebGPU coop's (same f16 operand rounding).
        (Cuda, Prefill | Chunked) => b(1e-2, 1e-3),
        // CUDA batch-1 Q4_K: int8 activations; NOTES: 2.6e-2 relative on decode logits (oracle),
        // x2 as rwkv-cuda/tests/oracle.rs. Cannot catch a uniform 2 % error (see below).
        (Cuda, Decode | Restore) if dtype == DType::Q4K => b(0.25, 5e-2),
        // CUDA batch-1 f32 SIMT: NOTES 1.2e-7 relative per product; oracle bounds 2e-3 after the
        // recurrence. Estimated from WebGPU f32 (same arithmetic) x10 until measured.
        (Cuda, Decode | Restore | Batch) => b(5e-4, 2e-5),
    }
}

/// The largest |a − b| and ‖a − b‖₂ / ‖reference‖₂.
fn diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite logits");
    let (mut max_abs, mut num, mut den) = (0f32, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        max_abs = max_abs.max((g - w).abs());
        num += ((g - w) as f64).powi(2);
        den += (w as f64).powi(2);
    }
    (max_abs, (num / den.max(f64::MIN_POSITIVE)).sqrt() as f32)
}

/// Compares, prints the MEASURED line the bounds are set from, asserts both norms.
fn check(e: &Engine, check: Check, dtype: DType, what: &str, got: &[f32], want: &[f32]) {
    let k = kernels(e);
    let (max_abs, rel_l2) = diff(got, want);
    let bound = bound(k, check, dtype);
    println!(
        "MEASURED conformance {k:?} {check:?} {dtype} {what}: max_abs {max_abs:.3e} rel_l2 \
         {rel_l2:.3e} (bound {:.1e} / {:.1e})",
        bound.max_abs, bound.rel_l2
    );
    assert!(
        max_abs <= bound.max_abs && rel_l2 <= bound.rel_l2,
        "{k:?} {check:?} {dtype} {what}: max |Δlogit| {max_abs:.3e} (bound {:.1e}), relative L2 \
         {rel_l2:.3e} (bound {:.1e})",
        bound.max_abs,
        bound.rel_l2
    );
}

use rwkv_testing::seed;

/// `choice` when it opens here; otherwise a skip (a failure when RWKV_REQUIRE_GPU names it).
fn open(choice: BackendChoice) -> Option<BackendChoice> {
    match router::open(choice) {
        Ok(_) => Some(choice),
        Err(e) => {
            rwkv_testing::skip_gpu(choice.name(), &e.to_string());
            None
        }
    }
}

fn engine(choice: BackendChoice, dtype: DType, seed: u64, sessions: usize) -> Engine {
    let model = synth::synth_model(SynthShape::Tiny, dtype, seed).expect("synth tiny");
    Engine::from_model(&model, &options(choice, sessions), None).expect("engine")
}

fn options(backend: BackendChoice, max_sessions: usize) -> EngineOptions {
    EngineOptions {
        backend,
        quant: None,
        max_sessions,
    }
}

/// `n` token ids in 1..vocab from `seed`.
fn prompt(n: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % (vocab as u64 - 1)) as u32
        })
        .collect()
}

fn logits_match_the_cpu_reference(choice: BackendChoice) {
    let seed = seed();
    for dtype in [DType::F32, DType::F16, DType::Q8_0, DType::Q4K] {
        let mut cpu = engine(BackendChoice::Cpu, dtype, seed, 1);
        let v = cpu.desc().vocab_size;
        let toks = prompt(20, seed, v);
        let mut s = cpu.new_session().unwrap();
        let want = cpu.feed_all(&mut s, &toks).unwrap();
        assert!(
            want.iter().any(|x| x.abs() > 0.5),
            "logits too small to compare"
        );

        let mut e = engine(choice, dtype, seed, 2);
        let mut s = e.new_session().unwrap();
        let got = e.feed_all(&mut s, &toks).unwrap();
        check(&e, Check::Prefill, dtype, "20 tokens", &got, &want);

        // Decode: one token per step, each against the CPU's row.
        let mut s = e.new_session().unwrap();
        let mut stepped = Vec::with_capacity(want.len());
        for &t in &toks[..8] {
            stepped.extend(e.feed(&mut s, &[t]).unwrap());
        }
        check(
            &e,
            Check::Decode,
            dtype,
            "8 steps",
            &stepped,
            &want[..8 * v],
        );
    }
}

fn chunked_prefill_equals_token_by_token_and_batches_equal_singles(choice: BackendChoice) {
    let seed = seed();
    let dtype = DType::F16;
    let mut e = engine(choice, dtype, seed, 3);
    let toks = prompt(13, seed, e.desc().vocab_size); // 8 + 4 + 1 chunks
    let mut a = e.new_session().unwrap();
    let whole = e.feed(&mut a, &toks).unwrap();
    let mut b = e.new_session().unwrap();
    let mut last = vec![];
    for &t in &toks {
        last = e.feed(&mut b, &[t]).unwrap();
    }
    check(&e, Check::Chunked, dtype, "13 tokens", &whole, &last);

    // One batched step of three sessions = three single steps.
    let mut c = e.new_session().unwrap();
    e.feed(&mut c, &toks[..5]).unwrap();
    let next = prompt(3, seed ^ 0xb47c, e.desc().vocab_size);
    let saved: Vec<Vec<f32>> = [&a, &b, &c]
        .iter()
        .map(|s| e.save_state(s).unwrap())
        .collect();
    let batched = e.feed_batch(&mut [&mut a, &mut b, &mut c], &next).unwrap();
    let v = e.desc().vocab_size;
    for (i, s) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        e.restore_state(s, &saved[i]).unwrap();
        let single = e.feed(s, &[next[i]]).unwrap();
        let row = &batched[i * v..(i + 1) * v];
        check(&e, Check::Batch, dtype, &format!("row {i}"), row, &single);
    }
}

fn saved_state_restores_and_generation_is_deterministic(choice: BackendChoice) {
    let seed = seed();
    let dtype = DType::Q8_0;
    let mut e = engine(choice, dtype, seed, 2);
    let v = e.desc().vocab_size;
    let p = prompt(6, seed, v);
    let mut s = e.new_session().unwrap();
    e.feed(&mut s, &p).unwrap();
    let state = e.save_state(&s).unwrap();
    assert!(
        state.iter().any(|&x| x != 0.0),
        "{}: state stayed zero",
        choice.name()
    );
    let params = SamplerParams {
        temperature: 0.9,
        top_p: 0.9,
        top_k: 0,
        seed,
        ..Default::default()
    };
    let first = e.generate(&mut s, &[], 12, params, |_, _| true).unwrap();

    // A fresh session fed the same prompt generates the same tokens with the same seed.
    let mut t = e.new_session().unwrap();
    let again = e.generate(&mut t, &p, 12, params, |_, _| true).unwrap();
    assert_eq!(
        first,
        again,
        "{}: generation not reproducible",
        choice.name()
    );

    // Restoring the saved state reproduces the logits of prompt + one more token.
    let extra = prompt(1, seed ^ 0x4e57, v)[0];
    e.restore_state(&mut s, &state).unwrap();
    let after_restore = e.feed(&mut s, &[extra]).unwrap();
    e.close_session(t);
    let mut fresh = e.new_session().unwrap();
    let mut full = p.clone();
    full.push(extra);
    let direct = e.feed(&mut fresh, &full).unwrap();
    check(&e, Check::Restore, dtype, "", &after_restore, &direct);
}

/// A model file in memory read through the `ByteSource` interface (as the browser reads a JS
/// array), so the engine gets tensors that are fetched only when uploaded.
struct VecSource(Vec<u8>);

impl rwkv_core::model::ByteSource for VecSource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> rwkv_core::Result<()> {
        let part = usize::try_from(offset)
            .ok()
            .and_then(|at| self.0.get(at..at.checked_add(buf.len())?))
            .ok_or_else(|| rwkv_core::Error::invalid("read past the end"))?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

fn streamed_models_upload_and_run_like_in_memory_ones(choice: BackendChoice) {
    use rwkv_core::formats::{self, Format, LoadOptions};
    let seed = seed();
    let dir = std::env::temp_dir().join(format!(
        "rwkv-conf-stream-{}-{}",
        std::process::id(),
        choice.name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dtype = DType::F16;
    let model = synth::synth_model(SynthShape::Tiny, dtype, seed).expect("synth tiny");
    let toks = prompt(20, seed, model.desc.vocab_size);
    let mut reference = Engine::from_model(&model, &options(BackendChoice::Cpu, 1), None).unwrap();
    let mut s = reference.new_session().unwrap();
    let want = reference.feed_all(&mut s, &toks).unwrap();
    for (format, ext) in [(Format::Gguf, "gguf"), (Format::Safetensors, "st")] {
        let path = dir.join(format!("m.{ext}"));
        formats::write(&model, &path, format).unwrap();
        let source = std::sync::Arc::new(VecSource(std::fs::read(&path).unwrap()));
        let streamed = formats::load_source(source, "m", &LoadOptions::default()).unwrap();
        assert!(!streamed.tensors["head.weight"].data.is_resident());
        let mut e = Engine::from_model(&streamed, &options(choice, 1), None).unwrap();
        let mut s = e.new_session().unwrap();
        let got = e.feed_all(&mut s, &toks).unwrap();
        check(
            &e,
            Check::Prefill,
            dtype,
            &format!("streamed {format}"),
            &got,
            &want,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same tests for one backend, each skipped (and counted) when the backend is missing.
macro_rules! conformance_on {
    ($module:ident, $choice:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn logits_match_the_cpu_reference() {
                if let Some(c) = open($choice) {
                    super::logits_match_the_cpu_reference(c);
                }
            }

            #[test]
            fn chunked_prefill_equals_token_by_token_and_batches_equal_singles() {
                if let Some(c) = open($choice) {
                    super::chunked_prefill_equals_token_by_token_and_batches_equal_singles(c);
                }
            }

            #[test]
            fn saved_state_restores_and_generation_is_deterministic() {
                if let Some(c) = open($choice) {
                    super::saved_state_restores_and_generation_is_deterministic(c);
                }
            }

            #[test]
            fn streamed_models_upload_and_run_like_in_memory_ones() {
                if let Some(c) = open($choice) {
                    super::streamed_models_upload_and_run_like_in_memory_ones(c);
                }
            }
        }
    };
}

conformance_on!(cpu, BackendChoice::Cpu);
conformance_on!(cuda, BackendChoice::Cuda);
conformance_on!(webgpu, BackendChoice::WebGpu);

/// The bounds themselves must be able to fail: a 2 % change of every logit exceeds every bound
/// but one. CUDA's batch-1 Q4_K decode with int8 activations measured 2.6e-2 relative on the
/// H100, more than 2 %: its bound cannot catch a uniform 2 % error (the device's mutation run,
/// scripts/mutation-check.sh cuda, shows which kernel perturbations it still catches).
#[test]
fn bounds_reject_a_two_percent_error() {
    let model = synth::synth_model(SynthShape::Tiny, DType::F32, 11).expect("synth tiny");
    let mut cpu = Engine::from_model(&model, &options(BackendChoice::Cpu, 1), None).unwrap();
    let mut s = cpu.new_session().unwrap();
    let want = cpu
        .feed(&mut s, &prompt(8, 11, model.desc.vocab_size))
        .unwrap();
    let off: Vec<f32> = want.iter().map(|x| x * 1.02).collect();
    let (max_abs, rel_l2) = diff(&off, &want);
    for k in [
        Kernels::Cpu,
        Kernels::Cuda,
        Kernels::WebGpuF32,
        Kernels::WebGpuCoop,
    ] {
        for c in [
            Check::Prefill,
            Check::Decode,
            Check::Chunked,
            Check::Batch,
            Check::Restore,
        ] {
            for dtype in [DType::F32, DType::Q4K] {
                let int8_decode = k == Kernels::Cuda
                    && dtype == DType::Q4K
                    && matches!(c, Check::Decode | Check::Restore);
                if int8_decode {
                    continue;
                }
                let bd = bound(k, c, dtype);
                assert!(
                    max_abs > bd.max_abs || rel_l2 > bd.rel_l2,
                    "{k:?} {c:?} {dtype}: a 2 % error passes ({max_abs:.2e} / {rel_l2:.2e})"
                );
            }
        }
    }
}

#[test]
fn bad_calls_are_errors() {
    let mut e = engine(BackendChoice::Cpu, DType::F32, 5, 1);
    let mut s = e.new_session().unwrap();
    assert!(e.feed(&mut s, &[]).is_err());
    assert!(e.feed(&mut s, &[e.desc().vocab_size as u32]).is_err());
    assert!(e.new_session().is_err(), "only one slot was asked for");
    assert!(e.restore_state(&mut s, &[1.0, 2.0]).is_err());
}
