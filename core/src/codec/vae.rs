//! The SDXL-VAE behind the [`LatentCodec`] trait (presets `small` and `paper`): scaled posterior
//! means in, decoded pixels out; the VAE folder is named by `FLOWLENS_SDXL_VAE`.

use std::path::PathBuf;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{CodecConfig, CodecError, LatentCodec};
use crate::vae::Vae;

/// The environment variable that names the SDXL-VAE folder for the `small` and `paper` presets.
pub const SDXL_VAE_ENV: &str = "FLOWLENS_SDXL_VAE";

/// The VAE behind the [`LatentCodec`] trait: `encode` is the posterior **mean** times the
/// scaling factor (deterministic, so a cached latent does not depend on a noise draw; MODEL.md
/// AMBIG-13 allows it), `decode` divides by the factor and decodes (a config's `shift_factor` is
/// subtracted before scaling and added back, as diffusers does; SDXL has none).
pub struct VaeCodec<B: Backend> {
    pub vae: Vae<B>,
}

impl<B: Backend> VaeCodec<B> {
    pub fn new(vae: Vae<B>) -> Self {
        Self { vae }
    }

    /// The folder named by the `FLOWLENS_SDXL_VAE` environment variable, loaded; used by the
    /// `small` and `paper` presets (their codec is [`CodecConfig::SdxlVae`]).
    pub fn from_env(device: &B::Device) -> Result<Self, CodecError> {
        let dir = std::env::var_os(SDXL_VAE_ENV).ok_or(CodecError::SdxlVaeUnset)?;
        let vae = Vae::load(&dir, device)?;
        let [c, ..] = CodecConfig::SdxlVae.latent_shape(8);
        if vae.config.latent_channels != c || vae.config.downsampling() != 8 {
            return Err(CodecError::NotSdxl {
                dir: PathBuf::from(dir),
                channels: vae.config.latent_channels,
                downsampling: vae.config.downsampling(),
            });
        }
        Ok(Self::new(vae))
    }
}

impl<B: Backend> LatentCodec<B> for VaeCodec<B> {
    fn id(&self) -> String {
        CodecConfig::SdxlVae.id()
    }

    fn encode(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        self.vae.scale_latents(self.vae.encode(pixels).mean)
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        self.vae.decode(self.vae.unscale_latents(latents))
    }

    /// A 384x384 SDXL-VAE encode holds ~0.6 GB of activations per image.
    fn preferred_batch(&self) -> usize {
        4
    }
}
