//! `flowlens train`: configuration resolution (preset defaults < config file < flags), the
//! backend, the progress bar.

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use flowlens_core::data::DataSource;
use flowlens_core::device::BackendTask;
use flowlens_core::flow::Variant;
use flowlens_core::train::{LlmInit, Prepare, TrainConfig, TrainEvent, Trainer, train};

use crate::cli::TrainCli;

/// Resolves the configuration: the preset's defaults, then the config file, then the flags.
pub fn resolve(a: &TrainCli) -> Result<TrainConfig> {
    let file: Option<serde_json::Value> = match &a.config {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let value: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", path.display()))?
            } else {
                let t: toml::Value = toml::from_str(&text)
                    .with_context(|| format!("{} is not valid TOML", path.display()))?;
                serde_json::to_value(t)?
            };
            Some(value)
        }
    };
    let get_str = |key: &str| {
        file.as_ref()
            .and_then(|f| f.get(key))
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    let saved_value = |key: &str| -> Option<String> {
        let text = std::fs::read_to_string(a.run.join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get(key)?.as_str().map(String::from)
    };
    let from_run = |key: &str| if a.resume { saved_value(key) } else { None };
    let preset = a
        .preset
        .clone()
        .or_else(|| get_str("preset"))
        .or_else(|| from_run("preset"))
        .unwrap_or_else(|| "tiny".into());
    let variant = match (
        a.variant,
        get_str("variant").or_else(|| from_run("variant")),
    ) {
        (Some(v), _) => v,
        (None, Some(v)) => v.parse::<Variant>().map_err(anyhow::Error::msg)?,
        (None, None) => Variant::Baseline,
    };
    // A resumed run starts from its own saved configuration; a new one from the preset's.
    let saved = a.run.join("config.json");
    let mut merged = if a.resume && saved.exists() {
        let text = std::fs::read_to_string(&saved)
            .with_context(|| format!("cannot read {}", saved.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", saved.display()))?
    } else {
        serde_json::to_value(
            TrainConfig::for_preset(&preset, variant).map_err(anyhow::Error::msg)?,
        )?
    };
    if let Some(f) = &file {
        merge(&mut merged, f);
    }
    let mut config: TrainConfig = serde_json::from_value(merged).with_context(|| {
        format!(
            "config file {} has a field that TrainConfig does not know or a value of the wrong type",
            a.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        )
    })?;
    config.preset = preset;
    config.variant = variant;
    if let Some(v) = a.steps {
        config.steps = v;
    }
    if let Some(v) = a.batch_size {
        config.batch_size = v;
    }
    if let Some(v) = a.lr {
        config.lr = v;
    }
    if let Some(v) = a.checkpoint_every {
        config.checkpoint_every = v;
    }
    if let Some(v) = a.seed {
        config.seed = v;
    }
    if let Some(spec) = &a.data {
        config.data = DataSource::parse_cli(spec).map_err(anyhow::Error::msg)?;
    }
    if let Some(v) = a.grad_accum {
        config.grad_accum = v;
    }
    if let Some(v) = a.eval_every {
        config.eval_every = v;
    }
    if let Some(v) = a.sample_every {
        config.sample_every = v;
    }
    if let Some(v) = &a.llm {
        config.llm_init = match v.as_str() {
            "prior" => LlmInit::Prior,
            "random" => LlmInit::Random,
            dir => LlmInit::Pretrained(dir.into()),
        };
    }
    Ok(config)
}

/// Deep merge: tables merge key by key, everything else is replaced.
pub fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    // A data source of another kind replaces the table whole.
                    Some(slot) if !(k == "data" && slot.get("kind") != v.get("kind")) => {
                        merge(slot, v)
                    }
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

struct TrainTask<'a> {
    config: TrainConfig,
    cli: &'a TrainCli,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let mjhq = training_eval(&self.cli.mjhq)?;
        train_with_evaluation::<B>(
            self.config,
            &self.cli.run,
            self.cli.resume,
            device,
            !self.cli.quiet,
            "",
            mjhq.as_ref(),
        )
    }
}

/// Trains `config` into `run` (continuing it with `resume`) with progress bars (`label` prefixes
/// them) for the preparation and the steps, and runs the MJHQ evaluation on schedule when
/// `mjhq` is given; an evaluation that fails is reported and training goes on.
pub fn train_with_evaluation<B: Backend>(
    config: TrainConfig,
    run: &std::path::Path,
    resume: bool,
    device: B::Device,
    show: bool,
    label: &str,
    mjhq: Option<&crate::eval::TrainingEval>,
) -> Result<()> {
    if let Some(m) = mjhq
        && (m.every == 0 || !m.every.is_multiple_of(config.checkpoint_every))
    {
        bail!(
            "--mjhq-every {} must be a positive multiple of checkpoint_every ({}): the evaluation reads the checkpoint of its step",
            m.every,
            config.checkpoint_every
        );
    }
    let eval_device = device.clone();
    {
        let prep = crate::llm_features::progress_bar(0, show);
        let mut phase = "";
        let mut on_prepare = |p: Prepare| {
            let (label, done, total, msg) = match p {
                Prepare::Latents(d, t) => {
                    ("encoding data into the latent cache", d, t, String::new())
                }
                Prepare::Prior(s, n, l) => (
                    "stage 0: training the language-model prior",
                    s,
                    n,
                    format!("next-token loss {l:.3}"),
                ),
            };
            if phase != label {
                phase = label;
                prep.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {prefix} {wide_bar} {pos}/{len} {msg}",
                    )
                    .expect("valid template"),
                );
                prep.set_prefix(label);
                prep.set_length(total as u64);
            }
            prep.set_position(done as u64);
            prep.set_message(msg);
        };
        let mut trainer =
            Trainer::<Autodiff<B>>::prepare(config, run, resume, device, &mut on_prepare)?;
        prep.finish_and_clear();
        let total = trainer.config.steps as u64;
        let bar = crate::llm_features::progress_bar(total, show);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {prefix}{wide_bar} {pos}/{len} steps, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        if !label.is_empty() {
            bar.set_prefix(format!("{label} "));
        }
        bar.set_position(trainer.step as u64);
        let mut last_eval = String::new();
        let result = train(&mut trainer, |e| match e {
            TrainEvent::Step(r) => {
                bar.set_position(r.step as u64 + 1);
                bar.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.1} samples/s stage {}{last_eval}",
                    r.loss, r.lr, r.samples_per_s, r.stage
                ));
            }
            TrainEvent::Eval(step, v, chance) => {
                last_eval = format!(" | adherence {v:.3} @{step}");
                bar.println(format!(
                    "step {step}: oracle prompt adherence {v:.3} (chance {chance:.3})"
                ));
            }
            TrainEvent::Samples(step, path) => {
                bar.println(format!("step {step}: samples in {}", path.display()));
            }
            TrainEvent::Checkpoint(step) => {
                let Some(m) = mjhq else { return };
                if !m.due(*step, *step == total as usize) {
                    return;
                }
                let message = match m.evaluate::<B>(run, *step, &eval_device) {
                    Ok(r) => format!(
                        "step {step}: MJHQ FID {:.3}, CLIP score {:.3} (n = {})",
                        r.fid.mean, r.clip_score.mean, r.n
                    ),
                    Err(e) => format!("step {step}: MJHQ evaluation failed: {e:#}"),
                };
                if show {
                    bar.println(message);
                } else if message.contains("failed") {
                    eprintln!("{message}");
                }
            }
        });
        bar.finish_and_clear();
        result?;
        if show {
            eprintln!(
                "trained {} steps; run in {}",
                trainer.step,
                trainer.run_dir().root().display()
            );
        }
        Ok(())
    }
}

