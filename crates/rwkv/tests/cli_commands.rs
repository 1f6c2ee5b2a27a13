//! The CLI as a user meets it (issue 14), run on the real binary with the CPU backend and small
//! synthetic models: flag validation, text from synthetic models, vocabularies that do not fit,
//! prompts from files and stdin, chat turns, Ctrl-C, quantize/convert, bench output, sizes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn rwkv_cmd<A: AsRef<std::ffi::OsStr>>(args: &[A]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rwkv"));
    c.args(args).env_remove("RWKV_BACKEND");
    c
}

fn rwkv<A: AsRef<std::ffi::OsStr>>(args: &[A]) -> Output {
    rwkv_cmd(args).output().expect("run rwkv")
}

fn rwkv_with_stdin<A: AsRef<std::ffi::OsStr>>(args: &[A], stdin: &[u8]) -> Output {
    let mut child = rwkv_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rwkv");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; returns (stdout bytes, stderr).
fn ok<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[A]) -> (Vec<u8>, String) {
    let o = rwkv(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "rwkv {args:?} failed: {err}");
    (o.stdout, err)
}

/// Runs a command that must fail with one error line (no panic); returns its stderr.
fn fails<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[A]) -> String {
    let o = rwkv(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "rwkv {args:?} should have failed");
    assert!(!err.contains("panicked"), "rwkv {args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    err
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rwkv-cmd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The token count of the summary line `rwkv: WHAT  N tokens in ...`.
fn summary_tokens(stderr: &str, what: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("rwkv: {what} ")))
        .unwrap_or_else(|| panic!("no '{what}' summary line in: {stderr}"));
    assert!(line.contains("tok/s"), "{line}");
    line[format!("rwkv: {what} ").len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no token count in '{line}'"))
}

#[test]
fn values_are_validated_where_they_enter_naming_the_flag_and_range() {
    let gen = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "-m",
            "synth:tiny:f32",
            "--backend",
            "cpu",
            "-n",
            "1",
        ];
        a.extend_from_slice(extra);
        fails(&a)
    };
    // The space form used to be "unexpected argument '-1'".
    for bad in [
        &["--temp", "-1"][..],
        &["--temp=-1"],
        &["--temp", "nan"],
        &["--temp", "inf"],
    ] {
        let e = gen(bad);
        assert!(
            e.contains("'--temp") && e.contains("[0, 2]"),
            "{bad:?}: {e}"
        );
    }
    for bad in [
        &["--top-p", "2"][..],
        &["--top-p", "-0.5"],
        &["--top-p", "x"],
    ] {
        let e = gen(bad);
        assert!(
            e.contains("'--top-p") && (e.contains("[0, 1]") || e.contains("not a number")),
            "{bad:?}: {e}"
        );
    }
    let e = fails(&["chat", "-m", "synth:tiny:f32", "--temp", "-0.1"]);
    assert!(e.contains("'--temp"), "{e}");
    for (flag, bad, range) in [
        ("--presence-penalty", "-3", "[-2, 2]"),
        ("--frequency-penalty", "2.5", "[-2, 2]"),
        ("--penalty-decay", "0", "(0, 1]"),
        ("--penalty-decay", "1.5", "(0, 1]"),
    ] {
        let e = gen(&[flag, bad]);
        assert!(e.contains(&format!("'{flag}")) && e.contains(range), "{e}");
    }
    let five = [
        "--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e",
    ];
    let e = gen(&five);
    assert!(e.contains("--stop") && e.contains("at most 4"), "{e}");
    let e = fails(&[
        "chat",
        "-m",
        "synth:tiny:f32",
        "--stop",
        "a",
        "--stop",
        "b",
        "--stop",
        "c",
        "--stop",
        "d",
    ]);
    assert!(e.contains("--stop") && e.contains("at most 3"), "{e}");
    let e = gen(&["--quant", "q9"]);
    assert!(e.contains("'--quant") && e.contains("q4k"), "{e}");
    let e = fails(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--tokens",
        "1",
        "--backend",
        "tpu",
    ]);
    assert!(e.contains("'--backend") && e.contains("cuda"), "{e}");
    let e = fails(&["quantize", "synth:tiny:f32", "x.gguf", "--type", "q4_0"]);
    assert!(e.contains("'--type") && e.contains("q4_k_m"), "{e}");
    let e = fails(&["bench", "-m", "synth:tiny:f32", "-r", "0"]);
    assert!(e.contains("-r/--repetitions") && e.contains("1 to"), "{e}");
    let e = fails(&["bench", "-m", "synth:tiny:f32", "-b", "1,0"]);
    assert!(e.contains("-b/--batch"), "{e}");
    let e = fails(&["bench", "-m", "synth:tiny:f32", "-p", "99999999999"]);
    assert!(e.contains("-p/--n-prompt"), "{e}");
    let e = fails(&["bench", "-m", "synth:tiny:f32", "-o", "xml"]);
    assert!(e.contains("'--output") && e.contains("csv"), "{e}");
    // Zero is a valid temperature (greedy) and the edges of top-p are valid.
    ok(&[
        "generate",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "-n",
        "2",
        "--temp",
        "0",
        "--top-p",
        "1",
    ]);
}

