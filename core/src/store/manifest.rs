//! `<store>/manifest.json`: what a store holds and how it was sampled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Weights;
use crate::flow::TapPooling;

/// The manifest's `format`.
pub const FORMAT: &str = "flowlens.probes.v1";

/// What the rows were computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// Along the Euler sampler's trajectory: step KK is solver step KK (t = KK / steps).
    Sampler,
    /// On interpolants of held-out data: step KK is the KK-th requested time.
    Interpolant,
}

/// Number format of the stored rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeDtype {
    #[default]
    F32,
    F16,
}

/// Which CFG branch the rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    #[default]
    Conditional,
}

/// `<store>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreManifest {
    pub format: String,
    pub mode: StoreMode,
    pub prompts: Vec<String>,
    /// The completed seeds, in sampling order.
    pub seeds: Vec<u64>,
    /// Solver steps (sampler) or times (interpolant).
    pub steps: usize,
    pub times: Vec<f32>,
    pub cfg: f32,
    pub pooling: TapPooling,
    pub branch: Branch,
    pub dtype: ProbeDtype,
    /// Tap name -> width.
    pub taps: BTreeMap<String, usize>,
    pub checkpoint_step: usize,
    pub weights: Weights,
    /// The solver steps that were written (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_steps: Option<Vec<usize>>,
}
