//! The one rule for tests that cannot run here, shared by every crate (a dev-dependency only).
//!
//! A test that lacks something calls one of the `skip_*` functions and returns at once. Each
//! prints one marker line, `SKIPPED: <binary>::<test>: <why>`, on the process's stderr (written
//! directly, so the test harness does not capture it) and appends the same line to the file
//! `RWKV_SKIP_LOG` names, if set. `scripts/test.sh` sets it, counts each skipped test once,
//! subtracts it from the passed ones and lists them with their reasons.
//!
//! Some skips are failures where the missing thing is required:
//! - [`skip_gpu`]: `RWKV_REQUIRE_GPU` lists what must be present, comma separated: backends
//!   (`cuda`, `webgpu`), WebGPU features (`webgpu-f16`, `webgpu-subgroups`, `webgpu-coop`,
//!   `webgpu-timestamps`) and `nvrtc` (the CUDA compiler, which needs no GPU: CI sets
//!   `RWKV_REQUIRE_GPU=nvrtc`); `1` or `all` means both backends (not the features, which a
//!   given GPU may lack). A skip of a listed name panics instead.
//! - [`skip_refdata`]: `RWKV_REQUIRE_REFDATA=1` (set by `.ci/run`) makes a missing `../shared`
//!   file or a missing `python3` a failure.
//! - [`skip`]: never required (a path this machine's hardware cannot take).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The GPU backends `RWKV_REQUIRE_GPU=1` (or `all`) requires.
pub const GPU_BACKENDS: [&str; 2] = ["cuda", "webgpu"];
/// Every name `RWKV_REQUIRE_GPU` accepts: the backends, the optional WebGPU features and NVRTC.
pub const REQUIRABLE: [&str; 7] = [
    "cuda",
    "webgpu",
    "nvrtc",
    "webgpu-f16",
    "webgpu-subgroups",
    "webgpu-coop",
    "webgpu-timestamps",
];

/// The names `RWKV_REQUIRE_GPU` requires. Panics on a name it does not know, so a typo cannot
/// turn a required backend back into a skip.
pub fn required_gpu() -> Vec<String> {
    parse_required(std::env::var("RWKV_REQUIRE_GPU").ok().as_deref())
}

fn parse_required(value: Option<&str>) -> Vec<String> {
    let value = value.unwrap_or("").trim();
    match value {
        "" | "0" => Vec::new(),
        "1" | "all" => GPU_BACKENDS.iter().map(|s| s.to_string()).collect(),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                assert!(
                    REQUIRABLE.contains(&name),
                    "RWKV_REQUIRE_GPU names {name:?}; known: 1, all, {}",
                    REQUIRABLE.join(", ")
                );
                name.to_string()
            })
            .collect(),
    }
}

/// Whether `RWKV_REQUIRE_REFDATA=1`: reference data and python3 must be present.
pub fn refdata_required() -> bool {
    std::env::var("RWKV_REQUIRE_REFDATA").is_ok_and(|v| v.trim() == "1")
}

/// Skips a test for want of the GPU backend or WebGPU feature `what` (see [`REQUIRABLE`]);
/// panics instead when `RWKV_REQUIRE_GPU` requires it.
pub fn skip_gpu(what: &str, why: &str) {
    assert!(
        REQUIRABLE.contains(&what),
        "skip_gpu: unknown name {what:?}"
    );
    if required_gpu().iter().any(|r| r == what) {
        panic!("RWKV_REQUIRE_GPU requires {what}, but: {why}");
    }
    mark(&format!("no {what}: {why}"));
}

/// A test that still runs without the optional GPU feature `what` (it takes a fallback):
/// prints why, not counted as a skip; panics when `RWKV_REQUIRE_GPU` requires `what`.
pub fn note_missing(what: &str, why: &str) {
    assert!(
        REQUIRABLE.contains(&what),
        "note_missing: unknown name {what:?}"
    );
    if required_gpu().iter().any(|r| r == what) {
        panic!("RWKV_REQUIRE_GPU requires {what}, but: {why}");
    }
    let _ = writeln!(std::io::stderr(), "NOTE: {}: no {what}: {why}", test_name());
}

/// Skips a test for want of reference data under `../shared` or of `python3`; panics instead
/// when `RWKV_REQUIRE_REFDATA=1`.
pub fn skip_refdata(why: &str) {
    if refdata_required() {
        panic!("RWKV_REQUIRE_REFDATA=1, but: {why}");
    }
    mark(why);
}

/// Skips a test that this machine cannot run for a reason no setting requires (e.g. a
/// kernel path this adapter does not take).
pub fn skip(why: &str) {
    mark(why);
}

/// The reference data folder: `shared/` beside the checkout (`../shared` from a worktree).
pub fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// `shared/<rel>` when it exists; otherwise skips (or fails, see [`skip_refdata`]) and gives
/// None, so a test reads `let Some(p) = refdata("...") else { return };`.
pub fn refdata(rel: &str) -> Option<PathBuf> {
    let p = shared_dir().join(rel);
    if p.exists() {
        Some(p)
    } else {
        skip_refdata(&format!("../shared/{rel} is absent"));
        None
    }
}

/// Whether `python3` runs here; otherwise skips (or fails, see [`skip_refdata`]).
pub fn python3_or_skip() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_refdata("python3 not found");
    }
    ok
}

/// `<binary>::<test>`: the test binary's name without cargo's hash, and the harness's thread
/// name (libtest names each test's thread after the test).
pub fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => stem,
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    format!("{binary}::{test}")
}

fn mark(why: &str) {
    // Once per test: a helper called in a loop would repeat the same line.
    static MARKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let name = test_name();
    {
        let mut marked = MARKED.lock().unwrap_or_else(|e| e.into_inner());
        if marked.contains(&name) {
            return;
        }
        marked.push(name.clone());
    }
    // One line: a reason with line breaks would break the count.
    let why = why.replace(['\n', '\r'], " ");
    let line = format!("SKIPPED: {name}: {why}\n");
    // Straight to the process's stderr, past the harness's capture of print!/eprint!.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os("RWKV_SKIP_LOG") {
        // O_APPEND: one short write per line, so parallel tests do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// A fresh seed per run for random test inputs: `RWKV_TEST_SEED` when set, else the clock;
/// printed with the test's name so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::env::var("RWKV_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{}: seed {s} (replay with RWKV_TEST_SEED={s})", test_name());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_lists_parse() {
        assert!(parse_required(None).is_empty());
        assert!(parse_required(Some("0")).is_empty());
        assert_eq!(parse_required(Some("1")), ["cuda", "webgpu"]);
        assert_eq!(parse_required(Some("all")), ["cuda", "webgpu"]);
        assert_eq!(
            parse_required(Some(" webgpu , webgpu-coop")),
            ["webgpu", "webgpu-coop"]
        );
    }

    #[test]
    #[should_panic(expected = "RWKV_REQUIRE_GPU names")]
    fn a_misspelt_requirement_fails() {
        parse_required(Some("cdua"));
    }

    #[test]
    fn the_test_name_names_binary_and_test() {
        let name = test_name();
        assert!(
            name.ends_with("::tests::the_test_name_names_binary_and_test"),
            "{name}"
        );
        assert!(name.starts_with("rwkv_testing::"), "{name}");
    }
}
