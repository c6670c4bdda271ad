//! Experiment 1 (paper section 7.1, ANALYSIS.md section 2): the text stream vs the LLM's hidden
//! state at text positions and the noise stream vs the LLM's hidden state at image positions, per
//! layer and solver step, for "ours" and the baseline (whose text stream is the LLM's input
//! embeddings); Delta CKA = ours - baseline per sampling seed, mean +- sd and +- SE over seeds,
//! biased and debiased, with the permutation-null floor of each model's CKA.

use std::path::Path;

use anyhow::{Context, Result, bail};
use flowlens_analysis::cka::{Estimator, terms};
use flowlens_analysis::stats::{GramPair, Summary, permutation_null};
use flowlens_core::flow::taps::llm_tap_name;
use serde::{Deserialize, Serialize};

use crate::probes::Store;
use crate::protocol::Exp1;

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

/// One (stream, layer, step) cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub stream: String,
    pub layer: usize,
    pub step: usize,
    pub t: f64,
    pub ours_biased: Values,
    pub ours_debiased: Values,
    pub baseline_biased: Values,
    pub baseline_debiased: Values,
    pub delta_biased: Values,
    pub delta_debiased: Values,
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

/// Both estimators of CKA(x, y) for one seed and step.
fn cka_pair(store: &Store, a: &str, b: &str, seed: u64, step: usize) -> Result<(f64, f64)> {
    let x = store.read(a, seed, step)?;
    let y = store.read(b, seed, step)?;
    let v = terms(x.view(), y.view())?.values(a, b)?;
    let debiased = v.debiased.with_context(|| {
        format!(
            "{}: the debiased estimator needs at least 4 prompts",
            store.dir.display()
        )
    })?;
    Ok((v.biased, debiased))
}

/// Computes the experiment from the two runs' feature stores.
pub fn analyse(ours: &Store, baseline: &Store, config: &Exp1) -> Result<Results> {
    let (mo, mb) = (&ours.manifest, &baseline.manifest);
    if mo.prompts != mb.prompts {
        bail!(
            "{} and {} were sampled with different prompts; sample both with the same ones",
            ours.dir.display(),
            baseline.dir.display()
        );
    }
    let seeds = &config.probing.seeds;
    for s in seeds {
        for store in [ours, baseline] {
            if !store.manifest.seeds.contains(s) {
                bail!("{}: seed {s} was not sampled", store.dir.display());
            }
        }
    }
    let mut cells = Vec::new();
    for (stream, enc_tap, part) in STREAMS {
        for &layer in &config.layers {
            let llm_tap = llm_tap_name(layer, part);
            for &step in &config.steps {
                let mut v = [(); 4].map(|_| Vec::with_capacity(seeds.len()));
                for &seed in seeds {
                    let (ob, od) = cka_pair(ours, enc_tap, &llm_tap, seed, step)?;
                    let (bb, bd) = cka_pair(baseline, enc_tap, &llm_tap, seed, step)?;
                    v[0].push(ob);
                    v[1].push(od);
                    v[2].push(bb);
                    v[3].push(bd);
                }
                let delta = |i: usize, j: usize| -> Vec<f64> {
                    v[i].iter().zip(&v[j]).map(|(a, b)| a - b).collect()
                };
                let null = |store: &Store| -> Result<Option<f64>> {
                    if config.permutations == 0 {
                        return Ok(None);
                    }
                    let x = store.read(enc_tap, seeds[0], step)?;
                    let y = store.read(&llm_tap, seeds[0], step)?;
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
                    delta_biased: Values::of(delta(0, 2))?,
                    delta_debiased: Values::of(delta(1, 3))?,
                    null95_ours: null(ours)?,
                    null95_baseline: null(baseline)?,
                    ours_biased: Values::of(v[0].clone())?,
                    ours_debiased: Values::of(v[1].clone())?,
                    baseline_biased: Values::of(v[2].clone())?,
                    baseline_debiased: Values::of(v[3].clone())?,
                });
            }
        }
    }
    Ok(Results {
        format: "flowlens.exp1.v1".into(),
        ours: ours.dir.display().to_string(),
        baseline: baseline.dir.display().to_string(),
        ours_checkpoint_step: mo.checkpoint_step,
        baseline_checkpoint_step: mb.checkpoint_step,
        n_prompts: mo.prompts.len(),
        seeds: seeds.clone(),
        layers: config.layers.clone(),
        steps: config.steps.clone(),
        solver_steps: mo.steps,
        cfg: mo.cfg,
        pooling: mo.pooling.clone(),
        estimator: config.estimator.name().into(),
        permutations: config.permutations,
        cells,
    })
}

impl Cell {
    pub fn delta(&self, e: Estimator) -> &Values {
        match e {
            Estimator::Biased => &self.delta_biased,
            Estimator::Debiased => &self.delta_debiased,
        }
    }
    pub fn ours(&self, e: Estimator) -> &Values {
        match e {
            Estimator::Biased => &self.ours_biased,
            Estimator::Debiased => &self.ours_debiased,
        }
    }
    pub fn baseline(&self, e: Estimator) -> &Values {
        match e {
            Estimator::Biased => &self.baseline_biased,
            Estimator::Debiased => &self.baseline_debiased,
        }
    }
}

pub fn load(path: &Path) -> Result<Results> {
    crate::report::read_json(path)
}
