//! Rectified-flow training (MODEL.md 7): velocity MSE on `z_t = t x + (1 - t) z0` with
//! logit-normal `t`, text dropout in the CFG-row form, two stages (stage 1: the LLM and its
//! embeddings are not updated; stage 2: everything, optionally at a lower LLM learning rate),
//! AdamW (0.9, 0.95, weight decay 0), warmup then constant or cosine, global gradient-norm
//! clipping, an EMA of the weights, metrics appended every step, and atomic checkpoints that a
//! resumed run continues from bit for bit: every step draws its randomness from a generator
//! seeded by (seed, step) and its data from the step's position, so nothing but the model,
//! optimizer and EMA state needs saving.

pub mod hooks;
pub mod prior;
pub mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, TensorPrimitive};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::DataSource;
use crate::flow::rectified::{drop_rows, interpolate, logit_normal, normal_values, velocity_loss};
use crate::flow::{FlowConfig, FlowModel, TapRequest, Variant};
use crate::latent_cache::LatentCache;
use crate::run::{Manifest, RunDir, RunError};
use crate::tokenizer::{LlamaTokenizer, PaddingSide};
use prior::PriorConfig;

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
    pub preset: String,
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
    /// frozen: experiment 2's second system (see [`transfer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
}

pub use transfer::Transfer;

/// How the flow model's LLM is initialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmInit {
    /// Random weights, with a BPE tokenizer trained on the captions.
    Random,
    /// The stage-0 language-model prior (see [`prior`]).
    Prior,
    /// A Hugging Face Llama folder (config.json, safetensors, tokenizer.json).
    Pretrained(PathBuf),
}

impl TrainConfig {
    /// Defaults for a preset (MODEL.md 7.3 scaled to the preset).
    pub fn for_preset(preset: &str, variant: Variant) -> Result<Self, String> {
        FlowConfig::preset(preset, variant)?;
        let tiny = preset == "tiny";
        Ok(Self {
            preset: preset.into(),
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
        })
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

    fn check(&self) -> Result<(), TrainError> {
        let bad = |field: &'static str, problem: &str| {
            Err(TrainError::Config {
                field,
                problem: problem.into(),
            })
        };
        if self.steps == 0 {
            return bad("steps", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay", "must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.text_dropout) {
            return bad("text_dropout", "must be in [0, 1]");
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
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("config field `{field}` {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(
        "step {step}: the loss is not finite ({loss}); the first non-finite tensor was {first}. Diagnosis in {diagnosis}; the last good checkpoint is kept"
    )]
    NonFinite {
        step: usize,
        loss: f32,
        first: String,
        diagnosis: PathBuf,
    },
    #[error("{0}")]
    Other(String),
}

/// The model's trainable float parameters by id, as inner-backend primitives.
struct Collect<B: AutodiffBackend> {
    values: HashMap<ParamId, TensorPrimitive<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // Frozen parameters keep their EMA exactly (decay x + (1 - decay) x is not always x
        // in floating point).
        if !param.is_require_grad() {
            return;
        }
        self.values
            .insert(param.id, param.val().inner().into_primitive());
    }
}

/// `ema = decay ema + (1 - decay) current`, parameter by parameter.
struct EmaUpdate<B: Backend> {
    current: HashMap<ParamId, TensorPrimitive<B>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for EmaUpdate<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let updated = match self.current.remove(&id) {
            Some(cur) => {
                tensor * self.decay + Tensor::<B, D>::from_primitive(cur) * (1.0 - self.decay)
            }
            None => tensor,
        };
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// Sum of squared gradients over the given parameter ids, and the first id whose gradient is
/// not finite.
struct GradStats<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum_sq: f64,
    non_finite: Option<ParamId>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradStats<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f64 = g.square().sum().into_scalar().elem();
            if !s.is_finite() && self.non_finite.is_none() {
                self.non_finite = Some(param.id);
            }
            self.sum_sq += s;
        }
    }
}