/// The MJHQ evaluation of `flowlens train --mjhq`, if asked for.
fn training_eval(m: &crate::cli::MjhqTrainCli) -> Result<Option<crate::eval::TrainingEval>> {
    let Some(benchmark) = &m.mjhq else {
        return Ok(None);
    };
    let (Some(clip), Some(inception)) = (&m.mjhq_clip, &m.mjhq_inception) else {
        bail!("--mjhq needs --mjhq-clip and --mjhq-inception");
    };
    Ok(Some(crate::eval::TrainingEval {
        every: m.mjhq_every,
        args: crate::eval::EvalArgs::for_training(
            benchmark.clone(),
            m.mjhq_n,
            parse_list("--mjhq-seeds", &m.mjhq_seeds)?,
            clip.clone(),
            inception,
            m.mjhq_steps,
        ),
    }))
}

pub fn run(cli: TrainCli) -> Result<()> {
    let config = resolve(&cli)?;
    if cli.resume && !cli.run.join("manifest.json").exists() {
        bail!("--resume: {} holds no run yet", cli.run.display());
    }
    cli.device.run(TrainTask { config, cli: &cli })??;
    Ok(())
}

struct SampleTask {
    cli: crate::cli::SampleCli,
    request: Option<flowlens_core::sample::SampleRequest>,
    interpolant: Option<flowlens_core::sample::InterpolantRequest>,
    pairs: Vec<(String, String)>,
}

