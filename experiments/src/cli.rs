//! The `flowlens` command line.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use flowlens_core::device::DeviceSpec;

use crate::commands;
use crate::llm_features::{self, Input, LayerSelection, LlmFeaturesArgs, Pooling};
use crate::measure::{self, CkaArgs, EstimatorChoice};
use crate::pipeline::Stages;

/// flowlens: how a language model's hidden states align with an image generator's streams.
#[derive(Debug, Parser)]
#[command(name = "flowlens", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hidden states of a Hugging Face Llama (config.json + safetensors) for your own CKA studies.
    LlmFeatures(LlmFeaturesCli),
    /// Linear CKA of two [n, d] feature arrays (.npy, f32 or f64; rows = samples).
    Cka(CkaCli),
    /// FID between two [n, d] feature arrays (.npy), computed as pytorch-fid does.
    Fid(FidCli),
    /// Parameter counts of a preset and variant, computed from the config (nothing allocated).
    ModelInfo(ModelInfoCli),
    /// Train a flow model with rectified flow into a run directory (crash-safe, resumable).
    Train(TrainCli),
    /// Sample a trained run (Euler + CFG) with taps at every solver step into its feature store.
    Sample(SampleCli),
    /// Oracle prompt adherence of a tiny-preset run on held-out shapes scenes (JSON).
    EvalShapes(EvalShapesCli),
    /// Table 1: train the variants on identical data, seeds and budget, evaluating every K
    /// steps; the table (mean +- sd over seeds) and the training curves.
    Ablation(ExperimentCli),
    /// Experiment 1: encoder text/noise streams vs LLM layers, Delta CKA (ours - baseline) over
    /// seeds, biased and debiased, with the permutation-null floor.
    Exp1(ExperimentCli),
    /// Experiment 2: the same dual-stream encoder under two decoders; text-noise CKA at every
    /// solver step, AUC and time-to-threshold.
    Exp2(ExperimentCli),
    /// The full tap x solver-step CKA grid of one run for any tap pair, as a table and heatmap.
    Grid(GridCli),
    /// Render experiment folders as a report: index.md/index.html, figures (PNG+SVG), tables
    /// (CSV+LaTeX), manifest.json.
    Report(ReportCli),
    /// The whole paper pipeline at the tiny preset on this CPU (prior, five variants, exp1,
    /// exp2, ablation table, report), nothing downloaded.
    Demo(DemoCli),
    /// The SDXL-VAE (any diffusers AutoencoderKL folder, or the single-file LDM layout): encode
    /// an image to latents, decode latents to an image.
    #[command(subcommand)]
    Vae(VaeCli),
    /// MJHQ-30k evaluation of a run: generate for the benchmark's prompts, FID against the
    /// reference images (statistics cached) and CLIP score x100 (per-pair clamp, then mean);
    /// results in <run>/eval/.
    Eval(EvalCli),
}

#[derive(Debug, clap::Args)]
pub struct EvalCli {
    /// The run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// The MJHQ-30k folder (meta_data.json and <category>/<id>.jpg).
    #[arg(long)]
    pub benchmark: PathBuf,
    /// The first N benchmark entries (in id order).
    #[arg(long, default_value_t = 30000)]
    pub n: usize,
    /// Comma-separated sampling seeds (the paper: five).
    #[arg(long, default_value = "0")]
    pub seeds: String,
    /// Also FID per category (each category's images against its reference images).
    #[arg(long)]
    pub per_category: bool,
    /// The CLIP folder (transformers CLIPModel: openai/clip-vit-large-patch14 for the paper).
    #[arg(long)]
    pub clip: PathBuf,
    /// The FID Inception weights from tools/convert_fid_inception.py (file or folder), or
    /// `formula` for deterministic stand-in weights (tests only: not comparable FIDs).
    #[arg(long)]
    pub inception: String,
    /// Euler steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Guidance scale w.
    #[arg(long, default_value_t = 2.0)]
    pub cfg: f32,
    /// Prompts per forward pass of the generator.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub weights: WeightsCli,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum VaeCli {
    /// IMAGE (.png/.jpg, or .npy [1,3,H,W] / [3,H,W] in [-1,1]) -> LATENT.npy (raw latents unless
    /// --scaled): the posterior mean (default) or a sample.
    Encode(VaeEncodeCli),
    /// LATENT.npy ([B,C,h,w] or [C,h,w], raw unless --scaled) -> IMAGE.png (clipped, 8 bit) or
    /// IMAGE.npy (raw decoder output [B,3,H,W], float32).
    Decode(VaeDecodeCli),
}

