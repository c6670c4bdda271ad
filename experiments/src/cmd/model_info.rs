//! `flowlens model-info`: parameter counts of a preset and variant, from the config alone.

use anyhow::Result;
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
}

pub fn run(a: ModelInfoCli) -> Result<()> {
    let config = FlowConfig::of(a.preset, a.variant);
    let counts = ParamCounts::of(&config);
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