/// The generated bytes of a greedy run (prompt "hello", not echoed) with `extra` flags.
fn greedy(extra: &[&str]) -> Vec<u8> {
    let mut a = vec![
        "generate",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "--temp",
        "0",
        "-n",
        "60",
        "-p",
        "hello",
        "--no-display-prompt",
    ];
    a.extend_from_slice(extra);
    let (mut out, _) = ok(&a);
    assert_eq!(out.pop(), Some(b'\n'));
    out
}

#[test]
fn penalties_stops_and_states_change_what_is_generated() {
    let plain = greedy(&[]);
    assert_eq!(plain.len(), 60);
    assert_eq!(greedy(&[]), plain, "greedy decoding is deterministic");
    // Greedy text of a random model repeats itself; a frequency penalty steers away from that.
    let penalised = greedy(&["--frequency-penalty", "1.5"]);
    assert_ne!(penalised, plain);
    assert_eq!(greedy(&["--frequency-penalty", "1.5"]), penalised);
    let same = greedy(&["--presence-penalty", "0", "--frequency-penalty", "0"]);
    assert_eq!(same, plain, "zero penalties change nothing");

    // A stop string: two ASCII letters/digits that occur in the text end it just before them.
    let at = plain
        .windows(2)
        .position(|w| w.iter().all(|b| b.is_ascii_alphanumeric()))
        .expect("two ASCII letters or digits in a row in 60 random bytes");
    let stop = std::str::from_utf8(&plain[at..at + 2]).unwrap().to_string();
    let first = plain.windows(2).position(|w| w == stop.as_bytes()).unwrap();
    assert_eq!(greedy(&["--stop", &stop]), plain[..first], "stop {stop:?}");

    // A state file (RWKV-Runner's layout) for this model changes the text; one for another
    // shape is refused naming the flag.
    let d = tmpdir("state");
    let desc = rwkv_core::synth::desc(rwkv_core::synth::SynthShape::Tiny);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let state: Vec<f32> = (0..desc.state_len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect();
    let file = d.join("state.st");
    let fmt = rwkv_core::formats::Format::Safetensors;
    rwkv_core::formats::write_state_file(&file, &state, &desc, fmt).unwrap();
    let with_state = greedy(&["--state", s(&file)]);
    assert_ne!(with_state, plain);
    assert_eq!(greedy(&["--state", s(&file)]), with_state);
    let other = rwkv_core::synth::desc(rwkv_core::synth::SynthShape::B0_1);
    let wrong = d.join("wrong.st");
    let other_state = vec![0.25f32; other.state_len()];
    rwkv_core::formats::write_state_file(&wrong, &other_state, &other, fmt).unwrap();
    let e = fails(&[
        "generate",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "-n",
        "1",
        "--state",
        s(&wrong),
    ]);
    assert!(e.contains("--state") && e.contains("wrong.st"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn synthetic_models_generate_text_and_say_their_vocabulary_is_byte_level() {
    // Every generated token must print: the byte-level vocabulary gives text only to ids
    // 1..=256 of the model's 512, and sampling the others used to print nothing.
    let (out, err) = ok(&[
        "generate",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "-n",
        "40",
        "-p",
        "ab",
        "--no-display-prompt",
        "--seed",
        "5",
    ]);
    let generated = summary_tokens(&err, "generation");
    assert!(generated > 0, "{err}");
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(
        out.len() - 1,
        generated,
        "one byte per generated token of a byte-level vocabulary"
    );

    let (info, _) = ok(&["info", "-m", "synth:tiny:f32"]);
    let info = String::from_utf8(info).unwrap();
    assert!(
        info.contains("byte-level") && info.contains("256 of 512 ids have text"),
        "{info}"
    );
    let (j, _) = ok(&["info", "-m", "synth:tiny:f32", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&j).unwrap();
    assert_eq!(j["tokenizer"], "byte-level");
    assert_eq!(j["vocab_text_tokens"], 256);

    let e = fails(&["detokenize", "-m", "synth:tiny:f32", "--tokens", "105,300"]);
    assert!(
        e.contains("300 has no text") && e.contains("byte-level"),
        "{e}"
    );
    let e = fails(&["detokenize", "-m", "synth:tiny:f32", "--tokens", "600"]);
    assert!(e.contains("600 is outside the vocabulary (512 ids)"), "{e}");
    let (text, _) = ok(&["detokenize", "-m", "synth:tiny:f32", "--tokens", "105,106"]);
    assert_eq!(text, b"hi\n");
}

/// A JSON vocabulary: the 256 bytes at ids 1..=256, plus `extra` (id, text).
fn json_vocab(dir: &Path, extra: (u32, &str)) -> PathBuf {
    let mut m = serde_json::Map::new();
    for b in 0..=255u32 {
        m.insert((b + 1).to_string(), serde_json::json!([b]));
    }
    m.insert(extra.0.to_string(), serde_json::json!(extra.1));
    let p = dir.join(format!("vocab-{}.json", extra.0));
    std::fs::write(&p, serde_json::Value::Object(m).to_string()).unwrap();
    p
}

#[test]
fn a_vocabulary_the_model_cannot_use_is_refused_saying_they_disagree() {
    let d = tmpdir("vocab");
    let big = json_vocab(&d, (1136, "hello"));
    // Used to fail only at the first token: "token id 1136 is outside the vocabulary (size 512)".
    let e = fails(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "--vocab",
        s(&big),
        "-p",
        "hello",
    ]);
    assert!(
        e.contains("disagree") && e.contains("1136") && e.contains("512") && e.contains("--vocab"),
        "{e}"
    );
    // The same words inside the model's ids work.
    let fits = json_vocab(&d, (300, "hello"));
    let (out, _) = ok(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "--vocab",
        s(&fits),
        "-p",
        "hello",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["tokens"], serde_json::json!([300]));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn prompts_come_from_files_and_stdin_and_are_echoed_unless_asked_not_to() {
    let d = tmpdir("prompt");
    let prompt = "Once upon a time";
    let file = d.join("prompt.txt");
    std::fs::write(&file, prompt).unwrap();
    let base = [
        "generate",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "-n",
        "6",
        "--temp",
        "0",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let (from_file, err) = ok(&with(&["-f", s(&file)]));
    // Byte-level vocabulary: one token per byte of the prompt.
    assert_eq!(summary_tokens(&err, "prefill"), prompt.len(), "{err}");
    assert!(summary_tokens(&err, "generation") > 0, "{err}");
    assert!(
        from_file.starts_with(prompt.as_bytes()),
        "the prompt is echoed"
    );
    let o = rwkv_with_stdin(&with(&["-p", "-"]), prompt.as_bytes());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, from_file, "-p - reads the same prompt from stdin");
    let (quiet, _) = ok(&with(&["-p", prompt, "--no-display-prompt"]));
    assert_eq!(quiet, from_file[prompt.len()..], "only the generated text");

    let e = fails(&with(&["-f", s(&d.join("missing.txt"))]));
    assert!(e.contains("missing.txt"), "{e}");
    let e = fails(&with(&["-f", s(&file), "-p", "x"]));
    assert!(e.contains("--prompt") || e.contains("--file"), "{e}");
    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    let e = fails(&with(&["-f", s(&latin1)]));
    assert!(e.contains("not UTF-8"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn chat_takes_turns_after_a_system_prompt() {
    let args = [
        "chat",
        "-m",
        "synth:tiny:f32",
        "--backend",
        "cpu",
        "-n",
        "8",
        "--system",
        "Be brief",
    ];
    let o = rwkv_with_stdin(&args, b"hi\n\nthere\n");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("System: Be brief\n"), "{out}");
    assert_eq!(out.matches("Assistant:").count(), 2, "{out}");
    // What the model was fed, byte for byte (the blank input line is skipped).
    let fed = "System: Be brief".len()
        + "\n\nUser: hi\n\nAssistant:".len()
        + "\n\nUser: there\n\nAssistant:".len();
    assert_eq!(summary_tokens(&err, "prefill"), fed, "{err}");
    let mut quiet = args.to_vec();
    quiet.push("--no-display-prompt");
    let o = rwkv_with_stdin(&quiet, b"hi\n");
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("System:"));
}

/// Waits until `child`'s stdout has produced `n` bytes; returns them.
fn read_at_least(child: &mut Child, n: usize) -> Vec<u8> {
    let stdout = child.stdout.as_mut().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < n {
        let k = stdout.read(&mut buf).unwrap();
        assert!(k > 0, "output ended after {} bytes", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    got
}

#[cfg(unix)]
fn ctrl_c(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Greedy decoding of this model runs 800+ tokens before an end-of-text token or a blank line
/// (checked by hand), so the reply is still going when Ctrl-C comes.
#[cfg(unix)]
const LONG_REPLY: [&str; 9] = [
    "-m",
    "synth:tiny:f32",
    "--backend",
    "cpu",
    "--temp",
    "0",
    "-n",
    "100000",
    "--seed=1",
];

#[cfg(unix)]
#[test]
fn ctrl_c_ends_generate_with_its_summary() {
    let mut args = vec!["generate", "-p", "hello"];
    args.extend_from_slice(&LONG_REPLY);
    let mut child = rwkv_cmd(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    read_at_least(&mut child, 20);
    ctrl_c(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}: {err}", o.status);
    assert!(err.contains("stopped by Ctrl-C"), "{err}");
    let n = summary_tokens(&err, "generation");
    assert!((15..100000).contains(&n), "{n} tokens: {err}");
    assert_eq!(summary_tokens(&err, "prefill"), 5);
}

#[cfg(unix)]
#[test]
fn ctrl_c_in_chat_stops_the_reply_and_returns_to_the_prompt() {
    let mut args = vec!["chat"];
    args.extend_from_slice(&LONG_REPLY);
    let mut child = rwkv_cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    let first = read_at_least(&mut child, "Assistant:".len() + 20);
    ctrl_c(&child);
    // The program is still there: the next turn gets a reply, then end of input ends the chat.
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"again\n").unwrap();
    drop(stdin);
    // Ctrl-C again, once the second reply has started.
    let start = Instant::now();
    let mut rest = Vec::new();
    let mut buf = [0u8; 256];
    let stdout = child.stdout.as_mut().unwrap();
    while String::from_utf8_lossy(&rest).matches("Assistant:").count() < 1 || rest.len() < 40 {
        let k = stdout.read(&mut buf).unwrap();
        assert!(
            k > 0 && start.elapsed() < Duration::from_secs(120),
            "no second reply"
        );
        rest.extend_from_slice(&buf[..k]);
    }
    ctrl_c(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}: {err}", o.status);
    assert_eq!(err.matches("[stopped by Ctrl-C]").count(), 2, "{err}");
    let mut all = first;
    all.extend_from_slice(&rest);
    all.extend_from_slice(&o.stdout);
    assert_eq!(
        String::from_utf8_lossy(&all).matches("Assistant:").count(),
        2
    );
    let generated = summary_tokens(&err, "generation");
    assert!((20..200000).contains(&generated), "{err}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_at_the_chat_prompt_ends_the_chat_with_the_summary() {
    let mut child = rwkv_cmd(&["chat", "-m", "synth:tiny:f32", "--backend", "cpu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held open until the end: `wait` would close it, and end of input also ends the chat.
    let stdin = child.stdin.take();
    // Wait for the model to be loaded (the backend line), then Ctrl-C while it waits for input.
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("rwkv: backend") {
        let k = stderr.read(&mut buf).unwrap();
        assert!(k > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..k]);
    }
    std::thread::sleep(Duration::from_millis(300));
    ctrl_c(&child);
    let status = child.wait().unwrap();
    drop(stdin);
    stderr.read_to_end(&mut seen).unwrap();
    let err = String::from_utf8_lossy(&seen);
    assert_eq!(status.code(), Some(130), "{err}");
    assert_eq!(summary_tokens(&err, "generation"), 0, "{err}");
}

/// The first row of `logits` as numbers.
fn logits(model: &Path, extra: &[&str]) -> Vec<f64> {
    let mut a = vec![
        "logits",
        "-m",
        s(model),
        "--tokens",
        "1,2,3,200",
        "--backend",
        "cpu",
    ];
    a.extend_from_slice(extra);
    let (out, _) = ok(&a);
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    j["logits"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn tensors_per_dtype(model: &Path) -> serde_json::Value {
    let (out, _) = ok(&["info", "-m", s(model), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
    j["tensors_per_dtype"].clone()
}

#[test]
fn quantize_writes_a_gguf_of_every_type_and_convert_changes_format_only() {
    let d = tmpdir("quantize");
    let src = d.join("tiny.st");
    ok(&[
        "synth",
        "--shape",
        "tiny",
        "--dtype",
        "f32",
        "--seed",
        "7",
        "-o",
        s(&src),
    ]);
    let reference = logits(&src, &[]);
    let mut diffs = Vec::new();
    for (kind, dtype) in [
        ("q8_0", "q8_0"),
        ("q6k", "q6k"),
        ("q5k", "q5k"),
        ("q4k", "q4k"),
    ] {
        let out = d.join(format!("tiny-{kind}.gguf"));
        let (_, err) = ok(&["quantize", s(&src), s(&out), "--type", kind]);
        assert!(err.contains("MiB"), "sizes in binary units: {err}");
        // All 14 large matrices (embedding, head, six per layer) and nothing else.
        let types = tensors_per_dtype(&out);
        assert_eq!(types[dtype], 14, "{kind}: {types}");
        let q = logits(&out, &[]);
        // Quantizing once gives exactly what quantizing at every load gives.
        assert_eq!(q, logits(&src, &["--quant", dtype]), "{kind}");
        diffs.push(max_diff(&q, &reference));
    }
    // Measured 0.12, 0.33, 0.69, 1.28 with logits spread over about ±10: fewer bits, larger
    // errors, none wild.
    println!("max |Δlogit| q8_0 q6k q5k q4k: {diffs:?}");
    assert!(diffs[0] > 0.0 && diffs[3] < 2.5, "{diffs:?}");
    assert!(diffs.windows(2).all(|w| w[0] < w[1]), "{diffs:?}");

    let mix = d.join("tiny-q4km.gguf");
    ok(&["quantize", s(&src), s(&mix), "-t", "q4_k_m"]);
    let types = tensors_per_dtype(&mix);
    // Two layers: only the head gets Q6_K (no layer is in the first or last eighth).
    assert_eq!(
        (types["q4k"].as_u64(), types["q6k"].as_u64()),
        (Some(13), Some(1)),
        "{types}"
    );
    let mix_diff = max_diff(&logits(&mix, &[]), &reference);
    assert!(mix_diff > 0.0 && mix_diff < 2.5, "{mix_diff}");
    let (bench, _) = ok(&[
        "bench",
        "-m",
        s(&mix),
        "--backend",
        "cpu",
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "--no-quality",
        "-o",
        "json",
    ]);
    let bench: serde_json::Value = serde_json::from_slice(&bench).unwrap();
    let model_type = bench["model_type"].as_str().unwrap();
    assert!(
        model_type.starts_with("rwkv7 ") && model_type.ends_with(" Q4_K_M"),
        "{model_type}"
    );

    // Format changes keep every value.
    let pth = d.join("tiny.pth");
    let gguf = d.join("tiny-f32.gguf");
    ok(&["convert", s(&src), s(&pth)]);
    ok(&["convert", s(&pth), s(&gguf)]);
    assert_eq!(logits(&gguf, &[]), reference);
    assert_eq!(tensors_per_dtype(&gguf), tensors_per_dtype(&src));

    let e = fails(&["quantize", s(&src), s(&d.join("x.st")), "-t", "q4k"]);
    assert!(e.contains(".gguf"), "{e}");
    let e = fails(&["quantize", s(&gguf), s(&gguf), "-t", "q4k"]);
    assert!(e.contains("the output is the input"), "{e}");
    let e = fails(&["convert", s(&src), s(&d.join("x.txt"))]);
    assert!(e.contains("x.txt"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[cfg(unix)]
#[test]
fn quantize_interrupted_by_ctrl_c_leaves_nothing() {
    let d = tmpdir("interrupt");
    let out = d.join("big.gguf");
    // 0.1B in memory: converting its 190M values takes seconds, long enough to interrupt.
    let mut child = rwkv_cmd(&["quantize", "synth:0.1b:f16", s(&out), "-t", "q6k"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the temporary file exists: the write has begun.
    let start = Instant::now();
    let partial = loop {
        let found = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with("big.gguf.tmp-"));
        if let Some(f) = found {
            break f.path();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "quantize ended before its temporary file was seen"
        );
        assert!(start.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(2));
    };
    ctrl_c(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("nothing written"), "{err}");
    assert!(!partial.exists() && !out.exists());
    assert_eq!(
        std::fs::read_dir(&d).unwrap().count(),
        0,
        "files left behind"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bench_prints_md_csv_and_json_with_model_type_and_build_commit() {
    let args = [
        "bench",
        "-m",
        "synth:tiny:q4k",
        "--backend",
        "cpu",
        "-p",
        "8",
        "-n",
        "2",
        "-r",
        "2",
        "--no-quality",
    ];
    let with = |extra: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(extra);
        let (out, _) = ok(&a);
        String::from_utf8(out).unwrap()
    };
    let commit = Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());

    let csv = with(&["-o", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "header, pp8, tg2: {csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for row in &lines[1..] {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f.len(), header.len(), "{row}");
        assert!(f[col("model_type")].starts_with("rwkv7 "), "{row}");
        assert!(f[col("model_type")].ends_with(" Q4_K"), "{row}");
        assert!(f[col("avg_ts")].parse::<f64>().unwrap() > 0.0, "{row}");
        assert_eq!(f[col("samples_ts")].split(';').count(), 2, "{row}");
        if let Some(c) = &commit {
            assert_eq!(f[col("build_commit")], c, "{row}");
        }
    }
    assert!(
        lines[1].contains(",pp8,") && lines[2].contains(",tg2,"),
        "{csv}"
    );

    let json: serde_json::Value = serde_json::from_str(&with(&["-o", "json"])).unwrap();
    assert_eq!(json["tests"].as_array().unwrap().len(), 2);
    assert!(json["model_type"].as_str().unwrap().ends_with(" Q4_K"));
    assert!(!json["build_commit"].as_str().unwrap().is_empty());
    let old: serde_json::Value = serde_json::from_str(&with(&["--json"])).unwrap();
    assert_eq!(old["model_type"], json["model_type"], "--json is -o json");

    let md = with(&[]);
    assert!(md.contains("| rwkv7 ") && md.contains("| pp8 |"), "{md}");
    assert!(md.contains("MiB |"), "size column in binary units: {md}");
    assert!(md.contains("build: "), "{md}");
    assert!(!md.contains(" GB"), "{md}");
}

#[test]
fn sizes_are_binary_units_everywhere() {
    let d = tmpdir("sizes");
    let p = d.join("t.gguf");
    let (_, err) = ok(&["synth", "--shape", "tiny", "--dtype", "q8_0", "-o", s(&p)]);
    assert!(err.contains(" MiB") && !err.contains(" GB"), "{err}");
    let (info, _) = ok(&["info", "-m", s(&p)]);
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains(" MiB") && !info.contains(" GB"), "{info}");
    let _ = std::fs::remove_dir_all(&d);
}

/// rwkv.cpp's tiny trained RWKV-7 (a 256-id byte-level model) and its expected logits after
/// the bytes `"in`, from ../shared; None (with a message) when the reference data is absent.
fn trained_tiny_model() -> Option<(PathBuf, Vec<f64>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refdata/rwkv.cpp/tests");
    let model = dir.join("tiny-rwkv-7v0-834K-FP32.bin");
    let expected = dir.join("expected-logits-7v0-834K.bin");
    if !model.exists() || !expected.exists() {
        eprintln!(
            "SKIPPED: {} not found (../shared reference data absent)",
            model.display()
        );
        return None;
    }
    let bytes = std::fs::read(&expected).unwrap();
    let logits = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
        .collect();
    Some((model, logits))
}

#[test]
fn a_trained_rwkv_cpp_model_quantizes_to_gguf_and_refuses_the_world_vocabulary() {
    let Some((model, expected)) = trained_tiny_model() else {
        return;
    };
    let d = tmpdir("trained");
    let logits_of = |m: &Path| -> Vec<f64> {
        let (out, _) = ok(&[
            "logits",
            "-m",
            s(m),
            "--tokens",
            "34,105,110",
            "--backend",
            "cpu",
        ]);
        let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
        j["logits"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // Its rows of 64 are not whole 256-value K blocks: those matrices fall back to Q8_0; the
    // FFN value matrices (rows of 256) get Q4_K, or Q6_K in the layers q4_k_m favours.
    for (kind, want) in [
        ("q8_0", &[("q8_0", 74)][..]),
        ("q4_k_m", &[("q8_0", 62), ("q4k", 7), ("q6k", 5)]),
    ] {
        let out = d.join(format!("tiny7-{kind}.gguf"));
        ok(&["quantize", s(&model), s(&out), "-t", kind]);
        let types = tensors_per_dtype(&out);
        for (dtype, n) in want {
            assert_eq!(types[dtype], *n, "{kind}: {types}");
        }
        // Measured 0.011 for both, against logits spread over 4.2.
        let diff = max_diff(&logits_of(&out), &expected);
        assert!(diff < 0.05, "{kind}: max |Δlogit| {diff}");
    }
    let world = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/refdata/vocab/rwkv_vocab_v20230424.txt");
    if world.exists() {
        // Used to be "token id 1136 is outside the vocabulary (size 256)" at the first token.
        let e = fails(&[
            "generate",
            "-m",
            s(&model),
            "--backend",
            "cpu",
            "--vocab",
            s(&world),
            "-p",
            "hello",
        ]);
        assert!(e.contains("disagree") && e.contains("256 token ids"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&d);
}
