//! The ablation (paper Table 1): per variant and training seed, the evaluations logged during
//! training (`metrics.jsonl`) and the final numbers, summarised as mean +- sd over seeds.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use flowlens_core::flow::Preset;
use flowlens_core::run::{Event, MetricRecord, RunDir};
use serde::{Deserialize, Serialize};

/// One evaluation during training (the shapes oracle; FID/CLIP once their networks exist).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalPoint {
    pub step: usize,
    pub adherence: f64,
    pub colour: f64,
    pub shape: f64,
    pub size: f64,
    pub relation: Option<f64>,
    /// The same images scored against other scenes' prompts.
    pub chance: f64,
    /// Adherence - chance paired per image: mean, SE over the images, images (absent in runs
    /// evaluated before it was recorded).
    #[serde(default)]
    pub margin: Option<flowlens_core::data::Margin>,
}

/// One MJHQ-30k evaluation during training (`flowlens train --mjhq`, `eval_mjhq` records).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MjhqPoint {
    pub step: usize,
    pub fid: f64,
    /// CLIP score x100 (per-pair clamp, then mean).
    pub clip_score: f64,
}

/// One trained run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub variant: String,
    pub seed: u64,
    pub run: String,
    pub steps: usize,
    /// Time in optimiser steps (sum of step times) and in evaluations, from the metrics.
    pub train_seconds: f64,
    pub eval_seconds: f64,
    /// Mean loss over the last tenth of the steps.
    pub final_loss: f64,
    pub evals: Vec<EvalPoint>,
    /// `(step, mean loss)` over bins of consecutive steps.
    pub loss_curve: Vec<(usize, f64)>,
    /// MJHQ-30k FID / CLIP score evaluations logged during training (empty without `--mjhq`).
    #[serde(default)]
    pub mjhq: Vec<MjhqPoint>,
}

impl RunResult {
    pub fn final_eval(&self) -> Option<&EvalPoint> {
        self.evals.last()
    }
}

/// `ablation/results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub format: String,
    pub preset: Preset,
    pub steps: usize,
    pub eval_every: usize,
    pub variants: Vec<String>,
    pub seeds: Vec<u64>,
    pub runs: Vec<RunResult>,
}

/// Reads a run's metrics (the last record of a step wins: a resumed run re-logs the steps after
/// its last checkpoint).
pub fn summarise_run(variant: &str, seed: u64, dir: &Path, bins: usize) -> Result<RunResult> {
    let run = RunDir::open(dir)?;
    let records = run
        .read_records()
        .with_context(|| format!("reading the metrics of {}", dir.display()))?;
    let mut steps: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    let mut evals: BTreeMap<usize, (EvalPoint, f64)> = BTreeMap::new();
    let mut mjhq: BTreeMap<usize, MjhqPoint> = BTreeMap::new();
    let mut batch = 1.0;
    if let Ok(c) = run.config::<flowlens_core::train::TrainConfig>() {
        batch = (c.batch_size * c.grad_accum) as f64;
    }
    for r in records {
        match r {
            MetricRecord::Step(s) => {
                steps.insert(s.step, (s.loss, batch / s.samples_per_s.max(1e-12)));
            }
            MetricRecord::Event(Event::Eval {
                step,
                adherence,
                chance,
                margin,
                seconds,
            }) => {
                let point = EvalPoint {
                    step,
                    adherence: adherence.overall,
                    colour: adherence.colour,
                    shape: adherence.shape,
                    size: adherence.size,
                    relation: adherence.relation,
                    chance: chance.overall,
                    margin,
                };
                evals.insert(step, (point, seconds));
            }
            MetricRecord::Event(Event::EvalMjhq {
                step,
                fid,
                clip_score,
                ..
            }) => {
                mjhq.insert(
                    step,
                    MjhqPoint {
                        step,
                        fid,
                        clip_score,
                    },
                );
            }
            _ => {}
        }
    }
    if steps.is_empty() {
        bail!("{} has no training steps in its metrics", dir.display());
    }
    let n = steps.len();
    let tail = (n / 10).max(1);
    let final_loss = steps.values().skip(n - tail).map(|v| v.0).sum::<f64>() / tail as f64;
    let per_bin = n.div_ceil(bins.max(1));
    let losses: Vec<(usize, f64)> = steps.iter().map(|(&s, v)| (s, v.0)).collect();
    let loss_curve = losses
        .chunks(per_bin)
        .map(|c| {
            (
                c[c.len() - 1].0 + 1,
                c.iter().map(|v| v.1).sum::<f64>() / c.len() as f64,
            )
        })
        .collect();
    Ok(RunResult {
        variant: variant.into(),
        seed,
        run: dir.display().to_string(),
        steps: steps.keys().last().map_or(0, |s| s + 1),
        train_seconds: steps.values().map(|v| v.1).sum(),
        eval_seconds: evals.values().map(|v| v.1).sum(),
        final_loss,
        evals: evals.into_values().map(|v| v.0).collect(),
        loss_curve,
        mjhq: mjhq.into_values().collect(),
    })
}
