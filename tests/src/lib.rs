//! flowlens-tests: end-to-end tests across crates and through the binaries. The tests live in
//! `tests/tests/`; this library holds what they share.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}
