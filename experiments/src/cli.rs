//! The `flowlens` command line: the commands and their dispatch; each command's arguments and
//! code live in [`crate::cmd`].

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd::experiment::{
    DemoCli, ExperimentCli, GridCli, ReportCli, Stages, experiment, grid, report, run_demo,
};
use crate::cmd::{
    bench, eval, eval_shapes, llm_features, measure, model_info, sample, study, train, vae,
};

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
    LlmFeatures(llm_features::LlmFeaturesCli),
    /// Linear CKA of two [n, d] feature arrays (.npy, f32 or f64; rows = samples).
    Cka(measure::CkaCli),
    /// FID between two [n, d] feature arrays (.npy), computed as pytorch-fid does.
    Fid(measure::FidCli),
    /// Parameter counts of a preset and variant, computed from the config (nothing allocated).
    ModelInfo(model_info::ModelInfoCli),
    /// Train a flow model with rectified flow into a run directory (crash-safe, resumable).
    Train(Box<train::TrainArgs>),
    /// Sample a trained run (Euler + CFG) with taps at every solver step into its feature store.
    Sample(sample::SampleArgs),
    /// Oracle prompt adherence of a tiny-preset run on held-out shapes scenes (JSON).
    EvalShapes(eval_shapes::EvalShapesArgs),
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
    Vae(vae::VaeCmd),
    /// MJHQ-30k evaluation of a run: generate for the benchmark's prompts, FID against the
    /// reference images (statistics cached) and CLIP score x100 (per-pair clamp, then mean);
    /// results in <run>/eval/.
    Eval(eval::EvalCmd),
    /// Speed of a preset with random weights and inputs (nothing downloaded): training steps
    /// with model FLOPs utilisation, or sampling with and without taps.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Human preference studies: design (new, plan, lock), blind rating (export-html, import,
    /// status), unblind and analyze with clustered inference, Figure 4 and tables.
    #[command(subcommand)]
    Study(study::StudyCmd),
}

impl Cli {
    pub fn run(self) -> Result<()> {
        let only = |f: fn(&mut Stages)| {
            let mut s = Stages::default();
            f(&mut s);
            s
        };
        match self.command {
            Command::LlmFeatures(a) => llm_features::run(a),
            Command::Cka(a) => measure::cka(a),
            Command::Fid(a) => measure::fid(a),
            Command::ModelInfo(a) => model_info::run(a),
            Command::Train(a) => train::run(*a),
            Command::Sample(a) => sample::run(a),
            Command::EvalShapes(a) => eval_shapes::run(a),
            Command::Ablation(a) => experiment(a, only(|s| s.ablation = true)),
            Command::Exp1(a) => experiment(a, only(|s| s.exp1 = true)),
            Command::Exp2(a) => experiment(a, only(|s| s.exp2 = true)),
            Command::Grid(a) => grid(a),
            Command::Report(a) => report(a),
            Command::Demo(a) => run_demo(a),
            Command::Vae(a) => vae::run(a),
            Command::Eval(a) => eval::run(a),
            Command::Bench(a) => bench::run(a),
            Command::Study(a) => study::run(a),
        }
    }
}
