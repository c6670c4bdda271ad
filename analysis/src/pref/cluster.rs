//! Inference that respects how votes cluster (STUDY.md 4.4-4.7 and 4.10): every judgment of a
//! study shares its images with the other judgments of its prompt and its taste with the other
//! judgments of its rater, so the votes are not independent. Here: the two-way (pigeonhole)
//! cluster bootstrap over prompts and raters, the prompt-level sign-flip test, the intraclass
//! correlation with its design effect, the by-rater and by-prompt t diagnostics, the planner's
//! closed forms, the heterogeneity statistic over prompts and the φ coefficient of two
//! criteria.
//!
//! Every resampling draws its round `r` from its own ChaCha stream (`seed + r`), so results do
//! not depend on the thread count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::proportion::{Interval, Tally};
use super::special::{chi2_sf, normal_quantile, student_t_two_sided};
use crate::error::{AnalysisError, Result};
use crate::inference::quantile;

/// A system-coded outcome of one judgment: A chosen, B chosen, or a tie (both-bad included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    A,
    B,
    Tie,
}

/// One judgment of one criterion and system pair: the prompt cluster (all seeds of a prompt)
/// and the rater, as dense indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub prompt: usize,
    pub rater: usize,
    pub outcome: Outcome,
}

/// The tally of a list of votes.
pub fn tally(votes: &[Vote]) -> Tally {
    let mut t = Tally::default();
    for v in votes {
        match v.outcome {
            Outcome::A => t.a += 1,
            Outcome::B => t.b += 1,
            Outcome::Tie => t.ties += 1,
        }
    }
    t
}

/// The number of prompt and rater clusters: one more than the largest index.
fn clusters(votes: &[Vote]) -> (usize, usize) {
    votes.iter().fold((0, 0), |(p, r), v| {
        (p.max(v.prompt + 1), r.max(v.rater + 1))
    })
}

fn round_rng(seed: u64, kind: u64, r: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(
        seed.wrapping_add(r as u64)
            .wrapping_add(kind.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    )
}

/// Multiplicities of `n` clusters drawn with replacement (a Multinomial(n, 1/n) vector).
fn multiplicities(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    let mut w = vec![0.0; n];
    for _ in 0..n {
        w[rng.random_range(0..n)] += 1.0;
    }
    w
}

/// The prompt and rater multiplicities of round `r` of a two-way bootstrap (Owen 2007): both
/// index sets are resampled independently, and a judgment's weight is the product.
pub fn two_way_weights(prompts: usize, raters: usize, seed: u64, r: usize) -> (Vec<f64>, Vec<f64>) {
    let mut rng = round_rng(seed, 11, r);
    let w = multiplicities(&mut rng, prompts);
    let v = multiplicities(&mut rng, raters);
    (w, v)
}

/// The two-way cluster bootstrap of one system pair's votes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterBootstrap {
    /// Percentile interval of A's win rate among decisive votes (the primary interval).
    pub win_rate: Interval,
    /// Percentile interval of the tie-as-half score.
    pub half_score: Interval,
    /// Percentile interval of the tie share.
    pub tie_share: Interval,
    /// Standard deviation of the win-rate replicates.
    pub win_rate_se: f64,
    pub rounds: usize,
    /// Rounds whose resample held no decisive vote (left out of the win-rate interval).
    pub empty_rounds: usize,
    pub seed: u64,
    pub level: f64,
}

