//! `flowlens train`: configuration resolution (preset defaults < config file < flags), the
//! backend, and the MJHQ evaluation during training.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::data::DataSource;
use flowlens_core::device::{BackendTask, DeviceList, DeviceSpec};
use flowlens_core::flow::{Preset, Variant};
use flowlens_core::train::{LlmInit, TrainConfig};

use crate::io::parse_list;
use crate::training::TrainDevices;
use flowlens_core::train::nodes::NodeSpec;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// A TOML or JSON file with TrainConfig fields; the preset's defaults fill the rest.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tiny | small | paper (default tiny, or the config file's).
    #[arg(long)]
    pub preset: Option<Preset>,
    /// baseline | decoder-only | encoder-only | both | uvit
    #[arg(long)]
    pub variant: Option<flowlens_core::flow::Variant>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training data: `shapes` (default), `shapes:SEED:LEN`, `folder:DIR` (images + sidecar
    /// .txt captions), `parquet:PATH` (image bytes + caption columns), `webdataset:PATH`
    /// (.tar shards, a folder of them, or `dir/{00000..00009}.tar`), or a bare path.
    #[arg(long)]
    pub data: Option<String>,
    /// Micro-batches summed per optimiser step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// f32 (default) | mixed (f32 weights and optimiser state; products and attention in
    /// bf16) | bf16 (mixed, the weights rounded to bf16 after every update).
    #[arg(long)]
    pub precision: Option<flowlens_core::nn::precision::Precision>,
    /// Evaluate (oracle adherence on held-out shapes scenes) every K steps; 0 = never.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Write a grid of EMA samples every K steps; 0 = never.
    #[arg(long)]
    pub sample_every: Option<usize>,
    /// The flow model's LLM: `prior` (the stage-0 prior trained on the captions), `random`, or
    /// a Hugging Face Llama folder (e.g. TinyLlama-1.1B).
    #[arg(long)]
    pub llm: Option<String>,
    /// Run directory (created; with --resume, continued from its latest checkpoint).
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub resume: bool,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Train data-parallel, one replica per device: `cuda:0,cuda:1,...` (or `cpu:0,cpu:1`, which
    /// share the CPU's cores: for checking that N devices train as one does). `--batch-size`
    /// stays the global batch; each device computes batch / N rows of it.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<DeviceList>,
    /// With --devices: compare every replica's parameters with the first device's (a checksum
    /// of every bit) after every N steps; 0 = only at the start.
    #[arg(long, default_value_t = 0)]
    pub check_replicas: usize,
    /// Train on N nodes (processes, one per node, each with its --devices); default: torchrun's
    /// or SLURM's environment, else 1.
    #[arg(long)]
    pub nnodes: Option<usize>,
    /// This node's rank, 0..N (node 0 writes the run); default: GROUP_RANK or SLURM_NODEID.
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// Node 0's HOST:PORT, where the nodes meet; default: MASTER_ADDR:MASTER_PORT, or the
    /// first host of SLURM_JOB_NODELIST with port 29500.
    #[arg(long)]
    pub rendezvous: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub mjhq: MjhqTrainArgs,
}

/// MJHQ-30k evaluation during training (`flowlens eval` on the checkpoints every K steps).
#[derive(Debug, clap::Args)]
pub struct MjhqTrainArgs {
    /// Evaluate FID and CLIP score on this MJHQ-30k folder during training.
    #[arg(long, requires_all = ["mjhq_clip", "mjhq_inception"])]
    pub mjhq: Option<PathBuf>,
    /// Every K steps (a multiple of the checkpoint interval) and at the last step; the paper
    /// evaluated every 12k.
    #[arg(long, default_value_t = 12_000)]
    pub mjhq_every: usize,
    /// Benchmark entries per evaluation.
    #[arg(long, default_value_t = 30000)]
    pub mjhq_n: usize,
    /// Comma-separated seeds per evaluation.
    #[arg(long, default_value = "0")]
    pub mjhq_seeds: String,
    /// The CLIP folder for the CLIP score.
    #[arg(long)]
    pub mjhq_clip: Option<PathBuf>,
    /// The FID Inception weights (or `formula`, for tests).
    #[arg(long)]
    pub mjhq_inception: Option<String>,
    /// Euler steps of the evaluation's sampler.
    #[arg(long, default_value_t = 30)]
    pub mjhq_steps: usize,
}

/// Resolves the configuration: the preset's defaults, then the config file, then the flags.
pub fn resolve(a: &TrainArgs) -> Result<TrainConfig> {
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
                crate::io::toml_to_json(&t)
                    .with_context(|| format!("config file {}", path.display()))?
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
    let preset = match a.preset {
        Some(p) => p,
        None => get_str("preset")
            .or_else(|| from_run("preset"))
            .map_or(Ok(Preset::Tiny), |p| p.parse::<Preset>())
            .map_err(anyhow::Error::msg)?,
    };
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
        serde_json::to_value(TrainConfig::for_preset(preset, variant))?
    };
    if let Some(f) = &file {
        crate::training::merge(&mut merged, f);
    }
    let mut config: TrainConfig =
        crate::io::from_json_named(merged).with_context(|| match &a.config {
            Some(p) => format!("config file {}", p.display()),
            None => format!("the saved configuration {}", saved.display()),
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
    if let Some(v) = a.precision {
        config.precision = v;
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

struct TrainTask<'a> {
    config: TrainConfig,
    cli: &'a TrainArgs,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let mut devices = TrainDevices::<B>::one(device);
        devices.labels = vec![self.cli.device.to_string()];
        self.train(devices)
    }

    fn run_on<B: Backend>(self, devices: Vec<B::Device>, labels: Vec<String>) -> Result<()> {
        let check = self.cli.check_replicas;
        self.train(TrainDevices::<B>::of(devices, labels, check))
    }
}

impl TrainTask<'_> {
    fn train<B: Backend>(self, mut devices: TrainDevices<B>) -> Result<()> {
        devices.node = NodeSpec::resolve(
            self.cli.nnodes,
            self.cli.node_rank,
            self.cli.rendezvous.as_deref(),
        )?;
        let mjhq = training_eval(&self.cli.mjhq)?;
        crate::training::train_with_evaluation::<B>(
            self.config,
            &self.cli.run,
            self.cli.resume,
            &devices,
            !self.cli.quiet,
            "",
            mjhq.as_ref(),
        )
    }
}

/// The MJHQ evaluation of `flowlens train --mjhq`, if asked for.
fn training_eval(m: &MjhqTrainArgs) -> Result<Option<crate::eval::TrainingEval>> {
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

pub fn run(cli: TrainArgs) -> Result<()> {
    let config = resolve(&cli)?;
    if cli.resume && !cli.run.join("manifest.json").exists() {
        bail!("--resume: {} holds no run yet", cli.run.display());
    }
    let task = TrainTask { config, cli: &cli };
    match &cli.devices {
        Some(list) => list.run(task)??,
        None => cli.device.run(task)??,
    }
    Ok(())
}
