//! Many CKA pairs at once (taps x solver steps), with the per-tap work done once.
//!
//! Each tap's features are reduced once to what every pair needs: its centred Gram matrix
//! `K = Xc Xc^T` (when n <= d: the paper's n = 2000 prompts against 2048-d taps) or its centred
//! features (when n > d), plus the diagonal `a_i = K_ii` and `<K, K>`. A pair of Grams is then one
//! dot product of the packed lower triangles (`<K_i, L_j>`, every row tap against a column tap
//! in one pass over the column's Gram); a pair in the feature representation is
//! `|Xc_i^T Yc_j|_F^2`. Every value depends on its own pair only, so a grid of more taps gives
//! the same bits. Taps are prepared side by side on the pool's threads, each Gram product on
//! one thread (faster than every Gram on every thread: docs/PERFORMANCE.md).
//!
//! [`SeedGrid`] is the tap x solver-step grid of one tap against a family of taps, one value per
//! sampling seed per cell, computed from whatever features are available so far and reusing the
//! cells of a previous computation: the one computation behind `flowlens grid` and the app.
//! [`SeedGrid::compute_many`] computes several such grids (several row taps) together, reading
//! and preparing every tap once per (step, seed).

use std::collections::{BTreeMap, BTreeSet};

use faer::Par;
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::cka::{self, CkaTerms, Estimator, check_finite};
use crate::error::{AnalysisError, Result};
use crate::linalg;
use crate::stats::Summary;

/// One tap, reduced for pairing.
#[derive(Debug, Clone)]
pub struct PreparedTap {
    pub name: String,
    repr: Repr,
    own: OwnTerms,
}

/// What a tap contributes to every pair besides `<K, L>`.
#[derive(Debug, Clone)]
struct OwnTerms {
    n: usize,
    /// `a_i = |xc_i|^2`
    diag: Vec<f64>,
    /// `<K, K>`
    kk: f64,
}

impl OwnTerms {
    fn with(&self, other: &OwnTerms, kl: f64) -> CkaTerms {
        let a = &self.diag;
        let b = &other.diag;
        CkaTerms {
            n: self.n,
            kl,
            kk: self.kk,
            ll: other.kk,
            sum_a: a.iter().sum(),
            sum_b: b.iter().sum(),
            sum_ab: a.iter().zip(b).map(|(x, y)| x * y).sum(),
            sum_aa: a.iter().map(|x| x * x).sum(),
            sum_bb: b.iter().map(|x| x * x).sum(),
        }
    }
}

#[derive(Debug, Clone)]
enum Repr {
    /// Centred Gram, packed lower triangle ([`linalg::pack_symmetric`]: dot products of packed
    /// Grams are Frobenius inner products).
    Gram(Vec<f64>),
    /// Centred features `[n, d]`.
    Features(Array2<f64>),
}

impl PreparedTap {
    /// Centres the features and builds the cheaper representation (its products on every
    /// thread).
    pub fn new(name: impl Into<String>, x: ArrayView2<f64>) -> Result<Self> {
        let name = name.into();
        check_finite(x, &name)?;
        Self::from_centred(name, cka::centred(x), linalg::par())
    }

    /// [`PreparedTap::new`] of features handed over (centred in place), its products on `par`.
    fn from_owned(name: String, mut x: Array2<f64>, par: Par) -> Result<Self> {
        cka::centre_finite(&mut x, &name)?;
        Self::from_centred(name, x, par)
    }

    fn from_centred(name: String, xc: Array2<f64>, par: Par) -> Result<Self> {
        let n = xc.nrows();
        let diag = cka::row_sq_norms(xc.view());
        let (repr, kk) = if n <= xc.ncols() {
            let packed = linalg::packed_gram_on(xc.view(), par);
            let kk = linalg::dot(&packed, &packed);
            (Repr::Gram(packed), kk)
        } else {
            let c = linalg::cross_gram_on(xc.view(), par);
            let kk = c.iter().map(|v| v * v).sum();
            (Repr::Features(xc), kk)
        };
        Ok(Self {
            name,
            repr,
            own: OwnTerms { n, diag, kk },
        })
    }

    pub fn n(&self) -> usize {
        self.own.n
    }
}

/// `prepare` of every item, side by side on the pool's threads, one item per task, results in
/// order. Each item's products run on its own thread (`Par::Seq`): measured faster than each
/// Gram on every thread, one after the other or nested (docs/PERFORMANCE.md).
fn side_by_side<T: Sync, R: Send>(items: &[T], prepare: impl Fn(&T, Par) -> R + Sync) -> Vec<R> {
    items
        .par_iter()
        .with_max_len(1)
        .map(|item| prepare(item, Par::Seq))
        .collect()
}

