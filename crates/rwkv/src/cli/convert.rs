//! Commands that write model files: `synth`, `quantize`, `convert`. Every file is written
//! atomically (a temporary file renamed at the end); Ctrl-C removes the temporary file, so an
//! interrupted run leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use rwkv::cli_util::{format_bytes, load_model_spec, parse_dtype, Progress};
use rwkv::{Error, Result};
use rwkv_core::formats::recipe::QuantRecipe;
use rwkv_core::formats::{self, gguf, Format};
use rwkv_core::model::v7;
use rwkv_core::synth::{self, SynthShape};
use rwkv_core::tokenizer::Vocab;
use rwkv_core::Model;

#[derive(Args)]
pub struct SynthArgs {
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
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model to quantize: any format (.gguf, .st/.safetensors, .pth, rwkv.cpp .bin) or
    /// synth:SHAPE[:DTYPE[:SEED]].
    input: String,
    /// The GGUF file to write (llama.cpp's rwkv7 layout).
    output: PathBuf,
    /// q4k, q5k, q6k, q8_0, f16 (also bf16, f32), or q4_k_m: Q4_K with Q6_K for the head and
    /// for the value matrices of some layers, as llama.cpp's Q4_K_M.
    #[arg(short = 't', long = "type", value_name = "TYPE", value_parser = parse_recipe)]
    recipe: QuantRecipe,
    /// Vocabulary (.txt or .json) to store in the file, for inputs without one.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The model: any format (.gguf, .st/.safetensors, .pth, rwkv.cpp .bin) or
    /// synth:SHAPE[:DTYPE[:SEED]].
    input: String,
    /// The file to write, its format named by the extension: .gguf, .st/.safetensors or .pth.
    output: PathBuf,
    /// Vocabulary (.txt or .json) to store in a GGUF, for inputs without one.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

/// `--type` (clap names the flag and the value in its message).
fn parse_recipe(s: &str) -> std::result::Result<QuantRecipe, String> {
    QuantRecipe::parse(s).ok_or_else(|| format!("allowed: {}", QuantRecipe::NAMES))
}

pub fn synth(a: SynthArgs) -> Result<()> {
    let shape = SynthShape::parse(&a.shape).ok_or_else(|| {
        Error::invalid(format!(
            "unknown shape '{}' (tiny, 0.1b, 0.4b, 1.5b, 2.9b, 7.2b)",
            a.shape
        ))
    })?;
    let dtype = parse_dtype(&a.dtype)?;
    let output = &a.output;
    let format = Format::from_extension(output).ok_or_else(|| {
        Error::invalid(format!(
            "{}: unknown extension (use .gguf, .st, .safetensors or .pth)",
            output.display()
        ))
    })?;
    let t0 = Instant::now();
    let model = synth::synth_model(shape, dtype, a.seed)?;
    remove_partial_file_on_ctrl_c(output)?;
    formats::write(&model, output, format)?;
    eprintln!(
        "rwkv: wrote {} ({} {}, {}) in {:.1} s",
        output.display(),
        shape.name(),
        dtype,
        format_bytes(model.total_bytes()),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn quantize(a: QuantizeArgs) -> Result<()> {
    if Format::from_extension(&a.output) != Some(Format::Gguf) {
        return Err(Error::invalid(format!(
            "{}: quantize writes GGUF; name the output .gguf (rwkv convert writes other formats)",
            a.output.display()
        )));
    }
    let t0 = Instant::now();
    let model = load_input(&a.input, &a.output, a.vocab.as_deref())?;
    let n_layer = model.desc.n_layer;
    let recipe = a.recipe;
    let type_of = |name: &str, t: &rwkv_core::model::Tensor| recipe.tensor_type(name, t, n_layer);
    // The types the large matrices get, for the closing line.
    let mut matrices: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, t) in &model.tensors {
        if v7::is_large_matrix(name) {
            *matrices.entry(type_of(name, t).ggml_name()).or_default() += 1;
        }
    }
    remove_partial_file_on_ctrl_c(&a.output)?;
    let name = a
        .output
        .file_name()
        .map_or(a.output.display().to_string(), |n| {
            n.to_string_lossy().into_owned()
        });
    let progress = Progress::titled(&format!("writing {name}"));
    let report = |done: u64, total: u64| progress.update(done, total);
    let in_bytes = model.total_bytes();
    // Each tensor is converted as it is written: memory holds one at a time.
    gguf::write_with_types(&model, &a.output, &type_of, Some(&report))?;
    progress.finish();
    let out_bytes = std::fs::metadata(&a.output)
        .map_err(|e| Error::io(&a.output, e))?
        .len();
    let per_type: Vec<String> = matrices
        .iter()
        .map(|(k, v)| format!("{v} as {k}"))
        .collect();
    eprintln!(
        "rwkv: wrote {} ({}: large matrices {}; {}, from {}) in {:.1} s",
        a.output.display(),
        recipe.name(),
        per_type.join(", "),
        format_bytes(out_bytes),
        format_bytes(in_bytes),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    let format = Format::from_extension(&a.output).ok_or_else(|| {
        Error::invalid(format!(
            "{}: unknown extension (use .gguf, .st, .safetensors or .pth)",
            a.output.display()
        ))
    })?;
    let t0 = Instant::now();
    let model = load_input(&a.input, &a.output, a.vocab.as_deref())?;
    remove_partial_file_on_ctrl_c(&a.output)?;
    formats::write(&model, &a.output, format)?;
    eprintln!(
        "rwkv: wrote {} ({format}, {}) in {:.1} s",
        a.output.display(),
        format_bytes(model.total_bytes()),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Loads the input of `quantize`/`convert`, refusing to overwrite it, and stores `vocab` in it.
fn load_input(input: &str, output: &Path, vocab: Option<&Path>) -> Result<Model> {
    // Writing over the input would rename a new file over the one still being read (mapped).
    if let (Ok(i), Ok(o)) = (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        if i == o {
            return Err(Error::invalid(format!(
                "{}: the output is the input; write to another file",
                output.display()
            )));
        }
    }
    let mut model = load_model_spec(input, None)?;
    if let Some(path) = vocab {
        let mut v = Vocab::from_file(path)?;
        let n = model.desc.vocab_size;
        if let Some(last) = v.last_used_id().filter(|&id| id as usize >= n) {
            return Err(Error::invalid(format!(
                "--vocab {}: the vocabulary and the model disagree: the vocabulary uses ids up to \
                 {last} ({}), {input} has {n} token ids",
                path.display(),
                v.describe()
            )));
        }
        // llama.cpp takes the vocabulary size from the token list: it must match the model's.
        v.pad_to(n);
        model.vocab = Some(v);
    } else if model.vocab.is_none() && Format::from_extension(output) == Some(Format::Gguf) {
        eprintln!(
            "rwkv: note: {input} has no tokenizer, so neither will {} (llama.cpp needs one: give --vocab FILE)",
            output.display()
        );
    }
    Ok(model)
}

/// Ctrl-C while a file is written: remove its temporary file and end, so that nothing is left.
/// (The temporary file is the one `formats::write` renames at the end; it is removed while the
/// writer may still hold it open, which unlinks it on Unix. On Windows an open file cannot be
/// removed, so a partial `.tmp-PID` file can remain there.)
fn remove_partial_file_on_ctrl_c(output: &Path) -> Result<()> {
    let tmp = formats::temp_path_for(output);
    ctrlc::set_handler(move || {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("\nrwkv: interrupted; nothing written");
        std::process::exit(130);
    })
    .map_err(|e| Error::invalid(format!("cannot catch Ctrl-C: {e}")))
}
