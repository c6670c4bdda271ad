//! CKA read-outs of a run's feature store for the dashboard and the explorer: the tap x solver-step
//! grid of one tap against a family of taps (`enc.noise` vs `llm.h*.image`), mean and SE over
//! seeds, computed from whatever probe files are on disk so far (cells fill in as batches land);
//! the Delta grid of two runs; the permutation-null floor, AUC and time-to-threshold of a row; and
//! the mutual k-NN drill-down of one cell. Numbers come from the analysis crate, as in
//! `flowlens grid` and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::curves::{CurveSummary, summarise_curves};
use flowlens_analysis::grid::one_against_many;
use flowlens_analysis::knn::{MutualKnn, mutual_knn};
use flowlens_analysis::stats::{GramPair, PermutationNull, Summary, permutation_null};
use flowlens_experiments::probes::Store;
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

/// A tap x step grid; `values[row][col]` maps seed -> CKA for the files present.
#[derive(Debug, Clone)]
pub struct Grid {
    pub query: GridQuery,
    pub rows: Vec<String>,
    pub steps: Vec<usize>,
    pub ts: Vec<f64>,
    pub seeds: Vec<u64>,
    pub values: Vec<Vec<BTreeMap<u64, f64>>>,
    pub prompts: Vec<String>,
    /// Cells that have every requested seed.
    pub complete_cells: usize,
}

impl Grid {
    /// Mean / sd / SE over the seeds present in a cell.
    pub fn summary(&self, row: usize, col: usize) -> Option<Summary> {
        let v: Vec<f64> = self.values.get(row)?.get(col)?.values().copied().collect();
        Summary::of(&v).ok()
    }

    pub fn mean(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.rows.len(), self.steps.len()), |(r, c)| {
            self.summary(r, c).map_or(f64::NAN, |s| s.mean)
        })
    }

    pub fn total_cells(&self) -> usize {
        self.rows.len() * self.steps.len()
    }

    /// `curves[seed][col]` of one row over the steps every seed has (for AUC and crossings).
    pub fn row_curves(&self, row: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
        let cols: Vec<usize> = (0..self.steps.len())
            .filter(|&c| {
                self.seeds
                    .iter()
                    .all(|s| self.values[row][c].contains_key(s))
            })
            .collect();
        let ts = cols.iter().map(|&c| self.ts[c]).collect();
        let curves = self
            .seeds
            .iter()
            .map(|s| cols.iter().map(|&c| self.values[row][c][s]).collect())
            .collect();
        (ts, curves)
    }
}

/// Seeds and steps with a probe file of `tap` on disk (also for a seed still being sampled).
fn files_present(store: &Store, tap: &str) -> BTreeSet<(u64, usize)> {
    let Ok(entries) = std::fs::read_dir(store.dir.join(tap)) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("seed")?.strip_suffix(".npy")?;
            let (seed, step) = rest.split_once("_step")?;
            Some((seed.parse().ok()?, step.parse().ok()?))
        })
        .collect()
}

fn read_tap(store: &Store, tap: &str, seed: u64, step: usize) -> Result<Array2<f64>> {
    let path = store.path(tap, seed, step);
    let x = flowlens_experiments::io::read_matrix(&path)?;
    let n = store.manifest.prompts.len();
    if x.nrows() != n {
        bail!(
            "{}: {} rows, the store has {n} prompts",
            path.display(),
            x.nrows()
        );
    }
    Ok(x)
}

/// Opens `run/store`.
pub fn open_store(run: &Path, store: &str) -> Result<Store> {
    Store::open(&run.join(store))
}

