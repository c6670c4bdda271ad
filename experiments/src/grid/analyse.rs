//! `flowlens grid`'s results: the tap x solver-step CKA grid of a tap against a family of taps
//! (`enc.noise` vs `llm.h*.image`: every LLM layer) of one run's feature store, mean and SE over
//! sampling seeds, one grid per row tap (`enc.noise,enc.text` or `enc.*`), all computed together
//! by the analysis crate's [`SeedGrid::compute_many`] (the app's computation too).

use std::collections::BTreeSet;

use anyhow::Result;
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::grid::{GridSpec, SeedGrid};
use flowlens_analysis::stats::Summary;
use flowlens_core::store::{FeatureStore, Seeds, StoreError};
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

/// The row taps that `a` names: a tap, a comma-separated list (`enc.noise,enc.text`) or
/// patterns (`enc.*`), in the order given (a pattern's matches sorted), each once. A tap the
/// store lacks, or a pattern that matches none of its taps, is an error that names it.
pub fn row_taps(store: &FeatureStore, a: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in split_taps(a) {
        let matched = if store.manifest.taps.contains_key(item) {
            vec![item.to_string()]
        } else {
            store.taps_matching(item)
        };
        if matched.is_empty() {
            if !item.contains('*') {
                store.check_tap(item)?;
            }
            return Err(StoreError::NoMatch {
                dir: store.dir(),
                pattern: item.to_string(),
                have: store.tap_list(),
            }
            .into());
        }
        for tap in matched {
            if !out.contains(&tap) {
                out.push(tap);
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "no row tap given (`a` is empty)");
    Ok(out)
}

/// The items of a comma-separated tap list (`enc.noise, enc.text`), trimmed, empty ones
/// dropped.
pub fn split_taps(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// The grids of each row tap of `a` ([`row_taps`]) against the taps matching `b`, over the
/// complete `seeds` of `store`, computed together: per (step, seed) every tap is read and its
/// Gram computed once.
pub fn analyse(
    store: &FeatureStore,
    a: &str,
    b: &str,
    estimator: Estimator,
    seeds: &[u64],
) -> Result<Vec<Results>> {
    let steps = store.written_steps();
    let ts: Vec<f64> = steps.iter().map(|&s| store.time(s)).collect();
    let specs = row_taps(store, a)?
        .into_iter()
        .map(|tap| {
            Ok(GridSpec {
                rows: store.grid_rows(&tap, b)?,
                a: tap,
                b: b.into(),
                ts: ts.clone(),
                steps: steps.clone(),
                seeds: seeds.to_vec(),
                estimator,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Every requested cell is read (a missing seed or step is an error, not a gap).
    let all: BTreeSet<(u64, usize)> = seeds
        .iter()
        .flat_map(|&s| steps.iter().map(move |&k| (s, k)))
        .collect();
    let grids = SeedGrid::compute_many(
        specs,
        |_| all.clone(),
        |tap, seed, step| -> Result<_> {
            Ok(matrix(store.read(tap, seed, step, Seeds::Complete)?))
        },
        &[],
    )?;
    grids
        .into_iter()
        .map(|grid| results(store, grid, seeds))
        .collect()
}

/// One grid as `grid/<name>.json` holds it.
fn results(store: &FeatureStore, grid: SeedGrid, seeds: &[u64]) -> Result<Results> {
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
        a: spec.a,
        b: spec.b,
        estimator: spec.estimator.name().into(),
        seeds: seeds.to_vec(),
        n_prompts: store.manifest.prompts.len(),
        taps: spec.rows,
        ts: spec.ts,
        steps: spec.steps,
        mean,
        se,
    })
}

#[cfg(test)]
mod tests {
    use flowlens_core::store::StoreName;

    use super::*;
    use crate::grid::synthetic::{SyntheticStore, write_run};

    /// A store of `taps` (width 6) over 8 prompts, 3 steps, seeds 0 and 1.
    fn store(dir: &std::path::Path, taps: &[&str]) -> FeatureStore {
        let s = SyntheticStore {
            store: "probes-test".into(),
            taps: taps.iter().map(|t| t.to_string()).collect(),
            steps: 3,
            seeds: vec![0, 1],
            prompts: 8,
            width: 6,
        };
        write_run(dir, &s).unwrap();
        FeatureStore::open(dir, &StoreName::new(&s.store).unwrap()).unwrap()
    }

    const TAPS: [&str; 5] = [
        "enc.noise",
        "enc.text",
        "llm.h01.image",
        "llm.h02.image",
        "dec.input",
    ];

    #[test]
    fn row_taps_take_a_list_or_a_pattern_and_name_an_unknown_tap() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), &TAPS);
        assert_eq!(row_taps(&s, "enc.noise").unwrap(), ["enc.noise"]);
        assert_eq!(
            row_taps(&s, "enc.text, enc.noise").unwrap(),
            ["enc.text", "enc.noise"],
            "a list keeps its order"
        );
        assert_eq!(row_taps(&s, "enc.*").unwrap(), ["enc.noise", "enc.text"]);
        assert_eq!(
            row_taps(&s, "dec.input,enc.*,enc.text").unwrap(),
            ["dec.input", "enc.noise", "enc.text"],
            "each tap once"
        );
        let err = row_taps(&s, "enc.noise,enc.nosie").unwrap_err().to_string();
        assert!(
            err.contains("enc.nosie") && err.contains("enc.text"),
            "{err}"
        );
        let err = row_taps(&s, "vae.*").unwrap_err().to_string();
        assert!(err.contains("vae.*"), "{err}");
        assert!(row_taps(&s, " , ").is_err());
    }

    #[test]
    fn several_row_taps_give_the_single_row_grids_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), &TAPS);
        let est = Estimator::Debiased;
        let both = analyse(&s, "enc.noise,enc.text", "llm.h*.image", est, &[0, 1]).unwrap();
        assert_eq!(both.len(), 2);
        for (r, a) in both.iter().zip(["enc.noise", "enc.text"]) {
            let single = analyse(&s, a, "llm.h*.image", est, &[0, 1]).unwrap();
            assert_eq!(single.len(), 1);
            assert_eq!(r, &single[0], "{a}: the multi-row grid differs");
            assert_eq!(r.a, a);
            assert_eq!(r.taps, ["llm.h01.image", "llm.h02.image"]);
            assert_eq!(r.format, "flowlens.grid.v1");
        }
        // A tap that is a row and a column is left out of its own grid only.
        let enc = analyse(&s, "enc.*", "enc.*", est, &[0]).unwrap();
        assert_eq!(enc[0].taps, ["enc.text"]);
        assert_eq!(enc[1].taps, ["enc.noise"]);
        for (x, y) in enc[0].mean[0].iter().zip(&enc[1].mean[0]) {
            assert!((x - y).abs() < 1e-12, "CKA is symmetric: {x} vs {y}");
        }
    }
}
