//! Running `flowlens grid`: the run sampled into `probes-grid` (or an existing store read),
//! the grid computed into `out/grid/<run>_<a>_vs_<b>.json`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::backend::Backend;
use flowlens_core::store::{FeatureStore, StoreName};

use crate::grid::analyse::{Results, analyse};
use crate::io::write_json;
use crate::pipeline::{Log, ensure_sampled, require_trained};
use crate::protocol::ExperimentFile;

/// `flowlens grid`: samples `run` into `probes-grid` when `store` is not given, computes the
/// grid, writes `out/grid/<name>.json`.
pub fn run<B: Backend>(
    file: &ExperimentFile,
    run: &Path,
    store: Option<&str>,
    device: &B::Device,
    log: &Log,
) -> Result<(PathBuf, Results)> {
    let g = &file.grid;
    let opened = match store {
        Some(name) => FeatureStore::open(run, &StoreName::new(name)?)?,
        None => {
            require_trained(run, "the grid's")?;
            ensure_sampled::<B>(
                run,
                "probes-grid",
                &g.probing,
                &[g.a.clone(), g.b.clone()],
                None,
                g.pooling,
                device,
                log,
            )?
        }
    };
    log.say(format!("grid: {} vs {}", g.a, g.b));
    let results = analyse(&opened, &g.a, &g.b, g.estimator, &g.probing.seeds)?;
    // The run's last two path components (`both/seed0`) name it.
    let run_name: Vec<String> = run
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let run_name: Vec<&str> = run_name.iter().rev().map(String::as_str).collect();
    let name: String = format!("{}_{}_vs_{}", run_name.join("-"), g.a, g.b)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = file.out.join("grid").join(format!("{name}.json"));
    write_json(&path, &results)?;
    Ok((path, results))
}
