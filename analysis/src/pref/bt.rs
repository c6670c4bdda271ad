//! Bradley-Terry scores for studies of more than two systems (STUDY.md 4.9): P(i ≻ j) =
//! σ(θ_i − θ_j), fitted by Hunter's (2004) MM iteration on a wins matrix where a tie counts
//! half a win for each side (Chatbot Arena's convention); θ normalised to mean 0. A comparison
//! graph that is not strongly connected (a system that never loses or never wins, or two
//! groups never compared) has no finite MLE and is refused with the systems named. Intervals
//! come from the two-way cluster bootstrap refitting per round. [`fit_davidson`] fits Davidson's
//! (1970) tie model beside it.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::cluster::{Outcome, two_way_weights};
use super::proportion::Interval;
use crate::error::{AnalysisError, Result};
use crate::inference::quantile;

/// One judgment between two of K systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairVote {
    pub prompt: usize,
    pub rater: usize,
    /// The system coded A.
    pub first: usize,
    /// The system coded B.
    pub second: usize,
    pub outcome: Outcome,
}

/// The wins matrix of weighted votes: `wins[i][j]` = times i beat j, ties half to each.
pub fn wins_matrix(
    k: usize,
    votes: &[PairVote],
    weight: impl Fn(&PairVote) -> f64,
) -> Vec<Vec<f64>> {
    let mut w = vec![vec![0.0; k]; k];
    for v in votes {
        let x = weight(v);
        match v.outcome {
            Outcome::A => w[v.first][v.second] += x,
            Outcome::B => w[v.second][v.first] += x,
            Outcome::Tie => {
                w[v.first][v.second] += 0.5 * x;
                w[v.second][v.first] += 0.5 * x;
            }
        }
    }
    w
}

