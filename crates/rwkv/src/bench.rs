//! `rwkv bench`: load time, prefill and decode speed in the manner of llama-bench, plus a quality
//! check (a greedy-decoding hash, and logits compared with the CPU reference on the same weights).

use std::time::Instant;

use rwkv_core::Model;

use crate::cli_util::{load_model_spec, parse_dtype, parse_list};
use crate::engine::{Engine, EngineOptions};
use crate::router::BackendChoice;
use crate::sampler::argmax;
use crate::{Error, Result};

/// Prompt of the quality check.
pub const QUALITY_PROMPT: &str = "The Eiffel Tower is located in the city of";

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Model file, or synth:SHAPE[:DTYPE[:SEED]] (random weights built in memory: no download).
    #[arg(short = 'm', long = "model", default_value = "synth:0.1b:q4k")]
    pub model: String,
    /// Prompt lengths to prefill (comma separated; 0 skips). Default 512, or 64 on the CPU backend.
    #[arg(short = 'p', long = "n-prompt")]
    pub n_prompt: Option<String>,
    /// Tokens to generate per sequence (comma separated; 0 skips). Default 128, or 16 on the CPU.
    #[arg(short = 'n', long = "n-gen")]
    pub n_gen: Option<String>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    /// Sequences decoded together (comma separated), e.g. 1,8,64.
    #[arg(short = 'b', long = "batch", default_value = "1")]
    pub batch: String,
    /// auto, cuda, webgpu or cpu (default: $RWKV_BACKEND, else auto).
    #[arg(long)]
    pub backend: Option<String>,
    /// Convert the large matrices at load: q4k, q8_0 or f16.
    #[arg(long)]
    pub quant: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Skip the quality check (hash + CPU reference comparison).
    #[arg(long)]
    pub no_quality: bool,
    /// Prompt tokens compared with the CPU reference.
    #[arg(long, default_value_t = 8)]
    pub ref_tokens: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TestResult {
    /// llama-bench style name: pp512, tg128, tg128 b64.
    pub test: String,
    pub tokens_per_run: usize,
    pub tps_mean: f64,
    pub tps_std: f64,
    pub runs: Vec<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Quality {
    /// FNV-1a of the 32 greedy token ids after [`QUALITY_PROMPT`].
    pub greedy_hash: String,
    pub greedy_tokens: usize,
    /// Max |logit − CPU reference logit| over `ref_tokens` positions (None on the CPU backend).
    pub ref_max_abs_diff: Option<f64>,
    /// Fraction of positions whose top-1 token equals the reference's.
    pub ref_top1_agreement: Option<f64>,
    pub ref_positions: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub model: String,
    pub size_bytes: u64,
    pub params: u64,
    pub backend: String,
    pub backend_choice: String,
    pub device: String,
    pub load_seconds: f64,
    pub upload_seconds: f64,
    /// Weight bytes a batch-1 decode step reads (all tensors but the embedding table).
    pub decode_bytes_per_token: u64,
    pub tests: Vec<TestResult>,
    pub quality: Option<Quality>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let report = bench(args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_table(&report);
    }
    Ok(())
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Deterministic pseudo-random token ids in 1..vocab (no end-of-text token).
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1 + ((s >> 33) % (vocab.max(2) as u64 - 1)) as u32
        })
        .collect()
}

pub fn bench(args: &BenchArgs) -> Result<BenchReport> {
    let quant = args.quant.as_deref().map(parse_dtype).transpose()?;
    let choice = match &args.backend {
        Some(b) => BackendChoice::parse(b)?,
        None => BackendChoice::from_env()?,
    };
    let batches = parse_list(&args.batch)?;
    if args.reps == 0 || batches.contains(&0) {
        return Err(Error::invalid(
            "repetitions and batch sizes must be at least 1",
        ));
    }
    let max_batch = batches.iter().copied().max().unwrap_or(1);

    let t0 = Instant::now();
    let model = load_model_spec(&args.model, quant)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let opts = EngineOptions {
        backend: choice,
        quant,
        max_sessions: max_batch.max(1),
    };
    let mut engine = Engine::from_model(&model, &opts, None)?;
    let upload_seconds = t1.elapsed().as_secs_f64();
    eprintln!("rwkv bench: backend {}", engine.backend_choice());
    // The CPU reference is ~100x slower than a GPU: smaller default sizes keep a run in minutes.
    let on_cpu = engine.device_info().backend == "cpu";
    let prompts =
        parse_list(
            args.n_prompt
                .as_deref()
                .unwrap_or(if on_cpu { "64" } else { "512" }),
        )?;
    let gens = parse_list(
        args.n_gen
            .as_deref()
            .unwrap_or(if on_cpu { "16" } else { "128" }),
    )?;
    let vocab = model.desc.vocab_size;
    let mut tests = Vec::new();

    for &p in prompts.iter().filter(|&&p| p > 0) {
        let toks = tokens(p, vocab, 11);
        let mut s = engine.new_session()?;
        engine.feed(&mut s, &toks)?; // warm-up: compiles the plans
        let mut runs = Vec::new();
        for _ in 0..args.reps {
            engine.close_session(s);
            s = engine.new_session()?;
            let t = Instant::now();
            engine.feed(&mut s, &toks)?;
            runs.push(p as f64 / t.elapsed().as_secs_f64());
        }
        engine.close_session(s);
        let (m, sd) = mean_std(&runs);
        tests.push(TestResult {
            test: format!("pp{p}"),
            tokens_per_run: p,
            tps_mean: m,
            tps_std: sd,
            runs,
        });
    }

    for &n in gens.iter().filter(|&&n| n > 0) {
        for &b in &batches {
            let mut sessions: Vec<_> = (0..b)
                .map(|_| engine.new_session())
                .collect::<Result<_>>()?;
            let mut runs = Vec::new();
            for rep in 0..=args.reps {
                let mut cur = tokens(b, vocab, 100 + rep as u64);
                let mut refs: Vec<&mut crate::Session> = sessions.iter_mut().collect();
                let t = Instant::now();
                for _ in 0..n {
                    cur = engine.feed_batch_argmax(&mut refs, &cur)?;
                    // Greedy output can hit the end-of-text id; keep decoding real tokens.
                    cur.iter_mut().filter(|c| **c == 0).for_each(|c| *c = 1);
                }
                let tps = (n * b) as f64 / t.elapsed().as_secs_f64();
                if rep > 0 {
                    runs.push(tps); // rep 0 is the warm-up
                }
            }
            for s in sessions {
                engine.close_session(s);
            }
            let (m, sd) = mean_std(&runs);
            let name = if b == 1 {
                format!("tg{n}")
            } else {
                format!("tg{n} b{b}")
            };
            tests.push(TestResult {
                test: name,
                tokens_per_run: n * b,
                tps_mean: m,
                tps_std: sd,
                runs,
            });
        }
    }

    let quality = if args.no_quality {
        None
    } else {
        Some(quality(&mut engine, &model, args.ref_tokens)?)
    };
    let info = engine.device_info();
    let decode_bytes = model
        .tensors
        .iter()
        .filter(|(n, _)| n.as_str() != "emb.weight")
        .map(|(_, t)| t.data.len() as u64)
        .sum();
    Ok(BenchReport {
        model: args.model.clone(),
        size_bytes: model.total_bytes(),
        params: model.desc.n_params(),
        backend: info.backend.clone(),
        backend_choice: engine.backend_choice().to_string(),
        device: info.device.clone(),
        load_seconds,
        upload_seconds,
        decode_bytes_per_token: decode_bytes,
        tests,
        quality,
    })
}

