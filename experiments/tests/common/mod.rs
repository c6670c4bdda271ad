//! Shared by the binary-level tests: run `flowlens` and capture its output.

use std::process::Command;

/// `(success, stdout, stderr)` of `flowlens args...`.
#[allow(dead_code)]
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails the test with the child's stderr unless it succeeded.
#[allow(dead_code)]
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `flowlens` with its caches (latents, the LLM prior) under `dir`.
#[allow(dead_code)]
pub fn flowlens_in(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowlens"));
    c.env("FLOWLENS_CACHE", dir.join("cache"));
    c
}

/// The last recorded loss of every step of a run (a resumed run logs the steps after its
/// checkpoint again).
#[allow(dead_code)]
pub fn losses(run: &std::path::Path) -> std::collections::BTreeMap<u64, f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}
