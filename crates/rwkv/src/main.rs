//! The `rwkv` command line: a thin user of the library API. Each command lives in a module under
//! `cli/`; this file only lists them.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rwkv::{bench, Result};

#[derive(Parser)]
#[command(
    name = "rwkv",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("RWKV_BUILD_COMMIT"), ")"),
    about = "RWKV inference: CUDA, WebGPU and CPU behind one API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text after a prompt, streaming it as it comes.
    Generate(cli::generate::GenerateArgs),
    /// Chat in the terminal (RWKV World "User:/Assistant:" format).
    Chat(cli::generate::ChatArgs),
    /// Print the logits after the tokens as JSON: {"tokens": [...], "logits": [[...], ...]}.
    Logits(cli::inspect::LogitsArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(cli::inspect::TokenizeArgs),
    /// Print the text of token ids.
    Detokenize(cli::inspect::DetokenizeArgs),
    /// Describe a model file.
    Info(cli::inspect::InfoArgs),
    /// Write a model with random weights of a released RWKV-7 shape.
    Synth(cli::convert::SynthArgs),
    /// Quantize a model once into a GGUF file (llama.cpp's rwkv7 layout), instead of at every load.
    Quantize(cli::convert::QuantizeArgs),
    /// Write a model in another format (.gguf, .st, .pth), without quantizing.
    Convert(cli::convert::ConvertArgs),
    /// Measure load, prefill and decode speed (in the manner of llama-bench).
    Bench(bench::BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (continuous batching).
    Serve(cli::serve::ServeArgs),
    /// List backends and devices, and why any is unavailable.
    Doctor(cli::doctor::DoctorArgs),
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

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Generate(a) => cli::generate::generate(a),
        Cmd::Chat(a) => cli::generate::chat(a),
        Cmd::Logits(a) => cli::inspect::logits(a),
        Cmd::Tokenize(a) => cli::inspect::tokenize(a),
        Cmd::Detokenize(a) => cli::inspect::detokenize(a),
        Cmd::Info(a) => cli::inspect::info(a),
        Cmd::Synth(a) => cli::convert::synth(a),
        Cmd::Quantize(a) => cli::convert::quantize(a),
        Cmd::Convert(a) => cli::convert::convert(a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Serve(a) => cli::serve::serve(a),
        Cmd::Doctor(a) => cli::doctor::doctor(a),
    }
}
