//! The experiment report's section for a preference study kept beside the experiments
//! (`<experiment dir>/study`, as `flowlens demo` writes it): the methods paragraph, the
//! results table with clustered intervals, and Figure 4; a link to the study's own report.

use std::path::Path;

use anyhow::Result;

use super::analyze::Summary;
use super::design::StudyToml;
use super::files::{StudyDir, read_json};
use crate::report::blocks::{Block, Section};

/// The section, when `dir/study` holds an analysed study.
pub fn section(dir: &Path, prefix: &str) -> Result<Option<Section>> {
    let study = StudyDir::new(dir.join("study"));
    let summary_path = study.analysis().join("summary.json");
    if !summary_path.is_file() {
        return Ok(None);
    }
    let s: Summary = read_json(&summary_path)?;
    let spec = StudyToml::read(&study.toml())?;
    let manifest = study.read_manifest()?;
    let mut out = Section::new(prefix);
    let mut blocks = vec![
        Block::Heading(2, format!("Human preference study `{}`", s.study_id)),
        Block::Para(super::outputs::methods(&s, &spec, &manifest)),
        Block::Table {
            header: [
                "criterion",
                "comparison",
                "A / tie / B (%)",
                "win rate (%)",
                "cluster CI",
                "primary p",
                "naive p (independent votes)",
            ]
            .map(String::from)
            .to_vec(),
            rows: s
                .pairs
                .iter()
                .map(|p| {
                    let (a, t, b) = p.shares.unwrap_or((f64::NAN, f64::NAN, f64::NAN));
                    vec![
                        p.criterion.clone(),
                        format!("{} vs {}", p.a, p.b),
                        format!("{:.1} / {:.1} / {:.1}", 100.0 * a, 100.0 * t, 100.0 * b),
                        p.win_rate
                            .map_or("–".into(), |w| format!("{:.1}", 100.0 * w)),
                        p.cluster_ci.map_or("–".into(), |i| {
                            format!("[{:.1}, {:.1}]", 100.0 * i.lower, 100.0 * i.upper)
                        }),
                        p.holm_p
                            .or(p.sign_flip_p)
                            .map_or("–".into(), |x| format!("{x:.4}")),
                        p.naive_p.map_or("–".into(), |x| format!("{x:.4}")),
                    ]
                })
                .collect(),
        },
    ];
    let figure = study.analysis().join("figure_preference.png");
    if let Ok(bytes) = std::fs::read(&figure) {
        let path = out.png("study_preference.png", bytes);
        blocks.push(Block::Image {
            path,
            caption: "Preference shares (bars) and the win rate among decisive votes with its two-way cluster bootstrap interval (whiskers).".into(),
        });
    }
    blocks.push(Block::Para(format!(
        "Every table, the rater table and the diagnostics: {}.",
        study.analysis().join("report.md").display()
    )));
    Ok(Some(out.with(blocks)))
}
