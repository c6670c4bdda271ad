//! The SDXL-VAE: diffusers `AutoencoderKL` (diffusers `models/autoencoders/autoencoder_kl.py`,
//! `vae.py` `DiagonalGaussianDistribution`; MODEL.md section 2), loaded from a diffusers folder
//! (`config.json` + `diffusion_pytorch_model.safetensors`), from a file with the legacy attention
//! names, or from the single-file LDM layout (`sdxl_vae.safetensors`, see [`layout`]).
//!
//! - [`Vae::encode`]: pixels in [-1, 1] -> encoder -> `quant_conv` -> [`Posterior`] (mean,
//!   logvar clamped to [-30, 20], std, sample).
//! - [`Vae::decode`]: latents -> `post_quant_conv` -> decoder -> pixels (unclipped).
//!
//! Both work in the VAE's **raw** latent space: the scaling factor (0.13025 for SDXL, from the
//! config) is applied by the caller, as diffusers does; `codec::vae::VaeCodec` is the caller that
//! the latent codec trait and the latent cache use (encode: posterior mean times the factor;
//! decode: divide, then decode).
//!
//! Precision: weights stored as F32 or BF16 (or F16) are converted to f32 on load and the
//! network always computes in f32. There is deliberately no f16 compute path: the SDXL-VAE's
//! activations overflow f16 ("this vae doesn't work with fp16", JanusFlow's demo; diffusers'
//! `force_upcast`).

pub mod config;
pub mod layout;
pub mod model;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rand::SeedableRng;

pub use config::{VaeConfig, VaeConfigError};
pub use layout::VaeLayout;
pub use model::{Decoder, Encoder};

use crate::weights::{SafetensorsFile, VarBuilder, WeightError, WeightStore};
use burn::nn::conv::Conv2d;

/// What can go wrong while loading a VAE.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error(transparent)]
    Config(#[from] VaeConfigError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(
        "no VAE weights in {dir}: expected diffusion_pytorch_model.safetensors (diffusers) or a single *.safetensors file (LDM layout) next to config.json"
    )]
    NoWeights { dir: PathBuf },
    #[error(
        "{dir} holds several safetensors files ({files}) and none is diffusion_pytorch_model.safetensors: pass the weights file itself"
    )]
    Ambiguous { dir: PathBuf, files: String },
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("invalid VAE config: {0}")]
    InvalidConfig(String),
    #[error(
        "{what} of {b} x {h}x{w} pixels needs about {need_gb:.1} GB (the mid-block attention over {positions} latent positions alone holds a {positions}x{positions} score matrix), more than the {budget_gb:.1} GB available (set FLOWLENS_MEMORY_GB to allow more): tile or downscale the image"
    )]
    TooLarge {
        what: &'static str,
        b: usize,
        h: usize,
        w: usize,
        positions: usize,
        need_gb: f64,
        budget_gb: f64,
    },
}

/// The diagonal Gaussian posterior `q(z | x)` of diffusers' `DiagonalGaussianDistribution`.
#[derive(Debug, Clone)]
pub struct Posterior<B: Backend> {
    /// `[b, latent_channels, h, w]`
    pub mean: Tensor<B, 4>,
    /// `[b, latent_channels, h, w]`, clamped to [-30, 20].
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> Posterior<B> {
    /// Splits the moments `[b, 2 c, h, w]` into mean and (clamped) logvar, as diffusers does
    /// (`torch.chunk(parameters, 2, dim=1)`).
    pub fn from_moments(moments: Tensor<B, 4>) -> Self {
        let [b, c2, h, w] = moments.dims();
        let c = c2 / 2;
        let mean = moments.clone().slice([0..b, 0..c, 0..h, 0..w]);
        let logvar = moments.slice([0..b, c..c2, 0..h, 0..w]).clamp(-30.0, 20.0);
        Self { mean, logvar }
    }

    /// `exp(0.5 logvar)`, `[b, c, h, w]`.
    pub fn std(&self) -> Tensor<B, 4> {
        (self.logvar.clone() * 0.5).exp()
    }

    /// `mean + std * eps` for a given standard-normal `eps` `[b, c, h, w]`.
    pub fn sample_with(&self, eps: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + self.std() * eps
    }

    /// [`Posterior::sample_with`] with `eps` drawn from a seeded generator (deterministic on
    /// every backend).
    pub fn sample(&self, seed: u64) -> Tensor<B, 4> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let eps =
            crate::noise::normal_noise::<B, 4>(&mut rng, self.mean.dims(), &self.mean.device());
        self.sample_with(eps)
    }
}

