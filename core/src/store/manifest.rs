//! `<store>/manifest.json`: what a store holds and how it was sampled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Weights;
use crate::flow::TapPooling;

/// The manifest's `format`: one file per tap and seed holding every written step.
pub const FORMAT: &str = "flowlens.probes.v2";

/// The first format, still read: one file per tap, seed and step.
pub const FORMAT_V1: &str = "flowlens.probes.v1";

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

impl StoreManifest {
    /// Whether a step's rows are spelled in files of their own (the first format).
    pub fn one_file_per_step(&self) -> bool {
        self.format == FORMAT_V1
    }

    /// Whether solver step `step` was written.
    pub fn has_step(&self, step: usize) -> bool {
        step < self.steps && self.tap_steps.as_ref().is_none_or(|s| s.contains(&step))
    }

    /// The written solver steps, in order: the first axis of a tap's seed file.
    pub fn written_steps(&self) -> Vec<usize> {
        (0..self.steps).filter(|&s| self.has_step(s)).collect()
    }
}
