//! CKA read-outs of a run's feature store for the dashboard and the explorer: the tap x
//! solver-step grid of one tap against a family of taps (`enc.noise` vs `llm.h*.image`), mean and
//! SE over seeds, computed by the analysis crate's [`SeedGrid`] (as `flowlens grid` computes it)
//! from whatever probe files are on disk so far (cells fill in as batches land); the Delta grid
//! of two runs; AUC and time-to-threshold of a row; the permutation null and mutual k-NN
//! drill-down of one cell; the streaming CKA of `flowlens sample --cka-pairs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::curves::{CurveSummary, summarise_curves};
use flowlens_analysis::grid::{GridSpec, SeedGrid};
use flowlens_analysis::knn::{MutualKnn, mutual_knn};
use flowlens_analysis::stats::{GramPair, PermutationNull, permutation_null};
use flowlens_core::store::{FeatureStore, LiveCkaSnapshot, Seeds, StoreName, StorePaths};
use ndarray::Array2;

/// What a grid shows.
#[derive(Debug, Clone, PartialEq)]
pub struct GridQuery {
    pub run: PathBuf,
    /// Feature store folder name (`probes`, `probes-exp1`, ...).
    pub store: String,
    pub a: String,
    /// A tap name or pattern: one grid row per matching tap (`llm.h*.text`).
    pub b: String,
    pub estimator: Estimator,
    /// Seeds to include (empty: every seed found).
    pub seeds: Vec<u64>,
}

/// A grid of one query: the per-seed cells and the store's prompts.
#[derive(Debug, Clone)]
pub struct Grid {
    pub query: GridQuery,
    pub cells: SeedGrid,
    pub prompts: Vec<String>,
}

impl std::ops::Deref for Grid {
    type Target = SeedGrid;
    fn deref(&self) -> &SeedGrid {
        &self.cells
    }
}

/// The paths of the store `store` of `run` (a name that is no store's gives paths that never
/// exist, so the views show their "missing" state).
pub fn store_paths(run: &Path, store: &str) -> StorePaths {
    StorePaths::new(
        run,
        StoreName::new(store).unwrap_or_else(|_| StoreName::sample()),
    )
}

/// Opens `run/store`.
pub fn open_store(run: &Path, store: &str) -> Result<FeatureStore> {
    Ok(FeatureStore::open(run, &StoreName::new(store)?)?)
}

fn read_tap(store: &FeatureStore, tap: &str, seed: u64, step: usize) -> Result<Array2<f64>> {
    let f = store.read(tap, seed, step, Seeds::Partial)?;
    Ok(Array2::from_shape_vec((f.rows, f.width), f.values)?)
}

/// Computes the grid from the files present, reusing the cells of `previous` (same query) that
/// already hold a seed.
pub fn compute_grid(query: &GridQuery, previous: Option<&Grid>) -> Result<Grid> {
    let store = open_store(&query.run, &query.store)?;
    let rows = store.grid_rows(&query.a, &query.b)?;
    let steps = store.written_steps();
    let mut seeds: Vec<u64> = if query.seeds.is_empty() {
        let mut s: BTreeSet<u64> = store.manifest.seeds.iter().copied().collect();
        s.extend(store.present(&query.a).iter().map(|(s, _)| *s));
        s.into_iter().collect()
    } else {
        query.seeds.clone()
    };
    seeds.sort_unstable();
    let spec = GridSpec {
        a: query.a.clone(),
        b: query.b.clone(),
        rows,
        ts: steps.iter().map(|&s| store.time(s)).collect(),
        steps,
        seeds,
        estimator: query.estimator,
    };
    let previous = previous.filter(|p| p.query == *query).map(|p| &p.cells);
    let cells = SeedGrid::compute(
        spec,
        |tap| store.present(tap),
        |tap, seed, step| read_tap(&store, tap, seed, step),
        previous,
    )?;
    Ok(Grid {
        query: query.clone(),
        cells,
        prompts: store.manifest.prompts.clone(),
    })
}

/// `ours - baseline` per cell: per-seed differences where both grids have the seed (mean and
/// SE over them), rows matched by name and steps by number.
pub fn delta(ours: &Grid, baseline: &Grid) -> Grid {
    let mut out = ours.clone();
    out.cells = ours.cells.delta(&baseline.cells);
    out.query.run = PathBuf::from(format!(
        "{} - {}",
        ours.query.run.display(),
        baseline.query.run.display()
    ));
    out
}

/// Details of one cell: the permutation-null floor and the mutual k-NN neighbours of each prompt
/// (first seed of the grid).
#[derive(Debug, Clone)]
pub struct CellDetail {
    pub row: String,
    pub step: usize,
    pub seed: u64,
    pub null: Option<PermutationNull>,
    /// The 95 % bootstrap interval over prompts (as many resamples as permutations).
    pub interval: Option<flowlens_analysis::stats::Interval>,
    pub knn: Option<MutualKnn>,
    pub prompts: Vec<String>,
    /// The sampled image of each prompt for this seed, when saved.
    pub images: Vec<Option<PathBuf>>,
}

