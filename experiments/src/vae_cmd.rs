//! `flowlens vae encode | decode`: the SDXL-VAE (or any diffusers `AutoencoderKL`) on single
//! images and latent arrays, in the VAE's raw latent space unless `--scaled`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::npy::NpyArray;
use flowlens_core::vae::Vae;

/// What `vae encode` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posterior {
    Mean,
    /// `mean + std * eps`, `eps` from this seed.
    Sample(u64),
}

#[derive(Debug, Clone)]
pub struct EncodeArgs {
    pub model: PathBuf,
    pub image: PathBuf,
    pub out: PathBuf,
    pub posterior: Posterior,
    pub scaled: bool,
    pub device: DeviceSpec,
}

#[derive(Debug, Clone)]
pub struct DecodeArgs {
    pub model: PathBuf,
    pub latent: PathBuf,
    pub out: PathBuf,
    pub scaled: bool,
    pub device: DeviceSpec,
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// An image file as `[1, 3, h, w]` in [-1, 1]: a PNG/JPEG (RGB, 8 bit) or a float `.npy`
/// `[1, 3, h, w]` / `[3, h, w]`.
pub fn read_image(path: &Path) -> Result<(Vec<f32>, [usize; 4])> {
    if extension(path) == "npy" {
        let array = NpyArray::read(path)?;
        let shape = match array.shape.as_slice() {
            [1, 3, h, w] | [3, h, w] => [1, 3, *h, *w],
            other => bail!(
                "{}: the image array has shape {other:?}; expected [1, 3, H, W] or [3, H, W] in [-1, 1]",
                path.display()
            ),
        };
        let values = array.as_f32();
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            bail!(
                "{}: the image array holds a non-finite value ({v})",
                path.display()
            );
        }
        return Ok((values, shape));
    }
    // The header first: a decompression bomb is refused before it is decoded.
    let (w, h) = image::image_dimensions(path)
        .with_context(|| format!("{}: cannot decode the image", path.display()))?;
    flowlens_core::data::preprocess::check_pixels(w, h)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let img = image::open(path)
        .with_context(|| format!("{}: cannot decode the image", path.display()))?
        .into_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut values = vec![0f32; 3 * h * w];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            values[(c * h + y as usize) * w + x as usize] = px[c] as f32 / 127.5 - 1.0;
        }
    }
    Ok((values, [1, 3, h, w]))
}

/// Writes `[1, 3, h, w]` pixels in [-1, 1] as an RGB PNG (clipped, rounded).
pub fn write_png(path: &Path, values: &[f32], h: usize, w: usize) -> Result<()> {
    let mut img = image::RgbImage::new(w as u32, h as u32);
    for (x, y, px) in img.enumerate_pixels_mut() {
        for c in 0..3 {
            let v = values[(c * h + y as usize) * w + x as usize];
            px[c] = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
        }
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

struct Encode(EncodeArgs);
struct Decode(DecodeArgs);

impl BackendTask for Encode {
    type Output = Result<[usize; 4]>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        if extension(&a.out) != "npy" {
            bail!(
                "--out {}: latents are written as .npy (float32 [1, C, h, w]); give a .npy file",
                a.out.display()
            );
        }
        let vae = Vae::<B>::load(&a.model, &device)?;
        let (values, shape) = read_image(&a.image)?;
        vae.check_image_size(shape[2], shape[3])
            .map_err(|e| anyhow!("{}: {e}", a.image.display()))?;
        vae.check_memory("encoding", shape[0], shape[2], shape[3])
            .map_err(|e| anyhow!("{}: {e}", a.image.display()))?;
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, shape), &device);
        let posterior = vae.encode(x);
        let mut z = match a.posterior {
            Posterior::Mean => posterior.mean,
            Posterior::Sample(seed) => posterior.sample(seed),
        };
        if a.scaled {
            z = vae.scale_latents(z);
        }
        let dims = z.dims();
        let values: Vec<f32> = z.into_data().to_vec().map_err(|e| anyhow!("{e:?}"))?;
        flowlens_core::npy::write_f32(&a.out, &dims, &values)
            .with_context(|| format!("cannot write {}", a.out.display()))?;
        Ok(dims)
    }
}

impl BackendTask for Decode {
    type Output = Result<[usize; 4]>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        let out_ext = extension(&a.out);
        if out_ext != "png" && out_ext != "npy" {
            bail!(
                "--out {}: give a .png (clipped, 8 bit) or .npy (raw float32) file",
                a.out.display()
            );
        }
        let vae = Vae::<B>::load(&a.model, &device)?;
        let array = NpyArray::read(&a.latent)?;
        let c = vae.config.latent_channels;
        let shape = match array.shape.as_slice() {
            [b, ch, h, w] if *ch == c => [*b, c, *h, *w],
            [ch, h, w] if *ch == c => [1, c, *h, *w],
            other => bail!(
                "{}: the latent array has shape {other:?}; this VAE expects [B, {c}, h, w] or [{c}, h, w]",
                a.latent.display()
            ),
        };
        if shape.contains(&0) {
            bail!("{}: the latent array is empty", a.latent.display());
        }
        let f = vae.config.downsampling();
        vae.check_memory("decoding", shape[0], shape[2] * f, shape[3] * f)
            .map_err(|e| anyhow!("{}: {e}", a.latent.display()))?;
        let values = array.as_f32();
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            bail!(
                "{}: the latent array holds a non-finite value ({v})",
                a.latent.display()
            );
        }
        let mut z = Tensor::<B, 4>::from_data(TensorData::new(values, shape), &device);
        if a.scaled {
            z = vae.unscale_latents(z);
        }
        let x = vae.decode(z);
        let dims = x.dims();
        let values: Vec<f32> = x.into_data().to_vec().map_err(|e| anyhow!("{e:?}"))?;
        if out_ext == "npy" {
            flowlens_core::npy::write_f32(&a.out, &dims, &values)
                .with_context(|| format!("cannot write {}", a.out.display()))?;
        } else {
            if dims[0] != 1 {
                bail!(
                    "{}: {} latents decode to {} images; a .png holds one (write .npy instead)",
                    a.latent.display(),
                    dims[0],
                    dims[0]
                );
            }
            write_png(&a.out, &values, dims[2], dims[3])?;
        }
        Ok(dims)
    }
}

/// `flowlens vae encode`; returns the latent shape written.
pub fn encode(a: EncodeArgs) -> Result<[usize; 4]> {
    let device = a.device;
    device.run(Encode(a))?
}

/// `flowlens vae decode`; returns the image shape written.
pub fn decode(a: DecodeArgs) -> Result<[usize; 4]> {
    let device = a.device;
    device.run(Decode(a))?
}
