//! `rwkv bench`: load time, prefill and decode speed in the manner of llama-bench, plus a quality
//! check (a greedy-decoding hash, and logits compared with the CPU reference on the same weights).

use std::time::Instant;

use rwkv_core::model::v7;
use rwkv_core::{DType, Model};

use crate::cli_util::{format_bytes, load_model_spec, parse_dtype, parse_list};
use crate::engine::{Engine, EngineOptions};
use crate::router::BackendChoice;
use crate::sampler::argmax;
use crate::{Error, Result};

/// Prompt of the quality check.
pub const QUALITY_PROMPT: &str = "The Eiffel Tower is located in the city of";

/// Caps on the sizes a run asks for, checked before anything is allocated: a typo such as
/// `-p 5120000000` should be an error, not gigabytes of token ids or state slots.
const MAX_TOKENS_PER_TEST: usize = 1 << 20;
const MAX_BATCH: usize = 4096;
const MAX_REPETITIONS: usize = 1000;

/// How the results are printed (`-o`, as llama-bench's).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// A Markdown table, then load time, bandwidth and quality lines.
    Md,
    /// One header line and one line per test.
    Csv,
    /// One JSON object with every field (what benchmark.sh reads).
    Json,
}

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
    /// Output format: md (a table), csv or json.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: OutputFormat,
    /// The same as `-o json`.
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
    /// The model as given (`-m`): a file or a synth: spec.
    pub model: String,
    /// What the model is, as llama-bench's model column says it: "rwkv7 1.5B Q4_K".
    pub model_type: String,
    /// The commit the binary was built from, or "unknown".
    pub build_commit: String,
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
    let format = if args.json {
        OutputFormat::Json
    } else {
        args.output
    };
    let report = bench(args)?;
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        OutputFormat::Csv => print!("{}", csv(&report)),
        OutputFormat::Md => print_table(&report),
    }
    Ok(())
}

/// llama-bench's model column: version, size and type, e.g. "rwkv7 1.5B Q4_K". The size is the
/// parameter count (millions below a billion: the 0.1B shape is "191M"); the type is that of
/// the large matrices: one name when they share it, "Q4_K_M" for Q4_K with Q6_K (the mix
/// `rwkv quantize --type q4_k_m` writes), else the types by bytes held, joined with "+".
pub fn model_type(model: &Model) -> String {
    let d = &model.desc;
    let params = d.n_params() as f64;
    let size = if params < 1e9 {
        format!("{:.0}M", params / 1e6)
    } else {
        format!("{:.1}B", params / 1e9)
    };
    let mut bytes_per_type: Vec<(DType, u64)> = Vec::new();
    for (name, t) in &model.tensors {
        if v7::is_large_matrix(name) {
            match bytes_per_type.iter_mut().find(|(d, _)| *d == t.dtype) {
                Some((_, b)) => *b += t.data.len() as u64,
                None => bytes_per_type.push((t.dtype, t.data.len() as u64)),
            }
        }
    }
    bytes_per_type.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let types: Vec<DType> = bytes_per_type.iter().map(|(d, _)| *d).collect();
    let kind = match types.as_slice() {
        [] => "none".to_string(),
        [one] => one.ggml_name().to_string(),
        [DType::Q4K, DType::Q6K] => "Q4_K_M".to_string(),
        many => many
            .iter()
            .map(|d| d.ggml_name())
            .collect::<Vec<_>>()
            .join("+"),
    };
    format!(
        "rwkv{} {size} {kind}",
        d.version.name().trim_start_matches('v')
    )
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
    let quant = args
        .quant
        .as_deref()
        .map(parse_dtype)
        .transpose()
        .map_err(|e| Error::invalid(format!("--quant: {e}")))?;
    let choice = match &args.backend {
        Some(b) => {
            BackendChoice::parse(b).map_err(|e| Error::invalid(format!("--backend: {e}")))?
        }
        None => {
            BackendChoice::from_env().map_err(|e| Error::invalid(format!("RWKV_BACKEND: {e}")))?
        }
    };
    let flag = |name: &'static str| move |e: Error| Error::invalid(format!("{name}: {e}"));
    let batches = parse_list(&args.batch).map_err(flag("-b/--batch"))?;
    if !(1..=MAX_REPETITIONS).contains(&args.reps) {
        return Err(Error::invalid(format!(
            "-r/--repetitions must be from 1 to {MAX_REPETITIONS}, not {}",
            args.reps
        )));
    }
    if let Some(b) = batches.iter().find(|&&b| !(1..=MAX_BATCH).contains(&b)) {
        return Err(Error::invalid(format!(
            "-b/--batch sizes must be from 1 to {MAX_BATCH}, not {b}"
        )));
    }
    // Sizes given on the command line are checked before the (long) model load; the CPU
    // defaults below are small and need no check.
    let sizes = |given: &Option<String>, name: &'static str| -> Result<()> {
        if let Some(list) = given {
            let sizes = parse_list(list).map_err(flag(name))?;
            if let Some(n) = sizes.iter().find(|&&n| n > MAX_TOKENS_PER_TEST) {
                return Err(Error::invalid(format!(
                    "{name} sizes must be from 0 to {MAX_TOKENS_PER_TEST}, not {n}"
                )));
            }
        }
        Ok(())
    };
    sizes(&args.n_prompt, "-p/--n-prompt")?;
    sizes(&args.n_gen, "-n/--n-gen")?;
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
        model_type: model_type(&model),
        build_commit: crate::BUILD_COMMIT.to_string(),
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