/// Whether the directed graph "i beat j at least partly" is strongly connected; otherwise the
/// systems that cannot reach every other one (by wins) are returned.
fn unreachable(wins: &[Vec<f64>]) -> Vec<usize> {
    let k = wins.len();
    let reach = |forward: bool| {
        let mut seen = vec![false; k];
        let mut stack = vec![0usize];
        seen[0] = true;
        while let Some(i) = stack.pop() {
            for j in 0..k {
                let edge = if forward { wins[i][j] } else { wins[j][i] };
                if edge > 0.0 && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        seen
    };
    let never_loses: Vec<usize> = (0..k)
        .filter(|&i| (0..k).all(|j| wins[j][i] <= 0.0))
        .collect();
    let never_wins: Vec<usize> = (0..k)
        .filter(|&i| (0..k).all(|j| wins[i][j] <= 0.0))
        .collect();
    if !never_loses.is_empty() || !never_wins.is_empty() {
        return [never_loses, never_wins].concat();
    }
    let (f, b) = (reach(true), reach(false));
    (0..k).filter(|&i| !(f[i] && b[i])).collect()
}

/// The Bradley-Terry MLE θ (mean 0) of a wins matrix. `names` label the refusal message.
pub fn fit(wins: &[Vec<f64>], names: &[String]) -> Result<Vec<f64>> {
    let k = wins.len();
    if k < 2 || wins.iter().any(|r| r.len() != k) {
        return Err(AnalysisError::Shape {
            what: "the Bradley-Terry wins matrix".into(),
            reason: format!("must be square with at least 2 systems, got {k} rows"),
        });
    }
    let lost = unreachable(wins);
    if !lost.is_empty() {
        let named: Vec<String> = lost
            .iter()
            .map(|&i| {
                names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("system {i}"))
            })
            .collect();
        return Err(AnalysisError::Invalid {
            what: "the Bradley-Terry fit".into(),
            reason: format!(
                "the comparison graph is not strongly connected ({} never win against or never lose to the rest, or were never compared with them): the scores would diverge; add comparisons (a round-robin design) or compare these systems separately",
                named.join(", ")
            ),
        });
    }
    let w_total: Vec<f64> = wins.iter().map(|r| r.iter().sum()).collect();
    let n = |i: usize, j: usize| wins[i][j] + wins[j][i];
    let mut pi = vec![1.0f64; k];
    for _ in 0..1_000_000 {
        let mut next: Vec<f64> = (0..k)
            .map(|i| {
                let denom: f64 = (0..k)
                    .filter(|&j| j != i)
                    .map(|j| n(i, j) / (pi[i] + pi[j]))
                    .sum();
                w_total[i] / denom
            })
            .collect();
        let log_mean = next.iter().map(|p| p.ln()).sum::<f64>() / k as f64;
        for p in &mut next {
            *p /= log_mean.exp();
        }
        let change = next
            .iter()
            .zip(&pi)
            .map(|(a, b)| (a.ln() - b.ln()).abs())
            .fold(0.0, f64::max);
        pi = next;
        if change < 1e-13 {
            break;
        }
    }
    let theta: Vec<f64> = pi.iter().map(|p| p.ln()).collect();
    let mean = theta.iter().sum::<f64>() / k as f64;
    Ok(theta.iter().map(|t| t - mean).collect())
}

/// The Davidson (1970) model of ties: P(i ≻ j) = π_i/D, P(tie) = ν√(π_iπ_j)/D with
/// D = π_i + π_j + ν√(π_iπ_j). `wins[i][j]` counts strict wins of i over j, `ties[i][j]` (=
/// `ties[j][i]`) the ties of the pair. Davidson's fixed point, π_i = (W_i + T_i/2) / Σ_j n_ij
/// (1 + ν/2 √(π_j/π_i)) / D_ij and ν = T / Σ_{i<j} n_ij √(π_iπ_j) / D_ij, to 1e-14; returns θ
/// (mean 0) and ν. Refused like [`fit`] when the graph of wins (ties half to each side) is not
/// strongly connected.
pub fn fit_davidson(
    wins: &[Vec<f64>],
    ties: &[Vec<f64>],
    names: &[String],
) -> Result<(Vec<f64>, f64)> {
    let k = wins.len();
    if ties.len() != k || ties.iter().any(|r| r.len() != k) {
        return Err(AnalysisError::Shape {
            what: "the Davidson ties matrix".into(),
            reason: format!("must be {k} x {k} like the wins"),
        });
    }
    let half: Vec<Vec<f64>> = (0..k)
        .map(|i| (0..k).map(|j| wins[i][j] + 0.5 * ties[i][j]).collect())
        .collect();
    // The same refusal as the half-ties model (and its shape checks).
    fit(&half, names)?;
    let n = |i: usize, j: usize| wins[i][j] + wins[j][i] + ties[i][j];
    let num: Vec<f64> = half.iter().map(|r| r.iter().sum()).collect();
    let total_ties: f64 = (0..k)
        .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
        .map(|(i, j)| ties[i][j])
        .sum();
    let mut theta = vec![0.0f64; k];
    let mut nu = 0.5f64;
    for _ in 0..1_000_000 {
        let pi: Vec<f64> = theta.iter().map(|t| t.exp()).collect();
        let d =
            |pi: &[f64], i: usize, j: usize, nu: f64| pi[i] + pi[j] + nu * (pi[i] * pi[j]).sqrt();
        let mut next: Vec<f64> = (0..k)
            .map(|i| {
                let den: f64 = (0..k)
                    .filter(|&j| j != i)
                    .map(|j| n(i, j) * (1.0 + nu / 2.0 * (pi[j] / pi[i]).sqrt()) / d(&pi, i, j, nu))
                    .sum();
                (num[i] / den).ln()
            })
            .collect();
        let mean = next.iter().sum::<f64>() / k as f64;
        for t in &mut next {
            *t -= mean;
        }
        let pi: Vec<f64> = next.iter().map(|t| t.exp()).collect();
        let denom: f64 = (0..k)
            .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
            .map(|(i, j)| n(i, j) * (pi[i] * pi[j]).sqrt() / d(&pi, i, j, nu))
            .sum();
        let next_nu = total_ties / denom;
        let change = next
            .iter()
            .zip(&theta)
            .map(|(a, b)| (a - b).abs())
            .fold((next_nu - nu).abs(), f64::max);
        theta = next;
        nu = next_nu;
        if change < 1e-14 {
            break;
        }
    }
    Ok((theta, nu))
}

/// Elo-like display of θ: 1000 + (400/ln 10)(θ_i − θ_ref).
pub fn elo(theta: &[f64], reference: usize) -> Vec<f64> {
    theta
        .iter()
        .map(|t| 1000.0 + 400.0 / std::f64::consts::LN_10 * (t - theta[reference]))
        .collect()
}

/// σ(θ_i − θ_j).
pub fn win_probability(theta: &[f64], i: usize, j: usize) -> f64 {
    1.0 / (1.0 + (theta[j] - theta[i]).exp())
}

/// Bradley-Terry scores with cluster-bootstrap intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BtFit {
    pub theta: Vec<f64>,
    pub theta_ci: Vec<Interval>,
    /// `prob[i][j]` = σ(θ_i − θ_j) and its interval.
    pub prob: Vec<Vec<f64>>,
    pub prob_ci: Vec<Vec<Interval>>,
    pub rounds: usize,
    /// Rounds whose resampled graph was not strongly connected (left out).
    pub skipped_rounds: usize,
    pub seed: u64,
}