/// A diffusers `AutoencoderKL` (f32 compute).
#[derive(Debug)]
pub struct Vae<B: Backend> {
    pub config: VaeConfig,
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
    /// The layout the weights were read from (`None` for fresh weights).
    pub layout: Option<VaeLayout>,
}

/// Where a VAE's config and weights are, from a folder or a weights file.
pub fn resolve_files(path: &Path) -> Result<(PathBuf, PathBuf), VaeError> {
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Ok((dir.join("config.json"), path.to_path_buf()));
    }
    let config = path.join("config.json");
    let diffusers = path.join("diffusion_pytorch_model.safetensors");
    if diffusers.is_file() {
        return Ok((config, diffusers));
    }
    let entries = std::fs::read_dir(path).map_err(|e| VaeError::Input {
        path: path.to_path_buf(),
        reason: format!("cannot read the VAE folder: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    match files.len() {
        0 => Err(VaeError::NoWeights {
            dir: path.to_path_buf(),
        }),
        1 => Ok((config, files.remove(0))),
        _ => Err(VaeError::Ambiguous {
            dir: path.to_path_buf(),
            files: files
                .iter()
                .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

impl<B: Backend> Vae<B> {
    /// Fresh (PyTorch-default initialised) weights for a config: for tests and benchmarks.
    pub fn init(config: &VaeConfig, device: &B::Device) -> Result<Self, VaeError> {
        Self::build(config, &VarBuilder::init(device), None)
    }

    /// Loads a VAE folder (`config.json` and `diffusion_pytorch_model.safetensors`, or one
    /// `*.safetensors` in the LDM layout), or a weights file with `config.json` beside it. The
    /// layout is detected from the tensor names; every tensor must be used.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, VaeError> {
        let (config_path, weights) = resolve_files(path.as_ref())?;
        let config = VaeConfig::from_file(&config_path)?;
        Self::load_files(&config, &weights, device)
    }

    /// Loads weights (any of the three layouts) for a given config.
    pub fn load_files(
        config: &VaeConfig,
        weights: &Path,
        device: &B::Device,
    ) -> Result<Self, VaeError> {
        let file = SafetensorsFile::open(weights)?;
        let names = file.names();
        let layout = VaeLayout::detect(&names);
        let aliases = layout.aliases(&names, config.block_out_channels.len());
        let store = Rc::new(WeightStore::from_files(vec![file])?.with_aliases(aliases));
        let vae = Self::build(
            config,
            &VarBuilder::load(store.clone(), device),
            Some(layout),
        )
        .map_err(|e| match e {
            VaeError::Weights(WeightError::Missing { name, .. })
                if layout != VaeLayout::Diffusers =>
            {
                VaeError::Input {
                    path: weights.to_path_buf(),
                    reason: format!(
                        "tensor `{name}` (diffusers name) is missing; the file is in the {} layout",
                        layout.name()
                    ),
                }
            }
            e => e,
        })?;
        store.check_all_used(&[])?;
        Ok(vae)
    }

    fn build(
        config: &VaeConfig,
        vb: &VarBuilder<B>,
        layout: Option<VaeLayout>,
    ) -> Result<Self, VaeError> {
        config.check().map_err(VaeError::InvalidConfig)?;
        let l = config.latent_channels;
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::new(&vb.pp("encoder"), config)?,
            decoder: Decoder::new(&vb.pp("decoder"), config)?,
            quant_conv: if config.use_quant_conv {
                Some(vb.conv2d("quant_conv", 2 * l, 2 * l, 1, 1, 0, 1)?)
            } else {
                None
            },
            post_quant_conv: if config.use_post_quant_conv {
                Some(vb.conv2d("post_quant_conv", l, l, 1, 1, 0, 1)?)
            } else {
                None
            },
            layout,
        })
    }

    /// The scaling factor of the config (0.13025 for SDXL); never applied inside encode/decode.
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Raw latents -> the space a diffusion model works in, as diffusers' pipelines do:
    /// `(z - shift_factor) * scaling_factor` (SDXL: no shift, `z * 0.13025`).
    pub fn scale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match self.config.shift_factor {
            Some(shift) => z - shift,
            None => z,
        };
        z * self.config.scaling_factor
    }

    /// The inverse of [`Vae::scale_latents`]: `z / scaling_factor + shift_factor`.
    pub fn unscale_latents(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = z / self.config.scaling_factor;
        match self.config.shift_factor {
            Some(shift) => z + shift,
            None => z,
        }
    }

    /// Pixels `[b, 3, h, w]` in [-1, 1] (h, w multiples of the down-sampling factor `f`) ->
    /// the posterior over raw latents `[b, latent_channels, h / f, w / f]`.
    pub fn encode(&self, pixels: Tensor<B, 4>) -> Posterior<B> {
        let mut moments = self.encoder.forward(pixels);
        if let Some(conv) = &self.quant_conv {
            moments = conv.forward(moments);
        }
        Posterior::from_moments(moments)
    }

    /// Raw latents `[b, latent_channels, h, w]` -> pixels `[b, 3, h f, w f]`, nominally in
    /// [-1, 1] but not clipped.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents),
            None => latents,
        };
        self.decoder.forward(z)
    }

    /// Checks that an image `[.., .., h, w]` can be encoded (sizes multiples of the factor).
    /// About how many bytes encoding (or decoding) `b` images of `h` x `w` pixels holds at its
    /// peak: a few full-resolution activation maps of the first block's width, and the
    /// mid-block attention's `[b, n, n]` scores (n = latent positions) with their softmax.
    pub fn peak_bytes(&self, b: usize, h: usize, w: usize) -> u64 {
        let f = self.config.downsampling() as u64;
        let (b, h, w) = (b as u64, h as u64, w as u64);
        let c0 = self.config.block_out_channels.first().copied().unwrap_or(0) as u64;
        let maps = 6 * b * c0 * h * w * 4;
        let n = (h / f) * (w / f);
        let attention = if self.config.mid_block_add_attention {
            3 * b * n * n * 4
        } else {
            0
        };
        maps + attention
    }

    /// An error naming the size when `b` images of `h` x `w` pixels would not fit the memory
    /// budget ([`crate::device::memory_budget`]); checked before anything is allocated.
    pub fn check_memory(
        &self,
        what: &'static str,
        b: usize,
        h: usize,
        w: usize,
    ) -> Result<(), VaeError> {
        let need = self.peak_bytes(b, h, w);
        let budget = crate::device::memory_budget();
        if need <= budget {
            return Ok(());
        }
        let f = self.config.downsampling();
        Err(VaeError::TooLarge {
            what,
            b,
            h,
            w,
            positions: (h / f) * (w / f),
            need_gb: need as f64 / 1e9,
            budget_gb: budget as f64 / 1e9,
        })
    }

    pub fn check_image_size(&self, h: usize, w: usize) -> Result<(), String> {
        let f = self.config.downsampling();
        if h == 0 || w == 0 || !h.is_multiple_of(f) || !w.is_multiple_of(f) {
            return Err(format!(
                "image size {h}x{w} is not a positive multiple of the VAE's down-sampling factor {f}"
            ));
        }
        Ok(())
    }
}