/// Computes the grid from the files present, reusing the cells of `previous` (same query) that
/// already hold a seed.
pub fn compute_grid(query: &GridQuery, previous: Option<&Grid>) -> Result<Grid> {
    let store = open_store(&query.run, &query.store)?;
    if !store.manifest.taps.contains_key(&query.a) {
        bail!(
            "{}: no tap `{}` (the store has {})",
            store.dir.display(),
            query.a,
            store.tap_list()
        );
    }
    let rows: Vec<String> = store
        .taps_matching(&query.b)
        .into_iter()
        .filter(|t| t != &query.a)
        .collect();
    if rows.is_empty() {
        bail!(
            "{}: no tap matches `{}` (the store has {})",
            store.dir.display(),
            query.b,
            store.tap_list()
        );
    }
    let steps: Vec<usize> = (0..store.manifest.steps)
        .filter(|&s| store.has_step(s))
        .collect();
    let ts = steps
        .iter()
        .map(|&s| {
            store
                .manifest
                .times
                .get(s)
                .map_or(s as f64 / store.manifest.steps as f64, |&t| t as f64)
        })
        .collect();
    let present_a = files_present(&store, &query.a);
    let mut seeds: Vec<u64> = if query.seeds.is_empty() {
        let mut s: BTreeSet<u64> = store.manifest.seeds.iter().copied().collect();
        s.extend(present_a.iter().map(|(s, _)| *s));
        s.into_iter().collect()
    } else {
        query.seeds.clone()
    };
    seeds.sort_unstable();
    let reuse = previous.filter(|p| p.query == *query && p.rows == rows && p.steps == steps);
    let mut values = vec![vec![BTreeMap::new(); steps.len()]; rows.len()];
    let present_b: Vec<BTreeSet<(u64, usize)>> =
        rows.iter().map(|t| files_present(&store, t)).collect();
    for (c, &step) in steps.iter().enumerate() {
        for &seed in &seeds {
            // Rows to compute at (step, seed): not reused, with both files on disk. A is read and
            // prepared once for all of them.
            let mut todo = Vec::new();
            for r in 0..rows.len() {
                if let Some(v) = reuse.and_then(|p| p.values[r][c].get(&seed)) {
                    values[r][c].insert(seed, *v);
                } else if present_a.contains(&(seed, step)) && present_b[r].contains(&(seed, step))
                {
                    todo.push(r);
                }
            }
            if todo.is_empty() {
                continue;
            }
            let x = read_tap(&store, &query.a, seed, step)?;
            let ys = todo
                .iter()
                .map(|&r| read_tap(&store, &rows[r], seed, step))
                .collect::<Result<Vec<_>>>()?;
            let views: Vec<_> = ys.iter().map(|y| y.view()).collect();
            let cka = one_against_many(x.view(), &views, query.estimator).with_context(|| {
                format!("CKA({}, {}) at step {step}, seed {seed}", query.a, query.b)
            })?;
            for (&r, v) in todo.iter().zip(cka) {
                values[r][c].insert(seed, v);
            }
        }
    }
    let complete_cells = values
        .iter()
        .flatten()
        .filter(|cell| seeds.iter().all(|s| cell.contains_key(s)))
        .count();
    Ok(Grid {
        query: query.clone(),
        rows,
        steps,
        ts,
        seeds,
        values,
        prompts: store.manifest.prompts.clone(),
        complete_cells,
    })
}

/// `ours - baseline` per cell: per-seed differences where both grids have the seed (mean and
/// SE over them), rows matched by name and steps by number.
pub fn delta(ours: &Grid, baseline: &Grid) -> Grid {
    let mut out = ours.clone();
    for (r, row) in ours.rows.iter().enumerate() {
        let br = baseline.rows.iter().position(|x| x == row);
        for (c, step) in ours.steps.iter().enumerate() {
            let bc = baseline.steps.iter().position(|x| x == step);
            out.values[r][c] = match (br, bc) {
                (Some(br), Some(bc)) => ours.values[r][c]
                    .iter()
                    .filter_map(|(s, v)| baseline.values[br][bc].get(s).map(|b| (*s, v - b)))
                    .collect(),
                _ => BTreeMap::new(),
            };
        }
    }
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
    pub knn: Option<MutualKnn>,
    pub prompts: Vec<String>,
    /// The sampled image of each prompt for this seed, when saved.
    pub images: Vec<Option<PathBuf>>,
}

/// Where a store keeps the images of `seed` (`samples/seed<S>/` for `probes`, else
/// `<store>/samples/seed<S>/`).
pub fn samples_dir(run: &Path, store: &str, seed: u64) -> PathBuf {
    if store == "probes" {
        run.join("samples").join(format!("seed{seed}"))
    } else {
        run.join(store).join("samples").join(format!("seed{seed}"))
    }
}

/// The file name of prompt `i`'s sampled image in a samples folder (`0007.png`).
pub fn sample_file(i: usize) -> String {
    format!("{i:04}.png")
}

