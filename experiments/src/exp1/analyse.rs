//! Experiment 1 (paper section 7.1, ANALYSIS.md section 2): the text stream vs the LLM's hidden
//! state at text positions and the noise stream vs the LLM's hidden state at image positions, per
//! layer and solver step, for "ours" and the baseline (whose text stream is the LLM's input
//! embeddings); Delta CKA = ours - baseline per sampling seed, mean +- sd and +- SE over seeds,
//! biased and debiased; and over prompts, per cell: a bootstrap interval (prompts resampled, the
//! same resample for every seed and both models, so the ΔCKA interval is paired), the
//! permutation null of each model's CKA (the pairing of the two feature sets shuffled, the same
//! permutation for every seed) and the swap test of ΔCKA (each prompt's features of the two
//! models exchanged). Layer 0 is an identity: the encoder's streams are the LLM's layer-0 input
//! (`by_construction`).

use anyhow::{Context, Result, bail};
use flowlens_analysis::cka::{Estimator, PerEstimator};
use flowlens_analysis::inference::{
    Inferred, NullKind, PairedGrams, Replicates, Resamples, infer, mean_of,
};
use flowlens_analysis::stats::Summary;
use flowlens_core::flow::taps::llm_tap_name;
use flowlens_core::store::{FeatureStore, Seeds};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::exp1::config::Exp1;
use crate::exp1::prior::PriorFeatures;
use crate::io::matrix;

/// The level of every interval over prompts.
pub const LEVEL: f64 = 0.95;

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
    /// Over prompts, per estimator: intervals and nulls of ours, the baseline and ΔCKA.
    pub inference: PerEstimator<CellInference>,
    /// Layer 0: the encoder's streams are the LLM's layer-0 input, so CKA = 1 and ΔCKA = 0 by
    /// construction (not evidence of anything).
    pub by_construction: bool,
    /// The frozen-prior reading: each model's stream vs the pre-trained prior's hidden state on
    /// the caption alone (one common target), per estimator; `None` without a prior.
    #[serde(default)]
    pub prior: Option<PerEstimator<CellInference>>,
}

/// One cell's statistics over prompts (means over seeds): ours' and the baseline's CKA against
/// their pairing nulls, ΔCKA against the swap null.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellInference {
    pub ours: Inferred,
    pub baseline: Inferred,
    pub delta: Inferred,
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
    /// Permutations of each null and bootstrap resamples over prompts (0 = not computed), the
    /// intervals' level.
    pub permutations: usize,
    pub bootstrap: usize,
    pub level: f64,
    /// The prior of the frozen-prior reading (`None`: the runs start from a random LLM, or they
    /// started from different priors).
    #[serde(default)]
    pub prior: Option<String>,
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

/// The Grams of (a, b) of two stores at one seed and step (model A = `sa`, B = `sb`).
pub(crate) fn paired_grams(
    (sa, a_x, a_y): (&FeatureStore, &str, &str),
    (sb, b_x, b_y): (&FeatureStore, &str, &str),
    seed: u64,
    step: usize,
) -> Result<PairedGrams> {
    let (xa, ya) = (
        features(sa, a_x, seed, step)?,
        features(sa, a_y, seed, step)?,
    );
    let (xb, yb) = (
        features(sb, b_x, seed, step)?,
        features(sb, b_y, seed, step)?,
    );
    paired(sa, [&xa, &ya, &xb, &yb], || {
        format!(
            "CKA of {a_x} vs {a_y} ({}) and {b_x} vs {b_y} ({}), seed {seed}, step {step}",
            sa.dir().display(),
            sb.dir().display()
        )
    })
}

/// [`PairedGrams`] of features already read (`[xa, ya, xb, yb]`; `sa` names the store in the
/// too-few-prompts error, `what` the pair in any other).
fn paired(
    sa: &FeatureStore,
    [xa, ya, xb, yb]: [&Array2<f64>; 4],
    what: impl FnOnce() -> String,
) -> Result<PairedGrams> {
    if xa.nrows() < 4 {
        bail!(
            "{}: the debiased estimator needs at least 4 prompts, the store has {}",
            sa.dir().display(),
            xa.nrows()
        );
    }
    PairedGrams::new(xa.view(), ya.view(), xb.view(), yb.view()).with_context(what)
}