/// Fits θ and refits it on `rounds` two-way cluster-bootstrap rounds (prompts × raters).
pub fn fit_with_intervals(
    k: usize,
    votes: &[PairVote],
    names: &[String],
    rounds: usize,
    seed: u64,
    level: f64,
) -> Result<BtFit> {
    let theta = fit(&wins_matrix(k, votes, |_| 1.0), names)?;
    let prompts = votes.iter().map(|v| v.prompt + 1).max().unwrap_or(0);
    let raters = votes.iter().map(|v| v.rater + 1).max().unwrap_or(0);
    let replicates: Vec<Vec<f64>> = (0..rounds)
        .into_par_iter()
        .filter_map(|r| {
            let (w, v) = two_way_weights(prompts, raters, seed, r);
            let wins = wins_matrix(k, votes, |x| w[x.prompt] * v[x.rater]);
            fit(&wins, names).ok()
        })
        .collect();
    let tail = (1.0 - level) / 2.0;
    let interval = |x: Vec<f64>| Interval {
        lower: quantile(&x, tail),
        upper: quantile(&x, 1.0 - tail),
    };
    let theta_ci = (0..k)
        .map(|i| interval(replicates.iter().map(|t| t[i]).collect()))
        .collect();
    let prob = (0..k)
        .map(|i| (0..k).map(|j| win_probability(&theta, i, j)).collect())
        .collect();
    let prob_ci = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| {
                    interval(
                        replicates
                            .iter()
                            .map(|t| win_probability(t, i, j))
                            .collect(),
                    )
                })
                .collect()
        })
        .collect();
    Ok(BtFit {
        theta,
        theta_ci,
        prob,
        prob_ci,
        rounds,
        skipped_rounds: rounds - replicates.len(),
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_systems_reduce_to_the_logit_of_the_half_score() {
        // 30 wins, 18 losses, 6 ties: q = 33/54.
        let wins = vec![vec![0.0, 33.0], vec![21.0, 0.0]];
        let theta = fit(&wins, &[]).unwrap();
        let q: f64 = 33.0 / 54.0;
        assert!((theta[0] - theta[1] - (q / (1.0 - q)).ln()).abs() < 1e-12);
        assert!((theta[0] + theta[1]).abs() < 1e-15);
    }

    /// Two systems: θ_A − θ_B = ln(W/L) and ν = T/√(WL), Davidson's closed form.
    #[test]
    fn davidson_with_two_systems_has_its_closed_form() {
        let (theta, nu) = fit_davidson(
            &[vec![0.0, 30.0], vec![18.0, 0.0]],
            &[vec![0.0, 6.0], vec![6.0, 0.0]],
            &[],
        )
        .unwrap();
        assert!((theta[0] - theta[1] - (30.0f64 / 18.0).ln()).abs() < 1e-12);
        assert!((nu - 6.0 / (30.0f64 * 18.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn a_system_that_never_loses_is_refused_by_name() {
        let wins = vec![
            vec![0.0, 5.0, 3.0],
            vec![0.0, 0.0, 2.0],
            vec![0.0, 1.0, 0.0],
        ];
        let names = vec!["ours".to_string(), "base".into(), "other".into()];
        let err = fit(&wins, &names).unwrap_err().to_string();
        assert!(
            err.contains("ours") && err.contains("not strongly connected"),
            "{err}"
        );
    }
}
