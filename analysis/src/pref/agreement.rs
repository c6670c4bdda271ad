//! Agreement between raters (STUDY.md 4.8), on system-coded labels (never left/right): raw
//! pairwise agreement, Fleiss' κ, Krippendorff's α (nominal, and ordinal with A > tie > B;
//! missing ratings allowed) with a rater-cluster bootstrap interval, and each rater's
//! leave-one-out agreement with the majority of the others.
//!
//! The kappa paradox (Feinstein & Cicchetti 1990): when one system wins everywhere, chance
//! agreement is high and κ and α collapse although raters agree; the report shows raw
//! agreement and prevalence beside them and never gates a result on κ.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::proportion::Interval;
use crate::inference::quantile;

/// The level of measurement of Krippendorff's α.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Nominal,
    /// Categories ordered by their index (B = 0 < tie = 1 < A = 2).
    Ordinal,
}

/// Fleiss' κ with its parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fleiss {
    pub kappa: f64,
    /// P̄: the mean over items of the pairwise agreement.
    pub raw_agreement: f64,
    /// P̄_e = Σ_c p_c².
    pub chance_agreement: f64,
}

/// The raw pairwise agreement of one item's category counts, Σ_c n_c(n_c − 1)/(n(n − 1));
/// `None` below two ratings.
pub fn item_agreement(counts: &[u64]) -> Option<f64> {
    let n: u64 = counts.iter().sum();
    (n >= 2).then(|| {
        counts
            .iter()
            .map(|&c| (c * c.saturating_sub(1)) as f64)
            .sum::<f64>()
            / (n * (n - 1)) as f64
    })
}

/// The mean raw pairwise agreement over items with at least two ratings (incomplete designs
/// allowed).
pub fn raw_agreement(counts: &[Vec<u64>]) -> Option<f64> {
    let a: Vec<f64> = counts.iter().filter_map(|c| item_agreement(c)).collect();
    (!a.is_empty()).then(|| a.iter().sum::<f64>() / a.len() as f64)
}

/// Fleiss' κ of an items × categories count table whose rows all hold the same number of
/// ratings (statsmodels' `fleiss_kappa`). `None` when the rows differ in size, hold fewer than
/// two ratings, or when chance agreement is 1 (one category only).
pub fn fleiss(counts: &[Vec<u64>]) -> Option<Fleiss> {
    let n: u64 = counts.first()?.iter().sum();
    if n < 2 || counts.iter().any(|c| c.iter().sum::<u64>() != n) {
        return None;
    }
    let cats = counts[0].len();
    let total = (n as usize * counts.len()) as f64;
    let p_e: f64 = (0..cats)
        .map(|c| {
            let p = counts.iter().map(|row| row[c]).sum::<u64>() as f64 / total;
            p * p
        })
        .sum();
    let p_bar = raw_agreement(counts)?;
    (p_e < 1.0).then(|| Fleiss {
        kappa: (p_bar - p_e) / (1.0 - p_e),
        raw_agreement: p_bar,
        chance_agreement: p_e,
    })
}

