//! `flowlens eval`: the MJHQ-30k evaluation of a run (FID, CLIP score) from the command line.

use std::path::PathBuf;

use anyhow::Result;
use flowlens_core::device::DeviceSpec;
use flowlens_core::flow::rectified::SamplerConfig;

use crate::cmd::args::WeightsArgs;
use crate::eval;
use crate::io::parse_list;

#[derive(Debug, clap::Args)]
pub struct EvalCmd {
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
    pub weights: WeightsArgs,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: EvalCmd) -> Result<()> {
    let seeds = parse_list("--seeds", &a.seeds)?;
    let (result, path) = eval::run(eval::EvalArgs {
        run: a.run,
        benchmark: a.benchmark,
        n: a.n,
        seeds,
        per_category: a.per_category,
        clip: a.clip,
        inception: eval::InceptionSource::parse(&a.inception),
        sampler: SamplerConfig {
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
