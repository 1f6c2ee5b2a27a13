//! Decode speed of the CPU backend on a synthetic model (not a test: numbers for reports).
//!
//! `cargo run --release -p rwkv-cpu --example cpu_speed -- [shape] [dtype] [tokens] [n_seq]`
//! e.g. `-- 0.1b f32 16 1`.

use std::time::Instant;

use rwkv_core::backend::{Backend, StepOutput, StepShape};
use rwkv_core::model::v7::PlanBuilder;
use rwkv_core::synth::{synth_model, SynthShape};
use rwkv_core::DType;
use rwkv_cpu::CpuBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let shape = SynthShape::parse(&arg(0, "tiny")).ok_or("unknown shape")?;
    let dtype = DType::parse(&arg(1, "f32")).ok_or("unknown dtype")?;
    let n_tokens: usize = arg(2, "32").parse()?;
    let n_seq: usize = arg(3, "1").parse()?;

    let start = Instant::now();
    let model = synth_model(shape, dtype, 1)?;
    println!(
        "synth {shape} {dtype}: {:.2} s, {} bytes",
        start.elapsed().as_secs_f64(),
        model.total_bytes()
    );

    let mut backend = CpuBackend::new();
    let builder = PlanBuilder::new(&model.desc);
    for (id, name) in builder.weights().iter().enumerate() {
        backend.upload_weight(id, name, model.tensor(name)?)?;
    }
    backend.alloc_states(n_seq, model.desc.state_len())?;
    let plan = backend.compile(&builder.build(StepShape { n_seq, n_tok: 1 }, false))?;
    let slots: Vec<usize> = (0..n_seq).collect();
    let mut tokens: Vec<u32> = (0..n_seq as u32).map(|s| 17 + s).collect();
    let mut ids = vec![0u32; n_seq];
    // One warm-up step (page faults, first touch of the weights).
    backend.execute(plan, &tokens, &slots, StepOutput::Argmax(&mut ids))?;
    let start = Instant::now();
    for _ in 0..n_tokens {
        backend.execute(plan, &tokens, &slots, StepOutput::Argmax(&mut ids))?;
        tokens.copy_from_slice(&ids);
    }
    let secs = start.elapsed().as_secs_f64();

    // Logits of one more step: a synthetic model should give finite, spread-out values.
    let mut logits = vec![0f32; n_seq * model.desc.vocab_size];
    backend.execute(plan, &tokens, &slots, StepOutput::Logits(&mut logits))?;
    let n = logits.len() as f64;
    let mean = logits.iter().map(|&v| v as f64).sum::<f64>() / n;
    let std = (logits
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let finite = logits.iter().all(|v| v.is_finite());
    println!("last logits: std {std:.3}, all finite: {finite}");
    let info = backend.info();
    println!(
        "{} ({} threads): {n_tokens} steps × {n_seq} sequences in {secs:.2} s = {:.2} tokens/s",
        info.device,
        backend.threads(),
        (n_tokens * n_seq) as f64 / secs
    );
    Ok(())
}
