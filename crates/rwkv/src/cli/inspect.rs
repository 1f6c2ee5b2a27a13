//! Commands that look inside a model or vocabulary: `logits`, `tokenize`, `detokenize`, `info`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use rwkv::cli_util::{format_bytes, load_model_spec, parse_ids};
use rwkv::{Error, Result};
use rwkv_core::tokenizer::Vocab;

use super::{emit, open_engine, ModelArgs};

#[derive(Args)]
pub struct LogitsArgs {
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
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Take the vocabulary from a model file instead.
    #[arg(short = 'm', long = "model")]
    model: Option<String>,
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
}

#[derive(Args)]
pub struct DetokenizeArgs {
    #[arg(long)]
    vocab: Option<PathBuf>,
    #[arg(short = 'm', long = "model")]
    model: Option<String>,
    #[arg(long)]
    tokens: String,
}

#[derive(Args)]
pub struct InfoArgs {
    #[arg(short = 'm', long = "model")]
    model: String,
    #[arg(long)]
    json: bool,
}

pub fn logits(a: LogitsArgs) -> Result<()> {
    // Check the arguments before the (possibly long) model load.
    let given = a.tokens.as_deref().map(parse_ids).transpose()?;
    if given.is_none() && a.prompt.is_none() {
        return Err(Error::invalid("give --tokens 1,2,3 or -p TEXT"));
    }
    let mut engine = open_engine(&a.m, 1)?;
    let ids = match given {
        Some(ids) => ids,
        None => engine.tokenize(a.prompt.as_deref().unwrap_or_default()),
    };
    if ids.is_empty() {
        return Err(Error::invalid("no tokens: the prompt is empty"));
    }
    let mut s = engine.new_session()?;
    let v = engine.desc().vocab_size;
    let rows: Vec<Vec<f32>> = if a.all {
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

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let v = vocab_from(&a.vocab, &a.model)?;
    emit(&serde_json::to_string(&v.encode(a.prompt.as_bytes())).unwrap_or_default())
}

pub fn detokenize(a: DetokenizeArgs) -> Result<()> {
    let v = vocab_from(&a.vocab, &a.model)?;
    let bytes = v.decode(&parse_ids(&a.tokens)?)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|_| out.write_all(b"\n"))
        .map_err(|e| Error::io("stdout", e))
}

pub fn info(a: InfoArgs) -> Result<()> {
    let spec = a.model.as_str();
    let model = load_model_spec(spec, None)?;
    let d = &model.desc;
    // What the tokenizer in the file covers: a byte-level one gives text for only 256 of the
    // model's ids, which users should not mistake for a full vocabulary.
    let tokenizer = model.vocab.as_ref().map(|v| {
        if v.is_byte_level() {
            "byte-level"
        } else {
            "world"
        }
    });
    let text_tokens = model.vocab.as_ref().map(|v| v.text_tokens());
    let counts: std::collections::BTreeMap<String, usize> = model
        .dtype_counts()
        .into_iter()
        .map(|(k, v)| (k.name().to_string(), v))
        .collect();
    if a.json {
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
            "tokenizer": tokenizer,
            "vocab_text_tokens": text_tokens,
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
        let tokenizer = match &model.vocab {
            Some(v) => format!("tokenizer in the model: {}", v.describe()),
            None => "no tokenizer in the model: give --vocab FILE".to_string(),
        };
        println!("vocab:       {} token ids ({tokenizer})", d.vocab_size);
        println!("ffn:         {}", d.ffn_size);
        println!(
            "lora ranks:  w {} a {} v {} g {}",
            d.lora.w, d.lora.a, d.lora.v, d.lora.g
        );
        println!("params:      {:.3} B", d.n_params() as f64 / 1e9);
        println!("size:        {}", format_bytes(model.total_bytes()));
        let per: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("tensors:     {} ({})", model.tensors.len(), per.join(", "));
    }
    Ok(())
}