/// Prepares many taps side by side (see [`side_by_side`]).
pub fn prepare_taps(taps: &[(String, ArrayView2<f64>)]) -> Result<Vec<PreparedTap>> {
    side_by_side(taps, |(name, x), par| {
        check_finite(*x, name)?;
        PreparedTap::from_centred(name.clone(), cka::centred(*x), par)
    })
    .into_iter()
    .collect()
}

/// An error unless every tap has the same samples.
fn check_samples<'a>(taps: impl IntoIterator<Item = &'a PreparedTap>) -> Result<()> {
    let mut taps = taps.into_iter();
    let Some(first) = taps.next() else {
        return Ok(());
    };
    let n = first.n();
    if let Some(t) = taps.find(|t| t.n() != n) {
        return Err(AnalysisError::Shape {
            what: format!("tap `{}`", t.name),
            reason: format!(
                "has {} samples, `{}` has {n}; taps must pair the same samples",
                t.n(),
                first.name
            ),
        });
    }
    Ok(())
}

/// `<K_i, L>` of each row tap against one column tap: the Gram rows in one pass over the
/// column's packed Gram ([`linalg::dots`]), any other pair by [`cross_frob`].
fn column_products(rows: &[&PreparedTap], col: &PreparedTap) -> Vec<f64> {
    let mut out = vec![0.0; rows.len()];
    let grams: Vec<(usize, &[f64])> = match &col.repr {
        Repr::Gram(_) => rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.repr {
                Repr::Gram(k) => Some((i, k.as_slice())),
                Repr::Features(_) => None,
            })
            .collect(),
        Repr::Features(_) => Vec::new(),
    };
    if let Repr::Gram(l) = &col.repr {
        let packed: Vec<&[f64]> = grams.iter().map(|(_, k)| *k).collect();
        for ((i, _), v) in grams.iter().zip(linalg::dots(&packed, l)) {
            out[*i] = v;
        }
    }
    for (i, r) in rows.iter().enumerate() {
        if !grams.iter().any(|(g, _)| *g == i) {
            out[i] = cross_frob(r, col);
        }
    }
    out
}

/// The sufficient statistics of every (row tap, column tap) pair: `[rows.len(), cols.len()]`.
pub fn pair_terms(rows: &[PreparedTap], cols: &[PreparedTap]) -> Result<Vec<Vec<CkaTerms>>> {
    check_samples(rows.iter().chain(cols))?;
    let row_refs: Vec<&PreparedTap> = rows.iter().collect();
    // kl[j][i] = <K_i, L_j>
    let kl: Vec<Vec<f64>> = cols
        .par_iter()
        .map(|c| column_products(&row_refs, c))
        .collect();
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            cols.iter()
                .enumerate()
                .map(|(j, c)| r.own.with(&c.own, kl[j][i]))
                .collect()
        })
        .collect())
}

/// `<K, L>` for a pair where at least one side keeps features.
fn cross_frob(x: &PreparedTap, y: &PreparedTap) -> f64 {
    match (&x.repr, &y.repr) {
        (Repr::Features(a), Repr::Features(b)) => {
            linalg::at_b(a.view(), b.view()).iter().map(|v| v * v).sum()
        }
        (Repr::Gram(k), Repr::Features(b)) | (Repr::Features(b), Repr::Gram(k)) => {
            // <K, Yc Yc^T> = tr(Yc^T K Yc) = sum((K Yc) .* Yc)
            let n = b.nrows();
            let k = linalg::unpack_symmetric(k, n);
            let ky = linalg::a_b(k.view(), b.view());
            ky.iter().zip(b.iter()).map(|(p, q)| p * q).sum()
        }
        (Repr::Gram(k), Repr::Gram(l)) => linalg::dot(k, l),
    }
}

/// A CKA grid: `values[i][j]` for row tap i and column tap j.
pub fn cka_grid(
    rows: &[PreparedTap],
    cols: &[PreparedTap],
    estimator: Estimator,
) -> Result<Array2<f64>> {
    let terms = pair_terms(rows, cols)?;
    let mut out = Array2::zeros((rows.len(), cols.len()));
    for (i, row) in terms.iter().enumerate() {
        for (j, t) in row.iter().enumerate() {
            out[[i, j]] = t.value(estimator, &rows[i].name, &cols[j].name)?;
        }
    }
    Ok(out)
}

