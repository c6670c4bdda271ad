//! The blind monitor (`flowlens study status`, and the lab's Study panel while blind): what can
//! be known without the key. Progress per rater, coverage of every main screen, gold accuracy,
//! the share of left answers and response times. Never reads key.json.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::files::StudyDir;
use super::ratings;

#[derive(Debug, Clone, Serialize)]
pub struct RaterProgress {
    pub rater: String,
    pub answered: usize,
    pub assigned: usize,
    pub gold: usize,
    pub gold_correct: usize,
    pub left: usize,
    pub decisive: usize,
    pub median_rt_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Monitor {
    pub locked: bool,
    pub unblinded: bool,
    pub raters: Vec<RaterProgress>,
    /// Main screens (item x criterion) answered by nobody yet, and the least and most ratings
    /// any main screen has.
    pub unrated_screens: usize,
    pub min_ratings: usize,
    pub max_ratings: usize,
    pub text: String,
}

/// The blind monitor of a locked study.
pub fn monitor(root: &Path) -> Result<Monitor> {
    let study = StudyDir::open(root)?;
    let lock = study.require_lock("status")?;
    let spec = super::lock::check_locked(&study, &lock)?;
    let manifest = study.read_manifest()?;
    let answers = ratings::load(&study, &spec, &manifest, &lock, None)?;
    let mut coverage: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &manifest.raters {
        for t in r.tasks.iter().filter(|t| t.kind == "main") {
            coverage
                .entry((t.item.clone(), t.criterion.clone()))
                .or_insert(0);
        }
    }
    let mut raters = Vec::new();
    for r in &manifest.raters {
        let got = answers.iter().find(|a| a.rater == r.code);
        let mut p = RaterProgress {
            rater: r.code.clone(),
            answered: 0,
            assigned: r.tasks.len(),
            gold: 0,
            gold_correct: 0,
            left: 0,
            decisive: 0,
            median_rt_ms: None,
        };
        if let Some(a) = got {
            p.answered = a.answers.len();
            p.median_rt_ms = ratings::median_rt_ms(a.answers.values());
            for j in a.answers.values() {
                match j.kind.as_str() {
                    "gold" => {
                        p.gold += 1;
                        p.gold_correct += ratings::gold_correct(&manifest, j) as usize;
                    }
                    "main" => {
                        *coverage
                            .entry((j.item.clone(), j.criterion.clone()))
                            .or_insert(0) += 1;
                        if j.choice == "left" || j.choice == "right" {
                            p.decisive += 1;
                            p.left += (j.choice == "left") as usize;
                        }
                    }
                    _ => {}
                }
            }
        }
        raters.push(p);
    }
    let unrated = coverage.values().filter(|&&c| c == 0).count();
    let min = coverage.values().copied().min().unwrap_or(0);
    let max = coverage.values().copied().max().unwrap_or(0);
    let mut text = format!(
        "study `{}`: {} raters, {} main screens ({} not rated yet; ratings per screen {min}-{max})\n",
        manifest.study_id,
        manifest.raters.len(),
        coverage.len(),
        unrated
    );
    let _ = writeln!(text, "rater  answered  gold correct  left share  median rt");
    for p in &raters {
        let _ = writeln!(
            text,
            "{:<6} {:>4}/{:<4} {:>6}/{:<5} {:>10} {:>8}",
            p.rater,
            p.answered,
            p.assigned,
            p.gold_correct,
            p.gold,
            if p.decisive > 0 {
                format!("{:.2}", p.left as f64 / p.decisive as f64)
            } else {
                "-".into()
            },
            p.median_rt_ms.map_or("-".into(), |m| format!("{m} ms"))
        );
    }
    Ok(Monitor {
        locked: true,
        unblinded: super::lock::is_unblinded(&study),
        raters,
        unrated_screens: unrated,
        min_ratings: min,
        max_ratings: max,
        text,
    })
}
