//! Experiment 1 (paper section 7.1, ANALYSIS.md section 2): the text stream vs the LLM's hidden
//! state at text positions and the noise stream vs the LLM's hidden state at image positions, per
//! layer and solver step, for "ours" and the baseline (whose text stream is the LLM's input
//! embeddings); Delta CKA = ours - baseline per sampling seed, mean +- sd and +- SE over seeds,
//! biased and debiased, with the permutation-null floor of each model's CKA.

use anyhow::{Context, Result, bail};
use flowlens_analysis::cka::{PerEstimator, terms};
use flowlens_analysis::stats::{GramPair, Summary, permutation_null};
use flowlens_core::flow::taps::llm_tap_name;
use flowlens_core::store::{FeatureStore, Seeds};
use serde::{Deserialize, Serialize};

use crate::exp1::config::Exp1;
use crate::io::matrix;

/// The two streams compared with the LLM.
pub const STREAMS: [(&str, &str, &str); 2] = [
    ("text", "enc.text", "text"),
    ("noise", "enc.noise", "image"),
];

/// Per-seed values of one estimator and their summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Values {
    pub per_seed: Vec<f64>,
    pub mean: f64,
    pub sd: f64,
    pub se: f64,
}

impl Values {
    pub fn of(per_seed: Vec<f64>) -> Result<Self> {
        let s = Summary::of(&per_seed)?;
        Ok(Self {
            per_seed,
            mean: s.mean,
            sd: s.sd,
            se: s.se,
        })
    }

    pub fn summary(&self) -> Summary {
        Summary {
            n: self.per_seed.len(),
            mean: self.mean,
            sd: self.sd,
            se: self.se,
        }
    }
}

serde_with::with_prefix!(ours_ "ours_");
serde_with::with_prefix!(baseline_ "baseline_");
serde_with::with_prefix!(delta_ "delta_");

/// One (stream, layer, step) cell: CKA of ours and of the baseline and their difference, per
/// estimator (written as `ours_biased`, `ours_debiased`, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub stream: String,
    pub layer: usize,
    pub step: usize,
    pub t: f64,
    #[serde(flatten, with = "ours_")]
    pub ours: PerEstimator<Values>,
    #[serde(flatten, with = "baseline_")]
    pub baseline: PerEstimator<Values>,
    #[serde(flatten, with = "delta_")]
    pub delta: PerEstimator<Values>,
    /// Upper 95 % quantile of the permutation null of ours' / the baseline's CKA (first seed,
    /// the headline estimator); `None` without permutations.
    pub null95_ours: Option<f64>,
    pub null95_baseline: Option<f64>,
}

/// `exp1/results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub format: String,
    pub ours: String,
    pub baseline: String,
    pub ours_checkpoint_step: usize,
    pub baseline_checkpoint_step: usize,
    pub n_prompts: usize,
    pub seeds: Vec<u64>,
    pub layers: Vec<usize>,
    pub steps: Vec<usize>,
    pub solver_steps: usize,
    pub cfg: f32,
    pub pooling: String,
    pub estimator: String,
    pub permutations: usize,
    pub cells: Vec<Cell>,
}

impl Results {
    pub fn cell(&self, stream: &str, layer: usize, step: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.stream == stream && c.layer == layer && c.step == step)
    }
}

/// The `[n, d]` features of `tap` at `step` for a complete `seed`.
pub(crate) fn features(
    store: &FeatureStore,
    tap: &str,
    seed: u64,
    step: usize,
) -> Result<ndarray::Array2<f64>> {
    Ok(matrix(store.read(tap, seed, step, Seeds::Complete)?))
}

/// Both estimators of CKA(x, y) for one seed and step.
pub(crate) fn cka_pair(
    store: &FeatureStore,
    a: &str,
    b: &str,
    seed: u64,
    step: usize,
) -> Result<PerEstimator<f64>> {
    let x = features(store, a, seed, step)?;
    let y = features(store, b, seed, step)?;
    let v = terms(x.view(), y.view())?.values(a, b)?;
    let debiased = v.debiased.with_context(|| {
        format!(
            "{}: the debiased estimator needs at least 4 prompts",
            store.dir().display()
        )
    })?;
    Ok(PerEstimator::new(v.biased, debiased))
}

/// Computes the experiment from the two runs' feature stores.
pub fn analyse(ours: &FeatureStore, baseline: &FeatureStore, config: &Exp1) -> Result<Results> {
    let (mo, mb) = (&ours.manifest, &baseline.manifest);
    if mo.prompts != mb.prompts {
        bail!(
            "{} and {} were sampled with different prompts; sample both with the same ones",
            ours.dir().display(),
            baseline.dir().display()
        );
    }
    let seeds = &config.probing.seeds;
    for s in seeds {
        for store in [ours, baseline] {
            if !store.manifest.seeds.contains(s) {
                bail!("{}: seed {s} was not sampled", store.dir().display());
            }
        }
    }
    let mut cells = Vec::new();
    for (stream, enc_tap, part) in STREAMS {
        for &layer in &config.layers {
            let llm_tap = llm_tap_name(layer, part);
            for &step in &config.steps {
                let mut o = PerEstimator::<Vec<f64>>::default();
                let mut b = PerEstimator::<Vec<f64>>::default();
                for &seed in seeds {
                    let (vo, vb) = (
                        cka_pair(ours, enc_tap, &llm_tap, seed, step)?,
                        cka_pair(baseline, enc_tap, &llm_tap, seed, step)?,
                    );
                    o.biased.push(vo.biased);
                    o.debiased.push(vo.debiased);
                    b.biased.push(vb.biased);
                    b.debiased.push(vb.debiased);
                }
                let delta = |x: &[f64], y: &[f64]| -> Vec<f64> {
                    x.iter().zip(y).map(|(a, b)| a - b).collect()
                };
                let null = |store: &FeatureStore| -> Result<Option<f64>> {
                    if config.permutations == 0 {
                        return Ok(None);
                    }
                    let x = features(store, enc_tap, seeds[0], step)?;
                    let y = features(store, &llm_tap, seeds[0], step)?;
                    let pair = GramPair::new(x.view(), y.view())?;
                    let null = permutation_null(
                        &pair,
                        config.estimator,
                        config.permutations,
                        0.95,
                        seeds[0],
                    )?;
                    Ok(Some(null.null_upper))
                };
                cells.push(Cell {
                    stream: stream.into(),
                    layer,
                    step,
                    t: mo.times.get(step).copied().unwrap_or(0.0) as f64,
                    delta: PerEstimator::new(
                        Values::of(delta(&o.biased, &b.biased))?,
                        Values::of(delta(&o.debiased, &b.debiased))?,
                    ),
                    null95_ours: null(ours)?,
                    null95_baseline: null(baseline)?,
                    ours: PerEstimator::new(Values::of(o.biased)?, Values::of(o.debiased)?),
                    baseline: PerEstimator::new(Values::of(b.biased)?, Values::of(b.debiased)?),
                });
            }
        }
    }
    Ok(Results {
        format: "flowlens.exp1.v1".into(),
        ours: ours.dir().display().to_string(),
        baseline: baseline.dir().display().to_string(),
        ours_checkpoint_step: mo.checkpoint_step,
        baseline_checkpoint_step: mb.checkpoint_step,
        n_prompts: mo.prompts.len(),
        seeds: seeds.clone(),
        layers: config.layers.clone(),
        steps: config.steps.clone(),
        solver_steps: mo.steps,
        cfg: mo.cfg,
        pooling: mo.pooling.name().into(),
        estimator: config.estimator.name().into(),
        permutations: config.permutations,
        cells,
    })
}
