//! Inference over prompts for CKA results: bootstrap intervals that resample prompts, the
//! permutation null of an absolute CKA (shuffled pairing) and the paired swap test of a
//! difference between two models (each prompt's features of the two models exchanged).
//!
//! One analysis draws its resamples once ([`Resamples`]) and applies the same draw to every
//! unit it is made of (sampling seeds, solver steps, both models), so a statistic built from
//! several CKA values (a mean over seeds, a difference, an AUC over steps) is recomputed from one
//! coherent resample of the prompts per replicate. Each unit keeps only its centred Gram
//! matrices; a replicate costs O(n^2), not a new O(n^2 d) product:
//!
//! - **bootstrap**: prompt `i` drawn `c_i` times. The resampled data's CKA terms are the
//!   count-weighted sums of the re-centred Grams, computed without building the resample
//!   (`<K*, L*> = sum c_i c_j K_ij L_ij - 2 m sum c_i r_i s_i + m^2 g h`, with `r`, `s` the
//!   weighted row means and `g`, `h` the grand means); equal to [`crate::cka::terms`] of the
//!   explicitly duplicated rows. For the debiased estimator the copies of one prompt are one
//!   prompt: the products of two copies (`K_pp' = a_i`, the prompt's similarity with itself) are
//!   left out like the diagonal, as the unbiased HSIC leaves out `i = j`. Counted in, they are
//!   self-similarities among the off-diagonal pairs and bias the replicates upward (two
//!   unrelated 32-d feature sets of 64 prompts: debiased CKA -0.013, naive bootstrap replicates
//!   0.32 [0.23, 0.41], with copies left out -0.012 [-0.07, 0.06]). In Song et al.'s formula with
//!   every block of copies zeroed: `tr(K~L~) = <K*, L*> - sum c_i^2 a_i b_i`,
//!   `1'K~1 = -sum c_i^2 a_i`, `1'K~L~1 = sum c_i^3 a_i b_i`;
//! - **pairing null**: Y's rows permuted against X's (centring commutes with permutation, so
//!   only `<K, L>` and `sum a_i b_i` change);
//! - **swap test**: the two models' features, each centred with its own mean, are stacked
//!   (`[2n, d]`) and their Gram taken once; a swap mask picks, per prompt, which model's row
//!   goes to which side, and the mixed sides are re-centred.

use ndarray::{Array2, ArrayView2, s};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cka::{self, CkaTerms, Estimator, PerEstimator};
use crate::error::{AnalysisError, Result};
use crate::linalg;

/// The q-quantile (linear interpolation between order statistics, NumPy's default).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Resamples of `n` prompts, drawn once for a whole analysis.
#[derive(Debug, Clone)]
pub struct Resamples {
    pub n: usize,
    /// Bootstrap counts (`c_i`, summing to n), one vector per replicate.
    pub counts: Vec<Vec<f64>>,
    /// Permutations of the pairing, one per replicate.
    pub permutations: Vec<Vec<usize>>,
    /// Swap masks (`true`: prompt i's rows of the two models exchanged), one per replicate.
    pub swaps: Vec<Vec<bool>>,
}

