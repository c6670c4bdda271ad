//! `flowlens cka` and `flowlens fid`: the analysis crate on the user's own `.npy` features.

use std::path::PathBuf;

use anyhow::Result;

use crate::measure::{self, CkaArgs, EstimatorChoice};

#[derive(Debug, clap::Args)]
pub struct CkaCli {
    /// [n, d1] features (.npy), or FILE.npy:K for entry K of a stacked [k, n, d1] file such as a
    /// feature store's `<tap>/seed<S>.npy` (K = the written solver step's index).
    pub x: PathBuf,
    /// [n, d2] features, row i paired with row i of X.
    pub y: PathBuf,
    /// Which estimate(s): the debiased one is ~0 for unrelated features; the biased one is not.
    #[arg(long, value_enum, default_value_t = EstimatorChoice::Both)]
    pub estimator: EstimatorChoice,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Permutations for the shuffled-pairing null (mean, 95% quantile, p-value); 0 = none.
    #[arg(long, default_value_t = 0)]
    pub permutations: usize,
    /// Bootstrap replicates over samples for a confidence interval; 0 = none.
    #[arg(long, default_value_t = 0)]
    pub bootstrap: usize,
    /// Confidence level of the bootstrap interval.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Seed of the permutations and resamples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct FidCli {
    /// [n, d] features of the first set (e.g. Inception pool3, d = 2048).
    pub a: PathBuf,
    /// [m, d] features of the second set.
    pub b: PathBuf,
    /// Print `{"fid": value}`.
    #[arg(long)]
    pub json: bool,
}

pub fn cka(a: CkaCli) -> Result<()> {
    let report = measure::cka_report(&CkaArgs {
        x: a.x,
        y: a.y,
        estimator: a.estimator,
        permutations: a.permutations,
        bootstrap: a.bootstrap,
        level: a.level,
        seed: a.seed,
    })?;
    if a.json {
        println!("{report}");
    } else {
        println!("{}", measure::cka_text(&report));
    }
    Ok(())
}

pub fn fid(a: FidCli) -> Result<()> {
    let fid = measure::fid_value(&a.a, &a.b)?;
    if a.json {
        println!("{}", serde_json::json!({ "fid": fid }));
    } else {
        println!("FID = {fid:.6}");
    }
    Ok(())
}
