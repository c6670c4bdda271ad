//! What can be wrong with a feature store.

use std::path::{Path, PathBuf};

use crate::store::manifest::{FORMAT, FORMAT_V1};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a store name (a plain folder name such as `probes`)")]
    Name(String),
    #[error("{path} does not exist: sample the run with taps first")]
    Missing {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path} is not a probe manifest")]
    Manifest {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{path}: format `{found}`, this build reads {FORMAT} and {FORMAT_V1}")]
    Format { path: PathBuf, found: String },
    #[error("{dir}: no tap `{tap}` (the store has {have})")]
    NoTap {
        dir: PathBuf,
        tap: String,
        have: String,
    },
    #[error("{dir}: no tap matches `{pattern}` (the store has {have})")]
    NoMatch {
        dir: PathBuf,
        pattern: String,
        have: String,
    },
    #[error("{dir}: seed {seed} was not sampled (seeds {seeds:?})")]
    NoSeed {
        dir: PathBuf,
        seed: u64,
        seeds: Vec<u64>,
    },
    #[error("{dir}: solver step {step} was not written")]
    NoStep { dir: PathBuf, step: usize },
    #[error("{path}: shape {found:?}, the manifest says {expected:?}")]
    Shape {
        path: PathBuf,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    #[error("{path}: {reason}")]
    Array { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}
