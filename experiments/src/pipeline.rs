//! The stages the experiment protocols share, each reused when it is already complete (so an
//! interrupted command or demo continues where it stopped): training a run, sampling it with taps
//! into a named feature store, and the progress log.

use std::path::Path;
use std::time::Instant;

use crate::training::TrainDevices;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::checkpoint::{self, CheckpointChoice, Weights};
use flowlens_core::data::{DataSource, ShapesDataset};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::flow::{TapPooling, TapRequest};
use flowlens_core::run::RunDir;
use flowlens_core::sample::SampleRequest;
use flowlens_core::store::{FeatureStore, ProbeDtype, ProbeObserver, StoreName, StorePaths};
use flowlens_core::train::TrainConfig;

use crate::probing::{Probing, Prompts};

/// Progress output: a line per stage on stderr (progress bars come from the training code).
pub struct Log {
    pub show: bool,
    started: Instant,
}

impl Log {
    pub fn new(show: bool) -> Self {
        Self {
            show,
            started: Instant::now(),
        }
    }

    pub fn say(&self, text: impl AsRef<str>) {
        if self.show {
            let s = self.started.elapsed().as_secs();
            eprintln!("[{:02}:{:02}] {}", s / 60, s % 60, text.as_ref());
        }
    }
}

/// Trains `config` into `dir` unless a finished run is there; continues an interrupted one.
pub fn ensure_trained<B: Backend>(
    config: TrainConfig,
    dir: &Path,
    label: &str,
    devices: &TrainDevices<B>,
    log: &Log,
) -> Result<()> {
    ensure_trained_evaluated::<B>(config, dir, label, devices, log, None)
}

/// [`ensure_trained`] with the MJHQ evaluation during training (`[ablation.mjhq]`).
pub fn ensure_trained_evaluated<B: Backend>(
    config: TrainConfig,
    dir: &Path,
    label: &str,
    devices: &TrainDevices<B>,
    log: &Log,
    mjhq: Option<&crate::eval::TrainingEval>,
) -> Result<()> {
    let done = checkpoint::latest_step(dir);
    if done >= config.steps && dir.join(RunDir::MANIFEST).exists() {
        log.say(format!("{label}: trained ({done} steps), reused"));
        return Ok(());
    }
    let resume = dir.join(RunDir::MANIFEST).exists();
    log.say(format!(
        "{label}: {} {} steps into {}",
        if resume { "resuming to" } else { "training" },
        config.steps,
        dir.display()
    ));
    crate::training::train_with_evaluation::<B>(config, dir, resume, devices, log.show, label, mjhq)
}

/// The prompts of a probing protocol for `run`.
pub fn prompts_for(probing: &Probing, run: &Path) -> Result<Vec<String>> {
    match &probing.prompts {
        Prompts::File(path) => crate::io::read_prompts(path),
        Prompts::HeldOut(n) => {
            let config: TrainConfig = RunDir::open(run)?.config()?;
            let DataSource::Shapes { seed, .. } = config.data else {
                bail!(
                    "prompts = {{ held_out = {n} }} takes held-out shapes scenes, but {} trains on other data; give prompts = {{ file = \"...\" }}",
                    run.display()
                );
            };
            let held_out = ShapesDataset::held_out(seed, *n);
            Ok((0..*n).map(|i| held_out.scene(i).caption()).collect())
        }
    }
}

/// Says (on stderr, even when quiet: it changes what is sampled) how many prompts are longer than
/// the model's text length and are cut to it.
pub fn warn_truncated(run: &Path, prompts: &[String], text_len: usize) -> Result<()> {
    let tokenizer =
        flowlens_core::tokenizer::LlamaTokenizer::from_path(run.join("tokenizer.json"))?;
    let long = tokenizer.longer_than(prompts, text_len)?;
    if let Some(&first) = long.first() {
        eprintln!(
            "warning: {} of {} prompts are longer than this model's {text_len} text tokens and are cut to them (the first: line {}, \"{}\")",
            long.len(),
            prompts.len(),
            first + 1,
            prompts[first]
        );
    }
    Ok(())
}