/// What a [`SeedGrid`] pairs: the row tap `a` against each of `rows` (the taps matching the
/// pattern `b`), at `steps` (times `ts`), for `seeds`.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    pub a: String,
    /// The pattern the rows came from (for messages).
    pub b: String,
    pub rows: Vec<String>,
    pub steps: Vec<usize>,
    pub ts: Vec<f64>,
    pub seeds: Vec<u64>,
    pub estimator: Estimator,
}

/// A tap x step grid; `values[row][col]` maps seed -> CKA for the features available.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedGrid {
    pub spec: GridSpec,
    pub values: Vec<Vec<BTreeMap<u64, f64>>>,
    /// Cells that have every requested seed.
    pub complete_cells: usize,
}

/// Consecutive (step, seed) units computed together: with two units in flight an odd tap count
/// (2 streams + 23 layers) still keeps both threads busy to the end.
const UNITS_PER_BATCH: usize = 2;

/// The work of one (step, seed).
struct Unit {
    step: usize,
    seed: u64,
    /// `(grid, col, rows)`: per grid, its column index and the rows to compute.
    jobs: Vec<(usize, usize, Vec<usize>)>,
    /// The row taps (each grid's `a`), each once.
    rows: Vec<String>,
    /// Each column tap once, with the row taps (indices into `rows`) it pairs with.
    cols: Vec<(String, Vec<usize>)>,
}

/// A column tap once its products with the row taps are known: its Gram is no longer needed.
struct PairedColumn {
    own: OwnTerms,
    /// `<K_i, L>` for each of the unit's row taps it pairs with.
    kl: Vec<f64>,
}

impl Unit {
    /// The jobs of one (step, seed) of `specs`; `values` receives the reused cells.
    fn new(
        specs: &[GridSpec],
        (step, seed): (usize, u64),
        has: impl Fn(&str) -> bool,
        reuse: &[Option<&SeedGrid>],
        values: &mut [Vec<Vec<BTreeMap<u64, f64>>>],
    ) -> Self {
        let mut unit = Unit {
            step,
            seed,
            jobs: Vec::new(),
            rows: Vec::new(),
            cols: Vec::new(),
        };
        for (g, s) in specs.iter().enumerate() {
            let Some(c) = s.steps.iter().position(|&k| k == step) else {
                continue;
            };
            if !s.seeds.contains(&seed) {
                continue;
            }
            // Rows to compute: not reused, with both features present.
            let mut todo = Vec::new();
            for (r, row) in s.rows.iter().enumerate() {
                if let Some(v) = reuse[g].and_then(|p| p.values[r][c].get(&seed)) {
                    values[g][r][c].insert(seed, *v);
                } else if has(&s.a) && has(row) {
                    todo.push(r);
                }
            }
            if todo.is_empty() {
                continue;
            }
            let a = match unit.rows.iter().position(|t| *t == s.a) {
                Some(i) => i,
                None => {
                    unit.rows.push(s.a.clone());
                    unit.rows.len() - 1
                }
            };
            for &r in &todo {
                match unit.cols.iter_mut().find(|(t, _)| *t == s.rows[r]) {
                    Some((_, wants)) if !wants.contains(&a) => wants.push(a),
                    Some(_) => {}
                    None => unit.cols.push((s.rows[r].clone(), vec![a])),
                }
            }
            unit.jobs.push((g, c, todo));
        }
        unit
    }

    /// `what at step k, seed s`.
    fn context(&self, what: impl std::fmt::Display) -> String {
        format!("{what} at step {}, seed {}", self.step, self.seed)
    }

    /// Column tap `col` paired with the row taps it wants: prepared here (or taken from the
    /// row taps when it is one), its products computed, its Gram dropped.
    fn pair_column<E: From<AnalysisError>>(
        &self,
        (col, wants): &(String, Vec<usize>),
        rows: &[PreparedTap],
        load: impl FnOnce() -> std::result::Result<PreparedTap, E>,
    ) -> std::result::Result<PairedColumn, E> {
        let loaded;
        let tap = match rows.iter().find(|r| r.name == *col) {
            Some(r) => r,
            None => {
                loaded = load()?;
                &loaded
            }
        };
        let wanted: Vec<&PreparedTap> = wants.iter().map(|&i| &rows[i]).collect();
        check_samples(wanted.iter().copied().chain([tap]))
            .map_err(|e| e.within(self.context("pairing")))?;
        Ok(PairedColumn {
            kl: column_products(&wanted, tap),
            own: tap.own.clone(),
        })
    }

