//! Preparing a training run: checking the configuration, taking the run's writer lock, encoding
//! the data into the latent cache, training or reusing the stage-0 prior, installing the
//! tokenizer, initialising the model (optionally around another run's frozen encoder), and
//! resuming from the newest checkpoint that loads. A new run becomes a run (its manifest is
//! written) only once all of that succeeded, so a start that fails can simply be retried; a
//! folder that holds files flowlens did not write is never used.

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

use crate::flow::{FlowConfig, FlowModel};
use crate::latent_cache::LatentCache;
use crate::run::{Event, Manifest, MetricRecord, RunDir, RunLock};
use crate::tokenizer::LlamaTokenizer;
use crate::train::config::{LlmInit, TrainConfig, changed_fields};
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
    /// The newest checkpoint could not be loaded; the run resumes from an older one.
    FellBack {
        skipped: std::path::PathBuf,
        reason: String,
        from_step: usize,
    },
}

/// Copies the tokenizer files of a Hugging Face folder into the run folder `run`.
fn copy_tokenizer(from: &Path, run: &Path) -> Result<(), TrainError> {
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|error| TrainError::Io {
                path: src.clone(),
                error,
            })?;
            let dst = run.join(name);
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
        let resumed = resume && run_dir.join(RunDir::MANIFEST).exists();
        if !resumed {
            // Before anything is written: a run or a foreign folder is refused.
            RunDir::check_new(run_dir)?;
        }
        let lock = RunLock::acquire(run_dir)?;
        let existing = if resumed {
            let run = RunDir::open(run_dir)?;
            let saved: TrainConfig = run.config()?;
            // Only the step budget may change when a run is continued.
            let changed = changed_fields(
                &TrainConfig {
                    steps: config.steps,
                    ..saved.clone()
                },
                &config,
            );
            if !changed.is_empty() {
                return Err(TrainError::ResumeChanged {
                    path: run.path(RunDir::CONFIG),
                    fields: changed.join(", "),
                });
            }
            Some((run, saved))
        } else {
            RunDir::check_new(run_dir)?;
            None
        };
        let cache_root = crate::fsutil::cache_root();
        let data = open_data::<B>(&config, &flow, &device, progress)?;
        if let Some((run, _)) = &existing {
            check_same_data(run, &data)?;
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
        if let Some(dir) = &llm_dir {
            model.llm = prior::load_llm::<B>(dir, &flow.llm, &device)?;
        }
        let tokenizer_path = run_dir.join("tokenizer.json");
        if existing.is_none() || !tokenizer_path.exists() {
            match (&config.transfer, &llm_dir) {
                (Some(t), _) => copy_tokenizer(&t.from, run_dir)?,
                (None, Some(dir)) => copy_tokenizer(dir, run_dir)?,
                (None, None) => {
                    let tok = prior::train_bpe_tokenizer(data.captions(), config.prior.vocab_size)
                        .map_err(prior::PriorError::Other)?;
                    tok.save(&tokenizer_path, true)
                        .map_err(|e| prior::PriorError::Io {
                            path: tokenizer_path.clone(),
                            reason: e.to_string(),
                        })?;
                }
            }
        }
        let tokenizer = LlamaTokenizer::from_path(&tokenizer_path)?;
        if tokenizer.vocab_size() > flow.llm.vocab_size {
            return Err(TrainError::Vocabulary {
                tokens: tokenizer.vocab_size(),
                vocab: flow.llm.vocab_size,
            });
        }
        if let Some(t) = &config.transfer {
            model = transfer::apply(model, &flow, t, &device)?;
        }
        let run = match existing {
            Some((run, saved)) => {
                if saved.steps != config.steps {
                    run.write_config(&config)?;
                }
                run
            }
            None => {
                // Everything is ready: make it a run (the manifest, last, marks it as one).
                let run = RunDir::create(run_dir)?;
                run.write_config(&config)?;
                let value = serde_json::to_value(&config).expect("a config is JSON");
                run.write_manifest(&Manifest::new(
                    &value,
                    vec![config.seed],
                    &format!("{device:?}"),
                ))?;
                run
            }
        };
        let ema = model.valid();
        let ema2 = config.ema_decay_2.map(|_| model.valid());
        let order = std::sync::Arc::new(super::trainer::DataOrder::new(config.seed, data.len()));
        let mut trainer = Self {
            order,
            data: std::sync::Arc::new(data),
            config,
            flow,
            model,
            ema,
            ema2,
            optim_heads: adamw(),
            optim_llm: adamw(),
            step: 0,
            tokenizer: std::sync::Arc::new(tokenizer),
            run,
            device,
            best: None,
            window: Vec::new(),
            parallel: None,
            _lock: lock,
        };
        if resumed {
            trainer.load_latest(progress)?;
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

/// A resumed run must train on the data it started with: the latent cache it recorded (its
/// folder is named by the key that hashes the data set's files, the codec and the size) must be
/// the one the data gives now.
fn check_same_data(run: &RunDir, data: &LatentCache) -> Result<(), TrainError> {
    let recorded = run.read_records()?.into_iter().find_map(|r| match r {
        MetricRecord::Event(Event::Data { cache, .. }) => Some(cache),
        _ => None,
    });
    let Some(recorded) = recorded else {
        return Ok(()); // killed before its first record: nothing trained yet
    };
    let key = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    if key(&recorded) != key(&data.dir) {
        return Err(TrainError::DataChanged {
            run: run.root().to_path_buf(),
            was: recorded,
            now: data.dir.clone(),
        });
    }
    Ok(())
}

/// The config's data encoded into the latent cache (opened, or built under the cache folder),
/// checked against the model's latent shape.
fn open_data<B: AutodiffBackend>(
    config: &TrainConfig,
    flow: &FlowConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(Prepare),
) -> Result<LatentCache, TrainError> {
    let dataset = config.data.open()?;
    let data = LatentCache::open_or_build::<B::InnerBackend>(
        &crate::fsutil::cache_root(),
        dataset.as_ref(),
        &flow.codec,
        flow.image_size,
        device,
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
    Ok(data)
}

/// What another node of a multi-node run needs to follow node 0: the step inputs (the latent
/// cache of the config's data, opened or built under this node's cache folder, and the run
/// folder's tokenizer, which node 0 wrote before it accepted the node) and the model built as
/// node 0 built it, the frozen parts of a transfer included; its values then come from node 0
/// or from the checkpoint it names.
pub(crate) fn follower_state<B: AutodiffBackend>(
    config: &TrainConfig,
    run_dir: &Path,
    device: &B::Device,
    progress: &mut dyn FnMut(Prepare),
) -> Result<(super::trainer::StepInputs, FlowModel<B>), TrainError> {
    let flow = FlowConfig::of(config.preset, config.variant);
    flow.codec.build::<B::InnerBackend>()?;
    let data = open_data::<B>(config, &flow, device, progress)?;
    let tokenizer = LlamaTokenizer::from_path(run_dir.join("tokenizer.json"))?;
    B::seed(device, config.seed);
    let mut model = FlowModel::<B>::init(&flow, device);
    if let Some(t) = &config.transfer {
        model = transfer::apply(model, &flow, t, device)?;
    }
    let order = std::sync::Arc::new(super::trainer::DataOrder::new(config.seed, data.len()));
    Ok((
        super::trainer::StepInputs {
            config: config.clone(),
            text_len: flow.text_len,
            tokenizer: std::sync::Arc::new(tokenizer),
            data: std::sync::Arc::new(data),
            order,
        },
        model,
    ))
}