/// The trajectory frame of prompt `i` at solver step `step` (written by `--previews`).
pub fn preview_path(run: &Path, store: &str, seed: u64, prompt: usize, step: usize) -> PathBuf {
    samples_dir(run, store, seed)
        .join("xt")
        .join(format!("{prompt:04}_step{step:02}.png"))
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
    let null = if permutations > 0 && n >= 4 {
        let pair = GramPair::new(x.view(), y.view())?;
        Some(permutation_null(
            &pair,
            query.estimator,
            permutations,
            0.95,
            seed,
        )?)
    } else {
        None
    };
    let knn = if n >= 2 {
        Some(mutual_knn(x.view(), y.view(), k.clamp(1, n - 1))?)
    } else {
        None
    };
    let dir = samples_dir(&query.run, &query.store, seed);
    let images = (0..n)
        .map(|i| Some(dir.join(sample_file(i))).filter(|p| p.is_file()))
        .collect();
    Ok(CellDetail {
        row: row.to_string(),
        step,
        seed,
        null,
        knn,
        prompts: store.manifest.prompts.clone(),
        images,
    })
}

/// AUC over normalised time and the time-to-threshold of one grid row, mean +- SE over seeds.
pub fn row_summary(grid: &Grid, row: usize, threshold: f64) -> Result<CurveSummary> {
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
    pub biased: Array2<f64>,
    pub debiased: Array2<f64>,
    /// Rows seen per cell.
    pub n: Array2<f64>,
    pub updates: u64,
}

impl LiveCka {
    pub fn values(&self, estimator: Estimator) -> &Array2<f64> {
        match estimator {
            Estimator::Biased => &self.biased,
            Estimator::Debiased => &self.debiased,
        }
    }
}

pub fn read_live(path: &Path) -> Result<LiveCka> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if v.get("format").and_then(|f| f.as_str()) != Some("flowlens.cka_live.v1") {
        bail!("{}: not a flowlens.cka_live.v1 file", path.display());
    }
    let pairs = v
        .get("pairs")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut cells: Vec<BTreeMap<usize, (f64, f64, f64)>> = Vec::new();
    let mut steps = BTreeSet::new();
    for p in &pairs {
        let name = |k: &str| p.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
        rows.push(format!("{} vs {}", name("a"), name("b")));
        let mut row = BTreeMap::new();
        for s in p
            .get("steps")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default()
        {
            let Some(step) = s.get("step").and_then(|x| x.as_u64()) else {
                continue;
            };
            let num = |k: &str| s.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
            row.insert(step as usize, (num("biased"), num("debiased"), num("n")));
            steps.insert(step as usize);
        }
        cells.push(row);
    }
    let steps: Vec<usize> = steps.into_iter().collect();
    let at = |r: usize, c: usize, f: fn(&(f64, f64, f64)) -> f64| {
        cells[r].get(&steps[c]).map_or(f64::NAN, f)
    };
    let shape = (rows.len(), steps.len());
    Ok(LiveCka {
        path: path.to_path_buf(),
        biased: Array2::from_shape_fn(shape, |(r, c)| at(r, c, |x| x.0)),
        debiased: Array2::from_shape_fn(shape, |(r, c)| at(r, c, |x| x.1)),
        n: Array2::from_shape_fn(shape, |(r, c)| at(r, c, |x| x.2)),
        rows,
        steps,
        updates: v.get("updates").and_then(|u| u.as_u64()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            query: q,
            rows: vec!["llm.h01".into()],
            steps: vec![0, 1],
            ts: vec![0.0, 0.5],
            seeds: vec![0, 1],
            values: vec![vec![cell(0.2), cell(0.4)]],
            prompts: vec![],
            complete_cells: 2,
        };
        let d = delta(&g, &g);
        assert!(d.mean().iter().all(|v| v.abs() < 1e-12));
        let mut other = g.clone();
        other.values[0][1] = BTreeMap::from([(1u64, 0.0)]);
        let d = delta(&g, &other);
        let s = d.summary(0, 1).unwrap();
        assert_eq!(s.n, 1, "only the seed both runs have");
        assert!((s.mean - 0.5).abs() < 1e-12);
    }
}
