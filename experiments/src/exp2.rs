//! Experiment 2 (paper section 7.2): the same trained dual-stream encoder under two decoders. At
//! every solver step, CKA between the layer-normalised pooled text and noise streams of the
//! encoder across prompts; each seed's curve is summarised by its AUC over normalised time and
//! its time-to-threshold, aggregated as mean +- SE over seeds.

use anyhow::{Context, Result, bail};
use flowlens_analysis::cka::{Estimator, terms};
use flowlens_analysis::curves::{CurveSummary, summarise_curves};
use serde::{Deserialize, Serialize};

use crate::probes::Store;
use crate::protocol::Exp2;

/// One decoder condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Condition {
    /// `single-stream decoder` or `ConvNeXt decoder`.
    pub name: String,
    pub run: String,
    pub checkpoint_step: usize,
    /// `curves_*[seed][step]`.
    pub curves_biased: Vec<Vec<f64>>,
    pub curves_debiased: Vec<Vec<f64>>,
    pub summary_biased: CurveSummary,
    pub summary_debiased: CurveSummary,
}

impl Condition {
    pub fn curves(&self, e: Estimator) -> &[Vec<f64>] {
        match e {
            Estimator::Biased => &self.curves_biased,
            Estimator::Debiased => &self.curves_debiased,
        }
    }
    pub fn summary(&self, e: Estimator) -> &CurveSummary {
        match e {
            Estimator::Biased => &self.summary_biased,
            Estimator::Debiased => &self.summary_debiased,
        }
    }
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

/// `curves[seed][step]`.
type Curves = Vec<Vec<f64>>;

/// The text-vs-noise curve of every seed: (biased, debiased).
fn curves(store: &Store, seeds: &[u64]) -> Result<(Curves, Curves)> {
    let mut biased = Vec::new();
    let mut debiased = Vec::new();
    for &seed in seeds {
        let (mut b, mut d) = (Vec::new(), Vec::new());
        for step in 0..store.manifest.steps {
            let x = store.read("enc.text", seed, step)?;
            let y = store.read("enc.noise", seed, step)?;
            let v = terms(x.view(), y.view())?.values("enc.text", "enc.noise")?;
            b.push(v.biased);
            d.push(v.debiased.with_context(|| {
                format!(
                    "{}: the debiased estimator needs at least 4 prompts",
                    store.dir.display()
                )
            })?);
        }
        biased.push(b);
        debiased.push(d);
    }
    Ok((biased, debiased))
}

/// Computes the experiment from the two systems' feature stores (`conditions`: name and store).
pub fn analyse(
    conditions: &[(&str, &Store)],
    config: &Exp2,
    encoder_tensors_identical: usize,
) -> Result<Results> {
    let first = conditions[0].1;
    for (_, s) in conditions {
        if s.manifest.prompts != first.manifest.prompts || s.manifest.steps != first.manifest.steps
        {
            bail!(
                "{} and {} were sampled with different prompts or solver steps",
                first.dir.display(),
                s.dir.display()
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
        let (b, d) = curves(store, seeds)?;
        out.push(Condition {
            name: name.to_string(),
            run: store.dir.display().to_string(),
            checkpoint_step: store.manifest.checkpoint_step,
            summary_biased: summarise_curves(&ts, &b, config.threshold)?,
            summary_debiased: summarise_curves(&ts, &d, config.threshold)?,
            curves_biased: b,
            curves_debiased: d,
        });
    }
    Ok(Results {
        format: "flowlens.exp2.v1".into(),
        ts,
        seeds: seeds.clone(),
        n_prompts: first.manifest.prompts.len(),
        threshold: config.threshold,
        estimator: config.estimator.name().into(),
        pooling: first.manifest.pooling.clone(),
        cfg: first.manifest.cfg,
        encoder_tensors_identical,
        conditions: out,
    })
}