impl Resamples {
    /// Draws `bootstrap` resamples, `permutations` permutations and as many swap masks. Each
    /// replicate has its own generator (`seed + r`, one stream per kind), so the draws do not
    /// depend on the thread count.
    pub fn draw(n: usize, bootstrap: usize, permutations: usize, seed: u64) -> Self {
        let rng = |kind: u64, r: usize| {
            ChaCha8Rng::seed_from_u64(
                seed.wrapping_add(r as u64)
                    .wrapping_add(kind.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            )
        };
        let counts = (0..bootstrap)
            .map(|r| {
                let mut g = rng(1, r);
                let mut c = vec![0.0; n];
                for _ in 0..n {
                    c[g.random_range(0..n)] += 1.0;
                }
                c
            })
            .collect();
        let perms = (0..permutations)
            .map(|r| {
                let mut g = rng(2, r);
                let mut p: Vec<usize> = (0..n).collect();
                p.shuffle(&mut g);
                p
            })
            .collect();
        let swaps = (0..permutations)
            .map(|r| {
                let mut g = rng(3, r);
                (0..n).map(|_| g.random_bool(0.5)).collect()
            })
            .collect();
        Self {
            n,
            counts,
            permutations: perms,
            swaps,
        }
    }

    /// Bootstrap counts from explicit row indices (a resample given as indices).
    pub fn counts_of(n: usize, indices: &[usize]) -> Vec<f64> {
        let mut c = vec![0.0; n];
        for &i in indices {
            c[i] += 1.0;
        }
        c
    }
}

/// The five weighted sums of one row: `sum w K`, `sum w L`, `sum w K L`, `sum w K^2`,
/// `sum w L^2` (four lanes each, so the loop vectorises).
fn row_sums(w: &[f64], k: &[f64], l: &[f64]) -> [f64; 5] {
    let mut acc = [[0.0f64; 4]; 5];
    let (wc, kc, lc) = (w.chunks_exact(4), k.chunks_exact(4), l.chunks_exact(4));
    let (wr, kr, lr) = (wc.remainder(), kc.remainder(), lc.remainder());
    for ((w4, k4), l4) in wc.zip(kc).zip(lc) {
        for j in 0..4 {
            let wk = w4[j] * k4[j];
            acc[0][j] += wk;
            acc[1][j] += w4[j] * l4[j];
            acc[2][j] += wk * l4[j];
            acc[3][j] += wk * k4[j];
            acc[4][j] += w4[j] * l4[j] * l4[j];
        }
    }
    let mut out = acc.map(|a| (a[0] + a[1]) + (a[2] + a[3]));
    for ((&w, &k), &l) in wr.iter().zip(kr).zip(lr) {
        out[0] += w * k;
        out[1] += w * l;
        out[2] += w * k * l;
        out[3] += w * k * k;
        out[4] += w * l * l;
    }
    out
}

/// Accumulates rows into the terms of the weighted, re-centred Grams.
struct Recentring<'a> {
    w: &'a [f64],
    m: f64,
    rk: Vec<f64>,
    rl: Vec<f64>,
    dk: Vec<f64>,
    dl: Vec<f64>,
    t: [f64; 3],
}

impl<'a> Recentring<'a> {
    fn new(w: &'a [f64]) -> Self {
        let n = w.len();
        Self {
            w,
            m: w.iter().sum(),
            rk: vec![0.0; n],
            rl: vec![0.0; n],
            dk: vec![0.0; n],
            dl: vec![0.0; n],
            t: [0.0; 3],
        }
    }

    /// Row `i` of the (un-re-centred) K and L of the sample.
    fn row(&mut self, i: usize, k: &[f64], l: &[f64]) {
        let s = row_sums(self.w, k, l);
        let wi = self.w[i];
        self.rk[i] = s[0] / self.m;
        self.rl[i] = s[1] / self.m;
        self.t[0] += wi * s[2];
        self.t[1] += wi * s[3];
        self.t[2] += wi * s[4];
        self.dk[i] = k[i];
        self.dl[i] = l[i];
    }

    /// The terms of the resample for each estimator (the debiased ones with the copies of a
    /// prompt left out of its pairs; the same as the biased ones without copies).
    fn finish(self) -> PerEstimator<CkaTerms> {
        let (w, m) = (self.w, self.m);
        let wsum = |f: &dyn Fn(usize) -> f64| -> f64 {
            (0..w.len())
                .filter(|&i| w[i] != 0.0)
                .map(|i| w[i] * f(i))
                .sum()
        };
        let g = wsum(&|i| self.rk[i]) / m;
        let h = wsum(&|i| self.rl[i]) / m;
        let (rk, rl) = (&self.rk, &self.rl);
        let a = |i: usize| self.dk[i] - 2.0 * rk[i] + g;
        let b = |i: usize| self.dl[i] - 2.0 * rl[i] + h;
        let biased = CkaTerms {
            n: m.round() as usize,
            kl: self.t[0] - 2.0 * m * wsum(&|i| rk[i] * rl[i]) + m * m * g * h,
            kk: self.t[1] - 2.0 * m * wsum(&|i| rk[i] * rk[i]) + m * m * g * g,
            ll: self.t[2] - 2.0 * m * wsum(&|i| rl[i] * rl[i]) + m * m * h * h,
            sum_a: wsum(&|i| a(i)),
            sum_b: wsum(&|i| b(i)),
            sum_ab: wsum(&|i| a(i) * b(i)),
            sum_aa: wsum(&|i| a(i) * a(i)),
            sum_bb: wsum(&|i| b(i) * b(i)),
        };
        if w.iter().all(|&c| c <= 1.0) {
            return PerEstimator::new(biased, biased);
        }
        // Sums over the copies: c_i^2 (a block of copies) and c_i^3 (its rows' sums).
        let c2 = |f: &dyn Fn(usize) -> f64| wsum(&|i| w[i] * f(i));
        let c3 = |f: &dyn Fn(usize) -> f64| wsum(&|i| w[i] * w[i] * f(i));
        let (ab3, aa3, bb3) = (
            c3(&|i| a(i) * b(i)),
            c3(&|i| a(i) * a(i)),
            c3(&|i| b(i) * b(i)),
        );
        let debiased = CkaTerms {
            kl: biased.kl - c2(&|i| a(i) * b(i)) + ab3,
            kk: biased.kk - c2(&|i| a(i) * a(i)) + aa3,
            ll: biased.ll - c2(&|i| b(i) * b(i)) + bb3,
            sum_a: c2(&a),
            sum_b: c2(&b),
            sum_ab: ab3,
            sum_aa: aa3,
            sum_bb: bb3,
            ..biased
        };
        PerEstimator::new(biased, debiased)
    }
}

