//! The experiment commands' work: training the ablation's runs and the exp2 system, sampling
//! them with taps into named feature stores, and computing the results, each stage reused when
//! it is already complete (so an interrupted command or demo continues where it stopped).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::data::{DataSource, ShapesDataset};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::flow::taps::llm_tap_name;
use flowlens_core::flow::{TapRequest, Variant};
use flowlens_core::run::RunDir;
use flowlens_core::sample::{CheckpointChoice, ProbeDtype, SampleRequest, Weights};
use flowlens_core::train::{LlmInit, TrainConfig, Trainer, Transfer};

use crate::probes::Store;
use crate::protocol::{ExperimentFile, Probing, Prompts};
use crate::report::{read_json, write_json};
use crate::{ablation, exp1, exp2, grid};

/// Which stages a command runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    pub ablation: bool,
    pub exp1: bool,
    pub exp2: bool,
}

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

/// The training configuration of one ablation run: the preset's defaults, the file's
/// `[ablation.train]` overrides, then the budget, evaluation schedule and seed.
pub fn ablation_config(file: &ExperimentFile, variant: Variant, seed: u64) -> Result<TrainConfig> {
    let a = &file.ablation;
    let mut value = serde_json::to_value(
        TrainConfig::for_preset(&a.preset, variant).map_err(anyhow::Error::msg)?,
    )?;
    crate::training::merge(&mut value, &serde_json::to_value(&a.train)?);
    let mut config: TrainConfig = serde_json::from_value(value).context(
        "[ablation.train] has a field that TrainConfig does not know or a value of the wrong type",
    )?;
    config.preset = a.preset.clone();
    config.variant = variant;
    config.steps = a.steps;
    config.eval_every = a.eval_every;
    config.seed = seed;
    Ok(config)
}

/// The last checkpoint step of a run (0 when it has none).
pub fn trained_steps(dir: &Path) -> usize {
    RunDir::open(dir)
        .ok()
        .and_then(|run| {
            Trainer::<burn::backend::Autodiff<flowlens_core::device::CpuBackend>>::checkpoints(&run)
                .last()
                .map(|c| c.0)
        })
        .unwrap_or(0)
}

/// Trains `config` into `dir` unless a finished run is there; continues an interrupted one.
pub fn ensure_trained<B: Backend>(
    config: TrainConfig,
    dir: &Path,
    label: &str,
    device: &B::Device,
    log: &Log,
) -> Result<()> {
    ensure_trained_evaluated::<B>(config, dir, label, device, log, None)
}

/// [`ensure_trained`] with the MJHQ evaluation during training (`[ablation.mjhq]`).
pub fn ensure_trained_evaluated<B: Backend>(
    config: TrainConfig,
    dir: &Path,
    label: &str,
    device: &B::Device,
    log: &Log,
    mjhq: Option<&crate::eval::TrainingEval>,
) -> Result<()> {
    let done = trained_steps(dir);
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
    crate::training::train_with_evaluation::<B>(
        config,
        dir,
        resume,
        device.clone(),
        log.show,
        label,
        mjhq,
    )
}

/// The training-time MJHQ evaluation of `[ablation.mjhq]`, if configured.
pub fn ablation_mjhq(file: &ExperimentFile) -> Option<crate::eval::TrainingEval> {
    let a = &file.ablation;
    let m = a.mjhq.as_ref()?;
    Some(crate::eval::TrainingEval {
        every: a.eval_every,
        args: crate::eval::EvalArgs::for_training(
            m.benchmark.clone(),
            m.n,
            m.seeds.clone(),
            m.clip.clone(),
            &m.inception,
            m.solver_steps,
        ),
    })
}

/// The prompts of a probing protocol for `run`.
pub fn prompts_for(probing: &Probing, run: &Path) -> Result<Vec<String>> {
    match &probing.prompts {
        Prompts::File(path) => crate::llm_features::read_prompts(path),
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

/// Samples `run` into the feature store `store` (unless the store already holds exactly this
/// request, every seed included) and opens it.
#[allow(clippy::too_many_arguments)]
pub fn ensure_sampled<B: Backend>(
    run: &Path,
    store: &str,
    probing: &Probing,
    taps: &[String],
    tap_steps: Option<Vec<usize>>,
    pooling: flowlens_core::flow::TapPooling,
    device: &B::Device,
    log: &Log,
) -> Result<Store> {
    let prompts = prompts_for(probing, run)?;
    let dir = run.join(store);
    if let Ok(existing) = Store::open(&dir) {
        let m = &existing.manifest;
        let pooling_name = match pooling {
            flowlens_core::flow::TapPooling::Mean => "mean",
            flowlens_core::flow::TapPooling::LayerNormMean => "layer_norm_mean",
        };
        let same = m.prompts == prompts
            && m.steps == probing.solver_steps
            && m.cfg == probing.cfg
            && m.pooling == pooling_name
            && m.checkpoint_step == trained_steps(run)
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
        "sampling {} prompts x {} seeds, {} Euler steps, {} taps, into {}",
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
            pad_id: 2,
            pooling,
        },
        taps: TapRequest {
            patterns: taps.to_vec(),
        },
        batch_size: probing.batch_size,
        weights: Weights::Ema,
        checkpoint: CheckpointChoice::Latest,
        probe_dtype: ProbeDtype::F32,
        previews: false,
        store: store.to_string(),
        tap_steps,
    };
    let mut observer = SeedProgress {
        log,
        seeds: probing.seeds.len(),
        done: 0,
    };
    flowlens_core::sample::sample_run::<B>(run, &request, &mut observer, device)?;
    Store::open(&dir)
}

struct SeedProgress<'a> {
    log: &'a Log,
    seeds: usize,
    done: usize,
}

