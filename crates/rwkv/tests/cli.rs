//! The CLI contracts other tools call exactly as written (issue: core), run on the real binary.

use std::path::Path;
use std::process::Command;

mod common;

use common::{fails, rwkv, tmpdir};

fn ok(args: &[&str]) -> String {
    let o = rwkv(args);
    assert!(
        o.status.success(),
        "rwkv {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

fn logits_of(model: &Path, extra: &[&str]) -> serde_json::Value {
    let m = model.to_str().unwrap();
    let mut args = vec!["logits", "-m", m, "--tokens", "1,2,3", "--backend", "cpu"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).expect("logits prints one JSON object")
}

#[test]
fn same_weights_in_every_format_give_the_same_logits() {
    let d = tmpdir("formats");
    let mut outs = Vec::new();
    for ext in ["gguf", "st", "pth"] {
        let p = d.join(format!("tiny.{ext}"));
        ok(&[
            "synth",
            "--shape",
            "tiny",
            "--dtype",
            "f32",
            "--seed",
            "3",
            "-o",
            p.to_str().unwrap(),
        ]);
        let j = logits_of(&p, &[]);
        assert_eq!(j["tokens"], serde_json::json!([1, 2, 3]));
        let rows = j["logits"].as_array().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].as_array().unwrap().len(),
            512,
            "tiny vocabulary is 512"
        );
        outs.push(rows[0].clone());
    }
    assert_eq!(outs[0], outs[1], "gguf vs safetensors");
    assert_eq!(outs[0], outs[2], "gguf vs pth");

    let all = logits_of(&d.join("tiny.gguf"), &["--all"]);
    let rows = all["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2], outs[0], "--all's last row is the plain logits");

    let info: serde_json::Value = serde_json::from_str(&ok(&[
        "info",
        "-m",
        d.join("tiny.pth").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(info["version"], "v7");
    assert_eq!(info["n_layer"], 2);
    assert_eq!(info["n_embd"], 256);
    assert_eq!(info["head_size"], 64);
    assert_eq!(info["vocab_size"], 512);
    assert!(info["tensors_per_dtype"]["f32"].as_u64().unwrap() > 10);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn quantized_synth_loads_and_quant_on_load_works() {
    let d = tmpdir("quant");
    let p = d.join("tiny-f16.gguf");
    ok(&[
        "synth",
        "--shape",
        "tiny",
        "--dtype",
        "f16",
        "-o",
        p.to_str().unwrap(),
    ]);
    let f16 = logits_of(&p, &[]);
    let q8 = logits_of(&p, &["--quant", "q8_0"]);
    let a: Vec<f64> = f16["logits"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let b: Vec<f64> = q8["logits"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(diff > 0.0, "quantizing on load changed nothing");
    assert!(diff < 0.5, "q8_0 on load moved logits by {diff}");
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", "-m", p.to_str().unwrap(), "--json"])).unwrap();
    assert!(info["tensors_per_dtype"]["f16"].as_u64().unwrap() >= 2);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let d = tmpdir("bad");
    let missing = d.join("nope.gguf");
    let e = fails(&["logits", "-m", missing.to_str().unwrap(), "--tokens", "1"]);
    assert!(e.contains("nope.gguf"), "{e}");
    let junk = d.join("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all, just text").unwrap();
    let e = fails(&["info", "-m", junk.to_str().unwrap()]);
    assert!(e.contains("junk.gguf"), "{e}");
    let e = fails(&["logits", "-m", "synth:tiny:f32", "--tokens", "1,x"]);
    assert!(e.contains("'x'"), "{e}");
    let e = fails(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--tokens",
        "99999",
        "--backend",
        "cpu",
    ]);
    assert!(e.contains("99999"), "{e}");
    let e = fails(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--tokens",
        "1",
        "--backend",
        "tpu",
    ]);
    assert!(e.contains("tpu"), "{e}");
    let e = fails(&[
        "synth",
        "--shape",
        "huge",
        "-o",
        d.join("x.gguf").to_str().unwrap(),
    ]);
    assert!(e.contains("huge"), "{e}");
    let e = fails(&[
        "synth",
        "--shape",
        "tiny",
        "-o",
        d.join("x.txt").to_str().unwrap(),
    ]);
    assert!(e.contains("x.txt"), "{e}");
    let e = fails(&[
        "detokenize",
        "--vocab",
        missing.to_str().unwrap(),
        "--tokens",
        "1",
    ]);
    assert!(e.contains("nope.gguf"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn forced_backends_fail_clearly_and_auto_works() {
    let auto = ok(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--tokens",
        "5",
        "--backend",
        "auto",
    ]);
    assert!(auto.starts_with("{\"tokens\":[5]"), "{auto}");
    let o = rwkv(&[
        "logits",
        "-m",
        "synth:tiny:f32",
        "--tokens",
        "5",
        "--backend",
        "cuda",
    ]);
    if !o.status.success() {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("cuda"), "a failed forced cuda names itself: {e}");
        assert!(!e.contains("panicked"));
    }
    let doc = ok(&["doctor"]);
    assert!(
        doc.contains("cpu") && doc.contains("cuda") && doc.contains("webgpu"),
        "{doc}"
    );
}

#[test]
fn tokenize_and_detokenize_with_the_world_vocabulary() {
    let Some(vocab) = rwkv_testing::refdata("refdata/vocab/rwkv_vocab_v20230424.txt") else {
        return;
    };
    let v = vocab.to_str().unwrap();
    let ids = ok(&["tokenize", "--vocab", v, "-p", "今天天气不错"]);
    assert_eq!(ids.trim(), "[10381,11639,11639,13655,10260,17631]");
    let text = ok(&[
        "detokenize",
        "--vocab",
        v,
        "--tokens",
        "10381,11639,11639,13655,10260,17631",
    ]);
    assert_eq!(text.trim_end_matches('\n'), "今天天气不错");
}

#[test]
fn benchmark_script_writes_every_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let name = format!("test-{}", std::process::id());
    let out = Command::new("bash")
        .arg(root.join("benchmark.sh"))
        .args(["-t", "test title", "-c", "test comment", "-f", &name, "--"])
        .args([
            "-m",
            "synth:tiny:q4k",
            "-p",
            "16",
            "-n",
            "4",
            "-r",
            "2",
            "-b",
            "1,2",
            "--backend",
            "cpu",
        ])
        .env("RWKV_BIN", env!("CARGO_BIN_EXE_rwkv"))
        .current_dir(&root)
        .output()
        .expect("run benchmark.sh");
    let file = root.join("benchmarks").join(format!("{name}.md"));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "benchmark.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in [
        "## test title",
        "test comment",
        "| date |",
        "| git commit |",
        "| machine |",
        "| GPU |",
        "| backend | cpu",
        "| model | synth:tiny:q4k",
        "| load time |",
        "| prefill tok/s | pp16:",
        "| generation tok/s | tg4:",
        "tg4 b2:",
        "| quality hash |",
        "| reference check |",
    ] {
        assert!(
            text.contains(field),
            "benchmarks/{name}.md lacks '{field}':\n{text}"
        );
    }
    // Missing options without a terminal: a usage error, nothing written.
    let out = Command::new("bash")
        .arg(root.join("benchmark.sh"))
        .arg("-t")
        .arg("x")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
