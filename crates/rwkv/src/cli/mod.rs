//! The commands of the `rwkv` binary, one module per command or group, and what they share:
//! the model/backend options, opening an engine, printing to stdout.

pub mod convert;
pub mod doctor;
pub mod generate;
pub mod inspect;
pub mod serve;

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use rwkv::cli_util::{load_model_spec, Progress};
use rwkv::{BackendChoice, DType, Engine, EngineOptions, Error, Result};
use rwkv_core::tokenizer::Vocab;

/// Model and backend options shared by the commands that run a model.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model file (.gguf, .st/.safetensors, .pth, rwkv.cpp .bin) or synth:SHAPE[:DTYPE[:SEED]].
    #[arg(short = 'm', long = "model")]
    pub model: String,
    /// auto, cuda, webgpu or cpu (default: $RWKV_BACKEND, else auto).
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<BackendChoice>,
    /// Convert the large matrices at load: q4k, q5k, q6k, q8_0, f16, bf16 or f32.
    #[arg(long, value_parser = parse_quant)]
    pub quant: Option<DType>,
    /// Vocabulary file (.txt or .json), for models whose file has none.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
}

/// `--backend` (clap names the flag and the value in its message).
pub fn parse_backend(s: &str) -> std::result::Result<BackendChoice, String> {
    BackendChoice::parse(s).map_err(|_| "allowed: auto, cuda, webgpu, cpu".to_string())
}

/// `--quant`: the types the converter can write.
pub fn parse_quant(s: &str) -> std::result::Result<DType, String> {
    const ALLOWED: &str = "allowed: q4k, q5k, q6k, q8_0, f16, bf16, f32";
    match DType::parse(s) {
        Some(
            d @ (DType::Q4K
            | DType::Q5K
            | DType::Q6K
            | DType::Q8_0
            | DType::F16
            | DType::BF16
            | DType::F32),
        ) => Ok(d),
        _ => Err(ALLOWED.to_string()),
    }
}

/// `--backend`, else `$RWKV_BACKEND`, else auto.
fn backend_choice(arg: Option<BackendChoice>) -> Result<BackendChoice> {
    match arg {
        Some(b) => Ok(b),
        None => BackendChoice::from_env().map_err(|e| Error::invalid(format!("RWKV_BACKEND: {e}"))),
    }
}

pub fn open_engine(m: &ModelArgs, max_sessions: usize) -> Result<Engine> {
    let quant = m.quant;
    let choice = backend_choice(m.backend)?;
    let t0 = std::time::Instant::now();
    let model = load_model_spec(&m.model, quant)?;
    let opts = EngineOptions {
        backend: choice,
        quant,
        max_sessions,
    };
    let name = std::path::Path::new(&m.model)
        .file_name()
        .map_or(m.model.clone(), |n| n.to_string_lossy().into_owned());
    let progress = Progress::titled(&format!("uploading {name}"));
    let cb = |d: u64, t: u64| progress.update(d, t);
    let mut engine = Engine::from_model(&model, &opts, Some(&cb))?;
    progress.finish();
    engine.load_seconds = t0.elapsed().as_secs_f64();
    eprintln!("rwkv: backend {}", engine.backend_choice());
    if let Some(v) = &m.vocab {
        engine
            .set_vocab(Vocab::from_file(v)?)
            .map_err(|e| Error::invalid(format!("--vocab {} on {}: {e}", v.display(), m.model)))?;
    }
    Ok(engine)
}

/// Prints one line on stdout; a closed pipe (`| head`) ends the program quietly, not with a panic.
pub fn emit(line: &str) -> Result<()> {
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
