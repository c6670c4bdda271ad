//! Tallies of pairwise judgments and the naive statistics of a proportion (STUDY.md 4.1-4.3):
//! shares, the win rate among decisive votes with Wilson, Clopper-Pearson and Jeffreys
//! intervals, and the exact two-sided sign test. These treat every vote as independent: the
//! report labels them so and puts the clustered inference first.

use serde::{Deserialize, Serialize};

use super::special::{beta_quantile, ln_gamma, normal_quantile};

/// One criterion's judgments of one system pair (A, B): wins of A, wins of B, ties (both-bad
/// votes included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tally {
    pub a: u64,
    pub b: u64,
    pub ties: u64,
}

impl Tally {
    /// All judgments.
    pub fn total(&self) -> u64 {
        self.a + self.b + self.ties
    }

    /// Decisive judgments (ties dropped).
    pub fn decisive(&self) -> u64 {
        self.a + self.b
    }

    /// `(s_A, s_tie, s_B)`: shares of all judgments (what a stacked bar shows).
    pub fn shares(&self) -> Option<(f64, f64, f64)> {
        let n = self.total() as f64;
        (n > 0.0).then(|| (self.a as f64 / n, self.ties as f64 / n, self.b as f64 / n))
    }

    /// A's win rate among decisive votes, `W / (W + L)`.
    pub fn win_rate(&self) -> Option<f64> {
        let n = self.decisive();
        (n > 0).then(|| self.a as f64 / n as f64)
    }

    /// A's score with ties as half-wins, `(W + T/2) / N` (Chatbot Arena's convention).
    pub fn half_score(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| (self.a as f64 + 0.5 * self.ties as f64) / n as f64)
    }
}

/// An interval for a proportion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// The Wilson (score) interval of `k` successes in `n` at level `level` (e.g. 0.95).
pub fn wilson(k: u64, n: u64, level: f64) -> Option<Interval> {
    if n == 0 || k > n {
        return None;
    }
    let z = normal_quantile(1.0 - (1.0 - level) / 2.0);
    let (at_zero, at_n) = (k == 0, k == n);
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    // At k = 0 and k = n one bound is 0 or 1 exactly; the closed form leaves a rounding residue.
    Some(Interval {
        lower: if at_zero {
            0.0
        } else {
            (centre - half).max(0.0)
        },
        upper: if at_n { 1.0 } else { (centre + half).min(1.0) },
    })
}

/// An interval of Beta quantiles: the lower bound from Beta(`lo`) at α/2 (0 at `k = 0`), the
/// upper from Beta(`hi`) at 1 − α/2 (1 at `k = n`).
fn beta_interval(
    k: u64,
    n: u64,
    level: f64,
    lo: impl Fn(f64, f64) -> (f64, f64),
    hi: impl Fn(f64, f64) -> (f64, f64),
) -> Option<Interval> {
    if n == 0 || k > n {
        return None;
    }
    let alpha = 1.0 - level;
    let (kf, nf) = (k as f64, n as f64);
    let (a, b) = lo(kf, nf);
    let lower = if k == 0 {
        0.0
    } else {
        beta_quantile(alpha / 2.0, a, b)
    };
    let (a, b) = hi(kf, nf);
    let upper = if k == n {
        1.0
    } else {
        beta_quantile(1.0 - alpha / 2.0, a, b)
    };
    Some(Interval { lower, upper })
}

/// The Clopper-Pearson ("exact") interval: Beta(k, n − k + 1) and Beta(k + 1, n − k)
/// quantiles, 0 at `k = 0` and 1 at `k = n`.
pub fn clopper_pearson(k: u64, n: u64, level: f64) -> Option<Interval> {
    beta_interval(
        k,
        n,
        level,
        |k, n| (k, n - k + 1.0),
        |k, n| (k + 1.0, n - k),
    )
}

/// The Jeffreys interval: Beta(k + 1/2, n - k + 1/2) quantiles, 0 at `k = 0` and 1 at `k = n`
/// (statsmodels returns a small positive lower bound at `k = 0`; this convention is scipy's).
pub fn jeffreys(k: u64, n: u64, level: f64) -> Option<Interval> {
    let half = |k: f64, n: f64| (k + 0.5, n - k + 0.5);
    beta_interval(k, n, level, half, half)
}