/// Model `m`'s CKA under `e` of one unit's terms, with an error naming the pair.
pub(crate) fn unit_value(
    t: &[flowlens_analysis::CkaTerms; 2],
    m: usize,
    e: Estimator,
    what: &str,
) -> Result<f64> {
    Ok(t[m].value(e, what, "its pair")?)
}

/// Ours, the baseline and ΔCKA (means over the units) under `e`, over prompts.
pub(crate) fn paired_inference(
    reps: &[Replicates],
    e: Estimator,
    level: f64,
) -> Result<CellInference> {
    let v = |t: &flowlens_analysis::CkaTerms| flowlens_analysis::inference::value(t, e);
    let of = |m: usize| {
        move |u: &[[flowlens_analysis::CkaTerms; 2]]| mean_of(u.iter().map(|p| v(&p[m])))
    };
    let delta = |u: &[[flowlens_analysis::CkaTerms; 2]]| {
        mean_of(u.iter().map(|p| Some(v(&p[0])? - v(&p[1])?)))
    };
    Ok(CellInference {
        ours: infer(reps, e, of(0), NullKind::Pairing, level)?,
        baseline: infer(reps, e, of(1), NullKind::Pairing, level)?,
        delta: infer(reps, e, delta, NullKind::Swap, level)?,
    })
}

/// Both estimators' [`CellInference`] of one cell's units.
fn cell_inference(reps: &[Replicates]) -> Result<PerEstimator<CellInference>> {
    Ok(PerEstimator::new(
        paired_inference(reps, Estimator::Biased, LEVEL)?,
        paired_inference(reps, Estimator::Debiased, LEVEL)?,
    ))
}

/// Computes the experiment from the two runs' feature stores (and, for the frozen-prior
/// reading, the prior's features on the same prompts).
pub fn analyse(
    ours: &FeatureStore,
    baseline: &FeatureStore,
    config: &Exp1,
    prior: Option<&PriorFeatures>,
) -> Result<Results> {
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
    let n = mo.prompts.len();
    let draw = Resamples::draw(
        n,
        config.bootstrap,
        config.permutations,
        config.resample_seed,
    );
    let mut cells = Vec::new();
    for (stream, enc_tap, part) in STREAMS {
        for &layer in &config.layers {
            let llm_tap = llm_tap_name(layer, part);
            for &step in &config.steps {
                let prior_y = prior.and_then(|p| p.layers.get(&layer));
                let (mut reps, mut prior_reps) = (Vec::new(), Vec::new());
                let mut o = PerEstimator::<Vec<f64>>::default();
                let mut b = PerEstimator::<Vec<f64>>::default();
                for &seed in seeds {
                    // Each stream is read once per seed and serves both readings.
                    let xa = features(ours, enc_tap, seed, step)?;
                    let xb = features(baseline, enc_tap, seed, step)?;
                    let ya = features(ours, &llm_tap, seed, step)?;
                    let yb = features(baseline, &llm_tap, seed, step)?;
                    let unit = paired(ours, [&xa, &ya, &xb, &yb], || {
                        format!("CKA of {enc_tap} vs {llm_tap}, seed {seed}, step {step}")
                    })?;
                    let t = unit.terms();
                    for e in Estimator::BOTH {
                        o.get_mut(e).push(unit_value(&t, 0, e, enc_tap)?);
                        b.get_mut(e).push(unit_value(&t, 1, e, enc_tap)?);
                    }
                    reps.push(unit.replicates(&draw));
                    if let Some(y) = prior_y {
                        let unit = paired(ours, [&xa, y, &xb, y], || {
                            format!("{enc_tap} vs the prior's layer {layer}, seed {seed}")
                        })?;
                        prior_reps.push(unit.replicates(&draw));
                    }
                }
                let delta = |x: &[f64], y: &[f64]| -> Vec<f64> {
                    x.iter().zip(y).map(|(a, b)| a - b).collect()
                };
                let inference = cell_inference(&reps)?;
                let prior = match prior_y {
                    Some(_) => Some(cell_inference(&prior_reps)?),
                    None => None,
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
                    inference,
                    prior,
                    by_construction: layer == 0,
                    ours: PerEstimator::new(Values::of(o.biased)?, Values::of(o.debiased)?),
                    baseline: PerEstimator::new(Values::of(b.biased)?, Values::of(b.debiased)?),
                });
            }
        }
    }
    Ok(Results {
        format: "flowlens.exp1.v2".into(),
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
        bootstrap: config.bootstrap,
        level: LEVEL,
        prior: prior.map(|p| p.dir.display().to_string()),
        cells,
    })
}
