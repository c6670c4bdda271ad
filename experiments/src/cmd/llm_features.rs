//! `flowlens llm-features`: hidden states of a Hugging Face Llama for the user's own CKA
//! studies.

use std::path::PathBuf;

use anyhow::Result;
use flowlens_core::device::DeviceSpec;

use crate::llm_features::{self, Input, LayerSelection, LlmFeaturesArgs, Pooling};

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

pub fn run(a: LlmFeaturesCli) -> Result<()> {
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