/// The two-way (pigeonhole) cluster bootstrap over prompts and raters (STUDY.md 4.5): in each
/// of `rounds` rounds prompt multiplicities and rater multiplicities are drawn independently,
/// each vote weighted by their product; percentile intervals at `level`.
pub fn cluster_bootstrap(
    votes: &[Vote],
    rounds: usize,
    seed: u64,
    level: f64,
) -> Result<ClusterBootstrap> {
    if votes.is_empty() {
        return Err(invalid("the cluster bootstrap", "there are no votes"));
    }
    if rounds < 10 {
        return Err(invalid(
            "the cluster bootstrap",
            format!("{rounds} rounds are too few for a percentile interval (use at least 100)"),
        ));
    }
    let (prompts, raters) = clusters(votes);
    let stats: Vec<[f64; 3]> = (0..rounds)
        .into_par_iter()
        .map(|r| {
            let (w, v) = two_way_weights(prompts, raters, seed, r);
            let (mut a, mut b, mut t) = (0.0, 0.0, 0.0);
            for vote in votes {
                let weight = w[vote.prompt] * v[vote.rater];
                match vote.outcome {
                    Outcome::A => a += weight,
                    Outcome::B => b += weight,
                    Outcome::Tie => t += weight,
                }
            }
            let total = a + b + t;
            let win = if a + b > 0.0 { a / (a + b) } else { f64::NAN };
            let (half, ties) = if total > 0.0 {
                ((a + 0.5 * t) / total, t / total)
            } else {
                (f64::NAN, f64::NAN)
            };
            [win, half, ties]
        })
        .collect();
    let column = |c: usize| -> Vec<f64> {
        stats
            .iter()
            .map(|s| s[c])
            .filter(|x| x.is_finite())
            .collect()
    };
    let wins = column(0);
    if wins.is_empty() {
        return Err(invalid(
            "the cluster bootstrap",
            "no vote is decisive (every judgment is a tie): the win rate is undefined",
        ));
    }
    let tail = (1.0 - level) / 2.0;
    let interval = |x: &[f64]| Interval {
        lower: quantile(x, tail),
        upper: quantile(x, 1.0 - tail),
    };
    let mean = wins.iter().sum::<f64>() / wins.len() as f64;
    let se = (wins.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
        / (wins.len().max(2) - 1) as f64)
        .sqrt();
    Ok(ClusterBootstrap {
        win_rate: interval(&wins),
        half_score: interval(&column(1)),
        tie_share: interval(&column(2)),
        win_rate_se: se,
        rounds,
        empty_rounds: rounds - wins.len(),
        seed,
        level,
    })
}

/// The prompt-level sign-flip permutation test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignFlip {
    /// S = Σ_i (W_i − L_i) over prompts.
    pub statistic: i64,
    pub p_value: f64,
    /// Whether every sign vector was enumerated (at most 20 prompts with a non-zero margin).
    pub exact: bool,
    pub rounds: usize,
    /// Prompts whose margin is non-zero (the others cannot change S).
    pub informative_prompts: usize,
}

/// The prompt-level sign-flip test (STUDY.md 4.5): d_i = W_i − L_i summed over every judgment
/// of prompt i; under H0 the signs of the d_i are symmetric; two-sided on |S|. Exact when at
/// most 20 prompts have d_i ≠ 0, otherwise `(1 + #{|S*| ≥ |S|}) / (rounds + 1)`.
pub fn sign_flip(votes: &[Vote], rounds: usize, seed: u64) -> Result<SignFlip> {
    if votes.is_empty() {
        return Err(invalid("the sign-flip test", "there are no votes"));
    }
    let (prompts, _) = clusters(votes);
    let mut d = vec![0i64; prompts];
    for v in votes {
        match v.outcome {
            Outcome::A => d[v.prompt] += 1,
            Outcome::B => d[v.prompt] -= 1,
            Outcome::Tie => {}
        }
    }
    d.retain(|&x| x != 0);
    let s: i64 = d.iter().sum();
    let informative = d.len();
    if informative == 0 {
        return Ok(SignFlip {
            statistic: 0,
            p_value: 1.0,
            exact: true,
            rounds: 0,
            informative_prompts: 0,
        });
    }
    if informative <= 20 {
        let total = 1u64 << informative;
        let hits: u64 = (0..total)
            .into_par_iter()
            .filter(|mask| {
                let flipped: i64 = d
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| if mask >> i & 1 == 1 { -x } else { x })
                    .sum();
                flipped.abs() >= s.abs()
            })
            .count() as u64;
        return Ok(SignFlip {
            statistic: s,
            p_value: hits as f64 / total as f64,
            exact: true,
            rounds: total as usize,
            informative_prompts: informative,
        });
    }
    if rounds == 0 {
        return Err(invalid("the sign-flip test", "0 rounds"));
    }
    let hits = (0..rounds)
        .into_par_iter()
        .filter(|&r| {
            let mut rng = round_rng(seed, 12, r);
            let flipped: i64 = d
                .iter()
                .map(|&x| if rng.random_bool(0.5) { -x } else { x })
                .sum();
            flipped.abs() >= s.abs()
        })
        .count();
    Ok(SignFlip {
        statistic: s,
        p_value: (1 + hits) as f64 / (rounds + 1) as f64,
        exact: false,
        rounds,
        informative_prompts: informative,
    })
}

