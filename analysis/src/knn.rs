//! Mutual k-nearest-neighbour alignment (Huh et al. 2024, "The Platonic Representation
//! Hypothesis"): for each sample, the overlap of its k nearest neighbours in representation A
//! and in representation B, `|kNN_A(i) ∩ kNN_B(i)| / k`; inner-product similarity, the sample
//! itself excluded. The per-sample values are what the app's drill-down shows.

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::Serialize;

use crate::cka::check_finite;
use crate::error::{AnalysisError, Result};
use crate::linalg;

/// Mutual k-NN alignment of one pair.
#[derive(Debug, Clone, Serialize)]
pub struct MutualKnn {
    pub k: usize,
    /// Mean over samples of the per-sample overlap, in [0, 1].
    pub mean: f64,
    /// Per-sample overlap fraction.
    pub per_sample: Vec<f64>,
    /// Per-sample neighbour lists in A and in B (indices, nearest first).
    pub neighbours_a: Vec<Vec<usize>>,
    pub neighbours_b: Vec<Vec<usize>>,
}

/// The k nearest neighbours of every row by inner product, self excluded; ties broken by the
/// lower index so results are deterministic.
pub fn knn_inner_product(x: ArrayView2<f64>, k: usize) -> Vec<Vec<usize>> {
    let sims = linalg::a_bt(x, x);
    (0..x.nrows())
        .into_par_iter()
        .map(|i| {
            let row = sims.row(i);
            let mut idx: Vec<usize> = (0..x.nrows()).filter(|&j| j != i).collect();
            idx.sort_by(|&p, &q| row[q].total_cmp(&row[p]).then(p.cmp(&q)));
            idx.truncate(k);
            idx
        })
        .collect()
}

/// Mutual k-NN alignment between A `[n, d1]` and B `[n, d2]`.
pub fn mutual_knn(a: ArrayView2<f64>, b: ArrayView2<f64>, k: usize) -> Result<MutualKnn> {
    if a.nrows() != b.nrows() {
        return Err(AnalysisError::Shape {
            what: "mutual k-NN inputs".into(),
            reason: format!("A has {} samples, B has {}", a.nrows(), b.nrows()),
        });
    }
    if k == 0 || k >= a.nrows() {
        return Err(AnalysisError::Invalid {
            what: "mutual k-NN".into(),
            reason: format!(
                "k = {k} must be in 1..{} (n - 1)",
                a.nrows().saturating_sub(1)
            ),
        });
    }
    check_finite(a, "A")?;
    check_finite(b, "B")?;
    let (na, nb) = rayon::join(|| knn_inner_product(a, k), || knn_inner_product(b, k));
    let per_sample: Vec<f64> = na
        .iter()
        .zip(&nb)
        .map(|(p, q)| p.iter().filter(|i| q.contains(i)).count() as f64 / k as f64)
        .collect();
    Ok(MutualKnn {
        k,
        mean: per_sample.iter().sum::<f64>() / per_sample.len() as f64,
        per_sample,
        neighbours_a: na,
        neighbours_b: nb,
    })
}
