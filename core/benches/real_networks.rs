//! Images per second of the real-scale evaluation networks with random weights (run in release;
//! docs/PERFORMANCE.md): the SDXL-VAE (encode and decode), CLIP ViT-L/14 (image and text
//! towers) and the FID Inception-v3 (pool3).
//!
//! `cargo bench -p flowlens-core --bench real_networks [-- QUICK]`; tools/bench/real_networks_torch.py
//! is the PyTorch side. Sizes are arguments: `VAE_SIZE` (default 256), batch sizes below.

use std::rc::Rc;

use burn::tensor::{Distribution, Tensor};
use flowlens_core::clip::{ClipConfig, ClipModel};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::inception::{FidInception, formula_weights};
use flowlens_core::vae::{Vae, VaeConfig};
use flowlens_core::weights::VarBuilder;

mod common;
use common::time;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn report(what: &str, batch: usize, secs: f64) {
    println!(
        "| {what} | {batch} | {:.1} | {:.3} |",
        secs * 1000.0,
        batch as f64 / secs
    );
}

/// Component timings behind the CLIP and Inception numbers (`FLOWLENS_BENCH_ONLY=micro`).
fn micro() {
    use burn::tensor::activation::sigmoid;
    let device = Default::default();
    let vb = VarBuilder::<B>::init(&device);
    let lin = vb.linear("l", 768, 3072, true).unwrap();
    let x3 = Tensor::<B, 3>::random([16, 77, 768], Distribution::Normal(0.0, 1.0), &device);
    let x2 = x3.clone().reshape([16 * 77, 768]);
    let ms = |s: f64| s * 1000.0;
    println!(
        "linear 3d [16,77,768]x[768,3072]: {:.1} ms",
        ms(time(5, || {
            let _ = lin.forward(x3.clone()).into_data();
        }))
    );
    println!(
        "linear 2d [1232,768]x[768,3072]: {:.1} ms",
        ms(time(5, || {
            let _ = lin.forward(x2.clone()).into_data();
        }))
    );
    let h = Tensor::<B, 3>::random([16, 77, 3072], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "quick_gelu [16,77,3072]: {:.1} ms",
        ms(time(5, || {
            let _ = (h.clone() * sigmoid(h.clone() * 1.702)).into_data();
        }))
    );
    println!(
        "x / (1 + exp(-1.702 x)) [16,77,3072]: {:.1} ms",
        ms(time(5, || {
            let _ = (h.clone() / ((h.clone() * -1.702).exp() + 1.0)).into_data();
        }))
    );
    let ln = flowlens_core::nn::blocks::LayerNorm::<B>::new(&vb, "ln", 768, 1e-5).unwrap();
    println!(
        "layer_norm [16,77,768]: {:.1} ms",
        ms(time(5, || {
            let _ = ln.forward(x3.clone()).into_data();
        }))
    );
    let q = Tensor::<B, 4>::random([16, 12, 77, 64], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "sdpa [16,12,77,64]: {:.1} ms",
        ms(time(5, || {
            let _ = flowlens_core::nn::scaled_dot_product_attention(
                q.clone(),
                q.clone(),
                q.clone(),
                None,
            )
            .into_data();
        }))
    );
    let conv = vb.conv2d("c", 192, 192, 3, 1, 1, 1).unwrap();
    let img = Tensor::<B, 4>::random([8, 192, 35, 35], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "conv3x3 192->192 [8,192,35,35]: {:.1} ms",
        ms(time(5, || {
            let _ = conv.forward(img.clone()).into_data();
        }))
    );
    let conv1 = vb.conv2d("c1", 192, 192, 1, 1, 0, 1).unwrap();
    println!(
        "conv1x1 192->192 [8,192,35,35]: {:.1} ms",
        ms(time(5, || {
            let _ = conv1.forward(img.clone()).into_data();
        }))
    );
    let x17 = Tensor::<B, 4>::random([8, 160, 17, 17], Distribution::Normal(0.0, 1.0), &device);
    for (name, k, p) in [("1x7", [1, 7], [0, 3]), ("7x1", [7, 1], [3, 0])] {
        let c = flowlens_core::inception::BasicConv2d::new(&vb, name, 160, 160, k, 1, p).unwrap();
        println!(
            "BasicConv2d {name} 160->160 [8,160,17,17]: {:.1} ms",
            ms(time(5, || {
                let _ = c.forward(x17.clone()).into_data();
            }))
        );
    }
    let stem =
        flowlens_core::inception::BasicConv2d::new(&vb, "stem", 32, 64, [3, 3], 1, [1, 1]).unwrap();
    let s147 = Tensor::<B, 4>::random([8, 32, 147, 147], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "BasicConv2d 3x3 32->64 [8,32,147,147]: {:.1} ms",
        ms(time(5, || {
            let _ = stem.forward(s147.clone()).into_data();
        }))
    );
    let m147 = Tensor::<B, 4>::random([8, 64, 147, 147], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "max_pool3x3 s2 [8,64,147,147]: {:.1} ms",
        ms(time(5, || {
            let _ = burn::tensor::module::max_pool2d(
                m147.clone(),
                [3, 3],
                [2, 2],
                [0, 0],
                [1, 1],
                false,
            )
            .into_data();
        }))
    );
    let stem1 =
        flowlens_core::inception::BasicConv2d::new(&vb, "stem1", 3, 32, [3, 3], 2, [0, 0]).unwrap();
    let i299 = Tensor::<B, 4>::random([8, 3, 299, 299], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "BasicConv2d 3x3 s2 3->32 [8,3,299,299]: {:.1} ms",
        ms(time(5, || {
            let _ = stem1.forward(i299.clone()).into_data();
        }))
    );
    let stem2 = flowlens_core::inception::BasicConv2d::new(&vb, "stem2", 32, 32, [3, 3], 1, [0, 0])
        .unwrap();
    let i149 = Tensor::<B, 4>::random([8, 32, 149, 149], Distribution::Normal(0.0, 1.0), &device);
    println!(
        "BasicConv2d 3x3 32->32 [8,32,149,149]: {:.1} ms",
        ms(time(5, || {
            let _ = stem2.forward(i149.clone()).into_data();
        }))
    );
    {
        use flowlens_core::inception::{
            InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, PoolKind,
        };
        let g = VarBuilder::<B>::generated(Rc::new(formula_weights), &device);
        let r = |s: [usize; 4]| Tensor::<B, 4>::random(s, Distribution::Uniform(0.0, 1.0), &device);
        let a = InceptionA::new(&g.pp("Mixed_5b"), 192, 32).unwrap();
        let xa = r([8, 192, 35, 35]);
        println!(
            "InceptionA [8,192,35,35]: {:.1} ms",
            ms(time(3, || {
                let _ = a.forward(xa.clone()).into_data();
            }))
        );
        let b = InceptionB::new(&g.pp("Mixed_6a"), 288).unwrap();
        let xb = r([8, 288, 35, 35]);
        println!(
            "InceptionB [8,288,35,35]: {:.1} ms",
            ms(time(3, || {
                let _ = b.forward(xb.clone()).into_data();
            }))
        );
        let c = InceptionC::new(&g.pp("Mixed_6b"), 768, 128).unwrap();
        let xc = r([8, 768, 17, 17]);
        println!(
            "InceptionC [8,768,17,17]: {:.1} ms",
            ms(time(3, || {
                let _ = c.forward(xc.clone()).into_data();
            }))
        );
        let d = InceptionD::new(&g.pp("Mixed_7a"), 768).unwrap();
        println!(
            "InceptionD [8,768,17,17]: {:.1} ms",
            ms(time(3, || {
                let _ = d.forward(xc.clone()).into_data();
            }))
        );
        let e = InceptionE::new(&g.pp("Mixed_7b"), 1280, PoolKind::Average).unwrap();
        let xe = r([8, 1280, 8, 8]);
        println!(
            "InceptionE_1 [8,1280,8,8]: {:.1} ms",
            ms(time(3, || {
                let _ = e.forward(xe.clone()).into_data();
            }))
        );
    }
    println!(
        "avg_pool3x3 no-pad-count [8,192,35,35]: {:.1} ms",
        ms(time(5, || {
            let _ =
                burn::tensor::module::avg_pool2d(img.clone(), [3, 3], [1, 1], [1, 1], false, false)
                    .into_data();
        }))
    );
}

