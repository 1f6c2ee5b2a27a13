//! `rwkv serve`: the OpenAI-compatible HTTP server (`rwkv::serve`).

use std::path::PathBuf;

use clap::Args;
use rwkv::{Error, Result};

use super::{open_engine, ModelArgs};

/// Options of `rwkv serve`.
#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    m: ModelArgs,
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

pub fn serve(s: ServeArgs) -> Result<()> {
    let m = &s.m;
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
