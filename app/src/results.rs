//! The Results tab's read model: the experiment directories below the runs folder (those with
//! `ablation/`, `exp1/`, `exp2/` results or `grid/*.json`) and, for the one shown, the sections
//! `flowlens report` writes (`flowlens_experiments::report::sections`: the same tables, intervals,
//! null verdicts and warnings), with every figure rendered in memory. Computed on a worker; the
//! report's own files are never written or needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use eframe::egui::ColorImage;
use flowlens_analysis::figures::render_rgb;
use flowlens_experiments::report::blocks::{Artifact, Block};
use flowlens_experiments::report::{holds_results, sections};

/// Folders that never hold an experiment directory (not descended into).
const NOT_EXPERIMENTS: &[&str] = &[
    "ablation",
    "exp1",
    "exp2",
    "grid",
    "report",
    "checkpoints",
    "samples",
    "eval",
    "figures",
    "tables",
];

/// How deep below the runs folder experiment directories are looked for.
const DEPTH: usize = 3;

/// Scale of the figures as the tab shows them (their logical size is 900 x 600).
const FIGURE_SCALE: f64 = 1.0;

/// One experiment directory's results, ready to draw.
pub struct ExperimentResults {
    pub dir: PathBuf,
    pub blocks: Vec<Block>,
    /// Figures by stem and images by path, as the blocks name them.
    pub images: BTreeMap<String, ColorImage>,
}

/// The experiment directories at or below `root` (at most [`DEPTH`] levels), sorted.
pub fn experiment_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        if holds_results(&dir) {
            found.push(dir.clone());
        }
        if depth == DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            let skip = NOT_EXPERIMENTS.contains(&name.as_str())
                || name.starts_with('.')
                || name.starts_with("probes")
                || path.join("metrics.jsonl").is_file();
            if path.is_dir() && !skip {
                stack.push((path, depth + 1));
            }
        }
    }
    found.sort();
    found
}

/// The report's sections of `dir` with their figures and images decoded; paths below the runs
/// folder `root` read relative to it, as everywhere in the lab.
pub fn load(dir: &Path, root: &Path) -> Result<ExperimentResults, String> {
    let sections = sections(dir).map_err(|e| format!("{e:#}"))?;
    let prefix = format!("{}/", root.display());
    let rel = |text: &str| text.replace(&prefix, "");
    let mut blocks = Vec::new();
    let mut images = BTreeMap::new();
    for s in sections {
        for a in &s.artifacts {
            match a {
                Artifact::Figure { stem, figure } => {
                    let (w, h, rgb) = render_rgb(figure, FIGURE_SCALE)
                        .map_err(|e| format!("figure {stem}: {e}"))?;
                    images.insert(
                        stem.clone(),
                        ColorImage::from_rgb([w as usize, h as usize], &rgb),
                    );
                }
                Artifact::Bytes { path, bytes } => {
                    let img = image::load_from_memory(bytes)
                        .map_err(|e| format!("image {path}: {e}"))?
                        .to_rgba8();
                    images.insert(
                        path.clone(),
                        ColorImage::from_rgba_unmultiplied(
                            [img.width() as usize, img.height() as usize],
                            img.as_raw(),
                        ),
                    );
                }
                Artifact::Table { .. } | Artifact::Text { .. } => {}
            }
        }
        blocks.extend(s.blocks.into_iter().map(|b| {
            match b {
                Block::Heading(level, text) => Block::Heading(level, rel(&text)),
                Block::Para(text) => Block::Para(rel(&text)),
                Block::Table { header, rows } => Block::Table {
                    header,
                    rows: rows
                        .iter()
                        .map(|r| r.iter().map(|c| rel(c)).collect())
                        .collect(),
                },
                other => other,
            }
        }));
    }
    Ok(ExperimentResults {
        dir: dir.to_path_buf(),
        blocks,
        images,
    })
}

/// How a table cell reads: a null verdict's colour class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Above,
    Below,
    Indistinguishable,
    None,
}

/// The verdict a report cell states, if any (the report's wording, analysis::inference).
pub fn verdict_of(cell: &str) -> Verdict {
    if cell.contains("above the null") {
        Verdict::Above
    } else if cell.contains("below the null") {
        Verdict::Below
    } else if cell.contains("not distinguishable") {
        Verdict::Indistinguishable
    } else {
        Verdict::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_the_report_wording() {
        assert_eq!(
            verdict_of("+0.41 [0.38, 0.44], above the null (p = 0.002)"),
            Verdict::Above
        );
        assert_eq!(verdict_of("below the null (p = 0.01)"), Verdict::Below);
        assert_eq!(
            verdict_of("not distinguishable from the null (p = 0.4)"),
            Verdict::Indistinguishable
        );
        assert_eq!(verdict_of("0.23"), Verdict::None);
    }

    #[test]
    fn experiment_directories_are_found_below_the_root_and_runs_are_not_descended_into() {
        let root = tempfile::tempdir().unwrap();
        let exp = root.path().join("demo");
        std::fs::create_dir_all(exp.join("exp1")).unwrap();
        std::fs::write(exp.join("exp1/results.json"), "{}").unwrap();
        let other = root.path().join("sweeps/lr");
        std::fs::create_dir_all(other.join("grid")).unwrap();
        std::fs::write(other.join("grid/enc.json"), "{}").unwrap();
        // A run directory (metrics.jsonl) is not looked into, whatever it holds.
        let run = root.path().join("single");
        std::fs::create_dir_all(run.join("exp1")).unwrap();
        std::fs::write(run.join("metrics.jsonl"), "").unwrap();
        std::fs::write(run.join("exp1/results.json"), "{}").unwrap();
        assert_eq!(experiment_dirs(root.path()), vec![exp, other]);
    }
}