/// Terms of the bootstrap resample with counts `w` of the centred Grams `k`, `l`, for each
/// estimator (the debiased ones leave the copies of a prompt out of its pairs).
pub fn weighted_terms(k: ArrayView2<f64>, l: ArrayView2<f64>, w: &[f64]) -> PerEstimator<CkaTerms> {
    let mut acc = Recentring::new(w);
    let (mut kr, mut lr) = (Vec::new(), Vec::new());
    for (i, &wi) in w.iter().enumerate() {
        if wi == 0.0 {
            continue;
        }
        let (krow, lrow) = (row_of(k, i, &mut kr), row_of(l, i, &mut lr));
        acc.row(i, krow, lrow);
    }
    acc.finish()
}

/// Row `i` of `g` as a slice (copied into `buf` when the view is not contiguous).
fn row_of<'a>(g: ArrayView2<'a, f64>, i: usize, buf: &'a mut Vec<f64>) -> &'a [f64] {
    let row = g.index_axis_move(ndarray::Axis(0), i);
    match row.to_slice() {
        Some(s) => s,
        None => {
            buf.clear();
            buf.extend(row.iter().copied());
            buf
        }
    }
}

/// Terms of the pairing `(x_i, y_{perm_i})`: `full` holds the unpermuted terms, of which only
/// `<K, L>` and `sum a_i b_i` change.
pub fn permuted_terms(
    k: ArrayView2<f64>,
    l: ArrayView2<f64>,
    perm: &[usize],
    full: &CkaTerms,
) -> CkaTerms {
    let n = perm.len();
    let mut lrow = vec![0.0; n];
    let (mut kl, mut sum_ab) = (0.0, 0.0);
    let mut kbuf = Vec::new();
    for i in 0..n {
        let lsrc = l.row(perm[i]);
        for (d, &j) in lrow.iter_mut().zip(perm) {
            *d = lsrc[j];
        }
        let krow = row_of(k, i, &mut kbuf);
        kl += linalg::dot(krow, &lrow);
        sum_ab += krow[i] * lrow[i];
    }
    CkaTerms {
        kl,
        sum_ab,
        ..*full
    }
}

/// The centred Grams of one (X, Y) pair of two models over the same prompts, stacked for the
/// swap test: `k = [XcA; XcB][XcA; XcB]^T` (`[2n, 2n]`), `l` likewise for Y. Without the swap
/// test (the models' widths differ) the Grams are the two `[n, n]` blocks side by side.
pub struct PairedGrams {
    n: usize,
    k: Array2<f64>,
    l: Array2<f64>,
    stacked: bool,
    full: [CkaTerms; 2],
}

/// Which of the two models of a [`PairedGrams`].
pub const MODELS: [usize; 2] = [0, 1];

