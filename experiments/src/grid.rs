//! `flowlens grid`: the full tap x solver-step CKA grid of one tap against a family of taps
//! (`enc.noise` vs `llm.h*.image`: every LLM layer) of one run's feature store, mean and SE over
//! sampling seeds: what the app shows live, as a table.

use anyhow::{Result, bail};
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::grid::{cka_grid, prepare_taps};
use flowlens_analysis::stats::Summary;
use serde::{Deserialize, Serialize};

use crate::probes::Store;

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

pub fn analyse(
    store: &Store,
    a: &str,
    b: &str,
    estimator: Estimator,
    seeds: &[u64],
) -> Result<Results> {
    let taps: Vec<String> = store
        .taps_matching(b)
        .into_iter()
        .filter(|t| t != a)
        .collect();
    if taps.is_empty() {
        bail!(
            "{}: no tap matches `{b}` (the store has {})",
            store.dir.display(),
            store.tap_list()
        );
    }
    let steps: Vec<usize> = (0..store.manifest.steps)
        .filter(|&s| store.has_step(s))
        .collect();
    // values[tap][step][seed]
    let mut values = vec![vec![Vec::with_capacity(seeds.len()); steps.len()]; taps.len()];
    for (j, &step) in steps.iter().enumerate() {
        for &seed in seeds {
            let x = store.read(a, seed, step)?;
            let ys = taps
                .iter()
                .map(|t| Ok((t.clone(), store.read(t, seed, step)?)))
                .collect::<Result<Vec<_>>>()?;
            let rows = prepare_taps(&[(a.to_string(), x.view())])?;
            let views: Vec<(String, ndarray::ArrayView2<f64>)> =
                ys.iter().map(|(n, y)| (n.clone(), y.view())).collect();
            let cols = prepare_taps(&views)?;
            let grid = cka_grid(&rows, &cols, estimator)?;
            for i in 0..taps.len() {
                values[i][j].push(grid[[0, i]]);
            }
        }
    }
    let summaries = values
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| Summary::of(v))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Results {
        format: "flowlens.grid.v1".into(),
        run: store.dir.display().to_string(),
        a: a.into(),
        b: b.into(),
        estimator: estimator.name().into(),
        seeds: seeds.to_vec(),
        n_prompts: store.manifest.prompts.len(),
        taps,
        ts: steps
            .iter()
            .map(|&s| store.manifest.times.get(s).copied().unwrap_or(0.0) as f64)
            .collect(),
        steps,
        mean: summaries
            .iter()
            .map(|r| r.iter().map(|s| s.mean).collect())
            .collect(),
        se: summaries
            .iter()
            .map(|r| r.iter().map(|s| s.se).collect())
            .collect(),
    })
}
