//! Commands that write model files: `synth`.

use std::path::PathBuf;

use clap::Args;
use rwkv::cli_util::parse_dtype;
use rwkv::{Error, Result};
use rwkv_core::formats::{self, Format};
use rwkv_core::synth::{self, SynthShape};

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
    let t0 = std::time::Instant::now();
    let model = synth::synth_model(shape, dtype, a.seed)?;
    formats::write(&model, output, format)?;
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