/// Text for a CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One header line and one line per test, with llama-bench's column names where one exists.
fn csv(r: &BenchReport) -> String {
    let mut out = String::from(
        "build_commit,model_filename,model_type,model_size,model_n_params,backend,device,test,n_tokens,avg_ts,stddev_ts,samples_ts,greedy_hash\n",
    );
    let hash = r
        .quality
        .as_ref()
        .map_or(String::new(), |q| q.greedy_hash.clone());
    for t in &r.tests {
        let samples: Vec<String> = t.runs.iter().map(|v| format!("{v:.3}")).collect();
        let fields = [
            r.build_commit.clone(),
            r.model.clone(),
            r.model_type.clone(),
            r.size_bytes.to_string(),
            r.params.to_string(),
            r.backend.clone(),
            r.device.clone(),
            t.test.clone(),
            t.tokens_per_run.to_string(),
            format!("{:.3}", t.tps_mean),
            format!("{:.3}", t.tps_std),
            samples.join(";"),
            hash.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn print_table(r: &BenchReport) {
    println!("| model | size | params | backend | device | test | t/s |");
    println!("| --- | ---: | ---: | --- | --- | --- | ---: |");
    for t in &r.tests {
        println!(
            "| {} | {} | {:.2} B | {} | {} | {} | {:.2} ± {:.2} |",
            r.model_type,
            format_bytes(r.size_bytes),
            r.params as f64 / 1e9,
            r.backend,
            r.device,
            t.test,
            t.tps_mean,
            t.tps_std
        );
    }
    println!();
    println!("model: {}", r.model);
    println!(
        "load: {:.2} s (model) + {:.2} s (upload to {})",
        r.load_seconds, r.upload_seconds, r.backend
    );
    if let Some(t) = r
        .tests
        .iter()
        .find(|t| t.test.starts_with("tg") && !t.test.contains(" b"))
    {
        let per_token = r.decode_bytes_per_token as f64;
        println!(
            "decode reads {} of weights per token: {} at {:.1} tok/s is {:.1} GiB/s",
            format_bytes(r.decode_bytes_per_token),
            t.test,
            t.tps_mean,
            per_token * t.tps_mean / (1u64 << 30) as f64
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
    println!("build: {}", r.build_commit);
}