/// The ANOVA estimator of the intraclass correlation of 0/1 outcomes grouped in clusters
/// (STUDY.md 4.4): ρ = (MSB − MSW)/(MSB + (m₀ − 1)·MSW) with m₀ = (N − Σm_i²/N)/(g − 1).
/// `None` with fewer than two clusters, or when every cluster has one member, or when the
/// outcomes do not vary at all.
pub fn icc_anova(groups: &[Vec<f64>]) -> Option<f64> {
    let groups: Vec<&Vec<f64>> = groups.iter().filter(|g| !g.is_empty()).collect();
    let g = groups.len();
    let n: usize = groups.iter().map(|x| x.len()).sum();
    if g < 2 || n <= g {
        return None;
    }
    let grand = groups.iter().flat_map(|x| x.iter()).sum::<f64>() / n as f64;
    let mut ssb = 0.0;
    let mut ssw = 0.0;
    let mut sum_m2 = 0.0;
    for x in &groups {
        let m = x.len() as f64;
        let mean = x.iter().sum::<f64>() / m;
        ssb += m * (mean - grand).powi(2);
        ssw += x.iter().map(|y| (y - mean).powi(2)).sum::<f64>();
        sum_m2 += m * m;
    }
    let msb = ssb / (g - 1) as f64;
    let msw = ssw / (n - g) as f64;
    let m0 = (n as f64 - sum_m2 / n as f64) / (g - 1) as f64;
    let denom = msb + (m0 - 1.0) * msw;
    (denom > 0.0).then(|| (msb - msw) / denom)
}

/// The design effect 1 + (m̄ − 1)ρ of clusters of mean size m̄ (ρ below 0 counts as 0).
pub fn design_effect(icc: f64, mean_size: f64) -> f64 {
    1.0 + (mean_size - 1.0) * icc.max(0.0)
}

/// A one-sample t-test of per-cluster win rates against 1/2 (by-rater or by-prompt
/// diagnostic, Clark 1973).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterT {
    pub clusters: usize,
    pub mean: f64,
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
}

/// The by-cluster t-test: each cluster's win rate among its decisive votes (clusters without a
/// decisive vote are left out), tested against 1/2. `None` with fewer than two clusters.
pub fn cluster_t(votes: &[Vote], by_rater: bool) -> Option<ClusterT> {
    let (prompts, raters) = clusters(votes);
    let n = if by_rater { raters } else { prompts };
    let mut wins = vec![(0.0f64, 0.0f64); n];
    for v in votes {
        let c = if by_rater { v.rater } else { v.prompt };
        match v.outcome {
            Outcome::A => {
                wins[c].0 += 1.0;
                wins[c].1 += 1.0
            }
            Outcome::B => wins[c].1 += 1.0,
            Outcome::Tie => {}
        }
    }
    let rates: Vec<f64> = wins
        .iter()
        .filter(|(_, d)| *d > 0.0)
        .map(|(w, d)| w / d)
        .collect();
    let k = rates.len();
    if k < 2 {
        return None;
    }
    let mean = rates.iter().sum::<f64>() / k as f64;
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
    let df = (k - 1) as f64;
    let t = if var > 0.0 {
        (mean - 0.5) / (var / k as f64).sqrt()
    } else if mean == 0.5 {
        0.0
    } else {
        f64::INFINITY.copysign(mean - 0.5)
    };
    Some(ClusterT {
        clusters: k,
        mean,
        t,
        df,
        p_value: student_t_two_sided(t, df),
    })
}

/// The design-time planner's closed forms (STUDY.md 4.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub p1: f64,
    pub alpha: f64,
    pub power: f64,
    pub raters: usize,
    pub icc: f64,
    /// Effective (independent) decisive votes the one-sample test needs.
    pub n_eff: f64,
    /// Prompts needed with `raters` raters per prompt.
    pub prompts: f64,
    /// Prompts needed with infinitely many raters: no number of raters goes below it.
    pub floor: f64,
}

/// n_eff = ((z_{1−α/2}·½ + z_{power}·√(p₁(1−p₁)))/(p₁ − ½))², P = n_eff(1 + (m − 1)ρ)/m and
/// the floor n_eff·ρ.
pub fn plan(p1: f64, alpha: f64, power: f64, raters: usize, icc: f64) -> Result<Plan> {
    if !(0.0 < p1 && p1 < 1.0) || p1 == 0.5 {
        return Err(invalid(
            "the planner",
            format!("the expected share {p1} must lie in (0, 1) and differ from 0.5"),
        ));
    }
    if !(0.0 < alpha && alpha < 1.0 && 0.0 < power && power < 1.0) || raters == 0 {
        return Err(invalid(
            "the planner",
            format!(
                "alpha {alpha} and power {power} must lie in (0, 1) and raters ({raters}) be positive"
            ),
        ));
    }
    if !(0.0..=1.0).contains(&icc) {
        return Err(invalid(
            "the planner",
            format!("the ICC {icc} must lie in [0, 1]"),
        ));
    }
    let za = normal_quantile(1.0 - alpha / 2.0);
    let zb = normal_quantile(power);
    let n_eff = ((za * 0.5 + zb * (p1 * (1.0 - p1)).sqrt()) / (p1 - 0.5)).powi(2);
    let m = raters as f64;
    Ok(Plan {
        p1,
        alpha,
        power,
        raters,
        icc,
        n_eff,
        prompts: n_eff * (1.0 + (m - 1.0) * icc) / m,
        floor: n_eff * icc,
    })
}

