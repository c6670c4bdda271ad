//! What the Study tab reads on the worker threads: a study's blind monitor, and its analysis
//! once unblinded (written to `<study>/analysis/` as `flowlens study analyze` does).

use std::path::{Path, PathBuf};

use flowlens_experiments::study::analyze::Summary;
use flowlens_experiments::study::files::StudyDir;
use flowlens_experiments::study::monitor::Monitor;
use flowlens_experiments::study::{analyze, lock, monitor, outputs};

/// What the worker found for a study: the blind monitor, and the analysis once unblinded.
pub struct StudyInfo {
    pub dir: PathBuf,
    pub locked: bool,
    pub monitor: Option<Monitor>,
    pub error: Option<String>,
    pub summary: Option<Summary>,
}

/// Reads a study's blind monitor (and runs the analysis when `analyze` and unblinded).
pub fn study_info(dir: &Path, analyze_it: bool) -> StudyInfo {
    let study = StudyDir::new(dir);
    let locked = study.lock().is_file();
    let mut info = StudyInfo {
        dir: dir.to_path_buf(),
        locked,
        monitor: None,
        error: None,
        summary: None,
    };
    if !locked {
        return info;
    }
    match monitor::monitor(dir) {
        Ok(m) => info.monitor = Some(m),
        Err(e) => info.error = Some(format!("{e:#}")),
    }
    if analyze_it && lock::is_unblinded(&study) {
        let run = || -> anyhow::Result<Summary> {
            let s = analyze::analyze(dir)?;
            let spec = flowlens_experiments::study::design::StudyToml::read(&study.toml())?;
            outputs::write_all(&study.analysis(), &s, &spec, &study.read_manifest()?)?;
            Ok(s)
        };
        match run() {
            Ok(s) => info.summary = Some(s),
            Err(e) => info.error = Some(format!("{e:#}")),
        }
    }
    info
}

/// The studies under `<root>/studies/`.
pub fn studies_under(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root.join("studies"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("manifest.json").is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
