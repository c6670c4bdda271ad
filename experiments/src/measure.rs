//! `flowlens cka` and `flowlens fid`: the analysis crate on the user's own `.npy` features.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flowlens_analysis::cka::{self, Estimator};
use flowlens_analysis::fid;
use flowlens_analysis::stats::{self, GramPair};
use serde_json::{Map, Value, json};

use crate::io::read_matrix;

/// Which estimates to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EstimatorChoice {
    Biased,
    Debiased,
    Both,
}

impl EstimatorChoice {
    fn estimators(self) -> Vec<Estimator> {
        match self {
            Self::Biased => vec![Estimator::Biased],
            Self::Debiased => vec![Estimator::Debiased],
            Self::Both => vec![Estimator::Biased, Estimator::Debiased],
        }
    }
}

#[derive(Debug, Clone)]
pub struct CkaArgs {
    pub x: PathBuf,
    pub y: PathBuf,
    pub estimator: EstimatorChoice,
    pub permutations: usize,
    pub bootstrap: usize,
    pub level: f64,
    pub seed: u64,
}

/// Computes the report as one JSON object: `n`, `dx`, `dy`, one key per estimator, and for each
/// estimator `<name>_null` / `<name>_ci` when asked.
pub fn cka_report(a: &CkaArgs) -> Result<Value> {
    let x = read_matrix(&a.x)?;
    let y = read_matrix(&a.y)?;
    let names = (a.x.display().to_string(), a.y.display().to_string());
    anyhow::ensure!(
        x.nrows() == y.nrows(),
        "{} has {} rows (samples) but {} has {}; rows must pair the same samples",
        names.0,
        x.nrows(),
        names.1,
        y.nrows()
    );
    let terms = cka::terms(x.view(), y.view())?;
    let mut out = Map::new();
    out.insert("n".into(), json!(x.nrows()));
    out.insert("dx".into(), json!(x.ncols()));
    out.insert("dy".into(), json!(y.ncols()));
    let pair = if a.permutations > 0 || a.bootstrap > 0 {
        Some(GramPair::new(x.view(), y.view())?)
    } else {
        None
    };
    for est in a.estimator.estimators() {
        let value = terms.value(est, &names.0, &names.1)?;
        out.insert(est.name().into(), json!(value));
        if let Some(pair) = &pair {
            if a.permutations > 0 {
                let null = stats::permutation_null(pair, est, a.permutations, 0.95, a.seed)?;
                out.insert(format!("{}_null", est.name()), serde_json::to_value(null)?);
            }
            if a.bootstrap > 0 {
                let ci = stats::bootstrap_ci(pair, est, a.bootstrap, a.level, a.seed)?;
                out.insert(format!("{}_ci", est.name()), serde_json::to_value(ci)?);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Human-readable lines for the report.
pub fn cka_text(report: &Value) -> String {
    let mut lines = vec![format!(
        "n = {}, dx = {}, dy = {}",
        report["n"], report["dx"], report["dy"]
    )];
    for est in ["biased", "debiased"] {
        let Some(v) = report[est].as_f64() else {
            continue;
        };
        lines.push(format!("{est:>8} CKA = {v:.6}"));
        if let Some(null) = report.get(format!("{est}_null")) {
            lines.push(format!(
                "         permutation null: mean {:.6}, 95% quantile {:.6}, p = {:.4} ({} permutations)",
                null["null_mean"].as_f64().unwrap_or(f64::NAN),
                null["null_upper"].as_f64().unwrap_or(f64::NAN),
                null["p_value"].as_f64().unwrap_or(f64::NAN),
                null["permutations"]
            ));
        }
        if let Some(ci) = report.get(format!("{est}_ci")) {
            let (lower, upper) = (
                ci["lower"].as_f64().unwrap_or(f64::NAN),
                ci["upper"].as_f64().unwrap_or(f64::NAN),
            );
            let dropped = ci["dropped"].as_u64().unwrap_or(0);
            lines.push(format!(
                "         {:.0}% bootstrap interval [{lower:.6}, {upper:.6}] ({} replicates{})",
                100.0 * ci["level"].as_f64().unwrap_or(f64::NAN),
                ci["replicates"],
                if dropped > 0 {
                    format!(
                        "; {dropped} resamples dropped: the estimate is undefined on them (too few distinct samples)"
                    )
                } else {
                    String::new()
                }
            ));
            if !(lower..=upper).contains(&v) {
                lines.push(format!(
                    "         note: the interval does not contain the estimate: resampling with replacement repeats rows, which biases the {est} estimate of each resample{}; the interval is not centred on it at this n",
                    if est == "debiased" {
                        " (the unbiased HSIC assumes distinct samples)"
                    } else {
                        " upwards"
                    }
                ));
            }
        }
    }
    lines.join("\n")
}

/// FID between two `[n, 2048]` (or any width) feature arrays.
pub fn fid_value(a: &Path, b: &Path) -> Result<f64> {
    let fa = read_matrix(a)?;
    let fb = read_matrix(b)?;
    let sa = fid::FidStats::from_features(fa.view(), &a.display().to_string())?;
    let sb = fid::FidStats::from_features(fb.view(), &b.display().to_string())?;
    fid::frechet_distance(&sa, &sb)
        .with_context(|| format!("FID of {} and {}", a.display(), b.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_that_misses_its_estimate_says_why() {
        let report = json!({
            "n": 5, "dx": 3, "dy": 3, "debiased": 0.30,
            "debiased_ci": {"estimate": 0.30, "lower": 0.35, "upper": 0.90, "level": 0.95,
                            "replicates": 990, "dropped": 10},
        });
        let text = cka_text(&report);
        assert!(text.contains("10 resamples dropped"), "{text}");
        assert!(text.contains("does not contain the estimate"), "{text}");
    }
}