/// Scales every gradient by `factor`.
struct ScaleGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g * self.factor);
        }
    }
}

type Optim<B> = OptimizerAdaptor<AdamW, FlowModel<B>, B>;

fn adamw<B: AutodiffBackend>() -> Optim<B> {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init()
}

/// Where a training run stands.
pub struct Trainer<B: AutodiffBackend> {
    pub config: TrainConfig,
    pub flow: FlowConfig,
    pub model: FlowModel<B>,
    pub ema: FlowModel<B::InnerBackend>,
    /// The second EMA (`ema_decay_2`).
    pub ema2: Option<FlowModel<B::InnerBackend>>,
    optim_heads: Optim<B>,
    optim_llm: Optim<B>,
    pub step: usize,
    pub tokenizer: LlamaTokenizer,
    /// The encoded training data.
    pub data: LatentCache,
    run: RunDir,
    device: B::Device,
    /// Best checkpoint so far: (step, metric name, value).
    best: Option<Best>,
    /// Losses since the last checkpoint.
    window: Vec<f32>,
}

/// The best checkpoint (`checkpoints/best.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Best {
    pub step: usize,
    /// `adherence` (higher is better) or `loss` (lower is better).
    pub metric: String,
    pub value: f64,
}

impl Best {
    fn beats(&self, other: &Best) -> bool {
        if self.metric != other.metric {
            // An evaluated checkpoint beats one only ranked by its training loss.
            return self.metric == "adherence";
        }
        if self.metric == "adherence" {
            self.value > other.value
        } else {
            self.value < other.value
        }
    }
}

/// A step's record.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: usize,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
    pub stage: u8,
}

/// What happens while a run is prepared (for progress displays).
#[derive(Debug, Clone)]
pub enum Prepare {
    /// Encoding the data set into the latent cache: items done of total.
    Latents(usize, usize),
    /// Training the stage-0 language-model prior: step of steps, loss.
    Prior(usize, usize, f32),
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

fn ckpt_err(path: &Path) -> impl Fn(String) -> TrainError + '_ {
    move |reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    }
}

fn other(e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(e.to_string())
}