/// The heterogeneity of per-prompt win rates (STUDY.md 4.10): X² = Σ_i (W_i − n_i p̄)²/(n_i
/// p̄(1 − p̄)) on P − 1 degrees of freedom (approximate). Returns `(X², df, p)`; `None` with
/// fewer than two prompts holding decisive votes or when p̄ is 0 or 1.
pub fn heterogeneity(wins: &[u64], decisive: &[u64]) -> Option<(f64, f64, f64)> {
    let pairs: Vec<(f64, f64)> = wins
        .iter()
        .zip(decisive)
        .filter(|(_, n)| **n > 0)
        .map(|(w, n)| (*w as f64, *n as f64))
        .collect();
    if pairs.len() < 2 {
        return None;
    }
    let pbar = pairs.iter().map(|p| p.0).sum::<f64>() / pairs.iter().map(|p| p.1).sum::<f64>();
    if pbar <= 0.0 || pbar >= 1.0 {
        return None;
    }
    let x2: f64 = pairs
        .iter()
        .map(|(w, n)| (w - n * pbar).powi(2) / (n * pbar * (1.0 - pbar)))
        .sum();
    let df = (pairs.len() - 1) as f64;
    Some((x2, df, chi2_sf(x2, df)))
}

/// The φ coefficient (Pearson's correlation) of two 0/1 vectors: the halo between two criteria
/// judged on the same pairs. `None` when either vector is constant or the lengths differ.
pub fn phi(x: &[bool], y: &[bool]) -> Option<f64> {
    if x.len() != y.len() || x.is_empty() {
        return None;
    }
    let n = x.len() as f64;
    let (mut a, mut b, mut ab) = (0.0, 0.0, 0.0);
    for (&p, &q) in x.iter().zip(y) {
        let (p, q) = (p as u8 as f64, q as u8 as f64);
        a += p;
        b += q;
        ab += p * q;
    }
    let cov = ab / n - (a / n) * (b / n);
    let var = (a / n) * (1.0 - a / n) * (b / n) * (1.0 - b / n);
    (var > 0.0).then(|| cov / var.sqrt())
}

/// A standard normal draw (Box-Muller), for simulated raters and studies.
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A fully crossed simulated study under the logit model: every one of `raters` raters judges
/// every one of `prompts` prompts, A winning with probability σ(`base` + u_prompt + v_rater),
/// u ~ N(0, sd_prompt²), v ~ N(0, sd_rater²) (prompt effects drawn first). No ties.
pub fn simulate_votes(
    rng: &mut impl Rng,
    prompts: usize,
    raters: usize,
    base: f64,
    sd_prompt: f64,
    sd_rater: f64,
) -> Vec<Vote> {
    let u: Vec<f64> = (0..prompts)
        .map(|_| sd_prompt * standard_normal(rng))
        .collect();
    let v: Vec<f64> = (0..raters)
        .map(|_| sd_rater * standard_normal(rng))
        .collect();
    let mut votes = Vec::with_capacity(prompts * raters);
    for (prompt, up) in u.iter().enumerate() {
        for (rater, vr) in v.iter().enumerate() {
            let pa = 1.0 / (1.0 + (-(base + up + vr)).exp());
            let outcome = if rng.random::<f64>() < pa {
                Outcome::A
            } else {
                Outcome::B
            };
            votes.push(Vote {
                prompt,
                rater,
                outcome,
            });
        }
    }
    votes
}

