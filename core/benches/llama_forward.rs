//! Llama backbone throughput on the CPU backends (run in release; see docs/PERFORMANCE.md).
//!
//! `cargo bench -p flowlens-core --features ndarray --bench llama_forward`
//!
//! 1. forward throughput (tokens/s) of the small test config and of a 4-layer slice at
//!    TinyLlama-1.1B width, next to tools/bench/llama_forward.py (PyTorch);
//! 2. forward and forward+backward on flex and on ndarray, to choose the default backend.

use std::time::Instant;

// Burn allocates a fresh buffer for most ops; glibc's malloc returns large ones to the kernel and
// page-faults them back in every time (measured: 22 ms -> 14.5 ms per small Llama forward).
mod common;
use common::median;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use flowlens_core::llm::{HiddenRequest, Llama, LlamaConfig};

fn ids<B: Backend>(vocab: usize, b: usize, s: usize, device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = (0..b * s)
        .map(|i| ((i * 7919 + 13) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(data, [b, s]), device)
}

/// Median seconds of `step(model, last_hidden_state)` after one forward pass, over `reps` runs
/// after a warm-up.
fn time_step<B: Backend>(
    c: &LlamaConfig,
    b: usize,
    s: usize,
    reps: usize,
    step: impl Fn(&Llama<B>, Tensor<B, 3>),
) -> f64 {
    let device = B::Device::default();
    let model = Llama::<B>::init(c, &device);
    let x = ids::<B>(c.vocab_size, b, s, &device);
    let run = || {
        let t = Instant::now();
        let out = model
            .forward_ids(x.clone(), None, &HiddenRequest::none())
            .unwrap();
        step(&model, out.last_hidden_state.unwrap());
        t.elapsed().as_secs_f64()
    };
    run();
    median((0..reps).map(|_| run()).collect())
}

/// Median seconds of one forward pass.
fn forward_time<B: Backend>(c: &LlamaConfig, b: usize, s: usize, reps: usize) -> f64 {
    time_step::<B>(c, b, s, reps, |_, h| {
        std::hint::black_box(h.sum().into_scalar());
    })
}

/// Median seconds of forward + backward (loss = mean square of the last hidden state).
fn train_step_time<B: AutodiffBackend>(c: &LlamaConfig, b: usize, s: usize, reps: usize) -> f64 {
    time_step::<B>(c, b, s, reps, |model, h| {
        let loss = h.square().mean();
        let grads = loss.backward();
        let g = model.embed_tokens.grad(&grads).unwrap();
        std::hint::black_box(g.sum().into_scalar());
    })
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("threads available: {threads}");
    println!("\n## forward throughput (flex, f32)");
    println!(
        "| config | batch x seq | flex median ms | flex tokens/s | ndarray median ms | ndarray tokens/s |"
    );
    println!("|---|---|---|---|---|---|");
    let cases = [
        (
            "small_test (d=64, 2 layers)",
            LlamaConfig::small_test(512),
            8,
            128,
            20,
        ),
        (
            "TinyLlama width, 4 layers",
            LlamaConfig::tiny_llama_slice(4),
            1,
            128,
            5,
        ),
        (
            "TinyLlama width, 4 layers",
            LlamaConfig::tiny_llama_slice(4),
            4,
            128,
            3,
        ),
    ];
    for (name, c, b, s, reps) in cases {
        let secs = forward_time::<burn::backend::Flex>(&c, b, s, reps);
        #[cfg(feature = "ndarray")]
        let nd = {
            let nd = forward_time::<burn_ndarray::NdArray<f32>>(&c, b, s, reps);
            format!("{:.2} | {:.0}", nd * 1e3, (b * s) as f64 / nd)
        };
        #[cfg(not(feature = "ndarray"))]
        let nd = "- | -".to_string();
        println!(
            "| {name} | {b} x {s} | {:.2} | {:.0} | {nd} |",
            secs * 1e3,
            (b * s) as f64 / secs
        );
    }

    println!("\n## forward + backward, Autodiff-wrapped (choice of the default CPU backend)");
    let base = LlamaConfig::small_test(1024);
    let d128 = LlamaConfig {
        hidden_size: 128,
        intermediate_size: 344,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 32,
        ..base.clone()
    };
    let d512 = LlamaConfig {
        hidden_size: 512,
        intermediate_size: 1376,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        head_dim: 64,
        num_hidden_layers: 4,
        ..base
    };
    println!("| config | batch x seq | flex median ms | ndarray median ms |");
    println!("|---|---|---|---|");
    for (name, c, b, s, reps) in [
        ("d=128, 2 layers", &d128, 8, 64, 30),
        ("d=512, 4 layers", &d512, 4, 128, 10),
        (
            "TinyLlama width, 2 layers",
            &LlamaConfig::tiny_llama_slice(2),
            1,
            64,
            3,
        ),
    ] {
        let flex = train_step_time::<Autodiff<burn::backend::Flex>>(c, b, s, reps);
        #[cfg(feature = "ndarray")]
        let nd = format!(
            "{:.1}",
            1e3 * train_step_time::<Autodiff<burn_ndarray::NdArray<f32>>>(c, b, s, reps)
        );
        #[cfg(not(feature = "ndarray"))]
        let nd = "(build with --features ndarray)".to_string();
        println!("| {name} | {b} x {s} | {:.1} | {nd} |", flex * 1e3);
    }
}
