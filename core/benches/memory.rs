//! Peak memory of real training steps against `flowlens model-info --memory` (issue 16,
//! docs/PERFORMANCE.md): at the tiny and small presets, variant `both`, one stage-2 step
//! (forward, backward, AdamW, the EMA copy) on random latents and captions, twice, each
//! configuration in a fresh process; the peak resident memory above the process's start
//! against the plan's total on the CPU (fused attention).
//!
//! `cargo bench -p flowlens-core --bench memory`

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use flowlens_core::device::{CpuBackend, on_compute_pool};
use flowlens_core::flow::memory::{AttentionKind, plan};
use flowlens_core::flow::rectified::velocity_loss;
use flowlens_core::flow::{FlowConfig, FlowModel, Preset, TapRequest, Variant};
use flowlens_core::nn::precision::Precision;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type A = Autodiff<CpuBackend>;

/// `VmRSS` and `VmHWM` (peak) of this process, bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn step(preset: Preset, batch: usize) -> u64 {
    let (start, _) = rss();
    let c = FlowConfig::of(preset, Variant::Both);
    let device = Default::default();
    let mut model = FlowModel::<A>::init(&c, &device);
    let mut optim = AdamWConfig::new().init::<A, FlowModel<A>>();
    // The EMA copy lives through the steps, as in the trainer.
    let ema = model.valid();
    let s = c.latent_size;
    let tl = c.text_len;
    for _ in 0..2 {
        let z = Tensor::<A, 4>::random(
            [batch, c.latent_channels, s, s],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let target = Tensor::<A, 4>::random(z.dims(), Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<A, 1>::random([batch], Distribution::Uniform(0.0, 1.0), &device);
        let ids: Vec<i64> = (0..batch * tl).map(|i| (3 + i % 200) as i64).collect();
        let ids = Tensor::<A, 2, Int>::from_data(TensorData::new(ids, [batch, tl]), &device);
        let mask = Tensor::<A, 2, Int>::ones([batch, tl], &device);
        let out = model
            .forward(z, t, ids, mask, &TapRequest::none())
            .expect("inputs fit");
        let loss = velocity_loss(out.velocity, target);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }
    std::hint::black_box(&ema);
    let (_, peak) = rss();
    peak.saturating_sub(start)
}

fn main() {
    if let Ok(which) = std::env::var("FLOWLENS_MEMORY_CHILD") {
        let (preset, batch) = match which.as_str() {
            "tiny" => (Preset::Tiny, 16),
            _ => (Preset::Small, 4),
        };
        let bytes = on_compute_pool(|| step(preset, batch));
        println!("{bytes}");
        return;
    }
    let me = std::env::current_exe().expect("the bench binary");
    println!(
        "| preset (variant both) | batch | plan (CPU, f32) | measured peak above start | plan / measured |"
    );
    println!("|---|---|---|---|---|");
    for (name, preset, batch) in [("tiny", Preset::Tiny, 16), ("small", Preset::Small, 4)] {
        let out = std::process::Command::new(&me)
            .env("FLOWLENS_MEMORY_CHILD", name)
            .output()
            .expect("a child process");
        let measured: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let c = FlowConfig::of(preset, Variant::Both);
        let p = plan(&c, batch, 1, Precision::F32, AttentionKind::Fused, 1);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        println!(
            "| {name} | {batch} | {:.0} MiB | {:.0} MiB | {:.2} |",
            mib(p.total),
            mib(measured),
            p.total as f64 / measured.max(1) as f64
        );
    }
}
