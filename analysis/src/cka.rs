//! Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of Neural Network
//! Representations Revisited"), biased and debiased (the unbiased HSIC of Song et al. 2012, as in
//! Kornblith's reference `center_gram(unbiased=True)`), computed from exact f64 sufficient
//! statistics.
//!
//! Every route (feature form, Gram form, streaming moments, grid caches) reduces a pair to the
//! same [`CkaTerms`]: with `Xc`, `Yc` the column-centred features, `K = Xc Xc^T`, `L = Yc Yc^T`,
//! `a_i = K_ii = |xc_i|^2`, `b_i = L_ii`:
//!
//! - `<K, L> = |Xc^T Yc|_F^2`, `<K, K>`, `<L, L>` (the biased HSIC up to a common factor);
//! - `sum a_i`, `sum b_i`, `sum a_i b_i`, `sum a_i^2`, `sum b_i^2`.
//!
//! Because the rows of `Xc` sum to zero, the U-centred HSIC reduces to
//! `[<K,L> - sum a b + (sum a)(sum b)/((n-1)(n-2)) - 2 sum a b/(n-2)] / (n(n-3))`.

use faer::Par;
use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

use crate::error::{AnalysisError, Result};
use crate::linalg;

/// Which CKA estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Estimator {
    /// The plug-in estimate of Kornblith et al.: biased upwards when the width is not much
    /// smaller than n (ANALYSIS.md: 0.5 between independent 2048-d features at n = 2000).
    Biased,
    /// The unbiased-HSIC estimate: about 0 for independent features; needs n >= 4; may be
    /// slightly negative.
    Debiased,
}

impl Estimator {
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Biased => "biased",
            Estimator::Debiased => "debiased",
        }
    }
}

impl std::str::FromStr for Estimator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "biased" => Ok(Self::Biased),
            "debiased" | "unbiased" => Ok(Self::Debiased),
            other => Err(format!("unknown estimator `{other}` (biased | debiased)")),
        }
    }
}

/// One value per estimator: what every CKA result carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PerEstimator<T> {
    pub biased: T,
    pub debiased: T,
}

impl<T> PerEstimator<T> {
    pub fn new(biased: T, debiased: T) -> Self {
        Self { biased, debiased }
    }

    pub fn get(&self, e: Estimator) -> &T {
        match e {
            Estimator::Biased => &self.biased,
            Estimator::Debiased => &self.debiased,
        }
    }

    pub fn get_mut(&mut self, e: Estimator) -> &mut T {
        match e {
            Estimator::Biased => &mut self.biased,
            Estimator::Debiased => &mut self.debiased,
        }
    }

    /// Applies `f` to both values.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> PerEstimator<U> {
        PerEstimator {
            biased: f(self.biased),
            debiased: f(self.debiased),
        }
    }

    /// Both values by reference.
    pub fn as_ref(&self) -> PerEstimator<&T> {
        PerEstimator {
            biased: &self.biased,
            debiased: &self.debiased,
        }
    }

    /// `f` of each estimator.
    pub fn from_fn(mut f: impl FnMut(Estimator) -> T) -> Self {
        Self {
            biased: f(Estimator::Biased),
            debiased: f(Estimator::Debiased),
        }
    }
}

impl Estimator {
    /// Both, in the order results list them.
    pub const BOTH: [Estimator; 2] = [Estimator::Biased, Estimator::Debiased];

    /// The other estimator.
    pub fn other(self) -> Estimator {
        match self {
            Estimator::Biased => Estimator::Debiased,
            Estimator::Debiased => Estimator::Biased,
        }
    }
}

/// The sufficient statistics of one (X, Y) pair; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CkaTerms {
    pub n: usize,
    /// `<K, L>` = `|Xc^T Yc|_F^2`
    pub kl: f64,
    pub kk: f64,
    pub ll: f64,
    /// `sum_i a_i`, `sum_i b_i`
    pub sum_a: f64,
    pub sum_b: f64,
    /// `sum_i a_i b_i`, `sum_i a_i^2`, `sum_i b_i^2`
    pub sum_ab: f64,
    pub sum_aa: f64,
    pub sum_bb: f64,
}

/// Both estimates of one pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CkaValues {
    pub biased: f64,
    /// `None` when n < 4.
    pub debiased: Option<f64>,
}

impl CkaTerms {
    fn unbiased_hsic(&self, kl: f64, sum_a: f64, sum_b: f64, sum_ab: f64) -> f64 {
        let n = self.n as f64;
        (kl - sum_ab + sum_a * sum_b / ((n - 1.0) * (n - 2.0)) - 2.0 * sum_ab / (n - 2.0))
            / (n * (n - 3.0))
    }

    /// Unbiased HSIC of (X, Y), (X, X), (Y, Y); requires n >= 4.
    pub fn unbiased_hsics(&self) -> (f64, f64, f64) {
        (
            self.unbiased_hsic(self.kl, self.sum_a, self.sum_b, self.sum_ab),
            self.unbiased_hsic(self.kk, self.sum_a, self.sum_a, self.sum_aa),
            self.unbiased_hsic(self.ll, self.sum_b, self.sum_b, self.sum_bb),
        )
    }

