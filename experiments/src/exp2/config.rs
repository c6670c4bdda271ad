//! `[exp2]` of the experiment file: experiment 2's source run, budget, threshold and pooling.

use flowlens_analysis::cka::Estimator;
use flowlens_core::flow::TapPooling;
use serde::{Deserialize, Serialize};

use crate::probing::Probing;

/// Experiment 2: the same dual-stream encoder under two decoders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Exp2 {
    /// The trained dual-stream-encoder + single-stream-decoder system (variant name of the
    /// ablation's runs, or a run directory) whose encoder both conditions share.
    pub ours: String,
    /// Steps to train the ConvNeXt-decoder system around the frozen encoder (default: the
    /// ablation's budget).
    pub steps: Option<usize>,
    /// CKA threshold of the time-to-threshold summary.
    pub threshold: f64,
    pub pooling: TapPooling,
    #[serde(with = "crate::probing::estimator_serde")]
    pub estimator: Estimator,
    /// Permutations of each null (pairing null of each curve point and AUC, swap test of the
    /// AUC difference; 0 = none).
    pub permutations: usize,
    /// Bootstrap resamples of the prompts for the intervals (0 = none).
    pub bootstrap: usize,
    /// Seed of the permutations and resamples.
    pub resample_seed: u64,
    #[serde(flatten)]
    pub probing: Probing,
}

impl Default for Exp2 {
    fn default() -> Self {
        Self {
            ours: "both".into(),
            steps: None,
            threshold: 0.5,
            pooling: TapPooling::LayerNormMean,
            estimator: Estimator::Debiased,
            permutations: 1000,
            bootstrap: 1000,
            resample_seed: 0,
            probing: Probing::default(),
        }
    }
}
