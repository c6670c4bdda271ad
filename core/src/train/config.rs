//! A training run's configuration (saved as the run's `config.json`): the preset's defaults
//! (MODEL.md 7.3 scaled to the preset), the learning-rate schedule and the stages, and the checks
//! that name a wrong field.

use std::path::PathBuf;

use crate::nn::precision::Precision;
use serde::{Deserialize, Serialize};

use crate::data::DataSource;
use crate::flow::{Preset, Variant};
use crate::train::prior::PriorConfig;

/// Learning-rate schedule after the linear warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
}

/// Everything a training run is configured by (saved as the run's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub preset: Preset,
    pub variant: Variant,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Learning rate of the LLM in stage 2 (default: `lr`).
    pub llm_lr: Option<f64>,
    pub warmup: usize,
    pub schedule: Schedule,
    /// Steps of stage 1 (LLM not updated); stage 2 afterwards.
    pub stage1_steps: usize,
    pub ema_decay: f64,
    pub t_mean: f64,
    pub t_std: f64,
    pub text_dropout: f64,
    pub grad_clip: f64,
    pub seed: u64,
    pub checkpoint_every: usize,
    /// Checkpoints kept besides the best one.
    pub keep_last: usize,
    /// Keep the best checkpoint (highest oracle adherence when evaluation runs, else lowest
    /// mean training loss since the previous checkpoint) out of `keep_last`'s pruning.
    pub keep_best: bool,
    /// Micro-batches of `batch_size` whose gradients are summed into one optimiser step.
    pub grad_accum: usize,
    /// A second EMA of the weights at this decay (e.g. 0.999), saved next to the first.
    pub ema_decay_2: Option<f64>,
    /// Where the (image, caption) pairs come from.
    pub data: DataSource,
    /// How the LLM starts: `random`, `prior` (the stage-0 prior trained on the data's captions,
    /// cached), or `{ pretrained = "DIR" }` (a Hugging Face Llama folder, e.g. TinyLlama).
    pub llm_init: LlmInit,
    /// Settings of the stage-0 prior (used when `llm_init = "prior"`).
    pub prior: PriorConfig,
    /// Write a grid of EMA samples for fixed prompts every this many steps (0: never).
    pub sample_every: usize,
    /// Evaluate the EMA weights every this many steps (0: never): oracle prompt adherence on
    /// held-out shapes scenes (shapes data only), appended to the metrics.
    pub eval_every: usize,
    /// Held-out scenes per evaluation.
    pub eval_n: usize,
    /// Solver steps and guidance of the sample grids and evaluations.
    pub eval_solver_steps: usize,
    pub eval_cfg: f32,
    /// Start from another run's dual-stream encoder, time embedding and LLM (its EMA weights at
    /// a checkpoint step) and keep the encoder, the time embedding and the token embeddings
    /// frozen: experiment 2's second system (see `train::transfer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
    /// `f32` (default), `mixed` (f32 weights and optimiser state, products and attention in
    /// bf16) or `bf16` (mixed, with the weights rounded to bf16 after every update):
    /// `nn::precision`.
    #[serde(default, skip_serializing_if = "is_f32")]
    pub precision: Precision,
}

fn is_f32(p: &Precision) -> bool {
    *p == Precision::F32
}

/// How the flow model's LLM is initialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmInit {
    /// Random weights, with a BPE tokenizer trained on the captions.
    Random,
    /// The stage-0 language-model prior (see `train::prior`).
    Prior,
    /// A Hugging Face Llama folder (config.json, safetensors, tokenizer.json).
    Pretrained(PathBuf),
}

impl TrainConfig {
    /// Defaults for a preset (MODEL.md 7.3 scaled to the preset).
    pub fn for_preset(preset: Preset, variant: Variant) -> Self {
        let tiny = preset == Preset::Tiny;
        Self {
            preset,
            variant,
            steps: if tiny { 1200 } else { 120_000 },
            batch_size: if tiny { 16 } else { 512 },
            lr: if tiny { 1e-3 } else { 1e-4 },
            llm_lr: None,
            warmup: if tiny { 50 } else { 2000 },
            schedule: Schedule::Constant,
            stage1_steps: if tiny { 300 } else { 10_000 },
            ema_decay: 0.99,
            t_mean: 0.0,
            t_std: 1.0,
            text_dropout: 0.1,
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: if tiny { 100 } else { 2000 },
            keep_last: 3,
            keep_best: true,
            precision: Precision::F32,
            grad_accum: 1,
            ema_decay_2: None,
            data: DataSource::Shapes {
                seed: 0,
                len: if tiny { 4096 } else { 3_000_000 },
            },
            llm_init: if tiny {
                LlmInit::Prior
            } else {
                LlmInit::Pretrained(PathBuf::from("TinyLlama-1.1B"))
            },
            prior: PriorConfig::default(),
            sample_every: if tiny { 200 } else { 12_000 },
            eval_every: if tiny { 400 } else { 12_000 },
            eval_n: 48,
            eval_solver_steps: if tiny { 20 } else { 30 },
            eval_cfg: 2.0,
            transfer: None,
        }
    }