fn invalid(what: &str, reason: impl Into<String>) -> AnalysisError {
    AnalysisError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn votes(grid: &[&[u8]]) -> Vec<Vote> {
        let mut out = Vec::new();
        for (p, row) in grid.iter().enumerate() {
            for (r, &o) in row.iter().enumerate() {
                let outcome = match o {
                    1 => Outcome::A,
                    0 => Outcome::B,
                    _ => Outcome::Tie,
                };
                out.push(Vote {
                    prompt: p,
                    rater: r,
                    outcome,
                });
            }
        }
        out
    }

    #[test]
    fn the_sign_flip_test_enumerates_small_designs_exactly() {
        // Margins +3, +1, -1: S = 3; the 8 sign vectors give ±5, ±3, ±3 and ±1, so 6 of 8
        // reach |S| = 3.
        let v = votes(&[&[1, 1, 1], &[1, 1, 0], &[0, 1, 0]]);
        let f = sign_flip(&v, 0, 1).unwrap();
        assert!(f.exact);
        assert_eq!(f.statistic, 3);
        assert_eq!(f.p_value, 6.0 / 8.0);
        // All ties: nothing to test.
        assert_eq!(sign_flip(&votes(&[&[2, 2]]), 10, 1).unwrap().p_value, 1.0);
    }

    #[test]
    fn the_cluster_bootstrap_is_deterministic_and_mirrors_under_relabelling() {
        let grid: Vec<Vec<u8>> = (0..12)
            .map(|p| {
                (0..9)
                    .map(|r| ((p * 7 + r * 3) % 5 < 3) as u8 + ((p + r) % 11 == 0) as u8 * 2)
                    .collect()
            })
            .collect();
        let rows: Vec<&[u8]> = grid.iter().map(|r| r.as_slice()).collect();
        let v = votes(&rows);
        let a = cluster_bootstrap(&v, 500, 7, 0.95).unwrap();
        assert_eq!(a, cluster_bootstrap(&v, 500, 7, 0.95).unwrap());
        let swapped: Vec<Vote> = v
            .iter()
            .map(|x| Vote {
                outcome: match x.outcome {
                    Outcome::A => Outcome::B,
                    Outcome::B => Outcome::A,
                    Outcome::Tie => Outcome::Tie,
                },
                ..*x
            })
            .collect();
        let b = cluster_bootstrap(&swapped, 500, 7, 0.95).unwrap();
        assert!((a.win_rate.lower - (1.0 - b.win_rate.upper)).abs() < 1e-12);
        assert!((a.win_rate.upper - (1.0 - b.win_rate.lower)).abs() < 1e-12);
        let p = tally(&v).win_rate().unwrap();
        assert!(a.win_rate.lower < p && p < a.win_rate.upper, "{a:?} {p}");
        assert!(cluster_bootstrap(&votes(&[&[2, 2]]), 100, 1, 0.95).is_err());
    }

    /// Edge cases: one rater (the rater multiplicity is always 1: the bootstrap is over prompts
    /// alone), one prompt (the sign-flip test cannot reject: p = 1), all ties (no win rate).
    #[test]
    fn one_rater_one_prompt_and_all_ties() {
        let one_rater = votes(&[&[1], &[1], &[0], &[1], &[1], &[0], &[1], &[1]]);
        let b = cluster_bootstrap(&one_rater, 200, 3, 0.95).unwrap();
        assert!(b.win_rate.lower < 0.75 && 0.75 < b.win_rate.upper, "{b:?}");
        assert_eq!(b.empty_rounds, 0);
        let one_prompt = votes(&[&[1, 1, 1, 1, 1, 1, 0]]);
        let f = sign_flip(&one_prompt, 100, 1).unwrap();
        assert!(f.exact && f.p_value == 1.0 && f.statistic == 5);
        let ties = votes(&[&[2, 2], &[2, 2]]);
        assert_eq!(tally(&ties).win_rate(), None);
        let e = cluster_bootstrap(&ties, 100, 1, 0.95)
            .unwrap_err()
            .to_string();
        assert!(e.contains("every judgment is a tie"), "{e}");
        assert!(cluster_t(&ties, true).is_none());
        assert!(icc_anova(&[vec![1.0]]).is_none());
    }

    #[test]
    fn design_effect_and_planner_reproduce_the_study_note() {
        assert!((design_effect(0.1, 52.0) - 6.1).abs() < 1e-12);
        let rows = [
            (0.53, 2178.0, 149.0, 256.0, 218.0),
            (0.55, 783.0, 54.0, 92.0, 79.0),
            (0.60, 194.0, 14.0, 23.0, 20.0),
            (0.65, 85.0, 6.0, 10.0, 9.0),
            (0.70, 47.0, 4.0, 6.0, 5.0),
        ];
        for (p1, n, p05, p10, floor) in rows {
            let a = plan(p1, 0.05, 0.8, 52, 0.05).unwrap();
            let b = plan(p1, 0.05, 0.8, 52, 0.1).unwrap();
            assert_eq!(a.n_eff.ceil(), n, "{p1}");
            assert_eq!(a.prompts.ceil(), p05, "{p1}");
            assert_eq!(b.prompts.ceil(), p10, "{p1}");
            assert_eq!(b.floor.ceil(), floor, "{p1}");
        }
        assert!(plan(0.5, 0.05, 0.8, 10, 0.1).is_err());
    }
}
