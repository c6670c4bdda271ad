//! `flowlens train`: configuration resolution (preset defaults < config file < flags), the
//! backend, the progress bar.

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use flowlens_core::device::BackendTask;
use flowlens_core::flow::Variant;
use flowlens_core::train::{TrainConfig, Trainer, train};

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
    if let Some(serde_json::Value::Object(map)) = &file {
        for (k, v) in map {
            merged[k] = v.clone();
        }
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
    Ok(config)
}

struct TrainTask<'a> {
    config: TrainConfig,
    cli: &'a TrainCli,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let mut trainer =
            Trainer::<Autodiff<B>>::new(self.config, &self.cli.run, self.cli.resume, device)?;
        let total = trainer.config.steps as u64;
        let bar = crate::llm_features::progress_bar(total, !self.cli.quiet);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(trainer.step as u64);
        let result = train(&mut trainer, |r| {
            bar.set_position(r.step as u64 + 1);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.1} samples/s stage {}",
                r.loss, r.lr, r.samples_per_s, r.stage
            ));
        });
        bar.finish_and_clear();
        result?;
        eprintln!(
            "trained {} steps; run in {}",
            trainer.step,
            trainer.run_dir().root().display()
        );
        Ok(())
    }
}

pub fn run(cli: TrainCli) -> Result<()> {
    let config = resolve(&cli)?;
    if cli.resume && !cli.run.join("manifest.json").exists() {
        bail!("--resume: {} holds no run yet", cli.run.display());
    }
    cli.device.run(TrainTask { config, cli: &cli })??;
    Ok(())
}

struct SampleTask(flowlens_core::sample::SampleRequest, std::path::PathBuf);

impl BackendTask for SampleTask {
    type Output = Result<std::path::PathBuf>;

    fn run<B: Backend>(self, device: B::Device) -> Result<std::path::PathBuf> {
        Ok(flowlens_core::sample::sample_run::<B>(
            &self.1, &self.0, &device,
        )?)
    }
}

/// `flowlens sample`.
pub fn sample(a: crate::cli::SampleCli) -> Result<()> {
    use flowlens_core::flow::rectified::SamplerConfig;
    use flowlens_core::flow::{TapPooling, TapRequest};
    let prompts = crate::llm_features::read_prompts(&a.prompts)?;
    let seeds = a
        .seeds
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds: `{s}` is not a seed"))
        })
        .collect::<Result<Vec<_>>>()?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let request = flowlens_core::sample::SampleRequest {
        prompts,
        seeds,
        sampler: SamplerConfig {
            steps: a.steps,
            cfg: a.cfg,
            pad_id: 2,
            pooling: if a.layer_norm {
                TapPooling::LayerNormMean
            } else {
                TapPooling::Mean
            },
        },
        taps: TapRequest::parse(&a.taps),
        batch_size: a.batch_size,
        ema: !a.no_ema,
    };
    let probes = a.device.run(SampleTask(request, a.run.clone()))??;
    eprintln!(
        "samples in {}, probes in {}",
        a.run.join("samples").display(),
        probes.display()
    );
    Ok(())
}

struct EvalTask(crate::cli::EvalShapesCli);

impl BackendTask for EvalTask {
    type Output = Result<flowlens_core::data::Adherence>;

    fn run<B: Backend>(self, device: B::Device) -> Result<flowlens_core::data::Adherence> {
        let a = self.0;
        let sampler = flowlens_core::flow::rectified::SamplerConfig {
            steps: a.steps,
            cfg: a.cfg,
            ..Default::default()
        };
        Ok(flowlens_core::sample::evaluate_shapes::<B>(
            &a.run, a.n, &sampler, a.seed, !a.no_ema, &device,
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
