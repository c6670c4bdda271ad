//! A synthetic run holding a feature store, written by the repository's own store writer: the
//! grid benchmark's input (experiments/examples/grid_store.rs, tools/bench/cka_whole_process.sh)
//! and the grid tests'. Values: uniform in [-0.5, 0.5) plus a signal of rank 8 shared by every
//! tap, from a fixed generator (SplitMix64), f32.

use std::path::Path;

use anyhow::Result;
use flowlens_core::checkpoint::Weights;
use flowlens_core::flow::TapPooling;
use flowlens_core::run::{Manifest, RunDir};
use flowlens_core::store::{
    ProbeDtype, SeedRows, StoreHeader, StoreMode, StoreName, StorePaths, StoreWriter,
};

/// What [`write_run`] writes.
#[derive(Debug, Clone)]
pub struct SyntheticStore {
    pub store: String,
    pub taps: Vec<String>,
    pub steps: usize,
    pub seeds: Vec<u64>,
    pub prompts: usize,
    pub width: usize,
}

/// SplitMix64.
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

/// Makes `dir` a run (a manifest) holding the store `s.store`.
pub fn write_run(dir: &Path, s: &SyntheticStore) -> Result<()> {
    let run = RunDir::create(dir)?;
    run.write_manifest(&Manifest::new(
        &serde_json::json!({"synthetic": s.store}),
        s.seeds.clone(),
        "cpu",
    ))?;
    let mut writer = StoreWriter::create(
        StorePaths::new(dir, StoreName::new(&s.store)?),
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts: (0..s.prompts).map(|i| format!("prompt {i}")).collect(),
            times: (0..s.steps).map(|k| k as f32 / s.steps as f32).collect(),
            cfg: 1.0,
            pooling: TapPooling::Mean,
            dtype: ProbeDtype::F32,
            checkpoint_step: 0,
            weights: Weights::Ema,
            tap_steps: None,
        },
    )?;
    let (rank, n, w) = (8, s.prompts, s.width);
    let mut rng = Rng(7);
    for &seed in &s.seeds {
        let signal: Vec<f32> = (0..n * rank).map(|_| rng.next_f32()).collect();
        let mut rows = SeedRows::new(seed, n);
        for step in 0..s.steps {
            for tap in &s.taps {
                let proj: Vec<f32> = (0..rank * w).map(|_| rng.next_f32()).collect();
                let mut x = vec![0f32; n * w];
                for (i, row) in x.chunks_exact_mut(w).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        let sig: f32 = (0..rank)
                            .map(|r| signal[i * rank + r] * proj[r * w + j])
                            .sum();
                        *v = rng.next_f32() + sig;
                    }
                }
                rows.add(tap, step, 0, &x, w);
            }
        }
        writer.write_seed(rows)?;
    }
    Ok(())
}