pub fn cell_detail(
    query: &GridQuery,
    row: &str,
    step: usize,
    seed: u64,
    k: usize,
    permutations: usize,
) -> Result<CellDetail> {
    let store = open_store(&query.run, &query.store)?;
    let x = read_tap(&store, &query.a, seed, step)?;
    let y = read_tap(&store, row, seed, step)?;
    let n = x.nrows();
    let (null, interval) = if permutations > 0 && n >= 4 {
        let pair = GramPair::new(x.view(), y.view())?;
        let null = permutation_null(&pair, query.estimator, permutations, 0.95, seed)?;
        let interval = flowlens_analysis::stats::bootstrap_ci(
            &pair,
            query.estimator,
            permutations,
            0.95,
            seed,
        )
        .ok();
        (Some(null), interval)
    } else {
        (None, None)
    };
    let knn = if n >= 2 {
        Some(mutual_knn(x.view(), y.view(), k.clamp(1, n - 1))?)
    } else {
        None
    };
    let images = (0..n)
        .map(|i| Some(store.sample_png(seed, i)).filter(|p| p.is_file()))
        .collect();
    Ok(CellDetail {
        row: row.to_string(),
        step,
        seed,
        null,
        interval,
        knn,
        prompts: store.manifest.prompts.clone(),
        images,
    })
}

/// AUC over normalised time and the time-to-threshold of one grid row, mean +- SE over seeds.
pub fn row_summary(grid: &SeedGrid, row: usize, threshold: f64) -> Result<CurveSummary> {
    let (ts, curves) = grid.row_curves(row);
    if ts.len() < 2 {
        bail!("the row has fewer than two complete solver steps yet");
    }
    Ok(summarise_curves(&ts, &curves, threshold)?)
}

/// The streaming accumulators of `flowlens sample --cka-pairs` (`<store>/cka_live.json`,
/// rewritten after every batch): one row per pair, one column per solver step.
#[derive(Debug, Clone)]
pub struct LiveCka {
    pub path: PathBuf,
    pub rows: Vec<String>,
    pub steps: Vec<usize>,
    pub values: flowlens_analysis::cka::PerEstimator<Array2<f64>>,
    /// SE over seeds per cell (NaN below two seeds).
    pub se: flowlens_analysis::cka::PerEstimator<Array2<f64>>,
    /// Rows (prompts) of the fullest seed per cell.
    pub n: Array2<f64>,
    /// Seeds per cell.
    pub seeds: Array2<f64>,
    pub updates: u64,
}

impl LiveCka {
    pub fn values(&self, estimator: Estimator) -> &Array2<f64> {
        self.values.get(estimator)
    }

    pub fn se(&self, estimator: Estimator) -> &Array2<f64> {
        self.se.get(estimator)
    }
}

pub fn read_live(path: &Path) -> Result<LiveCka> {
    let snapshot = LiveCkaSnapshot::read(path)?;
    let rows = snapshot
        .pairs
        .iter()
        .map(|p| format!("{} vs {}", p.a, p.b))
        .collect();
    let steps: Vec<usize> = snapshot
        .pairs
        .iter()
        .flat_map(|p| p.steps.iter().map(|s| s.step))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let shape = (snapshot.pairs.len(), steps.len());
    let at = |r: usize, c: usize, f: fn(&flowlens_core::store::LiveStep) -> f64| {
        snapshot.pairs[r]
            .steps
            .iter()
            .find(|s| s.step == steps[c])
            .map_or(f64::NAN, f)
    };
    Ok(LiveCka {
        path: path.to_path_buf(),
        values: flowlens_analysis::cka::PerEstimator::new(
            Array2::from_shape_fn(shape, |(r, c)| at(r, c, |s| s.biased.unwrap_or(f64::NAN))),
            Array2::from_shape_fn(shape, |(r, c)| at(r, c, |s| s.debiased.unwrap_or(f64::NAN))),
        ),
        se: flowlens_analysis::cka::PerEstimator::new(
            Array2::from_shape_fn(shape, |(r, c)| {
                at(r, c, |s| s.biased_se.unwrap_or(f64::NAN))
            }),
            Array2::from_shape_fn(shape, |(r, c)| {
                at(r, c, |s| s.debiased_se.unwrap_or(f64::NAN))
            }),
        ),
        n: Array2::from_shape_fn(shape, |(r, c)| at(r, c, |s| s.n as f64)),
        seeds: Array2::from_shape_fn(shape, |(r, c)| at(r, c, |s| s.seeds.len() as f64)),
        rows,
        steps,
        updates: snapshot.updates as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn delta_pairs_seeds_and_is_zero_against_itself() {
        let q = GridQuery {
            run: "a".into(),
            store: "probes".into(),
            a: "enc.text".into(),
            b: "llm.h*".into(),
            estimator: Estimator::Debiased,
            seeds: vec![],
        };
        let cell = |v: f64| BTreeMap::from([(0u64, v), (1u64, v + 0.1)]);
        let g = Grid {
            cells: SeedGrid {
                spec: GridSpec {
                    a: q.a.clone(),
                    b: q.b.clone(),
                    rows: vec!["llm.h01".into()],
                    steps: vec![0, 1],
                    ts: vec![0.0, 0.5],
                    seeds: vec![0, 1],
                    estimator: q.estimator,
                },
                values: vec![vec![cell(0.2), cell(0.4)]],
                complete_cells: 2,
            },
            query: q,
            prompts: vec![],
        };
        let d = delta(&g, &g);
        assert!(d.mean().iter().all(|v| v.abs() < 1e-12));
        let mut other = g.clone();
        other.cells.values[0][1] = BTreeMap::from([(1u64, 0.0)]);
        let d = delta(&g, &other);
        let s = d.summary(0, 1).unwrap();
        assert_eq!(s.n, 1, "only the seed both runs have");
        assert!((s.mean - 0.5).abs() < 1e-12);
    }
}