impl PairedGrams {
    /// `xa`, `ya`: model A's two feature sets (rows = prompts); `xb`, `yb`: model B's.
    pub fn new(
        xa: ArrayView2<f64>,
        ya: ArrayView2<f64>,
        xb: ArrayView2<f64>,
        yb: ArrayView2<f64>,
    ) -> Result<Self> {
        let n = xa.nrows();
        for (m, what) in [
            (&ya, "Y of model A"),
            (&xb, "X of model B"),
            (&yb, "Y of model B"),
        ] {
            if m.nrows() != n {
                return Err(AnalysisError::Shape {
                    what: "paired CKA inputs".into(),
                    reason: format!("X of model A has {n} prompts, {what} has {}", m.nrows()),
                });
            }
        }
        for (m, what) in [
            (&xa, "X (A)"),
            (&ya, "Y (A)"),
            (&xb, "X (B)"),
            (&yb, "Y (B)"),
        ] {
            cka::check_finite(*m, what)?;
        }
        let stacked = xa.ncols() == xb.ncols() && ya.ncols() == yb.ncols();
        let gram = |a: ArrayView2<f64>, b: ArrayView2<f64>| -> Array2<f64> {
            let (ac, bc) = (cka::centred(a), cka::centred(b));
            if stacked {
                linalg::gram(ndarray::concatenate![ndarray::Axis(0), ac, bc].view())
            } else {
                let mut g = Array2::zeros((n, 2 * n));
                g.slice_mut(s![.., ..n]).assign(&linalg::gram(ac.view()));
                g.slice_mut(s![.., n..]).assign(&linalg::gram(bc.view()));
                g
            }
        };
        let (k, l) = rayon::join(|| gram(xa, xb), || gram(ya, yb));
        let ones = vec![1.0; n];
        let full = MODELS.map(|m| {
            weighted_terms(block(&k, n, stacked, m), block(&l, n, stacked, m), &ones).biased
        });
        Ok(Self {
            n,
            k,
            l,
            stacked,
            full,
        })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether the swap test is available (both models' X, and both Y, have one width).
    pub fn swappable(&self) -> bool {
        self.stacked
    }

    fn block_k(&self, m: usize) -> ArrayView2<'_, f64> {
        block(&self.k, self.n, self.stacked, m)
    }

    fn block_l(&self, m: usize) -> ArrayView2<'_, f64> {
        block(&self.l, self.n, self.stacked, m)
    }

    /// Both models' terms on the full sample.
    pub fn terms(&self) -> [CkaTerms; 2] {
        self.full
    }

    /// Both models' terms on one bootstrap resample, per estimator.
    pub fn weighted(&self, w: &[f64]) -> PerEstimator<[CkaTerms; 2]> {
        let [a, b] = MODELS.map(|m| weighted_terms(self.block_k(m), self.block_l(m), w));
        PerEstimator::from_fn(|e| [*a.get(e), *b.get(e)])
    }

    /// Both models' terms with Y's rows permuted (each model's pairing null).
    pub fn permuted(&self, perm: &[usize]) -> [CkaTerms; 2] {
        MODELS.map(|m| permuted_terms(self.block_k(m), self.block_l(m), perm, &self.full[m]))
    }

    /// Both sides' terms after exchanging the models' rows of the prompts in `mask`; `None`
    /// without the stacked Grams.
    pub fn swapped(&self, mask: &[bool]) -> Option<[CkaTerms; 2]> {
        if !self.stacked {
            return None;
        }
        let n = self.n;
        let ones = vec![1.0; n];
        Some(MODELS.map(|side| {
            // Row i of side `side` is model (side XOR mask_i)'s row i.
            let src = |i: usize| i + n * (side ^ usize::from(mask[i]));
            let mut acc = Recentring::new(&ones);
            let (mut kr, mut lr) = (vec![0.0; n], vec![0.0; n]);
            for i in 0..n {
                let (kg, lg) = (self.k.row(src(i)), self.l.row(src(i)));
                for j in 0..n {
                    let c = src(j);
                    kr[j] = kg[c];
                    lr[j] = lg[c];
                }
                acc.row(i, &kr, &lr);
            }
            acc.finish().biased
        }))
    }

    /// Every resample of `draw` applied to this unit (replicates in parallel).
    pub fn replicates(&self, draw: &Resamples) -> Replicates {
        Replicates {
            full: self.full,
            bootstrap: draw.counts.par_iter().map(|w| self.weighted(w)).collect(),
            permuted: draw
                .permutations
                .par_iter()
                .map(|p| self.permuted(p))
                .collect(),
            swapped: if self.stacked {
                Some(
                    draw.swaps
                        .par_iter()
                        .map(|m| self.swapped(m).expect("stacked"))
                        .collect(),
                )
            } else {
                None
            },
        }
    }
}