/// Krippendorff's α of a raters × units table of category indices (`None` = missing), with
/// `categories` categories. Units with fewer than two ratings are not pairable and left out.
/// `None` when fewer than two pairable values exist or the expected disagreement is 0 (every
/// value the same category).
pub fn krippendorff(data: &[Vec<Option<usize>>], categories: usize, level: Level) -> Option<f64> {
    let units = data.iter().map(|r| r.len()).max().unwrap_or(0);
    // The coincidence matrix o_ck.
    let mut o = vec![vec![0.0f64; categories]; categories];
    for u in 0..units {
        let values: Vec<usize> = data
            .iter()
            .filter_map(|row| row.get(u).copied().flatten())
            .collect();
        let m = values.len();
        if m < 2 {
            continue;
        }
        let mut count = vec![0.0f64; categories];
        for &v in &values {
            count[v] += 1.0;
        }
        for c in 0..categories {
            for k in 0..categories {
                let pairs = if c == k {
                    count[c] * (count[c] - 1.0)
                } else {
                    count[c] * count[k]
                };
                o[c][k] += pairs / (m as f64 - 1.0);
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();
    if n < 2.0 {
        return None;
    }
    let delta2 = |c: usize, k: usize| -> f64 {
        match level {
            Level::Nominal => (c != k) as u8 as f64,
            Level::Ordinal => {
                let (lo, hi) = (c.min(k), c.max(k));
                let between: f64 = n_c[lo..=hi].iter().sum();
                (between - (n_c[lo] + n_c[hi]) / 2.0).powi(2)
            }
        }
    };
    let (mut d_o, mut d_e) = (0.0, 0.0);
    for c in 0..categories {
        for k in 0..categories {
            let d = delta2(c, k);
            d_o += o[c][k] * d;
            d_e += n_c[c] * n_c[k] * d;
        }
    }
    (d_e > 0.0).then(|| 1.0 - (n - 1.0) * d_o / d_e)
}

/// A percentile interval of Krippendorff's α over raters resampled with replacement (the rater
/// clusters of a study); rounds whose resample gives no α are skipped.
pub fn krippendorff_rater_bootstrap(
    data: &[Vec<Option<usize>>],
    categories: usize,
    level: Level,
    rounds: usize,
    seed: u64,
    confidence: f64,
) -> Option<Interval> {
    let r = data.len();
    if r < 2 {
        return None;
    }
    let values: Vec<f64> = (0..rounds)
        .filter_map(|round| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(round as u64));
            let resample: Vec<Vec<Option<usize>>> = (0..r)
                .map(|_| data[rng.random_range(0..r)].clone())
                .collect();
            krippendorff(&resample, categories, level)
        })
        .collect();
    let tail = (1.0 - confidence) / 2.0;
    (values.len() >= 10).then(|| Interval {
        lower: quantile(&values, tail),
        upper: quantile(&values, 1.0 - tail),
    })
}

/// Each rater's agreement with the majority of the other raters, over the units where the
/// rater has a value and the others a strict majority (`None` for a rater with no such unit).
pub fn leave_one_out(data: &[Vec<Option<usize>>], categories: usize) -> Vec<Option<f64>> {
    data.iter()
        .enumerate()
        .map(|(i, row)| {
            let (mut agree, mut units) = (0usize, 0usize);
            for (u, value) in row.iter().enumerate() {
                let Some(value) = value else { continue };
                let mut count = vec![0usize; categories];
                for (j, other) in data.iter().enumerate() {
                    if j != i
                        && let Some(Some(v)) = other.get(u)
                    {
                        count[*v] += 1;
                    }
                }
                let best = *count.iter().max().unwrap_or(&0);
                if best == 0 || count.iter().filter(|&&c| c == best).count() > 1 {
                    continue;
                }
                units += 1;
                agree += (count[*value] == best) as usize;
            }
            (units > 0).then(|| agree as f64 / units as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_chance_agreement() {
        let perfect = vec![vec![5, 0, 0], vec![0, 5, 0], vec![0, 0, 5], vec![5, 0, 0]];
        let f = fleiss(&perfect).unwrap();
        assert!((f.kappa - 1.0).abs() < 1e-15 && f.raw_agreement == 1.0);
        let rows: Vec<Vec<Option<usize>>> = vec![
            vec![Some(0), Some(1), Some(2)],
            vec![Some(0), Some(1), Some(2)],
        ];
        assert!((krippendorff(&rows, 3, Level::Nominal).unwrap() - 1.0).abs() < 1e-15);
        // Unequal rows: Fleiss refuses, raw agreement does not.
        assert!(fleiss(&[vec![2, 0], vec![1, 2]]).is_none());
        assert_eq!(
            raw_agreement(&[vec![2, 0], vec![1, 2]]),
            Some((1.0 + 1.0 / 3.0) / 2.0)
        );
        // One category only: no expected disagreement.
        assert!(
            krippendorff(
                &[vec![Some(1), Some(1)], vec![Some(1), Some(1)]],
                3,
                Level::Nominal
            )
            .is_none()
        );
    }

    #[test]
    fn leave_one_out_counts_strict_majorities() {
        let data = vec![
            vec![Some(2), Some(2), Some(0)],
            vec![Some(2), Some(0), Some(0)],
            vec![Some(2), Some(2), None],
        ];
        // Rater 0: unit 0 others {2,2} agree; unit 1 others {0,2} tie: skipped; unit 2 others
        // {0}: agree. Rater 1: units 0 and 2 agree, unit 1 (others {2,2}) does not.
        assert_eq!(leave_one_out(&data, 3)[0], Some(1.0));
        assert_eq!(leave_one_out(&data, 3)[1], Some(2.0 / 3.0));
    }
}
