//! Images per second of the real-scale evaluation networks with random weights (run in release;
//! docs/PERFORMANCE.md): the SDXL-VAE (encode and decode), CLIP ViT-L/14 (image and text
//! towers) and the FID Inception-v3 (pool3).
//!
//! `cargo bench -p flowlens-core --bench real_networks [-- QUICK]`; tools/bench/real_networks_torch.py
//! is the PyTorch side. Sizes are arguments: `VAE_SIZE` (default 256), batch sizes below.

use std::rc::Rc;
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use flowlens_core::clip::{ClipConfig, ClipModel};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::inception::{FidInception, formula_weights};
use flowlens_core::vae::{Vae, VaeConfig};
use flowlens_core::weights::VarBuilder;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn report(what: &str, batch: usize, secs: f64) {
    println!(
        "| {what} | {batch} | {:.1} | {:.3} |",
        secs * 1000.0,
        batch as f64 / secs
    );
}

fn main() {
    let vae_size: usize = std::env::var("VAE_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let reps = 3;
    let device = Default::default();
    println!("median of {reps} after a warm-up, random weights, f32");
    println!("| network | batch | ms per batch | images/s |");
    println!("|---|---|---|---|");

    let vae = Vae::<B>::init(&VaeConfig::sdxl(), &device).unwrap();
    let x = Tensor::<B, 4>::random(
        [1, 3, vae_size, vae_size],
        Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let secs = time(reps, || {
        let _ = vae.encode(x.clone()).mean.into_data();
    });
    report(&format!("SDXL-VAE encode {vae_size}x{vae_size}"), 1, secs);
    let z = Tensor::<B, 4>::random(
        [1, 4, vae_size / 8, vae_size / 8],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let secs = time(reps, || {
        let _ = vae.decode(z.clone()).into_data();
    });
    report(&format!("SDXL-VAE decode {vae_size}x{vae_size}"), 1, secs);
    drop(vae);

    let config = ClipConfig::vit_l_14();
    let clip = ClipModel::<B>::new(&VarBuilder::init(&device), &config, 4.6052).unwrap();
    let batch = 4;
    let pixels = Tensor::<B, 4>::random(
        [batch, 3, 224, 224],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let secs = time(reps, || {
        let _ = clip.image_features(pixels.clone()).into_data();
    });
    report("CLIP ViT-L/14 image tower 224x224", batch, secs);
    let (tb, tl) = (16, 77);
    let ids: Vec<i64> = (0..tb * tl)
        .map(|i| match i % tl {
            0 => 49406,
            k if k == tl - 1 => 49407,
            k => (k * 131 % 40000) as i64,
        })
        .collect();
    let mask = vec![1i64; tb * tl];
    let secs = time(reps, || {
        let _ = clip.text_features(&ids, &mask, [tb, tl]).into_data();
    });
    report("CLIP ViT-L/14 text tower, 77 tokens (prompts/s)", tb, secs);
    drop(clip);

    let net =
        FidInception::<B>::new(&VarBuilder::generated(Rc::new(formula_weights), &device)).unwrap();
    let batch = 8;
    let images = Tensor::<B, 4>::random(
        [batch, 3, 299, 299],
        Distribution::Uniform(0.0, 1.0),
        &device,
    );
    let secs = time(reps, || {
        let _ = net.forward(images.clone()).into_data();
    });
    report("FID Inception-v3 pool3 299x299", batch, secs);
}
