//! One conformance suite, the same code on every backend present: the library API on a synthetic
//! model must give the CPU reference's logits (within each backend's stated tolerance), and
//! sessions, batches and saved states must behave the same everywhere.

use rwkv::router::{self, BackendChoice};
use rwkv::{Engine, EngineOptions, SamplerParams};
use rwkv_core::synth::{self, SynthShape};
use rwkv_core::DType;

/// Backends to test: the CPU always; GPUs when the router can open them. With
/// RWKV_REQUIRE_GPU=1 a missing GPU backend fails the test instead of skipping it.
fn backends() -> Vec<BackendChoice> {
    let require = std::env::var("RWKV_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let mut v = vec![BackendChoice::Cpu];
    for choice in [BackendChoice::Cuda, BackendChoice::WebGpu] {
        match router::open(choice) {
            Ok(_) => v.push(choice),
            Err(e) if require && choice == BackendChoice::Cuda => {
                panic!("RWKV_REQUIRE_GPU=1 but {e}")
            }
            Err(e) => eprintln!("SKIPPED conformance on {}: {e}", choice.name()),
        }
    }
    v
}

/// Max |Δlogit| each backend may show against the CPU on the same weights. GPU backends compute
/// with f16 activations in tensor-core products, so differences of ~1e-2 on logits of size ~1-10
/// are expected; the CPU against itself must be exact.
fn tolerance(choice: BackendChoice) -> f32 {
    match choice {
        BackendChoice::Cpu => 0.0,
        _ => 0.05,
    }
}

fn engine(choice: BackendChoice, dtype: DType, sessions: usize) -> Engine {
    let model = synth::synth_model(SynthShape::Tiny, dtype, 5).expect("synth tiny");
    let opts = EngineOptions {
        backend: choice,
        quant: None,
        max_sessions: sessions,
    };
    Engine::from_model(&model, &opts, None).expect("engine")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 1 + (i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 400)
        .collect()
}

#[test]
fn logits_match_the_cpu_reference_on_every_backend() {
    for dtype in [DType::F32, DType::Q8_0, DType::Q4K] {
        let mut cpu = engine(BackendChoice::Cpu, dtype, 1);
        let toks = prompt(20, 1);
        let mut s = cpu.new_session().unwrap();
        let want = cpu.feed_all(&mut s, &toks).unwrap();
        assert!(want.iter().all(|x| x.is_finite()));
        for choice in backends() {
            let mut e = engine(choice, dtype, 1);
            let mut s = e.new_session().unwrap();
            let got = e.feed_all(&mut s, &toks).unwrap();
            let d = max_diff(&got, &want);
            assert!(
                d <= tolerance(choice),
                "{} {dtype}: max |Δlogit| {d}",
                choice.name()
            );
        }
    }
}

#[test]
fn chunked_prefill_equals_token_by_token_and_batches_equal_singles() {
    for choice in backends() {
        let mut e = engine(choice, DType::F16, 3);
        let toks = prompt(13, 2); // 8 + 4 + 1 chunks
        let mut a = e.new_session().unwrap();
        let whole = e.feed(&mut a, &toks).unwrap();
        let mut b = e.new_session().unwrap();
        let mut last = vec![];
        for &t in &toks {
            last = e.feed(&mut b, &[t]).unwrap();
        }
        let tol = tolerance(choice).max(1e-4);
        assert!(
            max_diff(&whole, &last) <= tol,
            "{}: chunked vs single",
            choice.name()
        );

        // One batched step of three sessions = three single steps.
        let mut c = e.new_session().unwrap();
        e.feed(&mut c, &toks[..5]).unwrap();
        let next = [7u32, 9, 11];
        let saved: Vec<Vec<f32>> = [&a, &b, &c]
            .iter()
            .map(|s| e.save_state(s).unwrap())
            .collect();
        let batched = e.feed_batch(&mut [&mut a, &mut b, &mut c], &next).unwrap();
        let v = e.desc().vocab_size;
        for (i, s) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
            e.restore_state(s, &saved[i]).unwrap();
            let single = e.feed(s, &[next[i]]).unwrap();
            let d = max_diff(&batched[i * v..(i + 1) * v], &single);
            assert!(d <= tol, "{}: batch row {i} differs by {d}", choice.name());
        }
    }
}

#[test]
fn saved_state_restores_and_generation_is_deterministic() {
    for choice in backends() {
        let mut e = engine(choice, DType::Q8_0, 2);
        let p = prompt(6, 3);
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
            seed: 9,
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
        e.restore_state(&mut s, &state).unwrap();
        let after_restore = e.feed(&mut s, &[42]).unwrap();
        e.close_session(t);
        let mut fresh = e.new_session().unwrap();
        let mut full = p.clone();
        full.push(42);
        let direct = e.feed(&mut fresh, &full).unwrap();
        let tol = tolerance(choice).max(1e-4);
        let d = max_diff(&after_restore, &direct);
        assert!(d <= tol, "{}: restored state differs by {d}", choice.name());
    }
}

#[test]
fn bad_calls_are_errors() {
    let mut e = engine(BackendChoice::Cpu, DType::F32, 1);
    let mut s = e.new_session().unwrap();
    assert!(e.feed(&mut s, &[]).is_err());
    assert!(e.feed(&mut s, &[e.desc().vocab_size as u32]).is_err());
    assert!(e.new_session().is_err(), "only one slot was asked for");
    assert!(e.restore_state(&mut s, &[1.0, 2.0]).is_err());
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

#[test]
fn streamed_models_upload_and_run_like_in_memory_ones() {
    use rwkv_core::formats::{self, Format, LoadOptions};
    let dir = std::env::temp_dir().join(format!("rwkv-conf-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = synth::synth_model(SynthShape::Tiny, DType::F16, 5).expect("synth tiny");
    let toks = prompt(20, 3);
    let mut reference = Engine::from_model(&model, &options(BackendChoice::Cpu), None).unwrap();
    let mut s = reference.new_session().unwrap();
    let want = reference.feed_all(&mut s, &toks).unwrap();
    for (format, ext) in [(Format::Gguf, "gguf"), (Format::Safetensors, "st")] {
        let path = dir.join(format!("m.{ext}"));
        formats::write(&model, &path, format).unwrap();
        let source = std::sync::Arc::new(VecSource(std::fs::read(&path).unwrap()));
        let streamed = formats::load_source(source, "m", &LoadOptions::default()).unwrap();
        assert!(!streamed.tensors["head.weight"].data.is_resident());
        for choice in backends() {
            let mut e = Engine::from_model(&streamed, &options(choice), None).unwrap();
            let mut s = e.new_session().unwrap();
            let got = e.feed_all(&mut s, &toks).unwrap();
            let d = max_diff(&got, &want);
            assert!(d <= tolerance(choice), "{format} {}: {d}", choice.name());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn options(backend: BackendChoice) -> EngineOptions {
    EngineOptions {
        backend,
        quant: None,
        max_sessions: 1,
    }
}