/// The exact two-sided binomial test of `k` successes in `n` against `p = 1/2` (the sign test
/// of decisive votes), with scipy's rule: the sum of the probabilities of every outcome no more
/// likely than the observed one (within a relative 1e-7).
pub fn sign_test(k: u64, n: u64) -> Option<f64> {
    if n == 0 || k > n {
        return None;
    }
    let ln_pmf = |i: u64| {
        ln_gamma(n as f64 + 1.0)
            - ln_gamma(i as f64 + 1.0)
            - ln_gamma((n - i) as f64 + 1.0)
            - n as f64 * std::f64::consts::LN_2
    };
    let observed = ln_pmf(k);
    let bound = observed + (1.0 + 1e-7f64).ln();
    let p: f64 = (0..=n)
        .map(ln_pmf)
        .filter(|&l| l <= bound)
        .map(f64::exp)
        .sum();
    Some(p.min(1.0))
}

/// Holm-Bonferroni adjusted p-values, in the order given: sort ascending, multiply the i-th
/// smallest by `m - i`, take the running maximum, cap at 1 (statsmodels' `multipletests`
/// with `method="holm"`).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max((p[i] * (m - rank) as f64).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// STUDY.md 4.2 and 4.3's check values (scipy's, to the five digits printed there).
    #[test]
    fn the_study_notes_check_values_hold() {
        type Method = fn(u64, u64, f64) -> Option<Interval>;
        let cases: [(Method, u64, u64, f64, f64); 6] = [
            (clopper_pearson, 7, 50, 0.05819, 0.26740),
            (wilson, 1456, 2080, 0.67995, 0.71931),
            (clopper_pearson, 1456, 2080, 0.67979, 0.71964),
            (wilson, 1102, 2080, 0.50832, 0.55118),
            (wilson, 28, 40, 0.54570, 0.81925),
            (clopper_pearson, 28, 40, 0.53468, 0.83437),
        ];
        for (method, k, n, lo, hi) in cases {
            let ci = method(k, n, 0.95).unwrap();
            assert!(
                close(ci.lower, lo, 5e-6) && close(ci.upper, hi, 5e-6),
                "{k}/{n}: {ci:?}"
            );
        }
        assert!(close(sign_test(1102, 2080).unwrap(), 0.00698, 5e-6));
        assert!(close(sign_test(28, 40).unwrap(), 0.0166, 5e-5));
    }

    #[test]
    fn boundaries_and_symmetry() {
        let cp = clopper_pearson(0, 10, 0.95).unwrap();
        assert_eq!(cp.lower, 0.0);
        assert_eq!(clopper_pearson(10, 10, 0.95).unwrap().upper, 1.0);
        assert_eq!(jeffreys(0, 10, 0.95).unwrap().lower, 0.0);
        let w = wilson(0, 10, 0.95).unwrap();
        assert!(w.lower == 0.0 && w.upper > 0.0);
        assert_eq!(sign_test(5, 10), Some(1.0));
        assert!(close(
            sign_test(3, 10).unwrap(),
            sign_test(7, 10).unwrap(),
            1e-15
        ));
        assert!(wilson(1, 0, 0.95).is_none() && sign_test(3, 2).is_none());
        let t = Tally {
            a: 6,
            b: 2,
            ties: 2,
        };
        assert_eq!(t.win_rate(), Some(0.75));
        assert_eq!(t.half_score(), Some(0.7));
        assert_eq!(t.shares(), Some((0.6, 0.2, 0.2)));
    }

    #[test]
    fn holm_adjusts_in_the_given_order() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (a, w) in adj.iter().zip(want) {
            assert!(close(*a, w, 1e-15), "{adj:?}");
        }
        // 0.6 x 2 is capped at 1, and the running maximum carries it to 0.9's place.
        assert_eq!(holm(&[0.6, 0.9]), vec![1.0, 1.0]);
    }
}
