//! What the Study tab does off the UI thread: the studies under `<runs>/studies/`, a study's
//! blind monitor, unblinding and the analysis (written to `<study>/analysis/` as
//! `flowlens study analyze` does) run as worker jobs; a rater's answers go to the session file
//! through one writer thread per sitting, in order, each synced before the next.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use flowlens_experiments::study::analyze::Summary;
use flowlens_experiments::study::blind::BlindView;
use flowlens_experiments::study::files::StudyDir;
use flowlens_experiments::study::monitor::Monitor;
use flowlens_experiments::study::page::Judgment;
use flowlens_experiments::study::{analyze, lock, monitor, outputs};

/// What the worker found for a study: the blind monitor, and the analysis once unblinded.
pub struct StudyInfo {
    pub dir: PathBuf,
    pub locked: bool,
    pub monitor: Option<Monitor>,
    pub error: Option<String>,
    pub summary: Option<Summary>,
}

/// What a study job does besides reading the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudyAction {
    Read,
    Analyze,
    /// Open the key (audit log), then analyze.
    UnblindAndAnalyze,
}

/// Reads a study's blind monitor, after the action.
pub fn study_info(dir: &Path, action: StudyAction) -> StudyInfo {
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
    if action == StudyAction::UnblindAndAnalyze
        && let Err(e) = lock::unblind(dir)
    {
        info.error = Some(format!("{e:#}"));
    }
    match monitor::monitor(dir) {
        Ok(m) => info.monitor = Some(m),
        Err(e) => info.error = Some(format!("{e:#}")),
    }
    let written = study.analysis().join("summary.json");
    if action == StudyAction::Read && lock::is_unblinded(&study) && written.is_file() {
        // The last analysis, as `study analyze` wrote it (Analyze runs it again).
        match flowlens_experiments::study::files::read_json::<Summary>(&written) {
            Ok(s) => info.summary = Some(s),
            Err(e) => info.error = Some(format!("{e:#}")),
        }
    }
    if action != StudyAction::Read && lock::is_unblinded(&study) {
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

/// A rater's blind view opened on a worker (`request` tells requests apart).
pub struct OpenedView {
    pub request: u64,
    pub view: Result<BlindView, String>,
}

/// Appends a sitting's answers to its session file on its own thread, in order; the file is
/// created with the first answer.
pub struct SessionWriter {
    tx: Sender<Judgment>,
    errors: Receiver<String>,
    pending: Arc<AtomicUsize>,
}

impl SessionWriter {
    pub fn start(view: &BlindView) -> Self {
        let (tx, rx) = channel::<Judgment>();
        let (err_tx, errors) = channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let left = Arc::clone(&pending);
        let view = view.clone();
        std::thread::Builder::new()
            .name("flowlens-lab-session".into())
            .spawn(move || {
                let mut session = None;
                for j in rx {
                    let r = (|| -> anyhow::Result<()> {
                        if session.is_none() {
                            session = Some(view.start_session()?);
                        }
                        session.as_mut().expect("created above").append(&j)
                    })();
                    if let Err(e) = r {
                        let _ = err_tx.send(format!("{e:#}"));
                    }
                    left.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .expect("spawning the session writer");
        Self {
            tx,
            errors,
            pending,
        }
    }

    pub fn write(&self, j: Judgment) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(j).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The first write error since the last call.
    pub fn error(&self) -> Option<String> {
        self.errors.try_recv().ok()
    }

    /// Waits until every answer given so far is on disk (tests; leaving the rate mode).
    pub fn flush(&self) {
        while self.pending.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}
