//! `<store>/cka_live.json`, the streaming CKA snapshot `flowlens sample --cka-pairs` rewrites
//! after every batch.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::error::{StoreError, io};

/// The live snapshot's `format`.
pub const LIVE_FORMAT: &str = "flowlens.cka_live.v1";

/// `<store>/cka_live.json`: exact streaming CKA per tap pair and solver step over the rows seen
/// so far (fields in file order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveCkaSnapshot {
    pub format: String,
    /// Mean seconds per accumulator update.
    pub mean_update_seconds: f64,
    pub pairs: Vec<LivePair>,
    /// What the accumulators pool (`all seeds so far`).
    pub pooled_over: String,
    pub updates: usize,
}

/// One tap pair of a [`LiveCkaSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePair {
    pub a: String,
    pub b: String,
    pub steps: Vec<LiveStep>,
}

/// One solver step of a [`LivePair`]: both estimators (`None` while undefined) over `n` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStep {
    pub biased: Option<f64>,
    pub debiased: Option<f64>,
    pub n: usize,
    pub step: usize,
}

impl LiveCkaSnapshot {
    /// Writes the snapshot atomically (creating the store folder).
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|error| StoreError::Json {
            path: path.to_path_buf(),
            error,
        })?;
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(io(path))
    }

    /// Reads a snapshot; a file of another format is an error.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let snapshot: Self = serde_json::from_str(&text).map_err(|error| StoreError::Json {
            path: path.to_path_buf(),
            error,
        })?;
        if snapshot.format != LIVE_FORMAT {
            return Err(StoreError::Format {
                path: path.to_path_buf(),
                found: snapshot.format,
            });
        }
        Ok(snapshot)
    }
}