fn fnv1a(ids: &[u32]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

fn quality(engine: &mut Engine, model: &Model, ref_tokens: usize) -> Result<Quality> {
    let prompt = engine.tokenize(QUALITY_PROMPT);
    let mut s = engine.new_session()?;
    let mut logits = engine.feed(&mut s, &prompt)?;
    let mut ids = Vec::new();
    for _ in 0..32 {
        let t = argmax(&logits);
        ids.push(t);
        logits = engine.feed(&mut s, &[t])?;
    }
    engine.close_session(s);

    let (mut diff, mut agree, mut positions) = (None, None, 0);
    if engine.device_info().backend != "cpu" && ref_tokens > 0 {
        let toks: Vec<u32> = prompt.iter().copied().cycle().take(ref_tokens).collect();
        let mut s = engine.new_session()?;
        let got = engine.feed_all(&mut s, &toks)?;
        engine.close_session(s);
        let opts = EngineOptions {
            backend: BackendChoice::Cpu,
            quant: None,
            max_sessions: 1,
        };
        let mut cpu = Engine::from_model(model, &opts, None)?;
        let mut s = cpu.new_session()?;
        let want = cpu.feed_all(&mut s, &toks)?;
        let v = model.desc.vocab_size;
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        let same = got
            .chunks(v)
            .zip(want.chunks(v))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        positions = toks.len();
        diff = Some(max);
        agree = Some(same as f64 / positions as f64);
    }
    Ok(Quality {
        greedy_hash: fnv1a(&ids),
        greedy_tokens: ids.len(),
        ref_max_abs_diff: diff,
        ref_top1_agreement: agree,
        ref_positions: positions,
    })
}

fn print_table(r: &BenchReport) {
    println!("| model | size | params | backend | device | test | t/s |");
    println!("| --- | ---: | ---: | --- | --- | --- | ---: |");
    for t in &r.tests {
        println!(
            "| {} | {:.2} GiB | {:.2} B | {} | {} | {} | {:.2} ± {:.2} |",
            r.model,
            r.size_bytes as f64 / (1u64 << 30) as f64,
            r.params as f64 / 1e9,
            r.backend,
            r.device,
            t.test,
            t.tps_mean,
            t.tps_std
        );
    }
    println!();
    println!(
        "load: {:.2} s (model) + {:.2} s (upload to {})",
        r.load_seconds, r.upload_seconds, r.backend
    );
    if let Some(t) = r
        .tests
        .iter()
        .find(|t| t.test.starts_with("tg") && !t.test.contains(" b"))
    {
        println!(
            "decode reads {:.3} GB of weights per token: {} at {:.1} tok/s is {:.0} GB/s",
            r.decode_bytes_per_token as f64 / 1e9,
            t.test,
            t.tps_mean,
            r.decode_bytes_per_token as f64 * t.tps_mean / 1e9
        );
    }
    if let Some(q) = &r.quality {
        print!(
            "quality: greedy hash {} ({} tokens)",
            q.greedy_hash, q.greedy_tokens
        );
        match (q.ref_max_abs_diff, q.ref_top1_agreement) {
            (Some(d), Some(a)) => println!(
                "; vs CPU reference over {} positions: max |Δlogit| {:.3e}, top-1 agreement {:.1}%",
                q.ref_positions,
                d,
                a * 100.0
            ),
            _ => println!("; the CPU backend is the reference itself"),
        }
    }
}