/// Model `m`'s `[n, n]` Gram in the stacked `[2n, 2n]` form or the side-by-side `[n, 2n]` one.
fn block(g: &Array2<f64>, n: usize, stacked: bool, m: usize) -> ArrayView2<'_, f64> {
    if stacked {
        g.slice(s![m * n..(m + 1) * n, m * n..(m + 1) * n])
    } else {
        g.slice(s![.., m * n..(m + 1) * n])
    }
}

/// One unit's terms under every resample of a [`Resamples`]: `[model A, model B]` each.
#[derive(Debug, Clone)]
pub struct Replicates {
    pub full: [CkaTerms; 2],
    /// Per resample and estimator (the debiased terms leave copies of a prompt out).
    pub bootstrap: Vec<PerEstimator<[CkaTerms; 2]>>,
    pub permuted: Vec<[CkaTerms; 2]>,
    /// `None` when the swap test is not available.
    pub swapped: Option<Vec<[CkaTerms; 2]>>,
}

/// The value of `terms` under `estimator`, `None` where it is undefined (a degenerate resample).
pub fn value(terms: &CkaTerms, estimator: Estimator) -> Option<f64> {
    terms
        .value(estimator, "X", "Y")
        .ok()
        .filter(|v| v.is_finite())
}

/// A percentile bootstrap interval over prompts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PromptInterval {
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    /// Standard deviation of the replicates (the bootstrap SE).
    pub se: f64,
    pub replicates: usize,
    /// Resamples on which the statistic is undefined (not part of `replicates`).
    pub dropped: usize,
}

impl PromptInterval {
    /// The interval of the replicate values (`None`: undefined on that resample).
    pub fn of(values: &[Option<f64>], level: f64) -> Result<Self> {
        if !(0.0 < level && level < 1.0) {
            return Err(AnalysisError::Invalid {
                what: "bootstrap interval".into(),
                reason: format!("the level must lie in (0, 1), got {level}"),
            });
        }
        let ok: Vec<f64> = values.iter().flatten().copied().collect();
        if ok.is_empty() {
            return Err(AnalysisError::Invalid {
                what: "bootstrap interval".into(),
                reason: format!(
                    "defined on {} of {} resamples; use more prompts or more resamples",
                    ok.len(),
                    values.len()
                ),
            });
        }
        let mean = ok.iter().sum::<f64>() / ok.len() as f64;
        let var = if ok.len() > 1 {
            ok.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (ok.len() - 1) as f64
        } else {
            0.0
        };
        let alpha = (1.0 - level) / 2.0;
        Ok(Self {
            lower: quantile(&ok, alpha),
            upper: quantile(&ok, 1.0 - alpha),
            level,
            se: var.sqrt(),
            replicates: ok.len(),
            dropped: values.len() - ok.len(),
        })
    }
}

/// Which tail of the null a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tail {
    /// "Above the null": absolute CKA against shuffled pairings.
    Upper,
    /// A difference in either direction: the swap test of Delta.
    TwoSided,
}

/// A permutation test of one statistic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NullTest {
    pub observed: f64,
    pub tail: Tail,
    pub null_mean: f64,
    pub null_sd: f64,
    /// The null's 95 % quantile (upper tail) or 95 % quantile of |null| (two-sided): the
    /// smallest effect this n can tell from noise at the 5 % level.
    pub null95: f64,
    /// `(1 + #{null at least as extreme}) / (1 + permutations)`.
    pub p: f64,
    pub permutations: usize,
}

/// The level of every verdict.
pub const ALPHA: f64 = 0.05;

impl NullTest {
    /// The test of `observed` against the null values (`None`: undefined, not counted).
    pub fn of(observed: f64, null: &[Option<f64>], tail: Tail) -> Result<Self> {
        let v: Vec<f64> = null.iter().flatten().copied().collect();
        if v.is_empty() {
            return Err(AnalysisError::Invalid {
                what: "permutation test".into(),
                reason: "no permutation gave a defined value; use more prompts".into(),
            });
        }
        let extreme = |x: f64| match tail {
            Tail::Upper => x >= observed,
            Tail::TwoSided => x.abs() >= observed.abs(),
        };
        let exceed = v.iter().filter(|&&x| extreme(x)).count();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        let null95 = match tail {
            Tail::Upper => quantile(&v, 0.95),
            Tail::TwoSided => quantile(&v.iter().map(|x| x.abs()).collect::<Vec<_>>(), 0.95),
        };
        Ok(Self {
            observed,
            tail,
            null_mean: mean,
            null_sd: sd,
            null95,
            p: (1 + exceed) as f64 / (1 + v.len()) as f64,
            permutations: v.len(),
        })
    }

