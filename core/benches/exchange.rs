//! The gradient average of data-parallel training on the CPU (issue 16, docs/PERFORMANCE.md):
//! seconds per optimiser step spent averaging every trainable parameter's gradient (stage 2,
//! the LLM's included) across 2 replicas in one process, at the `tiny` and `small` presets
//! (`FLOWLENS_BENCH_ONLY=tiny` or `small` for one).
//!
//! `cargo bench -p flowlens-core --bench exchange`

use burn::backend::Autodiff;
use burn::module::Module;
use flowlens_core::device::{CpuBackend, on_compute_pool};
use flowlens_core::flow::{FlowConfig, FlowModel, Preset, Variant};
use flowlens_core::train::parallel::timing::time_average;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let only = std::env::var("FLOWLENS_BENCH_ONLY").unwrap_or_default();
    println!(
        "| preset (variant both) | trainable parameters | gradient buffer | seconds per step, 2 CPU replicas (median of 5 after 1 warm-up) |"
    );
    println!("|---|---|---|---|");
    for (name, preset) in [("tiny", Preset::Tiny), ("small", Preset::Small)] {
        if !only.is_empty() && only != name {
            continue;
        }
        let c = FlowConfig::of(preset, Variant::Both);
        let device = Default::default();
        let model = FlowModel::<Autodiff<CpuBackend>>::init(&c, &device);
        let params = model.num_params();
        let mut times = on_compute_pool(|| time_average(&model, &device, 2, 6)).expect("timed");
        times.remove(0);
        times.sort_by(f64::total_cmp);
        println!(
            "| {name} | {params} | {:.1} MB | {:.4} |",
            params as f64 * 4.0 / 1e6,
            times[times.len() / 2]
        );
    }
}
