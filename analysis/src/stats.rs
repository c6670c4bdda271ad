//! Statistics around CKA values: summaries across seeds, bootstrap confidence intervals over
//! samples (prompts), and the permutation null (shuffled pairing) with a p-value.
//!
//! Resampling works on the centred Gram matrices of the pair, so each replicate costs O(n^2)
//! instead of a new O(n^2 d) product: a bootstrap replicate re-centres the resampled Grams
//! (double centring; the data were centred with the full-sample mean first, so no
//! cancellation), a permutation replicate permutes L's rows and columns.

use ndarray::{Array2, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cka::{self, CkaTerms, Estimator};
use crate::error::{AnalysisError, Result};
use crate::{inference, linalg};

/// Mean, sample standard deviation and standard error of a set of values (e.g. over seeds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample SD (n - 1 denominator); 0 for a single value.
    pub sd: f64,
    /// `sd / sqrt(n)`.
    pub se: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Result<Self> {
        if values.is_empty() {
            return Err(AnalysisError::Invalid {
                what: "summary".into(),
                reason: "no values".into(),
            });
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(AnalysisError::NonFinite {
                what: "values to summarise".into(),
                row: i,
                col: 0,
                value: *v,
            });
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Ok(Self {
            n,
            mean,
            sd,
            se: sd / (n as f64).sqrt(),
        })
    }
}

pub use crate::inference::quantile;

/// The centred Gram matrices of a pair, for resampling.
pub struct GramPair {
    k: Array2<f64>,
    l: Array2<f64>,
}

impl GramPair {
    pub fn new(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<Self> {
        if x.nrows() != y.nrows() {
            return Err(AnalysisError::Shape {
                what: "resampling inputs".into(),
                reason: format!("X has {} samples, Y has {}", x.nrows(), y.nrows()),
            });
        }
        cka::check_finite(x, "X")?;
        cka::check_finite(y, "Y")?;
        let (xc, yc) = (cka::centred(x), cka::centred(y));
        let (k, l) = rayon::join(|| linalg::gram(xc.view()), || linalg::gram(yc.view()));
        Ok(Self { k, l })
    }

    pub fn n(&self) -> usize {
        self.k.nrows()
    }

    /// Terms of the full sample.
    pub fn terms(&self) -> CkaTerms {
        inference::weighted_terms(self.k.view(), self.l.view(), &vec![1.0; self.n()]).biased
    }
}

/// A bootstrap percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    /// Replicates the interval is made of.
    pub replicates: usize,
    /// Resamples dropped because the estimate is undefined on them (at small n a resample can
    /// repeat one row so often that a side has no variance); not part of `replicates`.
    pub dropped: usize,
}

/// Percentile bootstrap over samples (rows resampled with replacement, X and Y together).
pub fn bootstrap_ci(
    pair: &GramPair,
    estimator: Estimator,
    replicates: usize,
    level: f64,
    seed: u64,
) -> Result<Interval> {
    if replicates == 0 || !(0.0 < level && level < 1.0) {
        return Err(AnalysisError::Invalid {
            what: "bootstrap".into(),
            reason: format!("need replicates > 0 and 0 < level < 1, got {replicates} and {level}"),
        });
    }
    let estimate = pair.terms().value(estimator, "X", "Y")?;
    let n = pair.n();
    let outcomes: Vec<Result<f64>> = (0..replicates)
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(r as u64));
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            let counts = inference::Resamples::counts_of(n, &idx);
            inference::weighted_terms(pair.k.view(), pair.l.view(), &counts)
                .get(estimator)
                .value(estimator, "X (bootstrap)", "Y (bootstrap)")
        })
        .collect();
    let values: Vec<Option<f64>> = outcomes.into_iter().map(|v| v.ok()).collect();
    if values.iter().all(Option::is_none) {
        return Err(AnalysisError::Invalid {
            what: "bootstrap".into(),
            reason: format!(
                "the estimate is undefined on all {replicates} resamples of these {n} samples; use more samples"
            ),
        });
    }
    let i = inference::PromptInterval::of(&values, level)?;
    Ok(Interval {
        estimate,
        lower: i.lower,
        upper: i.upper,
        level,
        replicates: i.replicates,
        dropped: i.dropped,
    })
}

/// The permutation null of a CKA value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PermutationNull {
    pub observed: f64,
    pub null_mean: f64,
    /// The `quantile` upper quantile of the null (e.g. 0.95).
    pub null_upper: f64,
    pub quantile: f64,
    /// `(1 + #{null >= observed}) / (1 + permutations)`: the p-value for "CKA above the null".
    pub p_value: f64,
    pub permutations: usize,
}

/// Shuffles the pairing of Y's rows `permutations` times and recomputes the estimate.
pub fn permutation_null(
    pair: &GramPair,
    estimator: Estimator,
    permutations: usize,
    quantile_level: f64,
    seed: u64,
) -> Result<PermutationNull> {
    if permutations == 0 {
        return Err(AnalysisError::Invalid {
            what: "permutation null".into(),
            reason: "needs at least one permutation".into(),
        });
    }
    let full = pair.terms();
    let observed = full.value(estimator, "X", "Y")?;
    let n = pair.n();
    let null: Vec<f64> = (0..permutations)
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(r as u64));
            let mut iy: Vec<usize> = (0..n).collect();
            iy.shuffle(&mut rng);
            inference::permuted_terms(pair.k.view(), pair.l.view(), &iy, &full).value(
                estimator,
                "X",
                "Y (permuted)",
            )
        })
        .collect::<Result<_>>()?;
    let exceed = null.iter().filter(|&&v| v >= observed).count();
    Ok(PermutationNull {
        observed,
        null_mean: null.iter().sum::<f64>() / permutations as f64,
        null_upper: quantile(&null, quantile_level),
        quantile: quantile_level,
        p_value: (1 + exceed) as f64 / (1 + permutations) as f64,
        permutations,
    })
}
