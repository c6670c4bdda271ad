//! `flowlens grid`'s results: the tap x solver-step CKA grid of one tap against a family of taps
//! (`enc.noise` vs `llm.h*.image`: every LLM layer) of one run's feature store, mean and SE over
//! sampling seeds, computed by the analysis crate's [`SeedGrid`] (the app's computation too).

use std::collections::BTreeSet;

use anyhow::Result;
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::grid::{GridSpec, SeedGrid};
use flowlens_analysis::stats::Summary;
use flowlens_core::store::{FeatureStore, Seeds};
use serde::{Deserialize, Serialize};

use crate::io::matrix;

/// `grid/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub format: String,
    pub run: String,
    pub a: String,
    pub b: String,
    pub estimator: String,
    pub seeds: Vec<u64>,
    pub n_prompts: usize,
    /// The column taps (rows of the grid), in order.
    pub taps: Vec<String>,
    pub steps: Vec<usize>,
    pub ts: Vec<f64>,
    /// `mean[tap][step]`, `se[tap][step]` over seeds.
    pub mean: Vec<Vec<f64>>,
    pub se: Vec<Vec<f64>>,
}

/// The grid of `a` against the taps matching `b` over the complete `seeds` of `store`.
pub fn analyse(
    store: &FeatureStore,
    a: &str,
    b: &str,
    estimator: Estimator,
    seeds: &[u64],
) -> Result<Results> {
    let steps = store.written_steps();
    let spec = GridSpec {
        a: a.into(),
        b: b.into(),
        rows: store.grid_rows(a, b)?,
        ts: steps.iter().map(|&s| store.time(s)).collect(),
        steps,
        seeds: seeds.to_vec(),
        estimator,
    };
    // Every requested cell is read (a missing seed or step is an error, not a gap).
    let all: BTreeSet<(u64, usize)> = seeds
        .iter()
        .flat_map(|&s| spec.steps.iter().map(move |&k| (s, k)))
        .collect();
    let grid = SeedGrid::compute(
        spec,
        |_| all.clone(),
        |tap, seed, step| -> Result<_> {
            Ok(matrix(store.read(tap, seed, step, Seeds::Complete)?))
        },
        None,
    )?;
    let (mut mean, mut se) = (Vec::new(), Vec::new());
    for row in &grid.values {
        let cells = row
            .iter()
            .map(|cell| Summary::of(&seeds.iter().map(|s| cell[s]).collect::<Vec<_>>()))
            .collect::<Result<Vec<_>, _>>()?;
        mean.push(cells.iter().map(|s| s.mean).collect());
        se.push(cells.iter().map(|s| s.se).collect());
    }
    let spec = grid.spec;
    Ok(Results {
        format: "flowlens.grid.v1".into(),
        run: store.dir().display().to_string(),
        a: a.into(),
        b: b.into(),
        estimator: estimator.name().into(),
        seeds: seeds.to_vec(),
        n_prompts: store.manifest.prompts.len(),
        taps: spec.rows,
        ts: spec.ts,
        steps: spec.steps,
        mean,
        se,
    })
}
