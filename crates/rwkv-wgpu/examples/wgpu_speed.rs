//! Step speed of the WebGPU backend on a synthetic model (not a test: numbers for NOTES.md).
//!
//! `cargo run --release -p rwkv-wgpu --example wgpu_speed -- [shape] [dtype] [steps] [n_seq] [n_tok] [plain]`
//! e.g. `-- tiny q4k 16 1 1`; `plain` turns shader-f16, subgroups and cooperative
//! matrices off (`nocoop` only the latter, `nogemm` the f16 scratch products: the
//! `WgpuOptions` switches; `index_checks` keeps wgpu's runtime checks; `wkv_lanes=J` forces
//! the prefill WKV scan's lanes); `emulate` runs the cooperative-matrix kernel emulated where
//! the device has none, slowly: a dry run); `profile` adds GPU time per op kind (timestamp
//! queries) for one step. The Q4_K matrix-vector kernel of decode (fewer than 8 rows) is
//! chosen by `matvec=old|sg` and `rps=1|2|4` (defaults sg, 2), e.g. `cargo run --release -p
//! rwkv-wgpu --example wgpu_speed -- 7.2b q4k 8 1 1 matvec=old`; the line with the result names
//! the kernel that ran. `ab` then loads the model a second time with the other kernel (old <->
//! sg) and alternates rounds of `steps` steps between the two; `sweep` does the same with old
//! and sg at 1, 2 and 4 rows per subgroup (one device, one process: less drift than separate
//! runs).

use std::time::Instant;

