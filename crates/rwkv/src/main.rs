//! The `rwkv` command line: a thin user of the library API.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rwkv::cli_util::{load_model_spec, parse_dtype, parse_ids, Progress};
use rwkv::{bench, BackendChoice, Engine, EngineOptions, Error, Result, SamplerParams};
use rwkv_core::formats::{self, Format};
use rwkv_core::synth::{self, SynthShape};
use rwkv_core::tokenizer::Vocab;

#[derive(Parser)]
#[command(
    name = "rwkv",
    version,
    about = "RWKV inference: CUDA, WebGPU and CPU behind one API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Model and backend options shared by the commands that run a model.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Model file (.gguf, .st/.safetensors, .pth, rwkv.cpp .bin) or synth:SHAPE[:DTYPE[:SEED]].
    #[arg(short = 'm', long = "model")]
    model: String,
    /// auto, cuda, webgpu or cpu (default: $RWKV_BACKEND, else auto).
    #[arg(long)]
    backend: Option<String>,
    /// Convert the large matrices at load: q4k, q8_0 or f16.
    #[arg(long)]
    quant: Option<String>,
    /// Vocabulary file (.txt or .json), for models whose file has none.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

/// Options of `rwkv serve`.
#[derive(Args, Clone)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together (state slots).
    #[arg(long = "max-batch", default_value_t = 64)]
    max_batch: usize,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long = "max-queue", default_value_t = 256)]
    max_queue: usize,
    /// Longest prompt accepted, in tokens.
    #[arg(long = "max-prompt-tokens", default_value_t = 16384)]
    max_prompt_tokens: usize,
    /// Prompt tokens per prefill step (the longest a new prompt holds up running streams).
    #[arg(long = "prefill-chunk", default_value_t = rwkv::engine::MAX_CHUNK)]
    prefill_chunk: usize,
    /// State cache budget in bytes (0 turns it off).
    #[arg(long = "cache-bytes", default_value_t = 1 << 30)]
    cache_bytes: usize,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// Name clients give as `model` (default: the model file's stem, or the synth spec).
    #[arg(long = "model-name")]
    model_name: Option<String>,
    /// A state-tuned initial state, NAME=FILE (.pth or .st); requests pick it with "state": NAME.
    #[arg(long = "state", value_name = "NAME=FILE")]
    states: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text after a prompt, streaming it as it comes.
    Generate {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(short = 'p', long = "prompt", default_value = "")]
        prompt: String,
        /// Tokens to generate.
        #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
        n: usize,
        #[arg(long, default_value_t = 1.0)]
        temp: f32,
        #[arg(long = "top-p", default_value_t = 0.85)]
        top_p: f32,
        #[arg(long = "top-k", default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Chat in the terminal (RWKV World "User:/Assistant:" format).
    Chat {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
        n: usize,
        #[arg(long, default_value_t = 1.0)]
        temp: f32,
        #[arg(long = "top-p", default_value_t = 0.3)]
        top_p: f32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Print the logits after the tokens as JSON: {"tokens": [...], "logits": [[...], ...]}.
    Logits {
        #[command(flatten)]
        m: ModelArgs,
        /// Token ids, comma separated.
        #[arg(long, conflicts_with = "prompt")]
        tokens: Option<String>,
        #[arg(short = 'p', long = "prompt")]
        prompt: Option<String>,
        /// Logits after every token, not only the last.
        #[arg(long)]
        all: bool,
    },
    /// Print the token ids of a text as a JSON array.
    Tokenize {
        #[arg(long)]
        vocab: Option<PathBuf>,
        /// Take the vocabulary from a model file instead.
        #[arg(short = 'm', long = "model")]
        model: Option<String>,
        #[arg(short = 'p', long = "prompt")]
        prompt: String,
    },
    /// Print the text of token ids.
    Detokenize {
        #[arg(long)]
        vocab: Option<PathBuf>,
        #[arg(short = 'm', long = "model")]
        model: Option<String>,
        #[arg(long)]
        tokens: String,
    },
    /// Describe a model file.
    Info {
        #[arg(short = 'm', long = "model")]
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a model with random weights of a released RWKV-7 shape.
    Synth {
        /// tiny, 0.1b, 0.4b, 1.5b, 2.9b or 7.2b
        #[arg(long, default_value = "tiny")]
        shape: String,
        /// f32, f16, q8_0 or q4k (the large matrices; the rest stays f32).
        #[arg(long, default_value = "f16")]
        dtype: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file: .gguf, .st/.safetensors or .pth.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Measure load, prefill and decode speed (in the manner of llama-bench).
    Bench(bench::BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (continuous batching).
    Serve {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        s: ServeArgs,
    },
    /// List backends and devices, and why any is unavailable.
    Doctor {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Mesa's Vulkan device-select layer prints "error: XDG_RUNTIME_DIR is invalid" on stderr when
    // that variable is unset (services, CI); the router orders adapters itself, so the layer is
    // not needed. Set before any thread starts.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn backend_choice(arg: &Option<String>) -> Result<BackendChoice> {
    match arg {
        Some(b) => BackendChoice::parse(b),
        None => BackendChoice::from_env(),
    }
}

fn open_engine(m: &ModelArgs, max_sessions: usize) -> Result<Engine> {
    let quant = m.quant.as_deref().map(parse_dtype).transpose()?;
    let choice = backend_choice(&m.backend)?;
    let t0 = std::time::Instant::now();
    let model = load_model_spec(&m.model, quant)?;
    let opts = EngineOptions {
        backend: choice,
        quant,
        max_sessions,
    };
    let progress = Progress::new(&format!("{} to the device", m.model));
    let cb = |d: u64, t: u64| progress.update(d, t);
    let mut engine = Engine::from_model(&model, &opts, Some(&cb))?;
    progress.finish();
    engine.load_seconds = t0.elapsed().as_secs_f64();
    eprintln!("rwkv: backend {}", engine.backend_choice());
    if let Some(v) = &m.vocab {
        engine.set_vocab(Vocab::from_file(v)?);
    }
    Ok(engine)
}

fn vocab_from(vocab: &Option<PathBuf>, model: &Option<String>) -> Result<Vocab> {
    match (vocab, model) {
        (Some(v), _) => Vocab::from_file(v),
        (None, Some(m)) => {
            let model = load_model_spec(m, None)?;
            Ok(model
                .vocab
                .unwrap_or_else(|| Vocab::byte_level(model.desc.vocab_size)))
        }
        (None, None) => Err(Error::invalid("give --vocab FILE or -m MODEL")),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Generate {
            m,
            prompt,
            n,
            temp,
            top_p,
            top_k,
            seed,
        } => {
            let mut engine = open_engine(&m, 1)?;
            let mut s = engine.new_session()?;
            let mut ids = engine.tokenize(&prompt);
            if ids.is_empty() {
                ids.push(0); // start from the end-of-text token, as RWKV models were trained
            }
            let params = SamplerParams {
                temperature: temp,
                top_p,
                top_k,
                seed,
                ..Default::default()
            };
            let mut out = std::io::stdout().lock();
            let mut pending: Vec<u8> = Vec::new();
            let t0 = std::time::Instant::now();
            let ids = engine.generate(&mut s, &ids, n, params, |_, bytes| {
                pending.extend_from_slice(bytes);
                // Print whole UTF-8 characters only; keep a partial one for the next token.
                let cut = utf8_complete_prefix(&pending);
                let ok = out
                    .write_all(&pending[..cut])
                    .and_then(|_| out.flush())
                    .is_ok();
                pending.drain(..cut);
                ok
            })?;
            let _ = out.write_all(&pending);
            let _ = writeln!(out);
            let dt = t0.elapsed().as_secs_f64();
            eprintln!(
                "rwkv: {} tokens in {:.2} s ({:.1} tok/s, prompt included)",
                ids.len(),
                dt,
                ids.len() as f64 / dt
            );
            Ok(())
        }
        Cmd::Chat {
            m,
            n,
            temp,
            top_p,
            seed,
        } => chat(
            &m,
            n,
            SamplerParams {
                temperature: temp,
                top_p,
                top_k: 0,
                seed,
                ..Default::default()
            },
        ),
        Cmd::Logits {
            m,
            tokens,
            prompt,
            all,
        } => {
            // Check the arguments before the (possibly long) model load.
            let given = tokens.as_deref().map(parse_ids).transpose()?;
            if given.is_none() && prompt.is_none() {
                return Err(Error::invalid("give --tokens 1,2,3 or -p TEXT"));
            }
            let mut engine = open_engine(&m, 1)?;
            let ids = match given {
                Some(ids) => ids,
                None => engine.tokenize(prompt.as_deref().unwrap_or_default()),
            };
            if ids.is_empty() {
                return Err(Error::invalid("no tokens: the prompt is empty"));
            }
            let mut s = engine.new_session()?;
            let v = engine.desc().vocab_size;
            let rows: Vec<Vec<f32>> = if all {
                engine
                    .feed_all(&mut s, &ids)?
                    .chunks(v)
                    .map(|c| c.to_vec())
                    .collect()
            } else {
                vec![engine.feed(&mut s, &ids)?]
            };
            #[derive(serde::Serialize)]
            struct LogitsOut {
                tokens: Vec<u32>,
                logits: Vec<Vec<f32>>,
            }
            emit(
                &serde_json::to_string(&LogitsOut {
                    tokens: ids,
                    logits: rows,
                })
                .unwrap_or_default(),
            )
        }
        Cmd::Tokenize {
            vocab,
            model,
            prompt,
        } => {
            let v = vocab_from(&vocab, &model)?;
            emit(&serde_json::to_string(&v.encode(prompt.as_bytes())).unwrap_or_default())
        }
        Cmd::Detokenize {
            vocab,
            model,
            tokens,
        } => {
            let v = vocab_from(&vocab, &model)?;
            let bytes = v.decode(&parse_ids(&tokens)?)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|e| Error::io("stdout", e))
        }
        Cmd::Info { model, json } => info(&model, json),
        Cmd::Synth {
            shape,
            dtype,
            seed,
            output,
        } => {
            let shape = SynthShape::parse(&shape).ok_or_else(|| {
                Error::invalid(format!(
                    "unknown shape '{shape}' (tiny, 0.1b, 0.4b, 1.5b, 2.9b, 7.2b)"
                ))
            })?;
            let dtype = parse_dtype(&dtype)?;
            let format = Format::from_extension(&output).ok_or_else(|| {
                Error::invalid(format!(
                    "{}: unknown extension (use .gguf, .st, .safetensors or .pth)",
                    output.display()
                ))
            })?;
            let t0 = std::time::Instant::now();
            let model = synth::synth_model(shape, dtype, seed)?;
            formats::write(&model, &output, format)?;
            eprintln!(
                "rwkv: wrote {} ({} {}, {:.2} GB) in {:.1} s",
                output.display(),
                shape.name(),
                dtype,
                model.total_bytes() as f64 / 1e9,
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Serve { m, s } => serve(&m, s),
        Cmd::Doctor { json } => doctor(json),
    }
}

/// Prints one line on stdout; a closed pipe (`| head`) ends the program quietly, not with a panic.
fn emit(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(line.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.map_err(|e| Error::io("stdout", e)),
    }
}

/// Length of the longest prefix of `b` that does not end inside a UTF-8 character.
fn utf8_complete_prefix(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => b.len(), // invalid bytes: print them as they are
    }
}

fn info(spec: &str, json: bool) -> Result<()> {
    let model = load_model_spec(spec, None)?;
    let d = &model.desc;
    let counts: std::collections::BTreeMap<String, usize> = model
        .dtype_counts()
        .into_iter()
        .map(|(k, v)| (k.name().to_string(), v))
        .collect();
    if json {
        let j = serde_json::json!({
            "file": spec,
            "format": model.format,
            "version": d.version.name(),
            "n_layer": d.n_layer,
            "n_embd": d.n_embd,
            "head_size": d.head_size,
            "n_head": d.n_head(),
            "vocab_size": d.vocab_size,
            "ffn_size": d.ffn_size,
            "lora_ranks": d.lora,
            "n_params": d.n_params(),
            "bytes": model.total_bytes(),
            "tensors": model.tensors.len(),
            "tensors_per_dtype": counts,
            "has_vocab": model.vocab.is_some(),
        });
        emit(&j.to_string())?;
    } else {
        println!("file:        {spec} ({})", model.format);
        println!("version:     RWKV {}", d.version.name());
        println!("layers:      {}", d.n_layer);
        println!(
            "n_embd:      {} ({} heads of {})",
            d.n_embd,
            d.n_head(),
            d.head_size
        );
        println!(
            "vocab:       {}{}",
            d.vocab_size,
            if model.vocab.is_some() {
                " (tokenizer in file)"
            } else {
                ""
            }
        );
        println!("ffn:         {}", d.ffn_size);
        println!(
            "lora ranks:  w {} a {} v {} g {}",
            d.lora.w, d.lora.a, d.lora.v, d.lora.g
        );
        println!("params:      {:.3} B", d.n_params() as f64 / 1e9);
        println!("size:        {:.3} GB", model.total_bytes() as f64 / 1e9);
        let per: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("tensors:     {} ({})", model.tensors.len(), per.join(", "));
    }
    Ok(())
}

fn doctor(json: bool) -> Result<()> {
    let reports = rwkv::router::report_all();
    if json {
        return emit(&serde_json::to_string_pretty(&reports).unwrap_or_default());
    }
    for r in &reports {
        let status = if r.available {
            "available"
        } else {
            "unavailable"
        };
        println!(
            "{:<7} {status}{}",
            r.backend,
            r.reason
                .as_ref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        );
        for d in &r.devices {
            println!("  - {}", d.device);
            for (k, v) in &d.properties {
                println!("      {k}: {v}");
            }
        }
    }
    match rwkv::router::open(BackendChoice::Auto) {
        Ok(o) => println!("auto would choose: {}", o.why),
        Err(e) => println!("auto cannot open any backend: {e}"),
    }
    Ok(())
}

fn chat(m: &ModelArgs, n: usize, params: SamplerParams) -> Result<()> {
    let mut engine = open_engine(m, 1)?;
    let mut s = engine.new_session()?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut out = std::io::stdout();
    let mut first = true;
    loop {
        if interactive {
            print!("User: ");
            let _ = out.flush();
        }
        let mut line = String::new();
        if stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("stdin", e))?
            == 0
        {
            break;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let turn = format!(
            "{}User: {text}\n\nAssistant:",
            if first { "" } else { "\n\n" }
        );
        first = false;
        let ids = engine.tokenize(&turn);
        print!("Assistant:");
        let mut reply: Vec<u8> = Vec::new();
        engine.generate(&mut s, &ids, n, params, |_, bytes| {
            reply.extend_from_slice(bytes);
            // A blank line ends the assistant's turn.
            if reply.ends_with(b"\n\n") {
                return false;
            }
            let _ = out.write_all(bytes);
            let _ = out.flush();
            true
        })?;
        println!();
    }
    Ok(())
}

fn serve(m: &ModelArgs, s: ServeArgs) -> Result<()> {
    let mut states = Vec::new();
    for spec in &s.states {
        let (name, file) = spec
            .split_once('=')
            .filter(|(n, f)| !n.is_empty() && !f.is_empty())
            .ok_or_else(|| Error::invalid(format!("--state {spec}: expected NAME=FILE")))?;
        states.push((name.to_string(), PathBuf::from(file)));
    }
    let model_name = s.model_name.clone().unwrap_or_else(|| {
        std::path::Path::new(&m.model)
            .file_stem()
            .filter(|_| !m.model.starts_with("synth:"))
            .map_or(m.model.clone(), |n| n.to_string_lossy().into_owned())
    });
    let engine = open_engine(m, s.max_batch)?;
    rwkv::serve::run(
        engine,
        rwkv::serve::ServeOptions {
            host: s.host,
            port: s.port,
            model_name,
            max_batch: s.max_batch,
            max_queue: s.max_queue,
            prefill_chunk: s.prefill_chunk,
            max_prompt_tokens: s.max_prompt_tokens,
            cache_bytes: s.cache_bytes,
            api_key: s.api_key,
            states,
            handle_signals: true,
        },
    )
}
