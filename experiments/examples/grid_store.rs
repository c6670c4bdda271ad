//! Writes a synthetic run with a feature store of the paper's grid size for the CKA grid
//! benchmark (tools/bench/cka_whole_process.sh, docs/PERFORMANCE.md):
//!
//! `cargo run --release -p flowlens-experiments --example grid_store -- DIR [steps] [prompts] [width] [layers]`
//!
//! DIR becomes a run holding the store `probes-bench`: taps `enc.text`, `enc.noise` and
//! `llm.hLL.image` for LL in 1..=layers (default 23), `steps` solver steps (default 5), seed 0,
//! `prompts` rows (default 2000) of `width` features (default 2048), f32
//! ([`flowlens_experiments::grid::synthetic`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use flowlens_experiments::grid::synthetic::{SyntheticStore, write_run};

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
    let mut taps = vec!["enc.text".to_string(), "enc.noise".to_string()];
    taps.extend((1..=arg(5, 23)?).map(|l| format!("llm.h{l:02}.image")));
    let s = SyntheticStore {
        store: "probes-bench".into(),
        taps,
        steps: arg(2, 5)?,
        seeds: vec![0],
        prompts: arg(3, 2000)?,
        width: arg(4, 2048)?,
    };
    write_run(&dir, &s)?;
    println!(
        "{}: store {}, {} taps x {} steps, {} x {}",
        dir.display(),
        s.store,
        s.taps.len(),
        s.steps,
        s.prompts,
        s.width
    );
    Ok(())
}
