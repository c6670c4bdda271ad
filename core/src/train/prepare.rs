//! Preparing a training run: checking the configuration, creating the run directory (or checking
//! that a resumed run keeps its configuration), encoding the data into the latent cache, training
//! or reusing the stage-0 prior, installing the tokenizer, initialising the model (optionally
//! around another run's frozen encoder), and resuming from the newest checkpoint.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::flow::{FlowConfig, FlowModel};
use crate::latent_cache::LatentCache;
use crate::run::{Event, Manifest, RunDir};
use crate::tokenizer::LlamaTokenizer;
use crate::train::config::{LlmInit, TrainConfig};
use crate::train::error::TrainError;
use crate::train::grads::adamw;
use crate::train::prior;
use crate::train::trainer::Trainer;
use crate::train::transfer;

/// What happens while a run is prepared (for progress displays).
#[derive(Debug, Clone)]
pub enum Prepare {
    /// Encoding the data set into the latent cache: items done of total.
    Latents(usize, usize),
    /// Training the stage-0 language-model prior: step of steps, loss.
    Prior(usize, usize, f32),
}

/// Copies the tokenizer files of a Hugging Face folder into the run.
fn copy_tokenizer(from: &Path, run: &RunDir) -> Result<(), TrainError> {
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|error| TrainError::Io {
                path: src.clone(),
                error,
            })?;
            let dst = run.path(name);
            crate::fsutil::write_atomic(&dst, &bytes)
                .map_err(|error| TrainError::Io { path: dst, error })?;
        } else if name == "tokenizer.json" {
            return Err(TrainError::NoTokenizer { path: src });
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
        let flow = FlowConfig::of(config.preset, config.variant);
        // Fails early (with the reason) for a codec this build cannot run.
        flow.codec.build::<B::InnerBackend>()?;
        let (run, resumed) = if resume && run_dir.join(RunDir::MANIFEST).exists() {
            let run = RunDir::open(run_dir)?;
            let saved: TrainConfig = run.config()?;
            // Only the step budget may change when a run is continued.
            if (TrainConfig {
                steps: config.steps,
                ..saved.clone()
            }) != config
            {
                return Err(TrainError::ResumeChanged {
                    path: run.path(RunDir::CONFIG),
                });
            }
            if saved.steps != config.steps {
                run.write_config(&config)?;
            }
            (run, true)
        } else {
            let run = RunDir::create(run_dir)?;
            run.write_config(&config)?;
            let value = serde_json::to_value(&config).expect("a config is JSON");
            run.write_manifest(&Manifest::new(
                &value,
                vec![config.seed],
                &format!("{device:?}"),
            ))?;
            (run, false)
        };
        let cache_root = crate::fsutil::cache_root();
        let dataset = config.data.open()?;
        let data = LatentCache::open_or_build::<B::InnerBackend>(
            &cache_root,
            dataset.as_ref(),
            &flow.codec,
            flow.image_size,
            &device,
            |done, total| progress(Prepare::Latents(done, total)),
        )?;
        let expected = [flow.latent_channels, flow.latent_size, flow.latent_size];
        if data.meta.shape != expected {
            return Err(TrainError::LatentShape {
                cache: data.dir.clone(),
                found: data.meta.shape,
                expected,
            });
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
                )?;
                prior_event = Some(Event::Prior {
                    dir: dir.clone(),
                    reused,
                    report: serde_json::to_value(&report).expect("a report is JSON"),
                });
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
                model.llm = prior::load_llm::<B>(dir, &flow.llm, &device)?;
            }
            None => {
                let path = run.path("tokenizer.json");
                if !path.exists() {
                    let tok = prior::train_bpe_tokenizer(data.captions(), config.prior.vocab_size)
                        .map_err(prior::PriorError::Other)?;
                    tok.save(&path, true).map_err(|e| prior::PriorError::Io {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
        }
        let tokenizer = LlamaTokenizer::from_path(run.path("tokenizer.json"))?;
        if tokenizer.vocab_size() > flow.llm.vocab_size {
            return Err(TrainError::Vocabulary {
                tokens: tokenizer.vocab_size(),
                vocab: flow.llm.vocab_size,
            });
        }
        if let Some(t) = &config.transfer {
            model = transfer::apply(model, &flow, t, &device)?;
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
            metrics.record(Event::Data {
                cache: trainer.data.dir.clone(),
                items: trainer.data.len(),
                skipped: trainer.data.meta.skipped,
                skipped_examples: trainer.data.meta.skipped_examples.clone(),
            })?;
            if let Some(e) = prior_event {
                metrics.record(e)?;
            }
        }
        Ok(trainer)
    }
}
