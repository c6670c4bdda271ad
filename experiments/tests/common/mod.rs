//! Shared by the binary-level tests: run `flowlens` and capture its output.

use std::process::Command;

/// `(success, stdout, stderr)` of `flowlens args...`.
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