    fn check_variance(&self, x_name: &str, y_name: &str) -> Result<()> {
        for (sum, name) in [(self.sum_a, x_name), (self.sum_b, y_name)] {
            if sum <= 0.0 {
                return Err(AnalysisError::ZeroVariance {
                    what: name.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The estimate, with errors instead of NaN (`x_name`/`y_name` name the inputs in errors).
    pub fn value(&self, estimator: Estimator, x_name: &str, y_name: &str) -> Result<f64> {
        let needed = match estimator {
            Estimator::Biased => 2,
            Estimator::Debiased => 4,
        };
        if self.n < needed {
            return Err(AnalysisError::TooFewSamples {
                what: format!("({x_name}, {y_name})"),
                estimator: match estimator {
                    Estimator::Biased => "biased CKA",
                    Estimator::Debiased => "debiased CKA (unbiased HSIC)",
                },
                found: self.n,
                needed,
            });
        }
        self.check_variance(x_name, y_name)?;
        match estimator {
            Estimator::Biased => Ok((self.kl / (self.kk.sqrt() * self.ll.sqrt())).clamp(0.0, 1.0)),
            Estimator::Debiased => {
                let (xy, xx, yy) = self.unbiased_hsics();
                for (v, name) in [(xx, x_name), (yy, y_name)] {
                    if v.is_nan() || v <= 0.0 {
                        return Err(AnalysisError::NonPositiveNormaliser {
                            what: name.to_string(),
                            value: v,
                        });
                    }
                }
                Ok(xy / (xx.sqrt() * yy.sqrt()))
            }
        }
    }

    /// Both estimates; the debiased one is `None` below n = 4.
    pub fn values(&self, x_name: &str, y_name: &str) -> Result<CkaValues> {
        let biased = self.value(Estimator::Biased, x_name, y_name)?;
        let debiased = if self.n >= 4 {
            Some(self.value(Estimator::Debiased, x_name, y_name)?)
        } else {
            None
        };
        Ok(CkaValues { biased, debiased })
    }
}

/// Errors if any value is NaN or infinite, naming the first one.
pub fn check_finite(x: ArrayView2<f64>, what: &str) -> Result<()> {
    if x.as_slice().is_some_and(linalg::all_finite) {
        return Ok(());
    }
    if let Some(((row, col), &value)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(AnalysisError::NonFinite {
            what: what.to_string(),
            row,
            col,
            value,
        });
    }
    Ok(())
}

/// Column-centred f64 copy (f64 mean, then subtraction: exact for constant offsets).
pub fn centred(x: ArrayView2<f64>) -> Array2<f64> {
    let mut x = x.to_owned();
    centre(&mut x);
    x
}

/// [`centred`] in place.
pub fn centre(x: &mut Array2<f64>) {
    let mean = column_means(x.view());
    *x -= &mean;
}

/// [`centre`] after [`check_finite`], the check folded into the means: a NaN or an infinity
/// makes its column's sum non-finite, so only then is every value looked at.
pub fn centre_finite(x: &mut Array2<f64>, what: &str) -> Result<()> {
    let mean = column_means(x.view());
    if !mean.iter().all(|m| m.is_finite()) {
        check_finite(x.view(), what)?;
    }
    *x -= &mean;
    Ok(())
}

fn column_means(x: ArrayView2<f64>) -> ndarray::Array1<f64> {
    let n = x.nrows().max(1) as f64;
    x.sum_axis(Axis(0)) / n
}

/// Squared row norms of a (centred) matrix.
pub fn row_sq_norms(x: ArrayView2<f64>) -> Vec<f64> {
    x.rows().into_iter().map(|r| r.dot(&r)).collect()
}

fn check_pair(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<()> {
    if x.nrows() != y.nrows() {
        return Err(AnalysisError::Shape {
            what: "CKA inputs".into(),
            reason: format!(
                "X has {} samples (rows) but Y has {}; rows must pair the same samples",
                x.nrows(),
                y.nrows()
            ),
        });
    }
    if x.ncols() == 0 || y.ncols() == 0 {
        return Err(AnalysisError::Shape {
            what: "CKA inputs".into(),
            reason: format!(
                "X is {:?} and Y is {:?}; both need features",
                x.dim(),
                y.dim()
            ),
        });
    }
    check_finite(x, "X")?;
    check_finite(y, "Y")
}

/// `<K, L>_F` of two symmetric matrices from their lower triangles (row-major).
fn lower_frob(k: &Array2<f64>, l: &Array2<f64>) -> f64 {
    let n = k.nrows();
    let (k, l) = (
        k.as_slice().expect("standard layout"),
        l.as_slice().expect("standard layout"),
    );
    (0..n)
        .map(|i| {
            let (a, b) = (&k[i * n..i * n + i + 1], &l[i * n..i * n + i + 1]);
            2.0 * linalg::dot(&a[..i], &b[..i]) + a[i] * b[i]
        })
        .sum()
}

fn frob2(m: &Array2<f64>) -> f64 {
    m.iter().map(|v| v * v).sum()
}

fn diag_terms(a: &[f64], b: &[f64]) -> (f64, f64, f64, f64, f64) {
    let sum_a = a.iter().sum();
    let sum_b = b.iter().sum();
    let sum_ab = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let sum_aa = a.iter().map(|x| x * x).sum();
    let sum_bb = b.iter().map(|x| x * x).sum();
    (sum_a, sum_b, sum_ab, sum_aa, sum_bb)
}

/// Which form computes the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `Xc^T Yc`, `Xc^T Xc`, `Yc^T Yc`: cost ~ n (d1 + d2)^2.
    Feature,
    /// `K = Xc Xc^T`, `L = Yc Yc^T`: cost ~ n^2 (d1 + d2).
    Gram,
}

impl Form {
    /// The cheaper form for these sizes (Gram when n < d).
    pub fn cheaper(n: usize, d1: usize, d2: usize) -> Self {
        let feature = n * (d1 + d2) * (d1 + d2);
        let gram = n * n * (d1 + d2);
        if gram < feature {
            Form::Gram
        } else {
            Form::Feature
        }
    }
}

/// The sufficient statistics of a pair, by the given form (inputs are centred here).
pub fn terms_with(x: ArrayView2<f64>, y: ArrayView2<f64>, form: Form) -> Result<CkaTerms> {
    check_pair(x, y)?;
    let (xc, yc) = (centred(x), centred(y));
    let (a, b) = (row_sq_norms(xc.view()), row_sq_norms(yc.view()));
    let (sum_a, sum_b, sum_ab, sum_aa, sum_bb) = diag_terms(&a, &b);
    let (kl, kk, ll) = match form {
        Form::Feature => {
            let xy = linalg::at_b(xc.view(), yc.view());
            let (xx, yy) = rayon::join(
                || linalg::cross_gram(xc.view()),
                || linalg::cross_gram(yc.view()),
            );
            (frob2(&xy), frob2(&xx), frob2(&yy))
        }
        Form::Gram => {
            // One triangle of each Gram, side by side, each product on one thread (faster than
            // each on both threads: docs/PERFORMANCE.md); the inner products over the triangles.
            let (k, l) = rayon::join(
                || linalg::gram_lower_on(xc.view(), Par::Seq),
                || linalg::gram_lower_on(yc.view(), Par::Seq),
            );
            (lower_frob(&k, &l), lower_frob(&k, &k), lower_frob(&l, &l))
        }
    };
    Ok(CkaTerms {
        n: x.nrows(),
        kl,
        kk,
        ll,
        sum_a,
        sum_b,
        sum_ab,
        sum_aa,
        sum_bb,
    })
}

/// The sufficient statistics of a pair, by the cheaper form.
pub fn terms(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<CkaTerms> {
    terms_with(x, y, Form::cheaper(x.nrows(), x.ncols(), y.ncols()))
}

/// Linear CKA of X `[n, d1]` and Y `[n, d2]` (rows = samples).
pub fn linear_cka(x: ArrayView2<f64>, y: ArrayView2<f64>, estimator: Estimator) -> Result<f64> {
    terms(x, y)?.value(estimator, "X", "Y")
}

/// f32 features to f64 (every estimator works in f64).
pub fn to_f64(x: ArrayView2<f32>) -> Array2<f64> {
    x.mapv(f64::from)
}

/// Minibatch CKA (Nguyen, Raghu and Kornblith 2021, "Do wide and deep networks learn the same
/// things?"): the unbiased HSICs averaged over consecutive batches of `batch` rows, then
/// `mean HSIC(X,Y) / sqrt(mean HSIC(X,X) mean HSIC(Y,Y))`. A different estimator from the full
/// debiased CKA: its value depends on the batch size. A last partial batch of fewer than 4 rows
/// is dropped.
pub fn minibatch_cka(x: ArrayView2<f64>, y: ArrayView2<f64>, batch: usize) -> Result<f64> {
    check_pair(x, y)?;
    if batch < 4 {
        return Err(AnalysisError::Invalid {
            what: "minibatch CKA".into(),
            reason: format!("batch size {batch} < 4; the unbiased HSIC needs 4 samples"),
        });
    }
    let n = x.nrows();
    let (mut sxy, mut sxx, mut syy, mut count) = (0.0, 0.0, 0.0, 0usize);
    let mut start = 0;
    while start + 4 <= n {
        let end = (start + batch).min(n);
        let t = terms(
            x.slice(ndarray::s![start..end, ..]),
            y.slice(ndarray::s![start..end, ..]),
        )?;
        let (xy, xx, yy) = t.unbiased_hsics();
        sxy += xy;
        sxx += xx;
        syy += yy;
        count += 1;
        start = end;
    }
    if count == 0 {
        return Err(AnalysisError::TooFewSamples {
            what: "(X, Y)".into(),
            estimator: "minibatch CKA",
            found: n,
            needed: 4,
        });
    }
    for (v, name) in [(sxx, "X"), (syy, "Y")] {
        if v <= 0.0 {
            return Err(AnalysisError::NonPositiveNormaliser {
                what: name.into(),
                value: v / count as f64,
            });
        }
    }
    Ok(sxy / (sxx.sqrt() * syy.sqrt()))
}
