//! Rectified-flow training (MODEL.md 7): velocity MSE on `z_t = t x + (1 - t) z0` with
//! logit-normal `t`, text dropout in the CFG-row form, two stages (stage 1: the LLM and its
//! embeddings are not updated; stage 2: everything, optionally at a lower LLM learning rate),
//! AdamW (0.9, 0.95, weight decay 0), warmup then constant or cosine, global gradient-norm
//! clipping, an EMA of the weights, metrics appended every step, and atomic checkpoints that a
//! resumed run continues from bit for bit: every step draws its randomness from a generator
//! seeded by (seed, step) and its data from the step's position, so nothing but the model,
//! optimizer and EMA state needs saving.

pub mod vocab;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData, TensorPrimitive};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::data::ShapesDataset;
use crate::flow::rectified::{
    interpolate, logit_normal, normal_noise, text_dropout, velocity_loss,
};
use crate::flow::{FlowConfig, FlowModel, TapRequest, Variant};
use crate::run::{Manifest, RunDir, RunError};
use crate::tokenizer::{LlamaTokenizer, PaddingSide};

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
    pub keep_last: usize,
    /// Synthetic shapes data: seed and number of distinct items.
    pub data_seed: u64,
    pub data_len: usize,
}

impl TrainConfig {
    /// Defaults for a preset (MODEL.md 7.3 scaled to the preset).
    pub fn for_preset(preset: &str, variant: Variant) -> Result<Self, String> {
        FlowConfig::preset(preset, variant)?;
        let tiny = preset == "tiny";
        Ok(Self {
            preset: preset.into(),
            variant,
            steps: if tiny { 300 } else { 120_000 },
            batch_size: if tiny { 4 } else { 512 },
            lr: if tiny { 3e-4 } else { 1e-4 },
            llm_lr: None,
            warmup: if tiny { 20 } else { 2000 },
            schedule: Schedule::Constant,
            stage1_steps: if tiny { 100 } else { 10_000 },
            ema_decay: 0.99,
            t_mean: 0.0,
            t_std: 1.0,
            text_dropout: 0.1,
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: if tiny { 50 } else { 2000 },
            keep_last: 3,
            data_seed: 0,
            data_len: if tiny { 2048 } else { 3_000_000 },
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
        if self.data_len == 0 {
            return bad("data_len", "must be at least 1");
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
    optim_heads: Optim<B>,
    optim_llm: Optim<B>,
    pub step: usize,
    tokenizer: LlamaTokenizer,
    data: ShapesDataset,
    run: RunDir,
    device: B::Device,
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

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

fn ckpt_err(path: &Path) -> impl Fn(String) -> TrainError + '_ {
    move |reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Starts a new run in `run_dir`, or continues the latest checkpoint there with `resume`.
    pub fn new(
        config: TrainConfig,
        run_dir: &Path,
        resume: bool,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        config.check()?;
        let flow = FlowConfig::preset(&config.preset, config.variant).map_err(TrainError::Other)?;
        if flow.latent_channels != 3 {
            return Err(TrainError::Other(format!(
                "preset `{}` trains in a VAE latent space, which needs the SDXL-VAE (not available yet); use --preset tiny",
                flow.preset
            )));
        }
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
            let value =
                serde_json::to_value(&config).map_err(|e| TrainError::Other(e.to_string()))?;
            run.write_manifest(&Manifest::new(
                &value,
                vec![config.seed],
                &format!("{device:?}"),
            ))?;
            (run, false)
        };
        let tok_path = run.path("tokenizer.json");
        if !tok_path.exists() {
            vocab::write_shapes_tokenizer(&tok_path)
                .map_err(|e| TrainError::Other(e.to_string()))?;
        }
        let tokenizer =
            LlamaTokenizer::from_path(&tok_path).map_err(|e| TrainError::Other(e.to_string()))?;
        if tokenizer.vocab_size() > flow.llm.vocab_size {
            return Err(TrainError::Other(
                "the demo vocabulary does not fit the LLM".into(),
            ));
        }
        B::seed(&device, config.seed);
        let model = FlowModel::<B>::init(&flow, &device);
        let ema = model.valid();
        let mut trainer = Self {
            data: ShapesDataset::new(config.data_seed, config.data_len),
            config,
            flow,
            model,
            ema,
            optim_heads: adamw(),
            optim_llm: adamw(),
            step: 0,
            tokenizer,
            run,
            device,
        };
        if resumed {
            trainer.load_latest()?;
        }
        Ok(trainer)
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run
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

    /// Writes model, EMA, both optimizers and the step into `checkpoints/step-N.partial`, syncs,
    /// and renames it to `checkpoints/step-N`; then drops all but the newest `keep_last`.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
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
        rec.record(self.optim_heads.to_record(), tmp.join("optim_heads"))
            .map_err(|e| err(e.to_string()))?;
        rec.record(self.optim_llm.to_record(), tmp.join("optim_llm"))
            .map_err(|e| err(e.to_string()))?;
        crate::fsutil::write_atomic(
            &tmp.join("state.json"),
            json!({"step": self.step}).to_string().as_bytes(),
        )
        .map_err(|e| err(e.to_string()))?;
        for f in std::fs::read_dir(&tmp)
            .map_err(|e| err(e.to_string()))?
            .flatten()
        {
            std::fs::File::open(f.path())
                .and_then(|f| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
        }
        let _ = std::fs::remove_dir_all(&done);
        std::fs::rename(&tmp, &done).map_err(|e| err(e.to_string()))?;
        let all = Self::checkpoints(&self.run);
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
        let heads = rec
            .load(dir.join("optim_heads"), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.optim_heads = adamw::<B>().load_record(heads);
        let llm = rec
            .load(dir.join("optim_llm"), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.optim_llm = adamw::<B>().load_record(llm);
        self.step = step;
        Ok(())
    }

    /// The step's batch: images `[b, 3, s, s]` and captions, from the data cursor.
    fn batch(&self, step: usize) -> (Tensor<B, 4>, Vec<String>) {
        let b = self.config.batch_size;
        let s = self.flow.latent_size;
        let mut pixels = Vec::with_capacity(b * 3 * s * s);
        let mut captions = Vec::with_capacity(b);
        for i in 0..b {
            let (p, c) = self.data.item((step * b + i) % self.config.data_len, s);
            pixels.extend(p);
            captions.push(c);
        }
        (
            Tensor::from_data(TensorData::new(pixels, [b, 3, s, s]), &self.device),
            captions,
        )
    }

    /// One optimisation step.
    pub fn train_step(&mut self) -> Result<StepRecord, TrainError> {
        let start = Instant::now();
        let step = self.step;
        let c = &self.config;
        let mut rng =
            ChaCha8Rng::seed_from_u64(c.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (x, captions) = self.batch(step);
        let b = c.batch_size;
        let tl = self.flow.text_len;
        let tokens = self
            .tokenizer
            .encode_batch(&captions, Some(tl), PaddingSide::Right)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.ids, [b, tl]), &self.device);
        let mask =
            Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.mask, [b, tl]), &self.device);
        let (ids, mask, _) =
            text_dropout(ids, mask, c.text_dropout, self.tokenizer.pad_id, &mut rng);
        let t = Tensor::<B, 1>::from_data(
            TensorData::new(logit_normal(&mut rng, b, c.t_mean, c.t_std), [b]),
            &self.device,
        );
        let z0 = normal_noise::<B, 4>(&mut rng, x.dims(), &self.device);
        let zt = interpolate(&x, &z0, &t);
        let target = x - z0;
        let out = self
            .model
            .forward(zt, t, ids, mask, &TapRequest::none())
            .map_err(|e| TrainError::Other(e.to_string()))?;
        let loss = velocity_loss(out.velocity.clone(), target);
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            let velocity_sum: f64 = out.velocity.clone().abs().sum().into_scalar().elem();
            let first = if velocity_sum.is_finite() {
                "the loss (the predicted velocity is finite)".to_string()
            } else {
                "the predicted velocity".to_string()
            };
            return Err(self.diagnose(step, loss_value, first));
        }
        let stage = c.stage(step);
        let mut grads = loss.backward();
        let llm_grads = GradientsParams::from_module(&mut grads, &self.model.llm);
        let mut head_grads = GradientsParams::from_grads(grads, &self.model);
        let mut llm_grads = if stage == 2 { Some(llm_grads) } else { None };
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
        self.ema = self.ema.clone().map(&mut EmaUpdate {
            current: collect.values,
            decay: c.ema_decay,
        });
        self.step += 1;
        Ok(StepRecord {
            step,
            loss: loss_value,
            lr,
            grad_norm,
            samples_per_s: b as f64 / start.elapsed().as_secs_f64(),
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
}

/// Trains to `config.steps`, appending a metrics record per step and checkpointing every
/// `checkpoint_every` steps and at the end; `on_step` sees each record (progress display).
pub fn train<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<(), TrainError> {
    let mut metrics = trainer.run.metrics_writer()?;
    if trainer.step > 0 {
        metrics.log(&json!({"event": "resume", "from_step": trainer.step}))?;
    }
    while trainer.step < trainer.config.steps {
        let record = trainer.train_step()?;
        metrics
            .log(&serde_json::to_value(&record).map_err(|e| TrainError::Other(e.to_string()))?)?;
        on_step(&record);
        if trainer.step.is_multiple_of(trainer.config.checkpoint_every)
            || trainer.step == trainer.config.steps
        {
            metrics.sync()?;
            trainer.save_checkpoint()?;
        }
    }
    Ok(())
}
