//! The demo's human preference study (STUDY.md 5.8): two of the demo's trained systems, eight
//! shapes prompts, twelve simulated raters (one careless), from generation to Figure 4
//! through the same commands a researcher runs: new, lock, export-html, simulate, import,
//! unblind, analyze. The ratings are simulated and every output says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use flowlens_core::device::DeviceSpec;

use super::design::{StudyToml, SystemSpec};
use super::files::StudyDir;
use super::generate::{self, Secret};
use super::simulate::{self, SimulationSpec};
use super::{analyze, lock, outputs, page, ratings};

const SHAPES: &str = include_str!("../../../assets/prompts/shapes.txt");

/// Runs the study into `out/study` (reused when its analysis is there); returns its report.
pub fn demo_study(
    out: &Path,
    systems: [(&str, PathBuf); 2],
    device: DeviceSpec,
    show: bool,
) -> Result<PathBuf> {
    let dir = out.join("study");
    let study = StudyDir::new(&dir);
    let report = study.analysis().join("report.md");
    if report.is_file() {
        return Ok(report);
    }
    if dir.exists() {
        // An interrupted study is derived data: made again from the runs.
        std::fs::remove_dir_all(&dir)?;
    }
    let prompts = out.join("study-prompts.txt");
    let eight: Vec<&str> = SHAPES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(8)
        .collect();
    std::fs::write(&prompts, eight.join("\n") + "\n")?;
    let specs = systems
        .iter()
        .map(|(name, run)| {
            Ok(SystemSpec {
                name: name.to_string(),
                run: Some(std::path::absolute(run)?.display().to_string()),
                checkpoint: "latest".into(),
                weights: "ema".into(),
                images: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut spec = StudyToml::new(
        "demo-study",
        specs,
        &std::path::absolute(&prompts)?.display().to_string(),
        12,
    );
    spec.analysis.expected_share = 0.7;
    if show {
        eprintln!(
            "study: a preference study of {} vs {} with 12 simulated raters",
            systems[0].0, systems[1].0
        );
    }
    generate::create(&dir, &spec, out, device, Secret::FromSeed, false)?;
    lock::lock(&dir)?;
    page::export(
        &dir,
        &study.html().join("study.html"),
        false,
        page::PageImages::Png,
    )?;
    let truth = simulate::simulate(
        &dir,
        &SimulationSpec {
            share: BTreeMap::from([
                ("aesthetics".to_string(), 0.55),
                ("prompt_following".to_string(), 0.7),
            ]),
            sd_prompt: 0.8,
            sd_rater: 0.3,
            left_bias: 0.05,
            tie: 0.1,
            bad_raters: 1,
            seed: 1,
        },
        &dir.join("simulated"),
    )?;
    ratings::import(&dir, &truth.files)?;
    lock::unblind(&dir)?;
    let s = analyze::analyze(&dir)?;
    let manifest = study.read_manifest()?;
    outputs::write_all(&study.analysis(), &s, &spec, &manifest)?;
    if show {
        for p in &s.pairs {
            eprintln!(
                "study {} {} vs {}: win rate {} {} (simulated raters)",
                p.criterion,
                p.a,
                p.b,
                p.win_rate.map_or("-".into(), |w| format!("{w:.3}")),
                p.cluster_ci
                    .map_or("-".into(), |i| format!("[{:.3}, {:.3}]", i.lower, i.upper))
            );
        }
    }
    Ok(report)
}