impl flowlens_core::sample::ProbeObserver for SeedProgress<'_> {
    fn on_rows(&mut self, _: u64, _: usize, _: &str, _: usize, _: &[f32], _: usize) {}
    fn on_seed_done(&mut self, seed: u64) {
        self.done += 1;
        self.log
            .say(format!("  seed {seed} done ({}/{})", self.done, self.seeds));
    }
}

/// Runs and summarises the ablation; writes `out/ablation/results.json`.
pub fn run_ablation<B: Backend>(
    file: &ExperimentFile,
    device: &B::Device,
    log: &Log,
) -> Result<ablation::Results> {
    let a = &file.ablation;
    let mjhq = ablation_mjhq(file);
    let mut runs = Vec::new();
    for &seed in &a.seeds {
        for &variant in &a.variants {
            let dir = file.ablation_run(variant, seed);
            let config = ablation_config(file, variant, seed)?;
            ensure_trained_evaluated::<B>(
                config,
                &dir,
                &format!("ablation {} seed {seed}", variant.name()),
                device,
                log,
                mjhq.as_ref(),
            )?;
        }
    }
    for &variant in &a.variants {
        for &seed in &a.seeds {
            runs.push(ablation::summarise_run(
                variant.name(),
                seed,
                &file.ablation_run(variant, seed),
                100,
            )?);
        }
    }
    let results = ablation::Results {
        format: "flowlens.ablation.v1".into(),
        preset: a.preset.clone(),
        steps: a.steps,
        eval_every: a.eval_every,
        variants: a.variants.iter().map(|v| v.name().to_string()).collect(),
        seeds: a.seeds.clone(),
        runs,
    };
    write_json(&file.out.join("ablation/results.json"), &results)?;
    Ok(results)
}

fn require_trained(dir: &Path, what: &str) -> Result<()> {
    if trained_steps(dir) == 0 {
        bail!(
            "{what} run {} has no checkpoint: train it first (`flowlens ablation --config FILE` trains the variants)",
            dir.display()
        );
    }
    Ok(())
}

/// Experiment 1; writes `out/exp1/results.json`.
pub fn run_exp1<B: Backend>(
    file: &ExperimentFile,
    device: &B::Device,
    log: &Log,
) -> Result<exp1::Results> {
    let c = &file.exp1;
    let ours = file.resolve_run(&c.ours, c.probing.run_seed);
    let baseline = file.resolve_run(&c.baseline, c.probing.run_seed);
    require_trained(&ours, "exp1's `ours`")?;
    require_trained(&baseline, "exp1's `baseline`")?;
    for run in [&ours, &baseline] {
        let config: TrainConfig = RunDir::open(run)?.config()?;
        let flow = flowlens_core::flow::FlowConfig::preset(&config.preset, config.variant)
            .map_err(anyhow::Error::msg)?;
        let n = flow.llm.num_hidden_layers;
        if let Some(l) = c.layers.iter().find(|&&l| l > n) {
            bail!(
                "[exp1] layers: layer {l} does not exist in the LLM of {} ({n} layers: hidden states 0 to {n}, {n} = after the final norm)",
                run.display()
            );
        }
    }
    let mut taps = vec!["enc.text".to_string(), "enc.noise".to_string()];
    for &l in &c.layers {
        taps.push(llm_tap_name(l, "text"));
        taps.push(llm_tap_name(l, "image"));
    }
    let mut steps = c.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    let mut stores = Vec::new();
    for run in [&ours, &baseline] {
        stores.push(ensure_sampled::<B>(
            run,
            "probes-exp1",
            &c.probing,
            &taps,
            Some(steps.clone()),
            c.pooling.tap_pooling(),
            device,
            log,
        )?);
    }
    log.say("experiment 1: CKA of the streams vs the LLM layers");
    let results = exp1::analyse(&stores[0], &stores[1], c)?;
    write_json(&file.out.join("exp1/results.json"), &results)?;
    Ok(results)
}

