//! Experiment 2 (paper section 7.2): the same trained dual-stream encoder under two decoders. At
//! every solver step, CKA between the layer-normalised pooled text and noise streams of the
//! encoder across prompts; each seed's curve is summarised by its AUC over normalised time and
//! its time-to-threshold, aggregated as mean +- SE over seeds.

use anyhow::{Result, bail};
use flowlens_analysis::cka::PerEstimator;
use flowlens_analysis::curves::{CurveSummary, summarise_curves};
use flowlens_core::store::FeatureStore;
use serde::{Deserialize, Serialize};

use crate::exp1::analyse::cka_pair;
use crate::exp2::config::Exp2;

serde_with::with_prefix!(curves_ "curves_");
serde_with::with_prefix!(summary_ "summary_");

/// One decoder condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Condition {
    /// `single-stream decoder` or `ConvNeXt decoder`.
    pub name: String,
    pub run: String,
    pub checkpoint_step: usize,
    /// `curves[seed][step]` per estimator (written as `curves_biased`, `curves_debiased`).
    #[serde(flatten, with = "curves_")]
    pub curves: PerEstimator<Vec<Vec<f64>>>,
    #[serde(flatten, with = "summary_")]
    pub summary: PerEstimator<CurveSummary>,
}

/// `exp2/results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub format: String,
    /// Normalised solver time of each step (`t_k = k / steps`).
    pub ts: Vec<f64>,
    pub seeds: Vec<u64>,
    pub n_prompts: usize,
    pub threshold: f64,
    pub estimator: String,
    pub pooling: String,
    pub cfg: f32,
    /// The encoder tensors compared bit for bit between the two systems.
    pub encoder_tensors_identical: usize,
    pub conditions: Vec<Condition>,
}

/// The text-vs-noise curve of every seed, `[seed][step]` per estimator.
fn curves(store: &FeatureStore, seeds: &[u64]) -> Result<PerEstimator<Vec<Vec<f64>>>> {
    let mut out = PerEstimator::<Vec<Vec<f64>>>::default();
    for &seed in seeds {
        let (mut b, mut d) = (Vec::new(), Vec::new());
        for step in 0..store.manifest.steps {
            let v = cka_pair(store, "enc.text", "enc.noise", seed, step)?;
            b.push(v.biased);
            d.push(v.debiased);
        }
        out.biased.push(b);
        out.debiased.push(d);
    }
    Ok(out)
}

/// Computes the experiment from the two systems' feature stores (`conditions`: name and store).
pub fn analyse(
    conditions: &[(&str, &FeatureStore)],
    config: &Exp2,
    encoder_tensors_identical: usize,
) -> Result<Results> {
    let first = conditions[0].1;
    for (_, s) in conditions {
        if s.manifest.prompts != first.manifest.prompts || s.manifest.steps != first.manifest.steps
        {
            bail!(
                "{} and {} were sampled with different prompts or solver steps",
                first.dir().display(),
                s.dir().display()
            );
        }
    }
    let steps = first.manifest.steps;
    if steps < 2 {
        bail!("experiment 2 needs at least 2 solver steps for a curve");
    }
    let ts: Vec<f64> = (0..steps).map(|k| k as f64 / steps as f64).collect();
    let seeds = &config.probing.seeds;
    let mut out = Vec::new();
    for (name, store) in conditions {
        let curves = curves(store, seeds)?;
        out.push(Condition {
            name: name.to_string(),
            run: store.dir().display().to_string(),
            checkpoint_step: store.manifest.checkpoint_step,
            summary: PerEstimator::new(
                summarise_curves(&ts, &curves.biased, config.threshold)?,
                summarise_curves(&ts, &curves.debiased, config.threshold)?,
            ),
            curves,
        });
    }
    Ok(Results {
        format: "flowlens.exp2.v1".into(),
        ts,
        seeds: seeds.clone(),
        n_prompts: first.manifest.prompts.len(),
        threshold: config.threshold,
        estimator: config.estimator.name().into(),
        pooling: first.manifest.pooling.name().into(),
        cfg: first.manifest.cfg,
        encoder_tensors_identical,
        conditions: out,
    })
}