#[derive(Debug, clap::Args)]
pub struct VaeEncodeCli {
    /// The VAE folder (config.json + diffusion_pytorch_model.safetensors, or one LDM-layout
    /// .safetensors), or the weights file with config.json beside it.
    #[arg(long)]
    pub model: PathBuf,
    pub image: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Write the posterior mean (the default).
    #[arg(long, conflicts_with = "sample")]
    pub mean: bool,
    /// Write a posterior sample, mean + std * eps.
    #[arg(long)]
    pub sample: bool,
    /// The seed of eps for --sample.
    #[arg(long, default_value_t = 0, requires = "sample")]
    pub seed: u64,
    /// Multiply by the config's scaling_factor (0.13025 for SDXL; a shift_factor, if the
    /// config has one, is subtracted first): the space the flow model trains in.
    #[arg(long)]
    pub scaled: bool,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

#[derive(Debug, clap::Args)]
pub struct VaeDecodeCli {
    /// The VAE folder or weights file, as for `vae encode`.
    #[arg(long)]
    pub model: PathBuf,
    pub latent: PathBuf,
    /// IMAGE.png or IMAGE.npy.
    #[arg(long)]
    pub out: PathBuf,
    /// The latents are scaled (divide by the config's scaling_factor, add its shift_factor if
    /// any, before decoding).
    #[arg(long)]
    pub scaled: bool,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// An experiment command.
#[derive(Debug, clap::Args)]
pub struct ExperimentCli {
    /// The experiment file (assets/experiments/*.toml); default: the demo's (tiny.toml, into
    /// runs/demo).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunOpts,
}

/// Where an experiment writes and what it runs on.
#[derive(Debug, clap::Args)]
pub struct RunOpts {
    /// Output folder (overrides the experiment file's `out`; the demo's default is runs/demo,
    /// or runs/demo-quick with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct GridCli {
    #[command(flatten)]
    pub experiment: ExperimentCli,
    /// The run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Read this existing feature store of the run (e.g. `probes` from `flowlens sample`)
    /// instead of sampling into `probes-grid`.
    #[arg(long)]
    pub store: Option<String>,
    /// The row tap (default: the file's `[grid] a`, `enc.noise`).
    #[arg(long)]
    pub a: Option<String>,
    /// The column taps, a pattern (default: the file's `[grid] b`, `llm.h*.image`).
    #[arg(long)]
    pub b: Option<String>,
    /// Sampling seeds to average (comma-separated; default: the file's).
    #[arg(long)]
    pub seeds: Option<String>,
    /// biased | debiased (default: the file's).
    #[arg(long)]
    pub estimator: Option<flowlens_analysis::cka::Estimator>,
}

#[derive(Debug, clap::Args)]
pub struct ReportCli {
    /// Experiment folders (each with ablation/, exp1/, exp2/ or grid/ results).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Output folder (default: the first folder's report/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DemoCli {
    /// The same pipeline at toy sizes (about a minute): for tests and a first look.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Debug, clap::Args)]
pub struct EvalShapesCli {
    #[arg(long)]
    pub run: PathBuf,
    /// Held-out scenes to sample and score.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    #[arg(long, default_value_t = 2.0)]
    pub cfg: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub weights: WeightsCli,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Which checkpoint and which weights of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsCli {
    /// `latest`, `best` or a step number.
    #[arg(long, default_value = "latest")]
    pub checkpoint: flowlens_core::sample::CheckpointChoice,
    /// `ema` (default), `ema2` (the second EMA rate) or `model` (raw weights).
    #[arg(long, value_enum, default_value_t = WeightsChoice::Ema)]
    pub weights: WeightsChoice,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WeightsChoice {
    Ema,
    Ema2,
    Model,
}

impl WeightsChoice {
    pub fn get(self) -> flowlens_core::sample::Weights {
        use flowlens_core::sample::Weights;
        match self {
            WeightsChoice::Ema => Weights::Ema,
            WeightsChoice::Ema2 => Weights::Ema2,
            WeightsChoice::Model => Weights::Model,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SampleCli {
    /// The run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// One prompt per line (not used with --interpolant, which takes held-out captions).
    #[arg(long, required_unless_present = "interpolant")]
    pub prompts: Option<PathBuf>,
    /// Euler steps.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Guidance scale w (v = w v_c - (w - 1) v_u); 1 disables guidance.
    #[arg(long, default_value_t = 2.0)]
    pub cfg: f32,
    /// Comma-separated seeds.
    #[arg(long, default_value = "0")]
    pub seeds: String,
    /// Tap patterns, e.g. `enc.*,llm.h02,llm.h*.image` (none by default).
    #[arg(long, default_value = "")]
    pub taps: String,
    /// Mean-pool after a layer norm over the width (the paper's Exp. 2 pooling).
    #[arg(long)]
    pub layer_norm: bool,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub weights: WeightsCli,
    /// Store probes as f16 (half the disk; relative error <= 2^-11).
    #[arg(long)]
    pub f16: bool,
    /// Also save the decoded x_t of every solver step (samples/seed<S>/xt/), for the
    /// trajectory viewer.
    #[arg(long)]
    pub previews: bool,
    /// Tap pairs whose CKA per solver step is accumulated live while sampling, written to
    /// probes/cka_live.json after every batch: `A:B,C:D` (e.g. `enc.text:llm.h02.text`).
    #[arg(long, default_value = "")]
    pub cka_pairs: String,
    /// Interpolant mode: tap the model on z_t = t x + (1 - t) z0 of held-out data at these
    /// times (comma-separated, in [0, 1]) instead of along the sampler's trajectory; writes
    /// probes-interpolant/.
    #[arg(long)]
    pub interpolant: Option<String>,
    /// Held-out examples in interpolant mode.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Held-out data in interpolant mode (default: held-out scenes of the run's shapes set):
    /// `shapes:SEED:LEN`, `folder:DIR`, `parquet:PATH`, `webdataset:PATH`.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct TrainCli {
    /// A TOML or JSON file with TrainConfig fields; the preset's defaults fill the rest.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tiny | small | paper (default tiny, or the config file's).
    #[arg(long)]
    pub preset: Option<String>,
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
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub mjhq: MjhqTrainCli,
}

/// MJHQ-30k evaluation during training (`flowlens eval` on the checkpoints every K steps).
#[derive(Debug, clap::Args)]
pub struct MjhqTrainCli {
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

#[derive(Debug, clap::Args)]
pub struct ModelInfoCli {
    /// tiny | small | paper
    #[arg(long, default_value = "paper")]
    pub preset: String,
    /// baseline | decoder-only | encoder-only | both | uvit
    #[arg(long, default_value = "baseline")]
    pub variant: flowlens_core::flow::Variant,
    /// One JSON object: total, llm, encoder, decoder, ... (integers).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CkaCli {
    /// [n, d1] features.
    pub x: PathBuf,
    /// [n, d2] features, row i paired with row i of X.
    pub y: PathBuf,
    /// Which estimate(s): the debiased one is ~0 for unrelated features; the biased one is not.
    #[arg(long, value_enum, default_value_t = EstimatorChoice::Both)]
    pub estimator: EstimatorChoice,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Permutations for the shuffled-pairing null (mean, 95% quantile, p-value); 0 = none.
    #[arg(long, default_value_t = 0)]
    pub permutations: usize,
    /// Bootstrap replicates over samples for a confidence interval; 0 = none.
    #[arg(long, default_value_t = 0)]
    pub bootstrap: usize,
    /// Confidence level of the bootstrap interval.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Seed of the permutations and resamples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct FidCli {
    /// [n, d] features of the first set (e.g. Inception pool3, d = 2048).
    pub a: PathBuf,
    /// [m, d] features of the second set.
    pub b: PathBuf,
    /// Print `{"fid": value}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompts", "input_ids"])))]
pub struct LlmFeaturesCli {
    /// Model folder: config.json, model.safetensors (or model.safetensors.index.json + shards),
    /// and tokenizer.json (for --prompts).
    #[arg(long)]
    pub model: PathBuf,
    /// Text file with one prompt per line.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// int64 [n, T] token ids (.npy).
    #[arg(long)]
    pub input_ids: Option<PathBuf>,
    /// int64 or float32 [n, T] attention mask (.npy), 1 = real token; default all ones.
    #[arg(long, requires = "input_ids")]
    pub attention_mask: Option<PathBuf>,
    /// Hidden-state indices in Hugging Face numbering (0 = embeddings, L = after the final
    /// norm): `all` or a list such as `2,12,22`.
    #[arg(long, default_value = "all")]
    pub layers: LayerSelection,
    /// `mean` over real tokens ([n, hidden]) or `none` ([n, T, hidden]).
    #[arg(long, value_enum, default_value_t = Pooling::Mean)]
    pub pool: Pooling,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Truncate tokenized prompts to this many tokens (BOS included).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Cli {
    pub fn run(self) -> Result<()> {
        match self.command {
            Command::LlmFeatures(a) => {
                let input = match (a.prompts, a.input_ids) {
                    (Some(p), _) => Input::Prompts(p),
                    (None, Some(ids)) => Input::Ids {
                        ids,
                        mask: a.attention_mask,
                    },
                    (None, None) => anyhow::bail!("give --prompts FILE or --input-ids IDS.npy"),
                };
                let out = llm_features::run(LlmFeaturesArgs {
                    model: a.model,
                    input,
                    layers: a.layers,
                    pool: a.pool,
                    out: a.out,
                    batch_size: a.batch_size,
                    max_len: a.max_len,
                    device: a.device,
                    progress: !a.quiet,
                })?;
                eprintln!("wrote features to {}", out.display());
                Ok(())
            }
            Command::Cka(a) => {
                let report = measure::cka_report(&CkaArgs {
                    x: a.x,
                    y: a.y,
                    estimator: a.estimator,
                    permutations: a.permutations,
                    bootstrap: a.bootstrap,
                    level: a.level,
                    seed: a.seed,
                })?;
                if a.json {
                    println!("{report}");
                } else {
                    println!("{}", measure::cka_text(&report));
                }
                Ok(())
            }
            Command::ModelInfo(a) => {
                let config = flowlens_core::flow::FlowConfig::preset(&a.preset, a.variant)
                    .map_err(anyhow::Error::msg)?;
                let counts = flowlens_core::flow::ParamCounts::of(&config);
                if a.json {
                    println!("{}", serde_json::to_string(&counts)?);
                } else {
                    println!(
                        "preset {} / variant {}: LLM width {}, {} layers; heads width {}; latents {}x{}x{}, {} image tokens, text length {}\n",
                        config.preset,
                        config.variant.name(),
                        config.llm.hidden_size,
                        config.llm.num_hidden_layers,
                        config.width,
                        config.latent_channels,
                        config.latent_size,
                        config.latent_size,
                        config.image_tokens(),
                        config.text_len
                    );
                    print!("{}", counts.table());
                }
                Ok(())
            }
            Command::Train(a) => crate::training::run(a),
            Command::Sample(a) => crate::training::sample(a),
            Command::EvalShapes(a) => crate::training::eval_shapes(a),
            Command::Ablation(a) => experiment(
                a,
                Stages {
                    ablation: true,
                    ..Default::default()
                },
            ),
            Command::Exp1(a) => experiment(
                a,
                Stages {
                    exp1: true,
                    ..Default::default()
                },
            ),
            Command::Exp2(a) => experiment(
                a,
                Stages {
                    exp2: true,
                    ..Default::default()
                },
            ),
            Command::Grid(a) => {
                let mut file =
                    commands::load(a.experiment.config.as_deref(), a.experiment.run.out)?;
                if let Some(v) = a.a {
                    file.grid.a = v;
                }
                if let Some(v) = a.b {
                    file.grid.b = v;
                }
                if let Some(v) = a.estimator {
                    file.grid.estimator = v;
                }
                if let Some(s) = &a.seeds {
                    file.grid.probing.seeds = s
                        .split(',')
                        .map(|x| {
                            x.trim()
                                .parse()
                                .map_err(|_| anyhow::anyhow!("--seeds: `{x}` is not a seed"))
                        })
                        .collect::<Result<_>>()?;
                }
                file.check()?;
                commands::run_stages(
                    file,
                    Stages::default(),
                    Some((a.run, a.store)),
                    a.experiment.run.device,
                    !a.experiment.run.quiet,
                )?;
                Ok(())
            }
            Command::Report(a) => {
                let out = a.out.unwrap_or_else(|| a.dirs[0].join("report"));
                let index = crate::report::write_report(&a.dirs, &out)?;
                eprintln!("report: {}", index.display());
                Ok(())
            }
            Command::Demo(a) => {
                commands::demo(a.quick, a.run.out, a.run.device, !a.run.quiet)?;
                Ok(())
            }
            Command::Vae(VaeCli::Encode(a)) => {
                let shape = crate::vae_cmd::encode(crate::vae_cmd::EncodeArgs {
                    model: a.model,
                    image: a.image,
                    out: a.out.clone(),
                    posterior: if a.sample {
                        crate::vae_cmd::Posterior::Sample(a.seed)
                    } else {
                        crate::vae_cmd::Posterior::Mean
                    },
                    scaled: a.scaled,
                    device: a.device,
                })?;
                eprintln!("wrote latents {shape:?} to {}", a.out.display());
                Ok(())
            }
            Command::Vae(VaeCli::Decode(a)) => {
                let shape = crate::vae_cmd::decode(crate::vae_cmd::DecodeArgs {
                    model: a.model,
                    latent: a.latent,
                    out: a.out.clone(),
                    scaled: a.scaled,
                    device: a.device,
                })?;
                eprintln!("wrote image {shape:?} to {}", a.out.display());
                Ok(())
            }
            Command::Eval(a) => {
                let seeds = a
                    .seeds
                    .split(',')
                    .map(|x| {
                        x.trim()
                            .parse()
                            .map_err(|_| anyhow::anyhow!("--seeds: `{x}` is not a seed"))
                    })
                    .collect::<Result<Vec<u64>>>()?;
                let (result, path) = crate::eval::run(crate::eval::EvalArgs {
                    run: a.run,
                    benchmark: a.benchmark,
                    n: a.n,
                    seeds,
                    per_category: a.per_category,
                    clip: a.clip,
                    inception: crate::eval::InceptionSource::parse(&a.inception),
                    sampler: flowlens_core::flow::rectified::SamplerConfig {
                        steps: a.steps,
                        cfg: a.cfg,
                        ..Default::default()
                    },
                    batch_size: a.batch_size,
                    weights: a.weights.weights.get(),
                    checkpoint: a.weights.checkpoint,
                    device: a.device,
                    progress: !a.quiet,
                })?;
                println!(
                    "FID {:.3} +- {:.3}, CLIP score {:.3} +- {:.3} (n = {}, {} seed(s), step {}); {}",
                    result.fid.mean,
                    result.fid.std,
                    result.clip_score.mean,
                    result.clip_score.std,
                    result.n,
                    result.seeds.len(),
                    result.step,
                    path.display()
                );
                Ok(())
            }
            Command::Fid(a) => {
                let fid = measure::fid_value(&a.a, &a.b)?;
                if a.json {
                    println!("{}", serde_json::json!({ "fid": fid }));
                } else {
                    println!("FID = {fid:.6}");
                }
                Ok(())
            }
        }
    }
}

/// `flowlens ablation | exp1 | exp2`.
fn experiment(a: ExperimentCli, stages: Stages) -> Result<()> {
    let file = commands::load(a.config.as_deref(), a.run.out)?;
    commands::run_stages(file, stages, None, a.run.device, !a.run.quiet)?;
    Ok(())
}
