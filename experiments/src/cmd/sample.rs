//! `flowlens sample`: a trained run sampled with taps at every solver step (or on interpolants
//! of held-out data), live CKA of chosen tap pairs while it runs.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::data::DataSource;
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::flow::taps::describe_taps;
use flowlens_core::flow::{FlowConfig, TapPooling, TapRequest};
use flowlens_core::run::RunDir;
use flowlens_core::sample::{InterpolantRequest, SampleRequest};
use flowlens_core::store::{ProbeDtype, StoreName, StorePaths};
use flowlens_core::train::TrainConfig;

use crate::cmd::args::WeightsArgs;
use crate::io::parse_list;

#[derive(Debug, clap::Args)]
pub struct SampleArgs {
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
    /// Leave the BOS token (text position 0) out of the text taps' mean (recorded in the store's
    /// manifest as `mean_without_bos` / `layer_norm_mean_without_bos`).
    #[arg(long)]
    pub without_bos: bool,
    /// Prompts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub weights: WeightsArgs,
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

struct SampleTask {
    cli: SampleArgs,
    request: Option<SampleRequest>,
    interpolant: Option<InterpolantRequest>,
    pairs: Vec<(String, String)>,
}

impl BackendTask for SampleTask {
    type Output = Result<std::path::PathBuf>;

    fn run<B: Backend>(self, device: B::Device) -> Result<std::path::PathBuf> {
        let store = if self.interpolant.is_some() {
            StoreName::interpolant()
        } else {
            StoreName::sample()
        };
        let mut live = crate::live_cka::LiveCka::new(
            self.pairs,
            StorePaths::new(&self.cli.run, store).live_cka(),
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

/// `flowlens sample`.
pub fn run(a: SampleArgs) -> Result<()> {
    let seeds = parse_list::<u64>("--seeds", &a.seeds)?;
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let pooling = if a.layer_norm {
        TapPooling::LayerNormMean
    } else {
        TapPooling::Mean
    }
    .without_bos(a.without_bos);
    let probe_dtype = if a.f16 {
        ProbeDtype::F16
    } else {
        ProbeDtype::F32
    };
    let pairs = crate::live_cka::parse_pairs(&a.cka_pairs)?;
    let taps = TapRequest::parse(&a.taps);
    let config: TrainConfig = RunDir::open(&a.run)?.config()?;
    let flow = FlowConfig::of(config.preset, config.variant);
    let have = flow.tap_names();
    for tap in pairs.iter().flat_map(|(x, y)| [x, y]) {
        if !have.contains(tap) {
            bail!(
                "--cka-pairs: `{tap}` is not a tap of this model (its taps: {})",
                describe_taps(&have)
            );
        }
        if !taps.wants(tap) {
            bail!(
                "--cka-pairs: `{tap}` is not sampled: add it to --taps (now `{}`)",
                a.taps
            );
        }
    }
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
            let prompts = crate::io::read_prompts(path)?;
            crate::pipeline::warn_truncated(&a.run, &prompts, flow.text_len)?;
            (
                Some(SampleRequest {
                    prompts,
                    seeds,
                    sampler: SamplerConfig {
                        steps: a.steps,
                        cfg: a.cfg,
                        pooling,
                    },
                    taps,
                    batch_size: a.batch_size,
                    weights: a.weights.weights.get(),
                    checkpoint: a.weights.checkpoint,
                    probe_dtype,
                    previews: a.previews,
                    store: StoreName::sample(),
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
        StorePaths::new(&run, StoreName::sample())
            .samples_root()
            .display(),
        probes.display()
    );
    Ok(())
}
