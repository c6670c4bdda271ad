//! `<store>/cka_live.json`, the streaming CKA snapshot `flowlens sample --cka-pairs` rewrites
//! after every batch.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::error::{StoreError, io};

/// The live snapshot's `format`.
pub const LIVE_FORMAT: &str = "flowlens.cka_live.v2";

/// `<store>/cka_live.json`: exact streaming CKA per tap pair, solver step and sampling seed over
/// the rows seen so far, and per step the mean and SE over seeds (fields in file order). Seeds
/// are never pooled: a prompt enters each seed's accumulator once, so the debiased estimator
/// stays unbiased (pooling the seeds would repeat every prompt once per seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveCkaSnapshot {
    pub format: String,
    /// Mean seconds per accumulator update.
    pub mean_update_seconds: f64,
    /// What the step values are (`mean and SE over sampling seeds ...`).
    pub over: String,
    pub pairs: Vec<LivePair>,
    pub updates: usize,
}

/// One tap pair of a [`LiveCkaSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePair {
    pub a: String,
    pub b: String,
    pub steps: Vec<LiveStep>,
}

/// One solver step of a [`LivePair`]: both estimators as the mean over the seeds where they are
/// defined (`None` while undefined), their SE over seeds (`None` below two seeds), the rows of
/// the fullest seed (`n`), and each seed's own values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStep {
    pub biased: Option<f64>,
    pub biased_se: Option<f64>,
    pub debiased: Option<f64>,
    pub debiased_se: Option<f64>,
    pub n: usize,
    pub seeds: Vec<LiveSeed>,
    pub step: usize,
}

/// One sampling seed of a [`LiveStep`]: both estimators over its `n` rows (prompts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSeed {
    pub biased: Option<f64>,
    pub debiased: Option<f64>,
    pub n: usize,
    pub seed: u64,
}

impl LiveStep {
    /// The step's summary of its seeds' values.
    pub fn of_seeds(step: usize, seeds: Vec<LiveSeed>) -> Self {
        let summary = |f: fn(&LiveSeed) -> Option<f64>| -> (Option<f64>, Option<f64>) {
            let v: Vec<f64> = seeds.iter().filter_map(f).collect();
            if v.is_empty() {
                return (None, None);
            }
            // Mean and SE of values, as the oracle's per-image margin is summarised.
            let s = crate::data::Margin::of(&v);
            (Some(s.mean), (s.n > 1).then_some(s.se))
        };
        let (biased, biased_se) = summary(|s| s.biased);
        let (debiased, debiased_se) = summary(|s| s.debiased);
        Self {
            biased,
            biased_se,
            debiased,
            debiased_se,
            n: seeds.iter().map(|s| s.n).max().unwrap_or(0),
            seeds,
            step,
        }
    }
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
