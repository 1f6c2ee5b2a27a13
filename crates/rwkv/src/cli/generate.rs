//! `rwkv generate` and `rwkv chat`: text in, streamed text out, with the prefill and generation
//! speeds at the end. Ctrl-C stops the text being generated: `generate` then ends with its
//! summary, `chat` returns to the prompt (a second Ctrl-C at the prompt, or end of input, ends
//! the chat).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use rwkv::{Engine, Error, Result, SamplerParams, Session};

use super::{open_engine, ModelArgs};

/// Largest prompt read from a file or stdin. A prompt is text a person wrote or pasted; 64 MiB
/// (millions of tokens) is far beyond that, so anything larger is a wrong file, refused before
/// it is read into memory.
const MAX_PROMPT_BYTES: u64 = 64 << 20;

/// Sampling options shared by `generate` and `chat`; each command has its own defaults.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Temperature, a number >= 0; 0 always takes the most likely token. Default 1.
    #[arg(long, value_parser = parse_temperature, allow_negative_numbers = true)]
    temp: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to this,
    /// between 0 and 1 (1 keeps all). Default 0.85 for generate, 0.3 for chat.
    #[arg(long = "top-p", value_parser = parse_probability, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Keep only the k most likely tokens (0 = no limit). Default 0.
    #[arg(long = "top-k")]
    top_k: Option<usize>,
    /// Seed of the sampler's random numbers: the same seed gives the same text. Default 42.
    #[arg(long)]
    seed: Option<u64>,
}

impl SamplingArgs {
    fn params(&self, default_top_p: f32) -> SamplerParams {
        let d = SamplerParams::default();
        SamplerParams {
            temperature: self.temp.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(default_top_p),
            top_k: self.top_k.unwrap_or(d.top_k),
            seed: self.seed.unwrap_or(d.seed),
        }
    }
}

/// `--temp`: a finite number >= 0 (clap names the flag in its message).
fn parse_temperature(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number (allowed: a number >= 0)"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("allowed: a number >= 0 (0 = always the most likely token)".into())
    }
}

/// `--top-p`: a number from 0 to 1.
fn parse_probability(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number (allowed: 0 to 1)"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("allowed: a number from 0 to 1".into())
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// The prompt; "-" reads it from stdin.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Do not print the prompt before the generated text.
    #[arg(long)]
    no_display_prompt: bool,
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Longest reply, in tokens.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    n: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// A system prompt, fed before the first turn as "System: TEXT".
    #[arg(long)]
    system: Option<String>,
    /// Do not print the system prompt at the start.
    #[arg(long)]
    no_display_prompt: bool,
}

/// Set by Ctrl-C while a prompt is fed or text generated: generation stops at the next token.
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether chat is busy with a turn (feeding it or replying): Ctrl-C then stops the reply
/// rather than the program.
static BUSY: AtomicBool = AtomicBool::new(false);
/// Tokens and seconds so far, for the summary (also printed when Ctrl-C ends a chat).
static SPEEDS: Mutex<Speeds> = Mutex::new(Speeds::ZERO);

/// Prefill and generation counts and times.
#[derive(Debug, Clone, Copy)]
struct Speeds {
    prompt_tokens: usize,
    prompt_seconds: f64,
    generated_tokens: usize,
    generation_seconds: f64,
}

impl Speeds {
    const ZERO: Speeds = Speeds {
        prompt_tokens: 0,
        prompt_seconds: 0.0,
        generated_tokens: 0,
        generation_seconds: 0.0,
    };

    /// Two lines for stderr: prefill and generation, each with tokens, seconds and tok/s.
    fn summary(&self) -> String {
        let line = |what: &str, n: usize, secs: f64| {
            let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
            format!("rwkv: {what:<10} {n:>6} tokens in {secs:>8.3} s: {rate:>9.1} tok/s")
        };
        format!(
            "{}\n{}",
            line("prefill", self.prompt_tokens, self.prompt_seconds),
            line("generation", self.generated_tokens, self.generation_seconds)
        )
    }
}

fn add_speeds(f: impl FnOnce(&mut Speeds)) {
    // A poisoned lock only means a panic elsewhere; the numbers are still worth printing.
    let mut s = SPEEDS.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut s);
}

fn speeds() -> Speeds {
    *SPEEDS.lock().unwrap_or_else(|e| e.into_inner())
}

fn catch_ctrl_c(handler: impl FnMut() + Send + 'static) -> Result<()> {
    ctrlc::set_handler(handler).map_err(|e| Error::invalid(format!("cannot catch Ctrl-C: {e}")))
}

/// Reads a whole prompt (a file, or stdin for "-"), refusing more than [`MAX_PROMPT_BYTES`].
fn read_prompt(from: &Path) -> Result<String> {
    let name = from.display().to_string();
    let mut bytes = Vec::new();
    let read = if from == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_PROMPT_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(from).and_then(|f| f.take(MAX_PROMPT_BYTES + 1).read_to_end(&mut bytes))
    };
    let shown = if name == "-" { "stdin" } else { name.as_str() };
    read.map_err(|e| Error::io(shown, e))?;
    if bytes.len() as u64 > MAX_PROMPT_BYTES {
        return Err(Error::invalid(format!(
            "{shown}: a prompt of more than {} MiB is refused (is it the right file?)",
            MAX_PROMPT_BYTES >> 20
        )));
    }
    String::from_utf8(bytes)
        .map_err(|e| Error::invalid(format!("{shown}: the prompt is not UTF-8 text ({e})")))
}

