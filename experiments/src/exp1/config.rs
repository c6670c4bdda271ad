//! `[exp1]` of the experiment file: experiment 1's runs, layers, solver steps and pooling.

use flowlens_analysis::cka::Estimator;
use flowlens_core::flow::TapPooling;
use serde::{Deserialize, Serialize};

use crate::probing::Probing;

/// Experiment 1: encoder streams vs LLM layers, ours - baseline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Exp1 {
    /// The model with the dual-stream encoder ("ours") and the baseline: variant names of the
    /// ablation's runs, or run directories.
    pub ours: String,
    pub baseline: String,
    /// LLM hidden states in Hugging Face indexing (0 = embeddings, last = after the final norm).
    pub layers: Vec<usize>,
    /// Solver steps to probe (t = step / solver_steps).
    pub steps: Vec<usize>,
    pub pooling: TapPooling,
    /// The estimator of the headline table and figures (both are always computed and written).
    #[serde(with = "crate::probing::estimator_serde")]
    pub estimator: Estimator,
    /// Permutations of each null (the pairing null of each model's CKA, the swap test of
    /// ΔCKA; 0 = none).
    pub permutations: usize,
    /// Bootstrap resamples of the prompts for the intervals (0 = none).
    pub bootstrap: usize,
    /// Seed of the permutations and resamples.
    pub resample_seed: u64,
    #[serde(flatten)]
    pub probing: Probing,
}

impl Default for Exp1 {
    fn default() -> Self {
        Self {
            ours: "both".into(),
            baseline: "baseline".into(),
            layers: vec![2, 12, 22],
            steps: vec![9, 18, 27],
            pooling: TapPooling::Mean,
            estimator: Estimator::Debiased,
            permutations: 1000,
            bootstrap: 1000,
            resample_seed: 0,
            probing: Probing::default(),
        }
    }
}