use rwkv_core::backend::{Backend, Op, StepOutput, StepShape};
use rwkv_core::model::v7::PlanBuilder;
use rwkv_core::synth::{synth_model, SynthShape};
use rwkv_core::DType;
use rwkv_wgpu::{MatVecChoice, WgpuBackend, WgpuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let shape = SynthShape::parse(&arg(0, "tiny")).ok_or("unknown shape")?;
    let dtype = DType::parse(&arg(1, "q4k")).ok_or("unknown dtype")?;
    let steps: usize = arg(2, "16").parse()?;
    let n_seq: usize = arg(3, "1").parse()?;
    let n_tok: usize = arg(4, "1").parse()?;
    let plain = args.iter().any(|a| a == "plain");
    let profile = args.iter().any(|a| a == "profile");
    let emulate = args.iter().any(|a| a == "emulate");
    let ab = args.iter().any(|a| a == "ab");
    let sweep = args.iter().any(|a| a == "sweep");
    let value = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    };
    let rows_per_subgroup: u32 = value("rps").unwrap_or("2").parse()?;
    let matvec = match value("matvec") {
        Some("old") => MatVecChoice::Old,
        _ => MatVecChoice::Subgroup { rows_per_subgroup },
    };
    let wkv_scan_lanes = value("wkv_lanes").map(str::parse).transpose()?;

    let model = synth_model(shape, dtype, 1)?;
    let mut options = WgpuOptions {
        emulate_coop: emulate,
        allow_coop: !args.iter().any(|a| a == "nocoop"),
        f16_gemm: !args.iter().any(|a| a == "nogemm"),
        index_checks: args.iter().any(|a| a == "index_checks"),
        matvec,
        wkv_scan_lanes,
        ..Default::default()
    };
    if plain {
        options.allow_f16 = false;
        options.allow_subgroups = false;
        options.allow_coop = false;
    }
    let mut backend = WgpuBackend::new(options.clone())?;
    let builder = PlanBuilder::new(&model.desc);
    let start = Instant::now();
    for (id, name) in builder.weights().iter().enumerate() {
        backend.upload_weight(id, name, model.tensor(name)?)?;
    }
    backend.alloc_states(n_seq, model.desc.state_len())?;
    let shape_ = StepShape { n_seq, n_tok };
    let plan_desc = builder.build(shape_, false);
    let plan = backend.compile(&plan_desc)?;
    println!(
        "upload + compile: {:.2} s ({} bytes of weights)",
        start.elapsed().as_secs_f64(),
        model.total_bytes()
    );
    let slots: Vec<usize> = (0..n_seq).collect();
    let mut tokens: Vec<u32> = (0..shape_.rows() as u32).map(|s| 17 + s).collect();
    let mut ids = vec![0u32; n_seq];
    backend.execute(plan, &tokens, &slots, StepOutput::Argmax(&mut ids))?;
    let start = Instant::now();
    for _ in 0..steps {
        backend.execute(plan, &tokens, &slots, StepOutput::Argmax(&mut ids))?;
        for (s, &id) in ids.iter().enumerate() {
            tokens[s * n_tok + n_tok - 1] = id;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let info = backend.info();
    println!(
        "{} (f16 {}, subgroups {}, coop {}, index checks {}, q4k matvec {}): {shape} {dtype}, {steps} steps of {n_seq}x{n_tok} in {secs:.2} s = {:.1} ms/step, {:.1} tokens/s",
        info.device,
        backend.uses_f16(),
        backend.uses_subgroups(),
        backend.uses_coop(),
        backend.uses_index_checks(),
        backend.q4k_matvec(),
        secs * 1e3 / steps as f64,
        (steps * n_seq * n_tok) as f64 / secs
    );
    for f in backend.kernel_fallbacks() {
        println!("kernel fallback: {f}");
    }
    if ab || sweep {
        let sg = |rows_per_subgroup| MatVecChoice::Subgroup { rows_per_subgroup };
        let choices = if sweep {
            vec![MatVecChoice::Old, sg(1), sg(2), sg(4)]
        } else if backend.q4k_matvec().starts_with("sg") {
            vec![matvec, MatVecChoice::Old]
        } else {
            vec![matvec, sg(rows_per_subgroup)]
        };
        let shape = StepShape { n_seq, n_tok };
        let mut runs = Vec::new();
        for matvec in choices {
            let mut b = WgpuBackend::new(WgpuOptions {
                matvec,
                ..options.clone()
            })?;
            for (id, name) in builder.weights().iter().enumerate() {
                b.upload_weight(id, name, model.tensor(name)?)?;
            }
            b.alloc_states(n_seq, model.desc.state_len())?;
            let p = b.compile(&plan_desc)?;
            b.execute(p, &tokens, &slots, StepOutput::Argmax(&mut ids))?;
            runs.push((b, p, Vec::new()));
        }
        drop(backend);
        for round in 0..4 {
            for (b, p, rates) in runs.iter_mut() {
                let start = Instant::now();
                for _ in 0..steps {
                    b.execute(*p, &tokens, &slots, StepOutput::Argmax(&mut ids))?;
                }
                let rate = (steps * shape.rows()) as f64 / start.elapsed().as_secs_f64();
                rates.push(rate);
                println!(
                    "round {round}: q4k matvec {}: {rate:.1} tokens/s",
                    b.q4k_matvec()
                );
            }
        }
        for (b, _, rates) in &mut runs {
            rates.sort_by(f64::total_cmp);
            println!(
                "median of 4 rounds: {:.1} tokens/s (min {:.1}, max {:.1}), q4k matvec {}",
                (rates[1] + rates[2]) / 2.0,
                rates[0],
                rates[3],
                b.q4k_matvec()
            );
        }
        return Ok(());
    }
    if profile {
        // `kernels`: one line per kernel of an op (e.g. the conversions of a product apart).
        let times = if args.iter().any(|a| a == "kernels") {
            backend.profile_dispatches(plan, &tokens, &slots)?
        } else {
            backend.profile_step(plan, &tokens, &slots)?
        };
        let mut by_kind: Vec<(String, f64, usize)> = Vec::new();
        // Per kernel of ops with several (prefill WKV: prep / scan / post).
        let mut parts: Vec<(String, f64, usize)> = Vec::new();
        for t in &times {
            if t.parts.len() > 1 {
                for (k, us) in &t.parts {
                    match parts.iter_mut().find(|p| p.0 == *k) {
                        Some(p) => {
                            p.1 += us;
                            p.2 += 1;
                        }
                        None => parts.push((k.clone(), *us, 1)),
                    }
                }
            }
            // Group by what the op does: matrix products by weight name without the layer.
            let kind = match &plan_desc.ops[t.op] {
                Op::MatMul { jobs } => {
                    let w = &plan_desc.weights[jobs[0].weight];
                    let short = match w.strip_prefix("blocks.") {
                        Some(rest) => rest.split_once('.').map_or(rest, |(_, r)| r),
                        None => w.as_str(),
                    };
                    format!("MatMul {short}")
                }
                op => format!("{op:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("?")
                    .to_string(),
            };
            let kind = format!("{kind} [{}]", t.kernel);
            match by_kind.iter_mut().find(|k| k.0 == kind) {
                Some(k) => {
                    k.1 += t.micros;
                    k.2 += 1;
                }
                None => by_kind.push((kind, t.micros, 1)),
            }
        }
        let total: f64 = by_kind.iter().map(|k| k.1).sum();
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!("GPU time of one step: {:.1} ms", total / 1e3);
        for (kind, us, n) in by_kind {
            println!(
                "{:7.2} ms {:5.1}%  x{n:<3} {kind}",
                us / 1e3,
                100.0 * us / total
            );
        }
        for (kernel, us, n) in parts {
            println!("  of which {:7.2} ms x{n:<3} {kernel}", us / 1e3);
        }
    }
    Ok(())
}
