//! `flowlens report`: the results of the experiment commands (`ablation/results.json`,
//! `exp1/results.json`, `exp2/results.json`, `grid/*.json` under each experiment directory)
//! rendered as a paper's material: every figure as PNG and SVG (the analysis crate's figure
//! code), every table as CSV and LaTeX, `index.md` and `index.html`, and `manifest.json`
//! (git revisions, config hashes, seeds, versions, devices, compute time). Nothing in the output
//! depends on when or where the report is made, so the same inputs give the same files.
//!
//! Each protocol's section lives beside the protocol (`ablation/report.rs`, `exp1/report.rs`,
//! ...) and returns its [`blocks::Section`]; this module writes the sections' files and renders
//! the whole ([`render`]).

pub mod blocks;
pub mod render;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flowlens_analysis::figures::save;
use flowlens_analysis::tables::{write_csv, write_text};
use serde::Serialize;

use crate::io::{read_json, write_json};
use crate::report::blocks::{Artifact, Block, Section};
use crate::report::render::{html, markdown};

/// One run's provenance in the report manifest.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct RunProvenance {
    run: String,
    config_hash: String,
    git_revision: Option<String>,
    seeds: Vec<u64>,
    crate_versions: std::collections::BTreeMap<String, String>,
    device: String,
    train_seconds: Option<f64>,
    eval_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct ReportManifest {
    format: &'static str,
    flowlens_version: &'static str,
    inputs: Vec<InputFile>,
    runs: Vec<RunProvenance>,
    /// Compute time of the training runs (optimiser steps + evaluations), from their metrics.
    total_train_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
struct InputFile {
    path: String,
    /// FNV-1a 64 of the file's bytes.
    fnv1a64: String,
}

fn input_file(path: &Path) -> Result<InputFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(InputFile {
        path: path.display().to_string(),
        fnv1a64: format!("{:016x}", flowlens_core::fsutil::fnv1a64(&bytes)),
    })
}

fn provenance(run: &str, times: Option<(f64, f64)>) -> Option<RunProvenance> {
    let m = flowlens_core::run::RunDir::open(run)
        .ok()?
        .manifest()
        .ok()?;
    Some(RunProvenance {
        run: run.to_string(),
        config_hash: m.config_hash,
        git_revision: m.git_revision,
        seeds: m.seeds,
        crate_versions: m.crate_versions,
        device: m.device,
        train_seconds: times.map(|t| t.0),
        eval_seconds: times.map(|t| t.1),
    })
}

/// The experiment results `flowlens report` reads in an experiment directory.
const RESULT_FILES: [&str; 3] = [
    "ablation/results.json",
    "exp1/results.json",
    "exp2/results.json",
];

/// Whether `dir` is an experiment directory with results to report (one of [`RESULT_FILES`] or
/// a `grid/*.json`).
pub fn holds_results(dir: &Path) -> bool {
    RESULT_FILES.iter().any(|f| dir.join(f).is_file())
        || std::fs::read_dir(dir.join("grid")).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
}

/// The report's sections of one experiment directory, computed from its results without
/// writing anything: what the lab's Results tab shows (same tables, verdicts and figures as
/// `flowlens report`).
pub fn sections(dir: &Path) -> Result<Vec<Section>> {
    experiment_sections(dir, "", &mut Vec::new(), &mut Vec::new())
}

/// Renders the sections of one experiment directory into `out` (file names prefixed with
/// `prefix`); returns the blocks and the inputs read.
fn experiment_sections(
    dir: &Path,
    prefix: &str,
    runs: &mut Vec<RunProvenance>,
    inputs: &mut Vec<InputFile>,
) -> Result<Vec<Section>> {
    // A bare results file (`flowlens report DIR/exp1/results.json` style) is not an experiment
    // directory: say what is expected.
    if !holds_results(dir) {
        bail!(
            "{} holds no experiment results (ablation/results.json, exp1/results.json, \
             exp2/results.json or grid/*.json); run `flowlens ablation|exp1|exp2|grid` first",
            dir.display()
        );
    }
    let mut sections = Vec::new();
    let path = dir.join(RESULT_FILES[0]);
    if path.exists() {
        inputs.push(input_file(&path)?);
        let r: crate::ablation::analyse::Results = read_json(&path)?;
        for x in &r.runs {
            if let Some(p) = provenance(&x.run, Some((x.train_seconds, x.eval_seconds))) {
                runs.push(p);
            }
        }
        sections.push(crate::ablation::report::section(&r, prefix)?);
    }
    let path = dir.join(RESULT_FILES[1]);
    if path.exists() {
        inputs.push(input_file(&path)?);
        sections.push(crate::exp1::report::section(&read_json(&path)?, prefix)?);
    }
    let path = dir.join(RESULT_FILES[2]);
    if path.exists() {
        inputs.push(input_file(&path)?);
        let r: crate::exp2::analyse::Results = read_json(&path)?;
        for c in &r.conditions {
            // The store is `<run>/probes-exp2`: the run is its parent.
            if let Some(run) = Path::new(&c.run).parent()
                && let Some(p) = provenance(&run.display().to_string(), None)
                && !runs.iter().any(|x| x.run == p.run)
            {
                runs.push(p);
            }
        }
        sections.push(crate::exp2::report::section(&r, prefix)?);
    }
    let grid_dir = dir.join("grid");
    if grid_dir.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&grid_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            inputs.push(input_file(&path)?);
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            sections.push(crate::grid::report::section(
                &read_json(&path)?,
                prefix,
                &name,
            )?);
        }
    }
    if let Some(study) = crate::study::section::section(dir, prefix)? {
        sections.push(study);
    }
    Ok(sections)
}