    pub fn significant(&self) -> bool {
        self.p <= ALPHA
    }

    /// "above the null (p = 0.002)", "below the null (p = ...)" or "not distinguishable from
    /// the null (p = 0.41)".
    pub fn verdict(&self) -> String {
        let p = p_text(self.p, self.permutations);
        if !self.significant() {
            return format!("not distinguishable from the null ({p})");
        }
        match (self.tail, self.observed >= 0.0) {
            (Tail::TwoSided, false) => format!("below the null ({p})"),
            _ => format!("above the null ({p})"),
        }
    }
}

/// `p = 0.012`, or `p ≤ 0.002` when no permutation was as extreme (the test's resolution).
pub fn p_text(p: f64, permutations: usize) -> String {
    let floor = 1.0 / (1 + permutations) as f64;
    if p <= floor * (1.0 + 1e-9) {
        format!("p ≤ {floor:.3}")
    } else {
        format!("p = {p:.3}")
    }
}

/// A statistic with its interval over prompts and its null.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Inferred {
    pub estimate: f64,
    pub ci: Option<PromptInterval>,
    pub null: Option<NullTest>,
}

impl Inferred {
    /// From the full-sample value, the bootstrap values and the null values (either empty:
    /// not computed).
    pub fn of(
        estimate: f64,
        bootstrap: &[Option<f64>],
        level: f64,
        null: &[Option<f64>],
        tail: Tail,
    ) -> Result<Self> {
        Ok(Self {
            estimate,
            ci: if bootstrap.is_empty() {
                None
            } else {
                Some(PromptInterval::of(bootstrap, level)?)
            },
            null: if null.is_empty() {
                None
            } else {
                Some(NullTest::of(estimate, null, tail)?)
            },
        })
    }
}

/// Means of per-unit values, `None` when any is undefined.
pub fn mean_of(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v?;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// Which null a statistic is tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullKind {
    /// Shuffled pairings (upper tail): is an absolute CKA above chance?
    Pairing,
    /// Models swapped per prompt (two-sided): does a difference between the models exist?
    Swap,
    /// No null (an interval only).
    None,
}

/// A statistic of several units' terms (`units[u] = [model A, model B]`, in the order of
/// `reps`) with its bootstrap interval over prompts and its permutation test; `stat` returns
/// `None` where the statistic is undefined (dropped replicates) and computes its values under
/// `estimator` (which bootstrap terms it is given).
pub fn infer(
    reps: &[Replicates],
    estimator: Estimator,
    stat: impl Fn(&[[CkaTerms; 2]]) -> Option<f64> + Sync,
    null: NullKind,
    level: f64,
) -> Result<Inferred> {
    let Some(first) = reps.first() else {
        return Err(AnalysisError::Invalid {
            what: "inference".into(),
            reason: "no units".into(),
        });
    };
    let full: Vec<[CkaTerms; 2]> = reps.iter().map(|r| r.full).collect();
    let estimate = stat(&full).ok_or_else(|| AnalysisError::Invalid {
        what: "inference".into(),
        reason: "the statistic is undefined on the full sample".into(),
    })?;
    let over = |count: usize, pick: &(dyn Fn(&Replicates, usize) -> [CkaTerms; 2] + Sync)| {
        (0..count)
            .into_par_iter()
            .map(|i| stat(&reps.iter().map(|r| pick(r, i)).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    let boot = over(first.bootstrap.len(), &|r, i| {
        *r.bootstrap[i].get(estimator)
    });
    let (values, tail) = match null {
        NullKind::Pairing => (
            over(first.permuted.len(), &|r, i| r.permuted[i]),
            Tail::Upper,
        ),
        NullKind::Swap => match &first.swapped {
            Some(s) => (
                over(s.len(), &|r, i| r.swapped.as_ref().expect("every unit")[i]),
                Tail::TwoSided,
            ),
            None => (Vec::new(), Tail::TwoSided),
        },
        NullKind::None => (Vec::new(), Tail::Upper),
    };
    Inferred::of(estimate, &boot, level, &values, tail)
}
