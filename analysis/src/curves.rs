//! Summaries of a curve over solver steps (paper section 7, experiment 2): the area under the
//! curve over normalised time and the time at which it first reaches a threshold.

use serde::{Deserialize, Serialize};

use crate::error::{AnalysisError, Result};
use crate::stats::Summary;

fn check_curve(ts: &[f64], values: &[f64]) -> Result<()> {
    if ts.len() != values.len() || ts.len() < 2 {
        return Err(AnalysisError::Shape {
            what: "curve".into(),
            reason: format!(
                "{} times and {} values; need the same number, at least 2",
                ts.len(),
                values.len()
            ),
        });
    }
    if let Some(i) = (0..ts.len()).find(|&i| !ts[i].is_finite() || !values[i].is_finite()) {
        return Err(AnalysisError::NonFinite {
            what: "curve".into(),
            row: i,
            col: 0,
            value: if ts[i].is_finite() { values[i] } else { ts[i] },
        });
    }
    if ts.windows(2).any(|w| w[1] <= w[0]) {
        return Err(AnalysisError::Invalid {
            what: "curve".into(),
            reason: "times must increase strictly".into(),
        });
    }
    Ok(())
}

/// Area under the curve over normalised time: the trapezoid integral divided by the time span,
/// i.e. the curve's time-average (a constant curve c has AUC c).
pub fn auc(ts: &[f64], values: &[f64]) -> Result<f64> {
    check_curve(ts, values)?;
    let area: f64 = ts
        .windows(2)
        .zip(values.windows(2))
        .map(|(t, v)| (t[1] - t[0]) * (v[0] + v[1]) / 2.0)
        .sum();
    Ok(area / (ts[ts.len() - 1] - ts[0]))
}

/// When a curve first reaches a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "t", rename_all = "snake_case")]
pub enum Crossing {
    /// First time at which the linearly interpolated curve is >= the threshold.
    Reached(f64),
    /// The curve stays below the threshold over the whole range.
    NotReached,
}

impl Crossing {
    pub fn time(self) -> Option<f64> {
        match self {
            Crossing::Reached(t) => Some(t),
            Crossing::NotReached => None,
        }
    }
}

/// The first time the linearly interpolated curve reaches `threshold`.
pub fn time_to_threshold(ts: &[f64], values: &[f64], threshold: f64) -> Result<Crossing> {
    check_curve(ts, values)?;
    if values[0] >= threshold {
        return Ok(Crossing::Reached(ts[0]));
    }
    for i in 1..ts.len() {
        if values[i] >= threshold {
            let (v0, v1) = (values[i - 1], values[i]);
            let frac = (threshold - v0) / (v1 - v0);
            return Ok(Crossing::Reached(ts[i - 1] + frac * (ts[i] - ts[i - 1])));
        }
    }
    Ok(Crossing::NotReached)
}

/// Crossings aggregated over seeds: the summary of the seeds that reached the threshold and how
/// many did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossingSummary {
    pub reached: Option<Summary>,
    pub n_reached: usize,
    pub n_not_reached: usize,
}

pub fn summarise_crossings(crossings: &[Crossing]) -> Result<CrossingSummary> {
    let times: Vec<f64> = crossings.iter().filter_map(|c| c.time()).collect();
    Ok(CrossingSummary {
        reached: if times.is_empty() {
            None
        } else {
            Some(Summary::of(&times)?)
        },
        n_reached: times.len(),
        n_not_reached: crossings.len() - times.len(),
    })
}

/// A curve's summaries aggregated over seeds: AUC mean +- SE and the crossing summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveSummary {
    pub auc: Summary,
    pub crossing: CrossingSummary,
    pub threshold: f64,
}

/// Summarises one curve per seed (`curves[seed]` over the common `ts`).
pub fn summarise_curves(ts: &[f64], curves: &[Vec<f64>], threshold: f64) -> Result<CurveSummary> {
    let aucs = curves
        .iter()
        .map(|c| auc(ts, c))
        .collect::<Result<Vec<_>>>()?;
    let crossings = curves
        .iter()
        .map(|c| time_to_threshold(ts, c, threshold))
        .collect::<Result<Vec<_>>>()?;
    Ok(CurveSummary {
        auc: Summary::of(&aucs)?,
        crossing: summarise_crossings(&crossings)?,
        threshold,
    })
}