    /// The learning rate of the heads at `step` (0-based).
    pub fn lr_at(&self, step: usize, base: f64) -> f64 {
        if step < self.warmup {
            return base * (step + 1) as f64 / self.warmup as f64;
        }
        match self.schedule {
            Schedule::Constant => base,
            Schedule::Cosine => {
                let span = (self.steps - self.warmup).max(1) as f64;
                let p = ((step - self.warmup) as f64 / span).min(1.0);
                base * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        }
    }

    pub fn stage(&self, step: usize) -> u8 {
        if step < self.stage1_steps { 1 } else { 2 }
    }

    /// Checks the values that would make a run fail or misbehave; the error names the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.into(),
            })
        };
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if self.steps == 0 {
            return bad("steps", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        let not_positive = |v: f64| format!("must be a positive finite number, not {v}");
        if !positive(self.lr) {
            return bad("lr", &not_positive(self.lr));
        }
        if let Some(lr) = self.llm_lr
            && !positive(lr)
        {
            return bad("llm_lr", &not_positive(lr));
        }
        if !positive(self.grad_clip) {
            return bad(
                "grad_clip",
                &format!(
                    "{} (the largest global gradient norm)",
                    not_positive(self.grad_clip)
                ),
            );
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay", "must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.text_dropout) {
            return bad("text_dropout", "must be in [0, 1]");
        }
        if !self.t_mean.is_finite() {
            return bad("t_mean", "must be a finite number");
        }
        if !positive(self.t_std) {
            return bad("t_std", &not_positive(self.t_std));
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every", "must be at least 1");
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1");
        }
        if let Some(d) = self.ema_decay_2
            && !(0.0..1.0).contains(&d)
        {
            return bad("ema_decay_2", "must be in [0, 1)");
        }
        if let DataSource::Shapes { len: 0, .. } = self.data {
            return bad("data.len", "must be at least 1");
        }
        if (self.sample_every > 0 || self.eval_every > 0) && self.eval_solver_steps == 0 {
            return bad("eval_solver_steps", "must be at least 1");
        }
        if self.eval_every > 0 && self.eval_n < 2 {
            return bad(
                "eval_n",
                "must be at least 2 (the chance level scores each image against another scene)",
            );
        }
        if !self.eval_cfg.is_finite() {
            return bad("eval_cfg", "must be a finite number");
        }
        if self.llm_init == LlmInit::Prior {
            let p = &self.prior;
            if p.steps == 0 {
                return bad("prior.steps", "must be at least 1");
            }
            if p.batch_size == 0 {
                return bad("prior.batch_size", "must be at least 1");
            }
            if !positive(p.lr) {
                return bad("prior.lr", &not_positive(p.lr));
            }
            if p.seq_len < 2 {
                return bad(
                    "prior.seq_len",
                    "must be at least 2 (BOS and one token to predict)",
                );
            }
            if p.vocab_size < 4 {
                return bad(
                    "prior.vocab_size",
                    "must be at least 4 (three special tokens and one word)",
                );
            }
        }
        Ok(())
    }
}

/// The fields (dotted paths, `data.path`) whose values differ between two configurations.
pub fn changed_fields(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    fn walk(p: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let here = if p.is_empty() {
                        k.clone()
                    } else {
                        format!("{p}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        &here,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(p.to_string()),
            _ => {}
        }
    }
    let json = |c: &TrainConfig| serde_json::to_value(c).expect("a config is JSON");
    let mut out = Vec::new();
    walk("", &json(a), &json(b), &mut out);
    out
}

/// A configuration field with a value training cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("config field `{field}` {problem}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

/// Where the transferred weights of experiment 2's second system come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The source run (a `both` run).
    pub from: PathBuf,
    /// Its checkpoint step (EMA weights).
    pub step: usize,
}
