//! `flowlens vae encode | decode`: the SDXL-VAE (any diffusers AutoencoderKL) on images and
//! latents.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use flowlens_core::device::DeviceSpec;

use crate::vae_cmd;

#[derive(Debug, Subcommand)]
pub enum VaeCmd {
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

pub fn run(cmd: VaeCmd) -> Result<()> {
    match cmd {
        VaeCmd::Encode(a) => encode(a),
        VaeCmd::Decode(a) => decode(a),
    }
}

fn encode(a: VaeEncodeCli) -> Result<()> {
    let shape = vae_cmd::encode(vae_cmd::EncodeArgs {
        model: a.model,
        image: a.image,
        out: a.out.clone(),
        posterior: if a.sample {
            vae_cmd::Posterior::Sample(a.seed)
        } else {
            vae_cmd::Posterior::Mean
        },
        scaled: a.scaled,
        device: a.device,
    })?;
    eprintln!("wrote latents {shape:?} to {}", a.out.display());
    Ok(())
}

fn decode(a: VaeDecodeCli) -> Result<()> {
    let shape = vae_cmd::decode(vae_cmd::DecodeArgs {
        model: a.model,
        latent: a.latent,
        out: a.out.clone(),
        scaled: a.scaled,
        device: a.device,
    })?;
    eprintln!("wrote image {shape:?} to {}", a.out.display());
    Ok(())
}
