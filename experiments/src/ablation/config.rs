//! `[ablation]` of the experiment file: the paper's Table 1, the variants trained on identical
//! data, seeds and budget, optionally evaluated on MJHQ-30k during training.

use std::path::PathBuf;

use flowlens_core::flow::{Preset, Variant};
use serde::{Deserialize, Serialize};

/// Table 1: the variants trained on identical data, seeds and budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Ablation {
    pub preset: Preset,
    pub variants: Vec<Variant>,
    /// Training seeds; the table reports mean +- sd over them.
    pub seeds: Vec<u64>,
    /// Optimiser steps per run (the paper: 120k).
    pub steps: usize,
    /// Evaluate every K steps (the paper: 12k) and at the end.
    pub eval_every: usize,
    /// Overrides of the training configuration (any `TrainConfig` field, as in
    /// `flowlens train --config`), applied to every run.
    pub train: toml::Table,
    /// `[ablation.mjhq]`: FID and CLIP score on MJHQ-30k at every evaluation (every
    /// `eval_every` steps, a multiple of the runs' `checkpoint_every`) and at the end, as
    /// `flowlens train --mjhq` does; absent, the shapes oracle alone evaluates.
    pub mjhq: Option<AblationMjhq>,
}

/// The MJHQ-30k evaluation of the ablation's runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AblationMjhq {
    /// The MJHQ-30k folder (meta_data.json and <category>/<id>.jpg).
    pub benchmark: PathBuf,
    /// The CLIP folder (openai/clip-vit-large-patch14 for the paper).
    pub clip: PathBuf,
    /// The converted FID Inception weights, or `formula` (tests only).
    pub inception: String,
    /// Benchmark entries per evaluation.
    #[serde(default = "mjhq_n")]
    pub n: usize,
    /// Sampling seeds per evaluation.
    #[serde(default = "mjhq_seeds")]
    pub seeds: Vec<u64>,
    /// Euler steps of the evaluation's sampler.
    #[serde(default = "mjhq_solver_steps")]
    pub solver_steps: usize,
}

fn mjhq_n() -> usize {
    30_000
}
fn mjhq_seeds() -> Vec<u64> {
    vec![0]
}
fn mjhq_solver_steps() -> usize {
    30
}

impl Default for Ablation {
    fn default() -> Self {
        Self {
            preset: Preset::Paper,
            variants: Variant::ALL.to_vec(),
            seeds: vec![0, 1, 2, 3, 4],
            steps: 120_000,
            eval_every: 12_000,
            train: toml::Table::new(),
            mjhq: None,
        }
    }
}