    /// The values of every job, `(grid, col, [(row, value)])`.
    #[allow(clippy::type_complexity)]
    fn values(
        &self,
        specs: &[GridSpec],
        rows: &[PreparedTap],
        cols: &[PairedColumn],
    ) -> Result<Vec<(usize, usize, Vec<(usize, f64)>)>> {
        self.jobs
            .iter()
            .map(|(g, c, todo)| {
                let s = &specs[*g];
                let a = self.rows.iter().position(|t| *t == s.a).expect("a row tap");
                let cells = todo
                    .iter()
                    .map(|&r| {
                        let j = self.cols.iter().position(|(t, _)| *t == s.rows[r]);
                        let j = j.expect("a column tap");
                        let i = self.cols[j].1.iter().position(|&w| w == a);
                        let kl = cols[j].kl[i.expect("wanted")];
                        let v = rows[a]
                            .own
                            .with(&cols[j].own, kl)
                            .value(s.estimator, &s.a, &s.rows[r])
                            .map_err(|e| {
                                e.within(self.context(format!("CKA({}, {})", s.a, s.b)))
                            })?;
                        Ok((r, v))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((*g, *c, cells))
            })
            .collect()
    }
}

impl SeedGrid {
    /// Computes the grid: for each step and seed, the row tap's features (read once) against
    /// every row whose features are `present` and that `previous` (the same spec) does not
    /// already hold.
    pub fn compute<E: From<AnalysisError> + Send>(
        spec: GridSpec,
        present: impl Fn(&str) -> BTreeSet<(u64, usize)>,
        read: impl Fn(&str, u64, usize) -> std::result::Result<Array2<f64>, E> + Sync,
        previous: Option<&SeedGrid>,
    ) -> std::result::Result<SeedGrid, E> {
        let mut grids = Self::compute_many(vec![spec], present, read, &[previous])?;
        Ok(grids.pop().expect("one spec, one grid"))
    }

    /// Several grids computed together (one per row tap: `enc.text` and `enc.noise` against
    /// every LLM layer): per (step, seed) every tap that any grid needs is read once and
    /// prepared once (its Gram computed once), side by side on the pool's threads. The row taps
    /// are kept for the (step, seed); each column tap is paired with every row tap that needs
    /// it as soon as it is prepared and its Gram dropped, so memory holds the row taps' Grams
    /// and one tap in flight per thread. `previous[g]`, when it has the same spec, gives grid
    /// g's cells to reuse. Each grid equals [`SeedGrid::compute`] of its spec alone, bit for
    /// bit.
    pub fn compute_many<E: From<AnalysisError> + Send>(
        specs: Vec<GridSpec>,
        present: impl Fn(&str) -> BTreeSet<(u64, usize)>,
        read: impl Fn(&str, u64, usize) -> std::result::Result<Array2<f64>, E> + Sync,
        previous: &[Option<&SeedGrid>],
    ) -> std::result::Result<Vec<SeedGrid>, E> {
        let reuse: Vec<Option<&SeedGrid>> = (0..specs.len())
            .map(|g| previous.get(g).copied().flatten())
            .zip(&specs)
            .map(|(p, spec)| p.filter(|p| p.spec == *spec))
            .collect();
        let mut values: Vec<Vec<Vec<BTreeMap<u64, f64>>>> = specs
            .iter()
            .map(|s| vec![vec![BTreeMap::new(); s.steps.len()]; s.rows.len()])
            .collect();
        let mut presence: BTreeMap<&str, BTreeSet<(u64, usize)>> = BTreeMap::new();
        for tap in specs
            .iter()
            .flat_map(|s| std::iter::once(&s.a).chain(&s.rows))
        {
            presence.entry(tap.as_str()).or_insert_with(|| present(tap));
        }
        // The (step, seed) units in order: steps, then seeds within a step.
        let mut seen = BTreeSet::new();
        let mut units = Vec::new();
        for spec in &specs {
            for &step in &spec.steps {
                for &seed in &spec.seeds {
                    if seen.insert((step, seed)) {
                        let has = |tap: &str| presence[tap].contains(&(seed, step));
                        let unit = Unit::new(&specs, (step, seed), has, &reuse, &mut values);
                        if !unit.jobs.is_empty() {
                            units.push(unit);
                        }
                    }
                }
            }
        }
        let load = |u: &Unit, tap: &str, par: Par| -> std::result::Result<PreparedTap, E> {
            let x = read(tap, u.seed, u.step)?;
            PreparedTap::from_owned(tap.to_string(), x, par)
                .map_err(|e| E::from(e.within(u.context(format_args!("tap `{tap}`")))))
        };
        for batch in units.chunks(UNITS_PER_BATCH) {
            // The row taps of the batch, kept for its pairs.
            let row_reads: Vec<(&Unit, &String)> = batch
                .iter()
                .flat_map(|u| u.rows.iter().map(move |t| (u, t)))
                .collect();
            let mut loaded =
                side_by_side(&row_reads, |(u, tap), par| load(u, tap, par)).into_iter();
            let rows = batch
                .iter()
                .map(|u| loaded.by_ref().take(u.rows.len()).collect())
                .collect::<std::result::Result<Vec<Vec<PreparedTap>>, E>>()?;
            // Every column tap of the batch, paired and dropped.
            let col_jobs: Vec<(usize, &(String, Vec<usize>))> = batch
                .iter()
                .enumerate()
                .flat_map(|(b, u)| u.cols.iter().map(move |c| (b, c)))
                .collect();
            let paired = side_by_side(&col_jobs, |(b, col), par| {
                let u = &batch[*b];
                u.pair_column(col, &rows[*b], || load(u, &col.0, par))
            });
            let mut paired = paired.into_iter();
            for (b, unit) in batch.iter().enumerate() {
                let cols = paired
                    .by_ref()
                    .take(unit.cols.len())
                    .collect::<std::result::Result<Vec<_>, E>>()?;
                for (g, c, cells) in unit.values(&specs, &rows[b], &cols)? {
                    for (r, v) in cells {
                        values[g][r][c].insert(unit.seed, v);
                    }
                }
            }
        }
        Ok(specs
            .into_iter()
            .zip(values)
            .map(|(spec, values)| {
                let complete_cells = values
                    .iter()
                    .flatten()
                    .filter(|cell| spec.seeds.iter().all(|s| cell.contains_key(s)))
                    .count();
                SeedGrid {
                    spec,
                    values,
                    complete_cells,
                }
            })
            .collect())
    }

    pub fn rows(&self) -> &[String] {
        &self.spec.rows
    }

    pub fn steps(&self) -> &[usize] {
        &self.spec.steps
    }

    pub fn ts(&self) -> &[f64] {
        &self.spec.ts
    }

    pub fn seeds(&self) -> &[u64] {
        &self.spec.seeds
    }

    /// Mean / sd / SE over the seeds present in a cell, in the spec's seed order.
    pub fn summary(&self, row: usize, col: usize) -> Option<Summary> {
        let cell = self.values.get(row)?.get(col)?;
        let v: Vec<f64> = self
            .spec
            .seeds
            .iter()
            .filter_map(|s| cell.get(s).copied())
            .collect();
        Summary::of(&v).ok()
    }

    /// The mean of every cell (NaN where no seed is present).
    pub fn mean(&self) -> Array2<f64> {
        Array2::from_shape_fn((self.spec.rows.len(), self.spec.steps.len()), |(r, c)| {
            self.summary(r, c).map_or(f64::NAN, |s| s.mean)
        })
    }

    pub fn total_cells(&self) -> usize {
        self.spec.rows.len() * self.spec.steps.len()
    }

    /// `(ts, curves[seed][col])` of one row over the steps every seed has (for AUC and
    /// crossings).
    pub fn row_curves(&self, row: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
        let cols: Vec<usize> = (0..self.spec.steps.len())
            .filter(|&c| {
                self.spec
                    .seeds
                    .iter()
                    .all(|s| self.values[row][c].contains_key(s))
            })
            .collect();
        let ts = cols.iter().map(|&c| self.spec.ts[c]).collect();
        let curves = self
            .spec
            .seeds
            .iter()
            .map(|s| cols.iter().map(|&c| self.values[row][c][s]).collect())
            .collect();
        (ts, curves)
    }

    /// `self - baseline` per cell: per-seed differences where both grids have the seed (mean
    /// and SE over them), rows matched by name and steps by number.
    pub fn delta(&self, baseline: &SeedGrid) -> SeedGrid {
        let mut out = self.clone();
        for (r, row) in self.spec.rows.iter().enumerate() {
            let br = baseline.spec.rows.iter().position(|x| x == row);
            for (c, step) in self.spec.steps.iter().enumerate() {
                let bc = baseline.spec.steps.iter().position(|x| x == step);
                out.values[r][c] = match (br, bc) {
                    (Some(br), Some(bc)) => self.values[r][c]
                        .iter()
                        .filter_map(|(s, v)| baseline.values[br][bc].get(s).map(|b| (*s, v - b)))
                        .collect(),
                    _ => BTreeMap::new(),
                };
            }
        }
        out
    }
}
