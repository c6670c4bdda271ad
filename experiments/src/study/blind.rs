//! What a rating session may hold: one rater's screens (opaque image ids, prompt texts,
//! criterion questions) and their answers so far, read from the manifest and study.toml
//! without keeping anything that names a system, a run, a path or a checkpoint. The lab's rate
//! mode works from this alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use super::design::StudyToml;
use super::files::StudyDir;
use super::page::Judgment;
use super::ratings::Session;

/// One screen as a rater sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub seq: usize,
    pub item: String,
    pub kind: String,
    pub criterion: String,
    pub question: String,
    /// The prompt, or `None` when the criterion hides it.
    pub prompt: Option<String>,
    pub left: PathBuf,
    pub right: PathBuf,
    pub left_id: String,
    pub right_id: String,
}

/// A rater's blind view of a locked study.
#[derive(Debug, Clone)]
pub struct BlindView {
    pub root: PathBuf,
    pub study_id: String,
    pub manifest_sha256: String,
    pub rater: String,
    pub responses: Vec<String>,
    pub min_view_ms: u64,
    pub title: String,
    pub screens: Vec<Screen>,
    /// seq -> the answer that counts (the last one).
    pub answers: BTreeMap<usize, Judgment>,
}

impl BlindView {
    /// Opens `rater`'s view of the locked study at `root`, with the answers already in
    /// `ratings/` (lab sessions and imported page files of this rater).
    pub fn open(root: &Path, rater: &str) -> Result<Self> {
        let study = StudyDir::open(root)?;
        let lock = study.require_lock("rating")?;
        let spec: StudyToml = super::lock::check_locked(&study, &lock)?;
        let manifest = study.read_manifest()?;
        let rater = rater.trim().to_uppercase();
        let assignment = manifest.rater(&rater).with_context(|| {
            format!(
                "`{rater}` is not a rater code of this study (check the code's five characters)"
            )
        })?;
        let screens = assignment
            .tasks
            .iter()
            .map(|t| {
                let c = spec
                    .criteria
                    .iter()
                    .find(|c| c.id == t.criterion)
                    .context("a task names an unknown criterion")?;
                Ok(Screen {
                    seq: t.seq,
                    item: t.item.clone(),
                    kind: t.kind.clone(),
                    criterion: t.criterion.clone(),
                    question: c.question.clone(),
                    prompt: c
                        .show_prompt
                        .then(|| manifest.prompt_of(&t.item).map(|p| p.text.clone()))
                        .flatten(),
                    left: study.image(&t.left),
                    right: study.image(&t.right),
                    left_id: t.left.clone(),
                    right_id: t.right.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // This rater's answers so far, validated against the assignment like any import.
        let answers = super::ratings::load(&study, &spec, &manifest, &lock, Some(&rater))?
            .pop()
            .map(|r| r.answers)
            .unwrap_or_default();
        // Everything that named systems (spec, manifest) is dropped here.
        Ok(Self {
            root: root.to_path_buf(),
            study_id: manifest.study_id.clone(),
            manifest_sha256: lock.manifest_sha256.clone(),
            rater,
            responses: spec.protocol.responses.clone(),
            min_view_ms: spec.protocol.min_view_ms,
            title: spec.protocol.title.clone(),
            screens,
            answers,
        })
    }

    /// The first screen without an answer (`None`: all done).
    pub fn next_open(&self) -> Option<usize> {
        self.screens
            .iter()
            .map(|s| s.seq)
            .find(|s| !self.answers.contains_key(s))
    }

    /// Starts the append-only session file of this sitting.
    pub fn start_session(&self) -> Result<Session> {
        Session::create(
            &StudyDir::new(&self.root),
            &self.manifest_sha256,
            &self.study_id,
            &self.rater,
        )
    }

    /// The judgment of an answer to screen `seq` (checked: the screen exists, the choice is a
    /// response of the study).
    pub fn judgment(
        &self,
        seq: usize,
        choice: &str,
        shown_at: i64,
        answered_at: i64,
    ) -> Result<Judgment> {
        let s = self.screens.get(seq).context("no such screen")?;
        ensure!(
            self.responses.iter().any(|r| r == choice),
            "`{choice}` is not a response of this study"
        );
        Ok(Judgment {
            seq,
            item: s.item.clone(),
            kind: s.kind.clone(),
            left: s.left_id.clone(),
            right: s.right_id.clone(),
            criterion: s.criterion.clone(),
            choice: choice.into(),
            shown_at,
            answered_at,
            rt_ms: answered_at - shown_at,
        })
    }

    /// Keeps an answer (the last one of a screen counts).
    pub fn keep(&mut self, j: Judgment) {
        self.answers.insert(j.seq, j);
    }
}