/// Samples `run` at `checkpoint` into the feature store `store` (unless the store already holds
/// exactly this request, every seed included) and opens it.
#[allow(clippy::too_many_arguments)]
pub fn ensure_sampled<B: Backend>(
    run: &Path,
    checkpoint: CheckpointChoice,
    store: &str,
    probing: &Probing,
    taps: &[String],
    tap_steps: Option<Vec<usize>>,
    pooling: TapPooling,
    device: &B::Device,
    log: &Log,
) -> Result<FeatureStore> {
    let Some((checkpoint_step, _)) = checkpoint::resolve(run, checkpoint) else {
        let have: Vec<String> = checkpoint::list(run)
            .iter()
            .map(|(s, _)| s.to_string())
            .collect();
        bail!(
            "{}: no checkpoint {} to sample (checkpoints: {})",
            run.display(),
            match checkpoint {
                CheckpointChoice::Step(s) => format!("at step {s}"),
                CheckpointChoice::Best => "recorded as best".into(),
                CheckpointChoice::Latest => "at all".into(),
            },
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        );
    };
    let prompts = prompts_for(probing, run)?;
    let config: TrainConfig = RunDir::open(run)?.config()?;
    warn_truncated(
        run,
        &prompts,
        flowlens_core::flow::FlowConfig::of(config.preset, config.variant).text_len,
    )?;
    let name = StoreName::new(store)?;
    let dir = StorePaths::new(run, name.clone()).dir();
    if let Ok(existing) = FeatureStore::open(run, &name) {
        let m = &existing.manifest;
        let same = m.prompts == prompts
            && m.steps == probing.solver_steps
            && m.cfg == probing.cfg
            && m.pooling == pooling
            && m.checkpoint_step == checkpoint_step
            && m.tap_steps == tap_steps
            && probing.seeds.iter().all(|s| m.seeds.contains(s))
            && taps.iter().all(|t| !existing.taps_matching(t).is_empty());
        if same {
            log.say(format!("{}: sampled, reused", dir.display()));
            return Ok(existing);
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot clear the stale store {}", dir.display()))?;
    }
    log.say(format!(
        "sampling step {checkpoint_step}: {} prompts x {} seeds, {} Euler steps, {} taps, into {}",
        prompts.len(),
        probing.seeds.len(),
        probing.solver_steps,
        taps.len(),
        dir.display()
    ));
    let request = SampleRequest {
        prompts,
        seeds: probing.seeds.clone(),
        sampler: SamplerConfig {
            steps: probing.solver_steps,
            cfg: probing.cfg,
            pooling,
        },
        taps: TapRequest {
            patterns: taps.to_vec(),
            pool: None,
        },
        batch_size: probing.batch_size,
        weights: Weights::Ema,
        checkpoint: CheckpointChoice::Step(checkpoint_step),
        probe_dtype: ProbeDtype::F32,
        previews: false,
        store: name.clone(),
        tap_steps,
    };
    let mut observer = SeedProgress {
        log,
        seeds: probing.seeds.len(),
        done: 0,
    };
    flowlens_core::sample::sample_run::<B>(run, &request, &mut observer, device)?;
    Ok(FeatureStore::open(run, &name)?)
}

struct SeedProgress<'a> {
    log: &'a Log,
    seeds: usize,
    done: usize,
}

impl ProbeObserver for SeedProgress<'_> {
    fn on_rows(&mut self, _: u64, _: usize, _: &str, _: usize, _: &[f32], _: usize) {}
    fn on_seed_done(&mut self, seed: u64) {
        self.done += 1;
        self.log
            .say(format!("  seed {seed} done ({}/{})", self.done, self.seeds));
    }
}

pub fn require_trained(dir: &Path, what: &str) -> Result<()> {
    if checkpoint::latest_step(dir) == 0 {
        bail!(
            "{what} run {} has no checkpoint: train it first (`flowlens ablation --config FILE` trains the variants)",
            dir.display()
        );
    }
    Ok(())
}
