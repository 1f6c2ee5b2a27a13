//! `rwkv generate` and `rwkv chat`: text in, streamed text out.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use rwkv::{Error, Result, SamplerParams};

use super::{open_engine, ModelArgs};

#[derive(Args)]
pub struct GenerateArgs {
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
}

#[derive(Args)]
pub struct ChatArgs {
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
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let mut engine = open_engine(&a.m, 1)?;
    let mut s = engine.new_session()?;
    let mut ids = engine.tokenize(&a.prompt);
    if ids.is_empty() {
        ids.push(0); // start from the end-of-text token, as RWKV models were trained
    }
    let params = SamplerParams {
        temperature: a.temp,
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
    };
    let mut out = std::io::stdout().lock();
    let mut pending: Vec<u8> = Vec::new();
    let t0 = std::time::Instant::now();
    let ids = engine.generate(&mut s, &ids, a.n, params, |_, bytes| {
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

/// Length of the longest prefix of `b` that does not end inside a UTF-8 character.
fn utf8_complete_prefix(b: &[u8]) -> usize {
    match std::str::from_utf8(b) {
        Ok(_) => b.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => b.len(), // invalid bytes: print them as they are
    }
}

pub fn chat(a: ChatArgs) -> Result<()> {
    let params = SamplerParams {
        temperature: a.temp,
        top_p: a.top_p,
        top_k: 0,
        seed: a.seed,
    };
    let mut engine = open_engine(&a.m, 1)?;
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
        engine.generate(&mut s, &ids, a.n, params, |_, bytes| {
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
