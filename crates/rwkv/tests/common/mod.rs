//! Running the real `rwkv` binary from the CLI tests (tests/cli.rs, tests/cli_commands.rs).
#![allow(dead_code)] // each test binary uses a subset

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The binary with `args`, `RWKV_BACKEND` removed so the machine's setting cannot leak in.
pub fn rwkv_cmd<A: AsRef<std::ffi::OsStr>>(args: &[A]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rwkv"));
    c.args(args).env_remove("RWKV_BACKEND");
    c
}

pub fn rwkv<A: AsRef<std::ffi::OsStr>>(args: &[A]) -> Output {
    rwkv_cmd(args).output().expect("run rwkv")
}

pub fn rwkv_with_stdin<A: AsRef<std::ffi::OsStr>>(args: &[A], stdin: &[u8]) -> Output {
    let mut child = rwkv_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rwkv");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a command that must fail with one error line (no panic); returns its stderr.
pub fn fails<A: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[A]) -> String {
    let o = rwkv(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "rwkv {args:?} should have failed");
    assert!(!err.contains("panicked"), "rwkv {args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    err
}

/// An empty folder of this test binary and process.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rwkv-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