/// Feeds `ids` as one prefill, timed.
fn prefill(engine: &mut Engine, s: &mut Session, ids: &[u32]) -> Result<()> {
    let t = Instant::now();
    engine.feed(s, ids)?;
    let secs = t.elapsed().as_secs_f64();
    add_speeds(|sp| {
        sp.prompt_tokens += ids.len();
        sp.prompt_seconds += secs;
    });
    Ok(())
}

/// Generates after what `s` was fed last, streaming whole UTF-8 characters to stdout until
/// `max` tokens, the end-of-text token, Ctrl-C, or `stop_at` says the text is done. Returns the
/// text generated.
fn stream_reply(
    engine: &mut Engine,
    s: &mut Session,
    max: usize,
    params: SamplerParams,
    stop_at: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>> {
    let mut out = std::io::stdout().lock();
    let mut text: Vec<u8> = Vec::new();
    let mut printed = 0;
    let t = Instant::now();
    let result = engine.generate(s, &[], max, params, |_, bytes| {
        text.extend_from_slice(bytes);
        if stop_at(&text) {
            return false;
        }
        // Print whole UTF-8 characters only; keep a partial one for the next token.
        let cut = printed + utf8_complete_prefix(&text[printed..]);
        let ok = out
            .write_all(&text[printed..cut])
            .and_then(|_| out.flush())
            .is_ok();
        printed = cut;
        ok && !STOP.load(Ordering::SeqCst)
    });
    let secs = t.elapsed().as_secs_f64();
    let ids = result?;
    add_speeds(|sp| {
        sp.generated_tokens += ids.len();
        sp.generation_seconds += secs;
    });
    if !stop_at(&text) {
        let _ = out.write_all(&text[printed..]);
    }
    let _ = out.flush();
    Ok(text)
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let prompt = match (&a.prompt, &a.file) {
        (Some(p), _) if p == "-" => read_prompt(Path::new("-"))?,
        (Some(p), _) => p.clone(),
        (None, Some(f)) => read_prompt(f)?,
        (None, None) => String::new(),
    };
    let params = a.sampling.params(0.85);
    let mut engine = open_engine(&a.m, 1)?;
    let mut s = engine.new_session()?;
    let mut ids = engine.tokenize(&prompt);
    if ids.is_empty() {
        ids.push(0); // start from the end-of-text token, as RWKV models were trained
    }
    catch_ctrl_c(|| STOP.store(true, Ordering::SeqCst))?;
    if !a.no_display_prompt {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(prompt.as_bytes()).and_then(|_| out.flush());
    }
    prefill(&mut engine, &mut s, &ids)?;
    if !STOP.load(Ordering::SeqCst) {
        stream_reply(&mut engine, &mut s, a.n, params, |_| false)?;
    }
    println!();
    if STOP.load(Ordering::SeqCst) {
        eprintln!("rwkv: stopped by Ctrl-C");
    }
    eprintln!("{}", speeds().summary());
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

/// The reply is done at a blank line (the World chat format separates turns with one); the
/// blank line itself is not printed.
fn reply_done(text: &[u8]) -> bool {
    text.ends_with(b"\n\n")
}

pub fn chat(a: ChatArgs) -> Result<()> {
    let params = a.sampling.params(0.3);
    let mut engine = open_engine(&a.m, 1)?;
    let mut s = engine.new_session()?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    catch_ctrl_c(|| {
        if BUSY.load(Ordering::SeqCst) {
            STOP.store(true, Ordering::SeqCst);
        } else {
            // At the prompt: Ctrl-C ends the chat, with the summary.
            eprintln!("\n{}", speeds().summary());
            std::process::exit(130);
        }
    })?;
    let mut out = std::io::stdout();
    let mut fed_before = false;
    if let Some(system) = a.system.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        if !a.no_display_prompt {
            println!("System: {system}");
        }
        let ids = engine.tokenize(&format!("System: {system}"));
        prefill(&mut engine, &mut s, &ids)?;
        fed_before = true;
    }
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
            if fed_before { "\n\n" } else { "" }
        );
        fed_before = true;
        let ids = engine.tokenize(&turn);
        print!("Assistant:");
        let _ = out.flush();
        STOP.store(false, Ordering::SeqCst);
        BUSY.store(true, Ordering::SeqCst);
        let replied = prefill(&mut engine, &mut s, &ids).and_then(|()| {
            if STOP.load(Ordering::SeqCst) {
                return Ok(());
            }
            stream_reply(&mut engine, &mut s, a.n, params, reply_done).map(|_| ())
        });
        BUSY.store(false, Ordering::SeqCst);
        replied?;
        println!();
        if STOP.load(Ordering::SeqCst) {
            eprintln!("[stopped by Ctrl-C]");
        }
    }
    if interactive {
        println!();
    }
    eprintln!("{}", speeds().summary());
    Ok(())
}