/// Copies the tokenizer files of a Hugging Face folder into the run.
fn copy_tokenizer(from: &Path, run: &RunDir) -> Result<(), TrainError> {
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let src = from.join(name);
        if src.is_file() {
            let bytes =
                std::fs::read(&src).map_err(|e| other(format!("{}: {e}", src.display())))?;
            crate::fsutil::write_atomic(&run.path(name), &bytes)
                .map_err(|e| other(format!("{}: {e}", run.path(name).display())))?;
        } else if name == "tokenizer.json" {
            return Err(other(format!(
                "{} is missing: the LLM folder needs its tokenizer",
                src.display()
            )));
        }
    }
    Ok(())
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Starts a new run in `run_dir`, or continues the latest checkpoint there with `resume`.
    /// Preparing a run encodes the data into the latent cache and, for `llm_init = "prior"`,
    /// trains (or reuses) the stage-0 prior, both under [`crate::fsutil::cache_root`].
    pub fn new(
        config: TrainConfig,
        run_dir: &Path,
        resume: bool,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        Self::prepare(config, run_dir, resume, device, &mut |_| {})
    }

    /// [`Trainer::new`] with a progress callback for the preparation.
    pub fn prepare(
        config: TrainConfig,
        run_dir: &Path,
        resume: bool,
        device: B::Device,
        progress: &mut dyn FnMut(Prepare),
    ) -> Result<Self, TrainError> {
        config.check()?;
        let flow = FlowConfig::preset(&config.preset, config.variant).map_err(TrainError::Other)?;
        // Fails early (with the reason) for a codec this build cannot run.
        flow.codec
            .build::<B::InnerBackend>()
            .map_err(TrainError::Other)?;
        let (run, resumed) = if resume && run_dir.join(RunDir::MANIFEST).exists() {
            let run = RunDir::open(run_dir)?;
            let saved: TrainConfig = run.config()?;
            // Only the step budget may change when a run is continued.
            if (TrainConfig {
                steps: config.steps,
                ..saved.clone()
            }) != config
            {
                return Err(TrainError::Other(format!(
                    "--resume with a different configuration than {} holds (only --steps may change); drop the overrides that change it",
                    run.path(RunDir::CONFIG).display()
                )));
            }
            if saved.steps != config.steps {
                run.write_config(&config)?;
            }
            (run, true)
        } else {
            let run = RunDir::create(run_dir)?;
            run.write_config(&config)?;
            let value = serde_json::to_value(&config).map_err(other)?;
            run.write_manifest(&Manifest::new(
                &value,
                vec![config.seed],
                &format!("{device:?}"),
            ))?;
            (run, false)
        };
        let cache_root = crate::fsutil::cache_root();
        let dataset = config.data.open().map_err(other)?;
        let data = LatentCache::open_or_build::<B::InnerBackend>(
            &cache_root,
            dataset.as_ref(),
            &flow.codec,
            flow.image_size,
            &device,
            |done, total| progress(Prepare::Latents(done, total)),
        )
        .map_err(other)?;
        if data.meta.shape != [flow.latent_channels, flow.latent_size, flow.latent_size] {
            return Err(other(format!(
                "latent cache {} holds latents of shape {:?}, the model expects {:?}",
                data.dir.display(),
                data.meta.shape,
                [flow.latent_channels, flow.latent_size, flow.latent_size]
            )));
        }
        B::seed(&device, config.seed);
        let mut model = FlowModel::<B>::init(&flow, &device);
        let mut prior_event = None;
        let llm_dir = match &config.llm_init {
            LlmInit::Random => None,
            LlmInit::Pretrained(dir) => Some(dir.clone()),
            LlmInit::Prior => {
                let (dir, report, reused) = prior::prepare_prior::<B>(
                    &cache_root,
                    data.captions(),
                    &flow.llm,
                    &config.prior,
                    &device,
                    |s, n, l| progress(Prepare::Prior(s, n, l)),
                )
                .map_err(other)?;
                prior_event = Some(json!({
                    "event": "prior", "dir": dir, "reused": reused, "report": report
                }));
                Some(dir)
            }
        };
        if let Some(t) = &config.transfer
            && !run.path("tokenizer.json").exists()
        {
            copy_tokenizer(&t.from, &run)?;
        }
        match &llm_dir {
            Some(dir) => {
                if !run.path("tokenizer.json").exists() {
                    copy_tokenizer(dir, &run)?;
                }
                model.llm = prior::load_llm::<B>(dir, &flow.llm, &device).map_err(other)?;
            }
            None => {
                if !run.path("tokenizer.json").exists() {
                    let tok = prior::train_bpe_tokenizer(data.captions(), config.prior.vocab_size)
                        .map_err(other)?;
                    tok.save(run.path("tokenizer.json"), true).map_err(other)?;
                }
            }
        }
        let tokenizer = LlamaTokenizer::from_path(run.path("tokenizer.json")).map_err(other)?;
        if tokenizer.vocab_size() > flow.llm.vocab_size {
            return Err(other(format!(
                "the tokenizer has {} tokens, more than the LLM's vocabulary ({})",
                tokenizer.vocab_size(),
                flow.llm.vocab_size
            )));
        }
        if let Some(t) = &config.transfer {
            model = transfer::apply(model, &flow, t, &device).map_err(other)?;
        }
        let ema = model.valid();
        let ema2 = config.ema_decay_2.map(|_| model.valid());
        let mut trainer = Self {
            data,
            config,
            flow,
            model,
            ema,
            ema2,
            optim_heads: adamw(),
            optim_llm: adamw(),
            step: 0,
            tokenizer,
            run,
            device,
            best: None,
            window: Vec::new(),
        };
        if resumed {
            trainer.load_latest()?;
        }
        let mut metrics = trainer.run.metrics_writer()?;
        if trainer.step == 0 {
            metrics.log(&json!({
                "event": "data", "cache": trainer.data.dir, "items": trainer.data.len(),
                "skipped": trainer.data.meta.skipped,
                "skipped_examples": trainer.data.meta.skipped_examples,
            }))?;
            if let Some(e) = prior_event {
                metrics.log(&e)?;
            }
        }
        Ok(trainer)
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.run.path("checkpoints").join(format!("step-{step:08}"))
    }

    /// Complete checkpoints, oldest first.
    pub fn checkpoints(run: &RunDir) -> Vec<(usize, PathBuf)> {
        let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(run.path("checkpoints"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("step-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// The best checkpoint recorded in `checkpoints/best.json`, if any.
    pub fn best_checkpoint(run: &RunDir) -> Option<(Best, PathBuf)> {
        let text = std::fs::read(run.path("checkpoints").join("best.json")).ok()?;
        let best: Best = serde_json::from_slice(&text).ok()?;
        let dir = run
            .path("checkpoints")
            .join(format!("step-{:08}", best.step));
        dir.is_dir().then_some((best, dir))
    }

    /// Writes model, EMA(s), both optimizers and the step into `checkpoints/step-N.partial`,
    /// syncs, and renames it to `checkpoints/step-N`; records it as the best when `score` beats
    /// the best so far; then drops all but the newest `keep_last` (and the best).
    pub fn save_checkpoint(&mut self, score: Option<Best>) -> Result<PathBuf, TrainError> {
        let done = self.checkpoint_dir(self.step);
        let tmp = done.with_extension("partial");
        let err = ckpt_err(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| err(e.to_string()))?;
        let rec = recorder();
        rec.record(self.model.clone().into_record(), tmp.join("model"))
            .map_err(|e| err(e.to_string()))?;
        rec.record(self.ema.clone().into_record(), tmp.join("ema"))
            .map_err(|e| err(e.to_string()))?;
        if let Some(ema2) = &self.ema2 {
            rec.record(ema2.clone().into_record(), tmp.join("ema2"))
                .map_err(|e| err(e.to_string()))?;
        }
        rec.record(self.optim_heads.to_record(), tmp.join("optim_heads"))
            .map_err(|e| err(e.to_string()))?;
        rec.record(self.optim_llm.to_record(), tmp.join("optim_llm"))
            .map_err(|e| err(e.to_string()))?;
        crate::fsutil::write_atomic(
            &tmp.join("state.json"),
            json!({"step": self.step, "best": self.best})
                .to_string()
                .as_bytes(),
        )
        .map_err(|e| err(e.to_string()))?;
        crate::fsutil::sync_dir(&tmp).map_err(|e| err(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&done);
        std::fs::rename(&tmp, &done).map_err(|e| err(e.to_string()))?;
        if let Some(score) = score
            && self.config.keep_best
            && self.best.as_ref().is_none_or(|b| score.beats(b))
        {
            let path = self.run.path("checkpoints").join("best.json");
            crate::fsutil::write_atomic(&path, json!(score).to_string().as_bytes())
                .map_err(|e| ckpt_err(&path)(e.to_string()))?;
            self.best = Some(score);
        }
        let keep_step = self.best.as_ref().map(|b| b.step);
        let all: Vec<_> = Self::checkpoints(&self.run)
            .into_iter()
            .filter(|(s, _)| Some(*s) != keep_step)
            .collect();
        for (_, old) in all
            .iter()
            .take(all.len().saturating_sub(self.config.keep_last.max(1)))
        {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(done)
    }

    fn load_latest(&mut self) -> Result<(), TrainError> {
        let Some((step, dir)) = Self::checkpoints(&self.run).pop() else {
            return Ok(()); // killed before the first checkpoint: start over
        };
        let err = ckpt_err(&dir);
        let rec = recorder();
        let model = rec
            .load(dir.join("model"), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.model = self.model.clone().load_record(model);
        let ema = rec
            .load(dir.join("ema"), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.ema = self.ema.clone().load_record(ema);
        if let Some(ema2) = self.ema2.take() {
            let record = rec
                .load(dir.join("ema2"), &self.device)
                .map_err(|e| err(e.to_string()))?;
            self.ema2 = Some(ema2.load_record(record));
        }
        let heads = rec
            .load(dir.join("optim_heads"), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.optim_heads = adamw::<B>().load_record(heads);
        let llm = rec
            .load(dir.join("optim_llm"), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.optim_llm = adamw::<B>().load_record(llm);
        let state_path = dir.join("state.json");
        let state: serde_json::Value = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ckpt_err(&state_path)("missing or unreadable".into()))?;
        self.best = serde_json::from_value(state["best"].clone()).unwrap_or(None);
        self.step = step;
        Ok(())
    }

    /// Micro-batch `micro` of `step`: latents `[b, c, h, w]` and captions, by position in the
    /// data (deterministic, so a resumed run sees the same batches).
    fn batch(&self, step: usize, micro: usize) -> (Tensor<B, 4>, Vec<String>) {
        let b = self.config.batch_size;
        let first = (step * self.config.grad_accum + micro) * b;
        let n = self.data.len();
        let indices: Vec<usize> = (first..first + b).map(|i| i % n).collect();
        let (latents, captions) = self.data.batch(&indices);
        let [c, h, w] = self.data.meta.shape;
        (
            Tensor::from_data(TensorData::new(latents, [b, c, h, w]), &self.device),
            captions,
        )
    }

    /// The randomness of item `index` of `step`'s effective batch: text dropout, `t` and the
    /// noise `z0`, from a generator seeded by (seed, step, index). Per item, so a step sees the
    /// same items, times and noise however it is split into micro-batches.
    fn item_randomness(&self, step: usize, index: usize) -> (bool, f32, Vec<f32>) {
        let c = &self.config;
        let key = (step as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((index as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ key);
        let dropped = rand::Rng::random_bool(&mut rng, c.text_dropout);
        let t = logit_normal(&mut rng, 1, c.t_mean, c.t_std)[0];
        let per: usize = self.data.meta.shape.iter().product();
        let noise = normal_values(&mut rng, per);
        (dropped, t, noise)
    }

    /// The loss of one micro-batch (not yet divided by the accumulation count).
    fn micro_loss(
        &self,
        step: usize,
        micro: usize,
        stage: u8,
    ) -> Result<(Tensor<B, 1>, f32), TrainError> {
        let c = &self.config;
        let (x, captions) = self.batch(step, micro);
        let b = c.batch_size;
        let tl = self.flow.text_len;
        let tokens = self
            .tokenizer
            .encode_batch(&captions, Some(tl), PaddingSide::Right)
            .map_err(other)?;
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.ids, [b, tl]), &self.device);
        let mask =
            Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.mask, [b, tl]), &self.device);
        let (mut dropped, mut times, mut noise) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..b {
            let (d, t, z) = self.item_randomness(step, micro * b + i);
            dropped.push(d);
            times.push(t);
            noise.extend(z);
        }
        let (ids, mask) = drop_rows(ids, mask, &dropped, self.tokenizer.pad_id);
        let t = Tensor::<B, 1>::from_data(TensorData::new(times, [b]), &self.device);
        let z0 = Tensor::<B, 4>::from_data(TensorData::new(noise, x.dims()), &self.device);
        let zt = interpolate(&x, &z0, &t);
        let target = x - z0;
        // Stage 1 does not update the LLM: no gradients for its weights (gradients still flow
        // through it to the encoder).
        let model = if stage == 1 {
            self.model.clone().freeze_llm()
        } else {
            self.model.clone()
        };
        let out = model
            .forward(zt, t, ids, mask, &TapRequest::none())
            .map_err(other)?;
        let loss = velocity_loss(out.velocity.clone(), target);
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            let velocity_sum: f64 = out.velocity.abs().sum().into_scalar().elem();
            let first = if velocity_sum.is_finite() {
                "the loss (the predicted velocity is finite)".to_string()
            } else {
                "the predicted velocity".to_string()
            };
            return Err(self.diagnose(step, loss_value, first));
        }
        Ok((loss, loss_value))
    }

    /// One optimisation step (`grad_accum` micro-batches).
    pub fn train_step(&mut self) -> Result<StepRecord, TrainError> {
        let start = Instant::now();
        let step = self.step;
        let accum = self.config.grad_accum;
        let stage = self.config.stage(step);
        let mut heads_acc = GradientsAccumulator::<FlowModel<B>>::new();
        let mut llm_acc = GradientsAccumulator::<FlowModel<B>>::new();
        let mut loss_sum = 0f32;
        for micro in 0..accum {
            let (loss, value) = self.micro_loss(step, micro, stage)?;
            loss_sum += value;
            let loss = if accum > 1 { loss / accum as f32 } else { loss };
            let mut grads = loss.backward();
            let llm_grads = GradientsParams::from_module(&mut grads, &self.model.llm);
            heads_acc.accumulate(&self.model, GradientsParams::from_grads(grads, &self.model));
            if stage == 2 {
                llm_acc.accumulate(&self.model, llm_grads);
            }
        }
        let loss_value = loss_sum / accum as f32;
        let c = &self.config;
        let mut head_grads = heads_acc.grads();
        let mut llm_grads = (stage == 2).then(|| llm_acc.grads());
        // Global gradient norm over the parameters being updated (PyTorch's clip_grad_norm_).
        let mut stats = GradStats::<B> {
            grads: &head_grads,
            sum_sq: 0.0,
            non_finite: None,
            _b: std::marker::PhantomData,
        };
        self.model.visit(&mut stats);
        let (mut sum_sq, mut bad) = (stats.sum_sq, stats.non_finite);
        if let Some(g) = &llm_grads {
            let mut stats = GradStats::<B> {
                grads: g,
                sum_sq: 0.0,
                non_finite: None,
                _b: std::marker::PhantomData,
            };
            self.model.llm.visit(&mut stats);
            sum_sq += stats.sum_sq;
            bad = bad.or(stats.non_finite);
        }
        if let Some(id) = bad {
            return Err(self.diagnose(step, loss_value, format!("the gradient of parameter {id}")));
        }
        let grad_norm = sum_sq.sqrt();
        if grad_norm > c.grad_clip {
            let factor = c.grad_clip / (grad_norm + 1e-6);
            self.model.visit(&mut ScaleGrads::<B> {
                grads: &mut head_grads,
                factor,
                _b: std::marker::PhantomData,
            });
            if let Some(g) = llm_grads.as_mut() {
                self.model.llm.visit(&mut ScaleGrads::<B> {
                    grads: g,
                    factor,
                    _b: std::marker::PhantomData,
                });
            }
        }
        let lr = c.lr_at(step, c.lr);
        let llm_lr = c.lr_at(step, c.llm_lr.unwrap_or(c.lr));
        let mut model = self.model.clone();
        model = self.optim_heads.step(lr, model, head_grads);
        if let Some(g) = llm_grads {
            model = self.optim_llm.step(llm_lr, model, g);
        }
        self.model = model;
        let mut collect = Collect::<B> {
            values: HashMap::new(),
        };
        self.model.visit(&mut collect);
        if let (Some(ema2), Some(decay)) = (self.ema2.take(), self.config.ema_decay_2) {
            self.ema2 = Some(ema2.map(&mut EmaUpdate {
                current: collect.values.clone(),
                decay,
            }));
        }
        self.ema = self.ema.clone().map(&mut EmaUpdate {
            current: collect.values,
            decay: self.config.ema_decay,
        });
        self.step += 1;
        self.window.push(loss_value);
        let samples = self.config.batch_size * accum;
        Ok(StepRecord {
            step,
            loss: loss_value,
            lr,
            grad_norm,
            samples_per_s: samples as f64 / start.elapsed().as_secs_f64(),
            stage,
        })
    }

    fn diagnose(&self, step: usize, loss: f32, first: String) -> TrainError {
        let path = self.run.path("nan_diagnosis.json");
        let _ = crate::fsutil::write_atomic(
            &path,
            json!({"step": step, "loss": loss.to_string(), "first_non_finite": first})
                .to_string()
                .as_bytes(),
        );
        TrainError::NonFinite {
            step,
            loss,
            first,
            diagnosis: path,
        }
    }

    /// Held-out shapes scenes for evaluation (a data seed training never uses), when the run
    /// trains on the shapes set.
    pub fn held_out_scenes(&self, n: usize) -> Option<Vec<crate::data::Scene>> {
        match self.config.data {
            DataSource::Shapes { seed, .. } => {
                let held_out = crate::data::ShapesDataset::held_out(seed, n);
                Some((0..n).map(|i| held_out.scene(i)).collect())
            }
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// What the training loop reports besides steps.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Step(StepRecord),
    /// An evaluation finished: step, mean adherence and its chance level.
    Eval(usize, f64, f64),
    /// A sample grid was written.
    Samples(usize, PathBuf),
    Checkpoint(usize),
}

/// Trains to `config.steps`, appending a metrics record per step, evaluating and writing sample
/// grids on schedule, and checkpointing every `checkpoint_every` steps, after each evaluation and
/// at the end; `on_event` sees each record (progress display).
pub fn train<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    mut on_event: impl FnMut(&TrainEvent),
) -> Result<(), TrainError> {
    let mut metrics = trainer.run.metrics_writer()?;
    if trainer.step > 0 {
        metrics.log(&json!({"event": "resume", "from_step": trainer.step}))?;
    }
    let due = |every: usize, step: usize| every > 0 && step.is_multiple_of(every);
    while trainer.step < trainer.config.steps {
        let record = trainer.train_step()?;
        metrics.log(&serde_json::to_value(&record).map_err(other)?)?;
        on_event(&TrainEvent::Step(record));
        let step = trainer.step;
        let last = step == trainer.config.steps;
        let mut score = None;
        if due(trainer.config.eval_every, step) || (last && trainer.config.eval_every > 0) {
            let started = Instant::now();
            if let Some(eval) = hooks::evaluate(trainer)? {
                metrics.log(&json!({
                    "event": "eval", "step": step, "adherence": eval.adherence,
                    "chance": eval.chance, "seconds": started.elapsed().as_secs_f64(),
                }))?;
                on_event(&TrainEvent::Eval(
                    step,
                    eval.adherence.overall,
                    eval.chance.overall,
                ));
                score = Some(Best {
                    step,
                    metric: "adherence".into(),
                    value: eval.adherence.overall,
                });
            }
        }
        if due(trainer.config.sample_every, step) || (last && trainer.config.sample_every > 0) {
            let path = hooks::sample_grid(trainer)?;
            metrics.log(&json!({"event": "samples", "step": step, "path": path}))?;
            on_event(&TrainEvent::Samples(step, path));
        }
        if score.is_some() || due(trainer.config.checkpoint_every, step) || last {
            if score.is_none() && !trainer.window.is_empty() {
                let mean = trainer.window.iter().map(|&v| v as f64).sum::<f64>()
                    / trainer.window.len() as f64;
                score = Some(Best {
                    step,
                    metric: "loss".into(),
                    value: mean,
                });
            }
            trainer.window.clear();
            metrics.sync()?;
            trainer.save_checkpoint(score)?;
            on_event(&TrainEvent::Checkpoint(step));
        }
    }
    Ok(())
}
