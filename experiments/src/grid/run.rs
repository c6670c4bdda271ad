//! Running `flowlens grid`: the run sampled into `probes-grid` (or an existing store read),
//! the grids computed into `out/grid/<run>_<a>_vs_<b>.json`, one file per row tap `a`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::backend::Backend;
use flowlens_core::store::{FeatureStore, StoreName};

use crate::grid::analyse::{Results, analyse, split_taps};
use crate::io::write_json;
use crate::pipeline::{Log, ensure_sampled, require_trained};
use crate::protocol::ExperimentFile;

/// `flowlens grid`: samples `run` into `probes-grid` when `store` is not given, computes the
/// grid of every row tap, writes each to `out/grid/<name>.json`.
pub fn run<B: Backend>(
    file: &ExperimentFile,
    run: &Path,
    store: Option<&str>,
    device: &B::Device,
    log: &Log,
) -> Result<Vec<(PathBuf, Results)>> {
    let g = &file.grid;
    let opened = match store {
        Some(name) => FeatureStore::open(run, &StoreName::new(name)?)?,
        None => {
            require_trained(run, "the grid's")?;
            ensure_sampled::<B>(
                run,
                flowlens_core::checkpoint::CheckpointChoice::Latest,
                "probes-grid",
                &g.probing,
                &split_taps(&g.a)
                    .chain(split_taps(&g.b))
                    .map(String::from)
                    .collect::<Vec<_>>(),
                None,
                g.pooling,
                device,
                log,
            )?
        }
    };
    log.say(format!("grid: {} vs {}", g.a, g.b));
    let grids = analyse(&opened, &g.a, &g.b, g.estimator, &g.probing.seeds)?;
    // The run's last two path components (`both/seed0`) name it.
    let run_name: Vec<String> = run
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let run_name: Vec<&str> = run_name.iter().rev().map(String::as_str).collect();
    grids
        .into_iter()
        .map(|results| {
            let name: String = format!("{}_{}_vs_{}", run_name.join("-"), results.a, g.b)
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
        })
        .collect()
}
