//! Exact streaming CKA: rows arrive in chunks (any sizes, any order, from any number of
//! workers), accumulators merge, and the result equals the batch computation to ~1e-12 in f64,
//! also with large constant offsets on the features.
//!
//! Two stores, chosen by [`StreamingCka::new`] from the expected sample count:
//!
//! - **moments** (memory `8 (d1^2 + d2^2 + d1 d2)` bytes, independent of n): per chunk, centred
//!   co-moments `Cxx = Uc^T Uc`, `Cyy`, `Cxy`, and the fourth-order terms the debiased estimator
//!   needs (`sum_i |u_i|^2 |w_i|^2`, `sum_i u_i |w_i|^2`, ...), each about the chunk's own mean.
//!   Merging shifts both operands to the combined mean with closed-form updates (the Chan et al.
//!   pairwise update, extended to the fourth-order terms), so raw moments are never formed and
//!   offsets cancel exactly instead of catastrophically.
//! - **rows** (memory `8 n (d1 + d2)` bytes): keeps the rows and uses the Gram form at the end;
//!   smaller when n < (d1^2 + d2^2 + d1 d2) / (d1 + d2), e.g. a few thousand prompts of 2048-d
//!   features.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, concatenate};

use crate::cka::{self, CkaTerms, Estimator, check_finite};
use crate::error::{AnalysisError, Result};
use crate::linalg;

/// Centred moments of a pair, about the current mean.
#[derive(Debug, Clone)]
pub struct PairMoments {
    pub n: usize,
    pub mean_x: Array1<f64>,
    pub mean_y: Array1<f64>,
    /// `sum u u^T`, `sum w w^T`, `sum u w^T` (u, w: centred rows of X, Y)
    pub cxx: Array2<f64>,
    pub cyy: Array2<f64>,
    pub cxy: Array2<f64>,
    /// `sum u |w|^2`, `sum w |u|^2`, `sum u |u|^2`, `sum w |w|^2`
    pub t_x: Array1<f64>,
    pub t_y: Array1<f64>,
    pub t_xx: Array1<f64>,
    pub t_yy: Array1<f64>,
    /// `sum |u|^2 |w|^2`, `sum |u|^4`, `sum |w|^4`
    pub s_xy: f64,
    pub s_xx: f64,
    pub s_yy: f64,
}

impl PairMoments {
    fn empty(d1: usize, d2: usize) -> Self {
        Self {
            n: 0,
            mean_x: Array1::zeros(d1),
            mean_y: Array1::zeros(d2),
            cxx: Array2::zeros((d1, d1)),
            cyy: Array2::zeros((d2, d2)),
            cxy: Array2::zeros((d1, d2)),
            t_x: Array1::zeros(d1),
            t_y: Array1::zeros(d2),
            t_xx: Array1::zeros(d1),
            t_yy: Array1::zeros(d2),
            s_xy: 0.0,
            s_xx: 0.0,
            s_yy: 0.0,
        }
    }

    /// Moments of one chunk about its own mean (two passes over the chunk).
    fn of_chunk(x: ArrayView2<f64>, y: ArrayView2<f64>) -> Self {
        let n = x.nrows();
        let mean_x = x.sum_axis(Axis(0)) / n as f64;
        let mean_y = y.sum_axis(Axis(0)) / n as f64;
        let u = &x - &mean_x;
        let w = &y - &mean_y;
        let a = Array1::from(cka::row_sq_norms(u.view()));
        let b = Array1::from(cka::row_sq_norms(w.view()));
        let ((cxx, cyy), cxy) = rayon::join(
            || {
                rayon::join(
                    || linalg::cross_gram(u.view()),
                    || linalg::cross_gram(w.view()),
                )
            },
            || linalg::at_b(u.view(), w.view()),
        );
        Self {
            n,
            t_x: u.t().dot(&b),
            t_y: w.t().dot(&a),
            t_xx: u.t().dot(&a),
            t_yy: w.t().dot(&b),
            s_xy: a.dot(&b),
            s_xx: a.dot(&a),
            s_yy: b.dot(&b),
            mean_x,
            mean_y,
            cxx,
            cyy,
            cxy,
        }
    }

