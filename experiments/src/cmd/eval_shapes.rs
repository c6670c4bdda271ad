//! `flowlens eval-shapes`: oracle prompt adherence of a run on held-out shapes scenes.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::sample::{ShapesEval, evaluate_shapes};

use crate::cmd::args::WeightsArgs;

#[derive(Debug, clap::Args)]
pub struct EvalShapesArgs {
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
    pub weights: WeightsArgs,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

struct EvalTask(EvalShapesArgs);

impl BackendTask for EvalTask {
    type Output = Result<ShapesEval>;

    fn run<B: Backend>(self, device: B::Device) -> Result<ShapesEval> {
        let a = self.0;
        let sampler = SamplerConfig {
            steps: a.steps,
            cfg: a.cfg,
            ..Default::default()
        };
        Ok(evaluate_shapes::<B>(
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
pub fn run(a: EvalShapesArgs) -> Result<()> {
    if a.n == 0 || a.steps == 0 {
        bail!("--n and --steps must be at least 1");
    }
    let device = a.device;
    let adherence = device.run(EvalTask(a))??;
    println!("{}", serde_json::to_string(&adherence)?);
    Ok(())
}
