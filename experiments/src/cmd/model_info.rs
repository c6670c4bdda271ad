//! `flowlens model-info`: parameter counts of a preset and variant, from the config alone.

use anyhow::{Result, bail};
use flowlens_core::flow::memory::{AttentionKind, plan};
use flowlens_core::flow::{FlowConfig, ParamCounts, Preset};

#[derive(Debug, clap::Args)]
pub struct ModelInfoCli {
    /// tiny | small | paper
    #[arg(long, default_value = "paper")]
    pub preset: Preset,
    /// baseline | decoder-only | encoder-only | both | uvit
    #[arg(long, default_value = "baseline")]
    pub variant: flowlens_core::flow::Variant,
    /// One JSON object: total, llm, encoder, decoder, ... (integers).
    #[arg(long)]
    pub json: bool,
    /// Also the per-device training memory (weights, gradients, optimiser state, gradient
    /// buffer, activations and attention matrices kept for backward) of a stage-2 step.
    #[arg(long)]
    pub memory: bool,
    /// The global batch of the step (default: the preset's training batch).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// f32 | mixed | bf16
    #[arg(long, default_value = "f32")]
    pub precision: flowlens_core::nn::precision::Precision,
    /// Devices the batch is split over.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Where it runs: `cuda` (burn's composed attention keeps scores and probabilities) or
    /// `cpu` (the fused attention keeps the probabilities).
    #[arg(long, default_value = "cuda")]
    pub on: String,
    /// EMA rates kept (1, or 2 with `ema_decay_2`).
    #[arg(long, default_value_t = 1)]
    pub ema: usize,
}

pub fn run(a: ModelInfoCli) -> Result<()> {
    let config = FlowConfig::of(a.preset, a.variant);
    let counts = ParamCounts::of(&config);
    let memory = if a.memory {
        let attention = match a.on.as_str() {
            "cuda" | "gpu" => AttentionKind::Composed,
            "cpu" => AttentionKind::Fused,
            other => bail!("--on {other}: cpu or cuda"),
        };
        if a.devices == 0 {
            bail!("--devices must be at least 1");
        }
        let batch = a.batch_size.unwrap_or_else(|| {
            flowlens_core::train::TrainConfig::for_preset(a.preset, a.variant).batch_size
        });
        Some(plan(
            &config,
            batch,
            a.devices,
            a.precision,
            attention,
            a.ema,
        ))
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&counts)?;
        if let Some(m) = &memory {
            v["memory"] = serde_json::to_value(m)?;
        }
        println!("{v}");
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
        if let Some(m) = &memory {
            println!(
                "\ntraining memory, stage 2, batch {} over {} device(s) = {} rows each, {} precision, on {}:",
                a.batch_size.unwrap_or(m.rows_per_device * a.devices),
                a.devices,
                m.rows_per_device,
                a.precision,
                a.on
            );
            print!("{}", m.table());
        }
    }
    Ok(())
}
