//! Fréchet Inception Distance (Heusel et al. 2017) computed as pytorch-fid does:
//! `|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))`, with covariances from `np.cov`
//! (n - 1 denominator).
//!
//! pytorch-fid takes `scipy.linalg.sqrtm(S1 S2)` (a general, non-symmetric square root, with an
//! `eps * I` retry when the result is not finite and its imaginary part dropped). Only the trace
//! is needed, and for symmetric PSD covariances `tr sqrt(S1 S2)` equals the sum of the square
//! roots of the eigenvalues of the symmetric PSD matrix `sqrt(S1) S2 sqrt(S1)`: two symmetric
//! eigendecompositions, exact and stable also when the covariances are singular (fewer samples
//! than dimensions). Tiny negative eigenvalues from rounding are clamped to 0.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::cka::{centred, check_finite};
use crate::error::{AnalysisError, Result};
use crate::linalg;

/// Mean and covariance of a feature set (what pytorch-fid stores in its `.npz` stats files).
#[derive(Debug, Clone, PartialEq)]
pub struct FidStats {
    pub mu: Array1<f64>,
    pub sigma: Array2<f64>,
}

impl FidStats {
    /// From saved values, validated.
    pub fn new(mu: Array1<f64>, sigma: Array2<f64>) -> Result<Self> {
        let d = mu.len();
        if sigma.dim() != (d, d) {
            return Err(AnalysisError::Shape {
                what: "FID statistics".into(),
                reason: format!("mu has {d} entries but sigma is {:?}", sigma.dim()),
            });
        }
        check_finite(mu.view().insert_axis(Axis(0)), "mu")?;
        check_finite(sigma.view(), "sigma")?;
        Ok(Self { mu, sigma })
    }

    /// From features `[n, d]`: the mean and the unbiased covariance (`np.cov(rowvar=False)`).
    pub fn from_features(x: ArrayView2<f64>, what: &str) -> Result<Self> {
        if x.nrows() < 2 {
            return Err(AnalysisError::TooFewSamples {
                what: what.into(),
                estimator: "FID (a covariance)",
                found: x.nrows(),
                needed: 2,
            });
        }
        check_finite(x, what)?;
        let mu = x.mean_axis(Axis(0)).expect("n >= 2");
        let sigma = linalg::cross_gram(centred(x).view()) / (x.nrows() - 1) as f64;
        Ok(Self { mu, sigma })
    }
}

/// `sqrt` of a symmetric PSD matrix through its eigendecomposition.
fn psd_sqrt(a: ArrayView2<f64>) -> Result<Array2<f64>> {
    let (values, vectors) = linalg::symmetric_eigen(a)?;
    let roots = values.mapv(|v| v.max(0.0).sqrt());
    let scaled = &vectors * &roots.insert_axis(Axis(0));
    Ok(linalg::a_bt(scaled.view(), vectors.view()))
}

/// `tr sqrt(S1 S2)` for symmetric PSD S1, S2.
pub fn trace_sqrt_product(s1: ArrayView2<f64>, s2: ArrayView2<f64>) -> Result<f64> {
    let r1 = psd_sqrt(s1)?;
    let m = linalg::a_b(linalg::a_b(r1.view(), s2).view(), r1.view());
    // Symmetrise against rounding before the symmetric solver.
    let m = (&m + &m.t()) / 2.0;
    Ok(linalg::symmetric_eigenvalues(m.view())?
        .into_iter()
        .map(|v| v.max(0.0).sqrt())
        .sum())
}

/// FID between two sets of statistics.
pub fn frechet_distance(a: &FidStats, b: &FidStats) -> Result<f64> {
    if a.mu.len() != b.mu.len() {
        return Err(AnalysisError::Shape {
            what: "FID".into(),
            reason: format!(
                "the feature sets have {} and {} dimensions",
                a.mu.len(),
                b.mu.len()
            ),
        });
    }
    let diff: ArrayView1<f64> = a.mu.view();
    let diff = &diff - &b.mu;
    let tr_covmean = trace_sqrt_product(a.sigma.view(), b.sigma.view())?;
    let fid = diff.dot(&diff) + a.sigma.diag().sum() + b.sigma.diag().sum() - 2.0 * tr_covmean;
    if !fid.is_finite() {
        return Err(AnalysisError::Linalg(format!("FID is not finite ({fid})")));
    }
    Ok(fid)
}

/// FID between two feature sets `[n, d]`.
pub fn fid_from_features(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Result<f64> {
    frechet_distance(
        &FidStats::from_features(a, "A")?,
        &FidStats::from_features(b, "B")?,
    )
}