/// The exp2 ConvNeXt-decoder system's run directory.
pub fn exp2_run(file: &ExperimentFile, seed: u64) -> PathBuf {
    file.out
        .join("exp2")
        .join("convnext-decoder")
        .join(format!("seed{seed}"))
}

/// Experiment 2: trains the ConvNeXt-decoder system around the frozen dual-stream encoder of
/// `ours`, samples both, writes `out/exp2/results.json`.
pub fn run_exp2<B: Backend>(
    file: &ExperimentFile,
    device: &B::Device,
    log: &Log,
) -> Result<exp2::Results> {
    let c = &file.exp2;
    let run_seed = c.probing.run_seed.unwrap_or(file.ablation.seeds[0]);
    let ours = file.resolve_run(&c.ours, Some(run_seed));
    require_trained(&ours, "exp2's `ours`")?;
    let source: TrainConfig = RunDir::open(&ours)?.config()?;
    if source.variant != Variant::Both {
        bail!(
            "exp2's `ours` ({}) is a {} run; experiment 2 takes the dual-stream encoder of a `both` run (dual-stream encoder + single-stream decoder)",
            ours.display(),
            source.variant.name()
        );
    }
    // The same data and budget as the source, with the ConvNeXt decoder and the source's
    // encoder, time embedding and LLM copied in; encoder, time embedding and token embeddings
    // frozen.
    let mut config = TrainConfig {
        variant: Variant::EncoderOnly,
        llm_init: LlmInit::Random,
        transfer: Some(Transfer {
            from: ours.clone(),
            step: trained_steps(&ours),
        }),
        ..source.clone()
    };
    if let Some(steps) = c.steps {
        config.steps = steps;
    }
    let dir = exp2_run(file, run_seed);
    ensure_trained::<B>(
        config,
        &dir,
        &format!(
            "exp2 ConvNeXt decoder around the encoder of {}",
            ours.display()
        ),
        device,
        log,
    )?;
    let identical = flowlens_core::train::transfer::check_frozen_identical::<B>(
        &ours, &dir, device,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "the encoder of {} is not bit-identical to its source {}: {e}",
            dir.display(),
            ours.display()
        )
    })?;
    log.say(format!(
        "exp2: the two systems share {identical} encoder tensors, bit for bit"
    ));
    let taps = vec!["enc.text".to_string(), "enc.noise".to_string()];
    let mut stores = Vec::new();
    for run in [&ours, &dir] {
        stores.push(ensure_sampled::<B>(
            run,
            "probes-exp2",
            &c.probing,
            &taps,
            None,
            c.pooling.tap_pooling(),
            device,
            log,
        )?);
    }
    log.say("experiment 2: text-noise CKA at every solver step");
    let results = exp2::analyse(
        &[
            ("single-stream decoder", &stores[0]),
            ("ConvNeXt decoder", &stores[1]),
        ],
        c,
        identical,
    )?;
    write_json(&file.out.join("exp2/results.json"), &results)?;
    Ok(results)
}

/// `flowlens grid`: samples `run` into `probes-grid` when `store` is not given, computes the
/// grid, writes `out/grid/<name>.json`.
pub fn run_grid<B: Backend>(
    file: &ExperimentFile,
    run: &Path,
    store: Option<&str>,
    device: &B::Device,
    log: &Log,
) -> Result<(PathBuf, grid::Results)> {
    let g = &file.grid;
    let opened = match store {
        Some(name) => Store::open(&run.join(name))?,
        None => {
            require_trained(run, "the grid's")?;
            ensure_sampled::<B>(
                run,
                "probes-grid",
                &g.probing,
                &[g.a.clone(), g.b.clone()],
                None,
                g.pooling.tap_pooling(),
                device,
                log,
            )?
        }
    };
    log.say(format!("grid: {} vs {}", g.a, g.b));
    let results = grid::analyse(&opened, &g.a, &g.b, g.estimator, &g.probing.seeds)?;
    // The run's last two path components (`both/seed0`) name it.
    let run_name: Vec<String> = run
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let run_name: Vec<&str> = run_name.iter().rev().map(String::as_str).collect();
    let name: String = format!("{}_{}_vs_{}", run_name.join("-"), g.a, g.b)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = file.out.join("grid").join(format!("{name}.json"));
    write_json(&path, &results)?;
    Ok((path, results))
}

/// Reads an experiment's results back (for the report and the tests).
pub fn load_ablation(out: &Path) -> Result<ablation::Results> {
    read_json(&out.join("ablation/results.json"))
}