/// `FLOWLENS_BENCH_ONLY`: `micro`, or a comma-separated choice of `vae`, `clip` (or one tower:
/// `clip-image`, `clip-text`), `inception`
/// (default: all three).
fn wanted(what: &str) -> bool {
    match std::env::var("FLOWLENS_BENCH_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|w| w.trim() == what),
        _ => true,
    }
}

fn main() {
    if std::env::var("FLOWLENS_BENCH_ONLY").as_deref() == Ok("micro") {
        micro();
        return;
    }
    let vae_size: usize = std::env::var("VAE_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let reps = 3;
    println!("median of {reps} after a warm-up, random weights, f32");
    println!("| network | batch | ms per batch | images/s |");
    println!("|---|---|---|---|");

    if wanted("vae") {
        vae_rows(vae_size, reps);
    }
    if wanted("clip") || wanted("clip-image") || wanted("clip-text") {
        clip_rows(reps);
    }
    if wanted("inception") {
        inception_row(reps);
    }
}

fn vae_rows(vae_size: usize, reps: usize) {
    let device = Default::default();
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
}

fn clip_rows(reps: usize) {
    let device = Default::default();
    let config = ClipConfig::vit_l_14();
    let clip = ClipModel::<B>::new(&VarBuilder::init(&device), &config, 4.6052).unwrap();
    if wanted("clip") || wanted("clip-image") {
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
    }
    if !(wanted("clip") || wanted("clip-text")) {
        return;
    }
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
}

fn inception_row(reps: usize) {
    let device = Default::default();
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