    /// Re-expresses the moments about `mean + (delta, eps)`, i.e. for centred rows
    /// `u - delta`, `w - eps`.
    fn shift(&mut self, delta: ArrayView1<f64>, eps: ArrayView1<f64>) {
        let n = self.n as f64;
        let tr_x = self.cxx.diag().sum();
        let tr_y = self.cyy.diag().sum();
        let dd = delta.dot(&delta);
        let ee = eps.dot(&eps);
        let cxx_d = self.cxx.dot(&delta);
        let cyy_e = self.cyy.dot(&eps);
        let cxy_e = self.cxy.dot(&eps);
        let cyx_d = self.cxy.t().dot(&delta);
        let d_cxy_e = delta.dot(&cxy_e);
        // Scalars first: they read the unshifted vectors and matrices.
        self.s_xy = self.s_xy - 2.0 * eps.dot(&self.t_y) + ee * tr_x - 2.0 * delta.dot(&self.t_x)
            + 4.0 * d_cxy_e
            + dd * tr_y
            + n * dd * ee;
        self.s_xx = self.s_xx - 4.0 * delta.dot(&self.t_xx)
            + 2.0 * dd * tr_x
            + 4.0 * delta.dot(&cxx_d)
            + n * dd * dd;
        self.s_yy = self.s_yy - 4.0 * eps.dot(&self.t_yy)
            + 2.0 * ee * tr_y
            + 4.0 * eps.dot(&cyy_e)
            + n * ee * ee;
        // sum (u - d)|w - e|^2 = t_x - 2 Cxy e - d tr_y - n d |e|^2
        self.t_x = &self.t_x - &(2.0 * &cxy_e) - &(tr_y * &delta) - &((n * ee) * &delta);
        self.t_y = &self.t_y - &(2.0 * &cyx_d) - &(tr_x * &eps) - &((n * dd) * &eps);
        self.t_xx = &self.t_xx - &(2.0 * &cxx_d) - &(tr_x * &delta) - &((n * dd) * &delta);
        self.t_yy = &self.t_yy - &(2.0 * &cyy_e) - &(tr_y * &eps) - &((n * ee) * &eps);
        // sum (u - d)(w - e)^T = Cxy + n d e^T
        let d2 = delta.insert_axis(Axis(1));
        let e2 = eps.insert_axis(Axis(1));
        self.cxx.scaled_add(n, &d2.dot(&d2.t()));
        self.cyy.scaled_add(n, &e2.dot(&e2.t()));
        self.cxy.scaled_add(n, &d2.dot(&e2.t()));
        self.mean_x = &self.mean_x + &delta;
        self.mean_y = &self.mean_y + &eps;
    }

    /// Merges `other` into `self` exactly.
    pub fn merge(&mut self, mut other: PairMoments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other;
            return;
        }
        let n = (self.n + other.n) as f64;
        let w = other.n as f64 / n;
        let mean_x = &self.mean_x + &(w * &(&other.mean_x - &self.mean_x));
        let mean_y = &self.mean_y + &(w * &(&other.mean_y - &self.mean_y));
        let (dx, dy) = (&mean_x - &self.mean_x, &mean_y - &self.mean_y);
        self.shift(dx.view(), dy.view());
        let (dx, dy) = (&mean_x - &other.mean_x, &mean_y - &other.mean_y);
        other.shift(dx.view(), dy.view());
        self.n += other.n;
        self.cxx += &other.cxx;
        self.cyy += &other.cyy;
        self.cxy += &other.cxy;
        self.t_x += &other.t_x;
        self.t_y += &other.t_y;
        self.t_xx += &other.t_xx;
        self.t_yy += &other.t_yy;
        self.s_xy += other.s_xy;
        self.s_xx += other.s_xx;
        self.s_yy += other.s_yy;
        self.mean_x = mean_x;
        self.mean_y = mean_y;
    }

    /// The pair's sufficient statistics.
    pub fn terms(&self) -> CkaTerms {
        let f = |m: &Array2<f64>| m.iter().map(|v| v * v).sum::<f64>();
        CkaTerms {
            n: self.n,
            kl: f(&self.cxy),
            kk: f(&self.cxx),
            ll: f(&self.cyy),
            sum_a: self.cxx.diag().sum(),
            sum_b: self.cyy.diag().sum(),
            sum_ab: self.s_xy,
            sum_aa: self.s_xx,
            sum_bb: self.s_yy,
        }
    }
}

/// Where a [`StreamingCka`] keeps what it has seen.
#[derive(Debug, Clone)]
enum Store {
    Moments(Box<PairMoments>),
    Rows {
        x: Vec<Array2<f64>>,
        y: Vec<Array2<f64>>,
    },
}

/// An exact streaming CKA accumulator for one (X, Y) pair.
#[derive(Debug, Clone)]
pub struct StreamingCka {
    d1: usize,
    d2: usize,
    store: Store,
    n: usize,
}

