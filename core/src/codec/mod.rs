//! Latent codecs: what maps images to the space the flow model works in and back.
//!
//! - [`PixelPatches`] (the `tiny` preset): a lossless space-to-depth rearrangement of pixels,
//!   `[b, 3, s, s] -> [b, 3 f^2, s / f, s / f]` (PyTorch's `PixelUnshuffle(f)` order), so the
//!   generator sees a small "latent" map exactly as it would see VAE latents.
//! - [`vae::VaeCodec`] (presets `small` and `paper`): the SDXL-VAE behind the same trait,
//!   scaled latents (posterior mean x 0.13025); the VAE folder is named by the
//!   `FLOWLENS_SDXL_VAE` environment variable.
//!
//! [`CodecConfig::id`] names the codec and its settings; the latent cache keys on it, so a
//! changed codec never reuses stale latents.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::nn::blocks::pixel_shuffle;

pub mod vae;

/// Why a codec cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "this preset trains on SDXL-VAE latents: set {} to the VAE folder (config.json + diffusion_pytorch_model.safetensors from stabilityai/sdxl-vae), or use --preset tiny",
        vae::SDXL_VAE_ENV
    )]
    SdxlVaeUnset,
    #[error(transparent)]
    Vae(#[from] crate::vae::VaeError),
    #[error(
        "{dir}: the VAE has {channels} latent channels and down-samples by {downsampling}; the SDXL-VAE codec needs 4 and 8"
    )]
    NotSdxl {
        dir: std::path::PathBuf,
        channels: usize,
        downsampling: usize,
    },
}

/// Which codec a preset uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CodecConfig {
    /// Pixels rearranged into `factor x factor` patches per latent position.
    Pixels { factor: usize },
    /// SDXL-VAE latents (4 channels, 8x down-sampling), scaled by 0.13025.
    SdxlVae,
}

impl CodecConfig {
    /// A stable name for cache keys and manifests.
    pub fn id(&self) -> String {
        match self {
            CodecConfig::Pixels { factor } => format!("pixels-f{factor}-v1"),
            CodecConfig::SdxlVae => "sdxl-vae-scaled-0.13025".into(),
        }
    }

    /// Latent `[channels, size, size]` of an `image_size` x `image_size` RGB image.
    pub fn latent_shape(&self, image_size: usize) -> [usize; 3] {
        match self {
            CodecConfig::Pixels { factor } => [
                3 * factor * factor,
                image_size / factor,
                image_size / factor,
            ],
            CodecConfig::SdxlVae => [4, image_size / 8, image_size / 8],
        }
    }

    /// The codec on the backend's default device, or why it is not available.
    pub fn build<B: Backend>(&self) -> Result<Box<dyn LatentCodec<B>>, CodecError> {
        self.build_on(&Default::default())
    }

    /// The codec with its weights (if any) on `device`, or why it is not available (the
    /// SDXL-VAE needs `FLOWLENS_SDXL_VAE` to name its folder).
    pub fn build_on<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Box<dyn LatentCodec<B>>, CodecError> {
        match *self {
            CodecConfig::Pixels { factor } => Ok(Box::new(PixelPatches { factor })),
            CodecConfig::SdxlVae => Ok(Box::new(vae::VaeCodec::<B>::from_env(device)?)),
        }
    }
}

/// Maps images `[b, 3, s, s]` in [-1, 1] to latents and back.
pub trait LatentCodec<B: Backend> {
    /// The same string as [`CodecConfig::id`].
    fn id(&self) -> String;
    fn encode(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4>;
    fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4>;
    /// Images per encode call that keep memory reasonable (the latent cache's chunk size).
    fn preferred_batch(&self) -> usize {
        64
    }
}

/// Space-to-depth by `factor`: lossless, `decode(encode(x)) == x` exactly.
#[derive(Debug, Clone, Copy)]
pub struct PixelPatches {
    pub factor: usize,
}

/// PyTorch's `PixelUnshuffle(r)`: `[b, c, h r, w r] -> [b, c r^2, h, w]`, the inverse of
/// [`pixel_shuffle`].
pub fn pixel_unshuffle<B: Backend>(x: Tensor<B, 4>, r: usize) -> Tensor<B, 4> {
    let [b, c, hr, wr] = x.dims();
    let (h, w) = (hr / r, wr / r);
    x.reshape([b, c, h, r, w, r])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([b, c * r * r, h, w])
}

impl<B: Backend> LatentCodec<B> for PixelPatches {
    fn id(&self) -> String {
        CodecConfig::Pixels {
            factor: self.factor,
        }
        .id()
    }

    fn encode(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.factor == 1 {
            return pixels;
        }
        pixel_unshuffle(pixels, self.factor)
    }

    fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.factor == 1 {
            return latents;
        }
        pixel_shuffle(latents, self.factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend as B;
    use burn::tensor::TensorData;

    #[test]
    fn pixel_patches_round_trip_and_follow_pytorch_order() {
        let device = Default::default();
        let values: Vec<f32> = (0..2 * 3 * 4 * 4).map(|i| i as f32).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [2, 3, 4, 4]), &device);
        let codec = PixelPatches { factor: 2 };
        let z = LatentCodec::<B>::encode(&codec, x);
        assert_eq!(z.dims(), [2, 12, 2, 2]);
        let zv: Vec<f32> = z.clone().into_data().to_vec().unwrap();
        // PixelUnshuffle: out[b, c*4 + i*2 + j, y, x] = in[b, c, 2y + i, 2x + j].
        for b in 0..2 {
            for c in 0..3 {
                for i in 0..2 {
                    for j in 0..2 {
                        for y in 0..2 {
                            for xx in 0..2 {
                                let o = ((b * 12 + c * 4 + i * 2 + j) * 2 + y) * 2 + xx;
                                let src = ((b * 3 + c) * 4 + 2 * y + i) * 4 + 2 * xx + j;
                                assert_eq!(zv[o], values[src]);
                            }
                        }
                    }
                }
            }
        }
        let back: Vec<f32> = LatentCodec::<B>::decode(&codec, z)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(back, values);
        assert_eq!(
            CodecConfig::Pixels { factor: 2 }.latent_shape(32),
            [12, 16, 16]
        );
    }
}