/// Writes a section's files under the report folder `root`.
fn write_artifacts(root: &Path, artifacts: &[Artifact]) -> Result<()> {
    let (figures, tables) = (root.join("figures"), root.join("tables"));
    for a in artifacts {
        match a {
            Artifact::Figure { stem, figure } => {
                save(figure, &figures, stem)?;
            }
            Artifact::Table {
                stem,
                table,
                caption,
            } => {
                std::fs::create_dir_all(&tables)?;
                write_csv(&table.to_dataframe()?, &tables.join(format!("{stem}.csv")))?;
                write_text(
                    &table.to_latex(Some(caption), Some(&format!("tab:{stem}")))?,
                    &tables.join(format!("{stem}.tex")),
                )?;
            }
            Artifact::Text { path, text } => {
                let path = root.join(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_text(text, &path)?;
            }
            Artifact::Bytes { path, bytes } => {
                let path = root.join(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                flowlens_core::fsutil::write_atomic(&path, bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// `flowlens report DIRS... --out OUT`: writes OUT/index.md, index.html, figures/, tables/,
/// manifest.json. Returns the index path.
pub fn write_report(dirs: &[PathBuf], out_dir: &Path) -> Result<PathBuf> {
    if dirs.is_empty() {
        bail!("give at least one experiment directory");
    }
    // Files of an earlier report are replaced, not mixed with the new ones.
    for sub in ["figures", "tables"] {
        let p = out_dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot clear {}", p.display()))?;
        }
    }
    let mut blocks = Vec::new();
    let mut runs = Vec::new();
    let mut inputs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let prefix = if dirs.len() > 1 {
            format!("e{i}_")
        } else {
            String::new()
        };
        if dirs.len() > 1 {
            blocks.push(Block::Heading(
                2,
                format!("Experiment directory `{}`", dir.display()),
            ));
        }
        for section in experiment_sections(dir, &prefix, &mut runs, &mut inputs)? {
            write_artifacts(out_dir, &section.artifacts)?;
            blocks.extend(section.blocks);
        }
    }
    let total: f64 = runs
        .iter()
        .map(|r| r.train_seconds.unwrap_or(0.0) + r.eval_seconds.unwrap_or(0.0))
        .sum();
    let mut revisions: Vec<String> = runs.iter().filter_map(|r| r.git_revision.clone()).collect();
    revisions.sort();
    revisions.dedup();
    blocks.push(Block::Heading(2, "Reproducibility".into()));
    blocks.push(Block::Para(format!(
        "flowlens {}; git revisions of the runs: {}; {} runs, {:.1} min of training and \
         evaluation compute. Every run's config hash, seeds, versions and device are in \
         `manifest.json`; the inputs' checksums too.",
        env!("CARGO_PKG_VERSION"),
        if revisions.is_empty() {
            "unknown".into()
        } else {
            revisions.join(", ")
        },
        runs.len(),
        total / 60.0
    )));
    let title = "flowlens report";
    std::fs::create_dir_all(out_dir)?;
    write_text(&markdown(title, &blocks), &out_dir.join("index.md"))?;
    write_text(&html(title, &blocks), &out_dir.join("index.html"))?;
    write_json(
        &out_dir.join("manifest.json"),
        &ReportManifest {
            format: "flowlens.report.v1",
            flowlens_version: env!("CARGO_PKG_VERSION"),
            inputs,
            runs,
            total_train_seconds: total,
        },
    )?;
    Ok(out_dir.join("index.md"))
}