impl StreamingCka {
    /// An accumulator for `d1`- and `d2`-dimensional features. `expected_n` picks the smaller
    /// store (rows when n is small against the widths, moments otherwise; `None` = moments).
    pub fn new(d1: usize, d2: usize, expected_n: Option<usize>) -> Self {
        let moments_mem = d1 * d1 + d2 * d2 + d1 * d2;
        let rows = expected_n.is_some_and(|n| n * (d1 + d2) < moments_mem);
        Self::with_store(d1, d2, rows)
    }

    /// An accumulator with the moments store (memory independent of n).
    pub fn moments(d1: usize, d2: usize) -> Self {
        Self::with_store(d1, d2, false)
    }

    /// An accumulator that keeps the rows (Gram form at the end).
    pub fn rows(d1: usize, d2: usize) -> Self {
        Self::with_store(d1, d2, true)
    }

    fn with_store(d1: usize, d2: usize, rows: bool) -> Self {
        let store = if rows {
            Store::Rows {
                x: Vec::new(),
                y: Vec::new(),
            }
        } else {
            Store::Moments(Box::new(PairMoments::empty(d1, d2)))
        };
        Self {
            d1,
            d2,
            store,
            n: 0,
        }
    }

    /// Samples seen so far.
    pub fn n(&self) -> usize {
        self.n
    }

    /// True for the moments store.
    pub fn is_moments(&self) -> bool {
        matches!(self.store, Store::Moments(_))
    }

    /// Adds a chunk of paired rows.
    pub fn update(&mut self, x: ArrayView2<f64>, y: ArrayView2<f64>) -> Result<()> {
        if x.nrows() != y.nrows() || x.ncols() != self.d1 || y.ncols() != self.d2 {
            return Err(AnalysisError::Shape {
                what: "streaming CKA chunk".into(),
                reason: format!(
                    "got X {:?} and Y {:?}; expected [m, {}] and [m, {}] with the same m",
                    x.dim(),
                    y.dim(),
                    self.d1,
                    self.d2
                ),
            });
        }
        if x.nrows() == 0 {
            return Ok(());
        }
        check_finite(x, "X chunk")?;
        check_finite(y, "Y chunk")?;
        self.n += x.nrows();
        match &mut self.store {
            Store::Moments(m) => m.merge(PairMoments::of_chunk(x, y)),
            Store::Rows { x: xs, y: ys } => {
                xs.push(x.to_owned());
                ys.push(y.to_owned());
            }
        }
        Ok(())
    }

    /// Merges another accumulator of the same widths (e.g. from another worker).
    pub fn merge(&mut self, other: StreamingCka) -> Result<()> {
        if (other.d1, other.d2) != (self.d1, self.d2) {
            return Err(AnalysisError::Shape {
                what: "streaming CKA merge".into(),
                reason: format!(
                    "widths ({}, {}) and ({}, {}) differ",
                    self.d1, self.d2, other.d1, other.d2
                ),
            });
        }
        match other.store {
            Store::Moments(m) => {
                self.convert_to_moments();
                if let Store::Moments(mine) = &mut self.store {
                    mine.merge(*m);
                }
                self.n += other.n;
                Ok(())
            }
            Store::Rows { x, y } => {
                for (a, b) in x.iter().zip(&y) {
                    self.update(a.view(), b.view())?;
                }
                Ok(())
            }
        }
    }

    fn convert_to_moments(&mut self) {
        if let Store::Rows { x, y } = &self.store {
            let mut m = PairMoments::empty(self.d1, self.d2);
            for (a, b) in x.iter().zip(y) {
                m.merge(PairMoments::of_chunk(a.view(), b.view()));
            }
            self.store = Store::Moments(Box::new(m));
        }
    }

    /// The sufficient statistics so far.
    pub fn terms(&self) -> Result<CkaTerms> {
        match &self.store {
            Store::Moments(m) => Ok(m.terms()),
            Store::Rows { x, y } => {
                if x.is_empty() {
                    return Ok(PairMoments::empty(self.d1, self.d2).terms());
                }
                let xv: Vec<_> = x.iter().map(|a| a.view()).collect();
                let yv: Vec<_> = y.iter().map(|a| a.view()).collect();
                let x = concatenate(Axis(0), &xv).expect("same widths");
                let y = concatenate(Axis(0), &yv).expect("same widths");
                cka::terms_with(x.view(), y.view(), cka::Form::Gram)
            }
        }
    }

    /// The estimate so far.
    pub fn value(&self, estimator: Estimator) -> Result<f64> {
        self.terms()?.value(estimator, "X", "Y")
    }
}