impl BackendTask for SampleTask {
    type Output = Result<std::path::PathBuf>;

    fn run<B: Backend>(self, device: B::Device) -> Result<std::path::PathBuf> {
        let store = if self.interpolant.is_some() {
            "probes-interpolant"
        } else {
            "probes"
        };
        let mut live = crate::live_cka::LiveCka::new(
            self.pairs,
            self.cli.run.join(store).join("cka_live.json"),
            !self.cli.quiet,
        );
        let out = match (&self.request, &self.interpolant) {
            (Some(r), _) => {
                flowlens_core::sample::sample_run::<B>(&self.cli.run, r, &mut live, &device)?
            }
            (None, Some(r)) => {
                flowlens_core::sample::probe_interpolant::<B>(&self.cli.run, r, &mut live, &device)?
            }
            (None, None) => unreachable!("one of the two requests is built"),
        };
        live.finish()?;
        Ok(out)
    }
}

fn parse_list<T: std::str::FromStr>(flag: &str, text: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{flag}: `{s}` is not a valid value"))
        })
        .collect()
}

/// `flowlens sample`.
pub fn sample(a: crate::cli::SampleCli) -> Result<()> {
    use flowlens_core::flow::rectified::SamplerConfig;
    use flowlens_core::flow::{TapPooling, TapRequest};
    use flowlens_core::sample::{InterpolantRequest, ProbeDtype, SampleRequest};
    let seeds = parse_list::<u64>("--seeds", &a.seeds)?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let pooling = if a.layer_norm {
        TapPooling::LayerNormMean
    } else {
        TapPooling::Mean
    };
    let probe_dtype = if a.f16 {
        ProbeDtype::F16
    } else {
        ProbeDtype::F32
    };
    let pairs = crate::live_cka::parse_pairs(&a.cka_pairs)?;
    let taps = TapRequest::parse(&a.taps);
    let (request, interpolant) = match &a.interpolant {
        Some(times) => {
            let times = parse_list::<f32>("--interpolant", times)?;
            let data = a
                .data
                .as_deref()
                .map(DataSource::parse_cli)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            (
                None,
                Some(InterpolantRequest {
                    times,
                    n: a.n,
                    seeds,
                    taps,
                    pooling,
                    batch_size: a.batch_size,
                    weights: a.weights.weights.get(),
                    checkpoint: a.weights.checkpoint,
                    probe_dtype,
                    data,
                }),
            )
        }
        None => {
            let path = a.prompts.as_ref().context("--prompts FILE is required")?;
            let prompts = crate::llm_features::read_prompts(path)?;
            (
                Some(SampleRequest {
                    prompts,
                    seeds,
                    sampler: SamplerConfig {
                        steps: a.steps,
                        cfg: a.cfg,
                        pad_id: 2,
                        pooling,
                    },
                    taps,
                    batch_size: a.batch_size,
                    weights: a.weights.weights.get(),
                    checkpoint: a.weights.checkpoint,
                    probe_dtype,
                    previews: a.previews,
                    store: "probes".into(),
                    tap_steps: None,
                }),
                None,
            )
        }
    };
    let run = a.run.clone();
    let device = a.device;
    let probes = device.run(SampleTask {
        cli: a,
        request,
        interpolant,
        pairs,
    })??;
    eprintln!(
        "samples in {}, probes in {}",
        run.join("samples").display(),
        probes.display()
    );
    Ok(())
}

struct EvalTask(crate::cli::EvalShapesCli);

impl BackendTask for EvalTask {
    type Output = Result<flowlens_core::sample::ShapesEval>;

    fn run<B: Backend>(self, device: B::Device) -> Result<flowlens_core::sample::ShapesEval> {
        let a = self.0;
        let sampler = flowlens_core::flow::rectified::SamplerConfig {
            steps: a.steps,
            cfg: a.cfg,
            ..Default::default()
        };
        Ok(flowlens_core::sample::evaluate_shapes::<B>(
            &a.run,
            a.n,
            &sampler,
            a.seed,
            a.weights.weights.get(),
            a.weights.checkpoint,
            &device,
        )?)
    }
}

/// `flowlens eval-shapes`: prints one JSON object with the adherence per attribute.
pub fn eval_shapes(a: crate::cli::EvalShapesCli) -> Result<()> {
    if a.n == 0 || a.steps == 0 {
        bail!("--n and --steps must be at least 1");
    }
    let device = a.device;
    let adherence = device.run(EvalTask(a))??;
    println!("{}", serde_json::to_string(&adherence)?);
    Ok(())
}
