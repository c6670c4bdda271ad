//! `[grid]` of the experiment file: the tap pair, pooling and estimator of `flowlens grid`.

use flowlens_analysis::cka::Estimator;
use flowlens_core::flow::TapPooling;
use serde::{Deserialize, Serialize};

use crate::probing::Probing;

/// The full layer x step grid of one tap pair of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Grid {
    /// The row taps (`enc.noise`; a comma-separated list or a pattern, `enc.noise,enc.text` or
    /// `enc.*`: one grid each, computed together) and the column taps, one per LLM layer
    /// (`llm.h*.image`).
    pub a: String,
    pub b: String,
    pub pooling: TapPooling,
    #[serde(with = "crate::probing::estimator_serde")]
    pub estimator: Estimator,
    #[serde(flatten)]
    pub probing: Probing,
}

impl Default for Grid {
    fn default() -> Self {
        Self {
            a: "enc.noise".into(),
            b: "llm.h*.image".into(),
            pooling: TapPooling::Mean,
            estimator: Estimator::Debiased,
            probing: Probing {
                seeds: vec![0],
                ..Probing::default()
            },
        }
    }
}
