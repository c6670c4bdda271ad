//! What the CKA protocols share: where the prompts come from, how the runs are sampled and
//! probed (paper section 7), and the estimator's spelling in experiment files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the prompts of a CKA study come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Prompts {
    /// One prompt per line.
    File(PathBuf),
    /// `n` held-out scenes of the run's shapes data (a data seed the training never saw).
    HeldOut(usize),
}

/// The sampling and probing protocol shared by experiments 1 and 2 (paper section 7).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Probing {
    pub prompts: Prompts,
    /// Sampling seeds (the paper: S = 5).
    pub seeds: Vec<u64>,
    /// Euler steps.
    pub solver_steps: usize,
    pub cfg: f32,
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Which trained seed of each variant is probed (default: the ablation's first seed).
    pub run_seed: Option<u64>,
}

impl Default for Probing {
    fn default() -> Self {
        Self {
            prompts: Prompts::File("mjhq-2k.txt".into()),
            seeds: vec![0, 1, 2, 3, 4],
            solver_steps: 30,
            cfg: 2.0,
            batch_size: 16,
            run_seed: None,
        }
    }
}

/// `estimator = "biased" | "debiased"` in experiment files.
pub mod estimator_serde {
    use flowlens_analysis::cka::Estimator;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &Estimator, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(e.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Estimator, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
