//! Writes a synthetic run with a feature store of the paper's grid size, with the repository's own
//! store writer, for the CKA grid benchmark (tools/bench/cka_grid.sh, docs/PERFORMANCE.md):
//!
//! `cargo run --release -p flowlens-experiments --example grid_store -- DIR [steps] [prompts] [width] [layers]`
//!
//! DIR becomes a run (a manifest) holding the store `probes-bench`: taps `enc.text`,
//! `enc.noise` and `llm.hLL.image` for LL in 1..=layers (default 23), `steps` solver steps
//! (default 5), seed 0, `prompts` rows (default 2000) of `width` features (default 2048), f32.
//! The values are uniform in [-0.5, 0.5) plus a shared low-rank signal, from a fixed generator.

use std::path::PathBuf;

use anyhow::{Context, Result};
use flowlens_core::checkpoint::Weights;
use flowlens_core::flow::TapPooling;
use flowlens_core::run::{Manifest, RunDir};
use flowlens_core::store::{
    ProbeDtype, SeedRows, StoreHeader, StoreMode, StoreName, StorePaths, StoreWriter,
};

/// SplitMix64: a small fixed generator (the values only need to be reproducible).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn arg(i: usize, default: usize) -> Result<usize> {
    std::env::args()
        .nth(i)
        .map_or(Ok(default), |a| a.parse().context("a size"))
}

fn main() -> Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: grid_store DIR [steps] [prompts] [width] [layers]")?,
    );
    let (steps, prompts, width, layers) = (arg(2, 5)?, arg(3, 2000)?, arg(4, 2048)?, arg(5, 23)?);
    let run = RunDir::create(&dir)?;
    run.write_manifest(&Manifest::new(
        &serde_json::json!({"synthetic": "grid benchmark"}),
        vec![0],
        "cpu",
    ))?;
    let mut taps = vec!["enc.text".to_string(), "enc.noise".to_string()];
    taps.extend((1..=layers).map(|l| format!("llm.h{l:02}.image")));
    let paths = StorePaths::new(&dir, StoreName::new("probes-bench")?);
    let mut writer = StoreWriter::create(
        paths,
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts: (0..prompts).map(|i| format!("prompt {i}")).collect(),
            times: (0..steps).map(|k| k as f32 / steps as f32).collect(),
            cfg: 1.0,
            pooling: TapPooling::Mean,
            dtype: ProbeDtype::F32,
            checkpoint_step: 0,
            weights: Weights::Ema,
            tap_steps: None,
        },
    )?;
    let rank = 8;
    let mut rng = Rng(7);
    let signal: Vec<f32> = (0..prompts * rank).map(|_| rng.next_f32()).collect();
    let mut rows = SeedRows::new(0, prompts);
    for step in 0..steps {
        for tap in &taps {
            let proj: Vec<f32> = (0..rank * width).map(|_| rng.next_f32()).collect();
            let mut x = vec![0f32; prompts * width];
            for (i, row) in x.chunks_exact_mut(width).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    let s: f32 = (0..rank)
                        .map(|r| signal[i * rank + r] * proj[r * width + j])
                        .sum();
                    *v = rng.next_f32() + s;
                }
            }
            rows.add(tap, step, 0, &x, width);
        }
    }
    writer.write_seed(rows)?;
    println!(
        "{}: store probes-bench, {} taps x {steps} steps, {prompts} x {width}",
        dir.display(),
        taps.len()
    );
    Ok(())
}
