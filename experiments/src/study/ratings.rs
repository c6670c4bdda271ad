//! Ratings in the study directory: `flowlens study import` (ratings files from the page,
//! validated against the locked manifest and stored whole under `ratings/`), the lab's
//! append-only session files (`ratings/app-<rater>-<time>.jsonl`), and the merged judgments
//! every analysis reads (the last answer per rater and screen wins; undone answers stay in
//! the files).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::design::StudyToml;
use super::files::{Lock, Manifest, StudyDir, write_whole};
use super::page::{Judgment, RatingsPayload};

/// What an import did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub file: PathBuf,
    pub rater: String,
    pub judgments: usize,
    pub complete: bool,
    /// Already imported (an identical file): nothing written.
    pub duplicate: bool,
}

/// Checks a payload against the locked study: study, manifest, rater, every judgment's screen
/// (item, kind, criterion and sides as assigned) and choice. `what` names the file.
pub fn validate(
    payload: &RatingsPayload,
    spec: &StudyToml,
    manifest: &Manifest,
    lock: &Lock,
    what: &str,
) -> Result<()> {
    ensure!(
        payload.study_id == manifest.study_id,
        "{what} belongs to study `{}`, not `{}`",
        payload.study_id,
        manifest.study_id
    );
    ensure!(
        payload.manifest_sha256 == lock.manifest_sha256,
        "{what} was made from another version of this study's manifest (sha256 {}…, this study {}…): it comes from an older or different export",
        &payload
            .manifest_sha256
            .get(..12)
            .unwrap_or(&payload.manifest_sha256),
        &lock.manifest_sha256[..12]
    );
    let rater = manifest.rater(&payload.rater).with_context(|| {
        format!(
            "{what}: rater `{}` is not a rater of this study",
            payload.rater
        )
    })?;
    for (n, j) in payload.judgments.iter().enumerate() {
        let task = rater.tasks.get(j.seq).with_context(|| {
            format!(
                "{what}: judgment {n} has seq {}, but rater {} has {} screens",
                j.seq,
                rater.code,
                rater.tasks.len()
            )
        })?;
        ensure!(
            task.item == j.item
                && task.kind == j.kind
                && task.criterion == j.criterion
                && task.left == j.left
                && task.right == j.right,
            "{what}: judgment {n} (seq {}) does not match the screen rater {} was assigned (item {}, {} on the left): the file was edited or belongs to another assignment",
            j.seq,
            rater.code,
            task.item,
            task.left
        );
        ensure!(
            spec.protocol.responses.contains(&j.choice),
            "{what}: judgment {n} (seq {}) has choice `{}`, not one of {:?}",
            j.seq,
            j.choice,
            spec.protocol.responses
        );
    }
    Ok(())
}

/// `flowlens study import`: validates every file, then stores each valid one whole as
/// `ratings/html-<rater>-<crc32>.json`. A file already imported is reported, not stored again;
/// any invalid file stops the import before anything is written.
pub fn import(root: &Path, files: &[PathBuf]) -> Result<Vec<ImportReport>> {
    let study = StudyDir::open(root)?;
    let lock = study.require_lock("import")?;
    let spec = super::lock::check_locked(&study, &lock)?;
    let manifest = study.read_manifest()?;
    ensure!(!files.is_empty(), "give the ratings files to import");
    let mut checked = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let what = f.display().to_string();
        let payload = RatingsPayload::parse(&text, &what)?;
        validate(&payload, &spec, &manifest, &lock, &what)?;
        let crc = format!("{:08x}", crc32fast::hash(text.as_bytes()));
        let dest = study
            .ratings()
            .join(format!("html-{}-{crc}.json", payload.rater));
        checked.push((f.clone(), text, payload, dest));
    }
    let mut reports = Vec::new();
    for (file, text, payload, dest) in checked {
        let duplicate = dest.is_file();
        if !duplicate {
            write_whole(&dest, text.as_bytes())?;
            study.audit_line(&format!(
                "import: {} -> {} (rater {}, {} judgments)",
                file.display(),
                dest.display(),
                payload.rater,
                payload.judgments.len()
            ))?;
        }
        reports.push(ImportReport {
            file,
            rater: payload.rater,
            judgments: payload.judgments.len(),
            complete: payload.complete,
            duplicate,
        });
    }
    Ok(reports)
}

/// The first line of a lab session file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHeader {
    pub format: String,
    pub study_id: String,
    pub manifest_sha256: String,
    pub rater: String,
}

pub const SESSION_FORMAT: &str = "flowlens-app-session/1";

/// A lab rating session: one JSONL file, appended and synced after every answer.
pub struct Session {
    path: PathBuf,
    file: std::fs::File,
}

impl Session {
    /// Starts a new session file for `rater`.
    pub fn create(
        study: &StudyDir,
        manifest_sha256: &str,
        study_id: &str,
        rater: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(study.ratings())?;
        let stamp = super::files::utc_now().replace([':', '-'], "");
        let path = study.ratings().join(format!("app-{rater}-{stamp}.jsonl"));
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create the session file {}", path.display()))?;
        let header = SessionHeader {
            format: SESSION_FORMAT.into(),
            study_id: study_id.into(),
            manifest_sha256: manifest_sha256.into(),
            rater: rater.into(),
        };
        writeln!(file, "{}", serde_json::to_string(&header)?)?;
        file.sync_all()?;
        Ok(Self { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one answer (an undone answer stays; the next answer of the same screen wins).
    pub fn append(&mut self, j: &Judgment) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(j)?)
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

/// Reads a session file; a torn last line (a crash mid-write) is dropped.
pub fn read_session(path: &Path) -> Result<RatingsPayload> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: SessionHeader = serde_json::from_str(lines.next().unwrap_or_default())
        .with_context(|| format!("{}: the first line is not a session header", path.display()))?;
    ensure!(
        header.format == SESSION_FORMAT,
        "{}: format `{}`, expected `{SESSION_FORMAT}`",
        path.display(),
        header.format
    );
    let rest: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let mut judgments = Vec::new();
    for (i, line) in rest.iter().enumerate() {
        match serde_json::from_str::<Judgment>(line) {
            Ok(j) => judgments.push(j),
            Err(_) if i + 1 == rest.len() && !text.ends_with('\n') => {}
            Err(e) => bail!("{}: line {}: {e}", path.display(), i + 2),
        }
    }
    Ok(RatingsPayload {
        study_id: header.study_id,
        manifest_sha256: header.manifest_sha256,
        page_sha256: String::new(),
        rater: header.rater,
        client: "app".into(),
        user_agent: String::new(),
        viewport: [0, 0],
        complete: false,
        judgments,
    })
}

/// One rater's merged answers: the last answer per screen.
#[derive(Debug, Clone, PartialEq)]
pub struct RaterAnswers {
    pub rater: String,
    /// seq -> the answer that counts.
    pub answers: BTreeMap<usize, Judgment>,
    /// Answers replaced by a later one (undo, or a screen answered in two files).
    pub superseded: usize,
    pub files: Vec<PathBuf>,
    /// `html`, `app` or `simulated` (the last file's).
    pub client: String,
}

/// Whether a gold answer picked the image known to be right (a tie is not).
pub fn gold_correct(manifest: &Manifest, j: &Judgment) -> bool {
    let chosen = match j.choice.as_str() {
        "left" => &j.left,
        "right" => &j.right,
        _ => return false,
    };
    manifest
        .gold_item(&j.item)
        .is_some_and(|g| &g.answer == chosen)
}

/// The median response time of some answers (the upper middle one for an even count).
pub fn median_rt_ms<'a>(answers: impl Iterator<Item = &'a Judgment>) -> Option<i64> {
    let mut rts: Vec<i64> = answers.map(|j| j.rt_ms).collect();
    rts.sort_unstable();
    rts.get(rts.len() / 2).copied()
}

/// Every rater's merged answers from `ratings/` (imported page files and lab sessions), each
/// file validated again; `only` keeps one rater's files (the lab's rate mode). Files are read
/// in name order; within the merge a later answer (by `answered_at`, then file order) replaces
/// an earlier one of the same screen.
pub fn load(
    study: &StudyDir,
    spec: &StudyToml,
    manifest: &Manifest,
    lock: &Lock,
    only: Option<&str>,
) -> Result<Vec<RaterAnswers>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(study.ratings()) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        !name.starts_with('.')
            && (name.ends_with(".json") || name.ends_with(".jsonl"))
            && only.is_none_or(|r| {
                name.starts_with(&format!("app-{r}-")) || name.starts_with(&format!("html-{r}-"))
            })
    });
    files.sort();
    let mut by_rater: BTreeMap<String, RaterAnswers> = BTreeMap::new();
    for f in files {
        let what = f.display().to_string();
        let payload = if what.ends_with(".jsonl") {
            read_session(&f)?
        } else {
            RatingsPayload::parse(&std::fs::read_to_string(&f)?, &what)?
        };
        validate(&payload, spec, manifest, lock, &what)?;
        let entry = by_rater
            .entry(payload.rater.clone())
            .or_insert_with(|| RaterAnswers {
                rater: payload.rater.clone(),
                answers: BTreeMap::new(),
                superseded: 0,
                files: Vec::new(),
                client: String::new(),
            });
        entry.files.push(f.clone());
        entry.client = payload.client.clone();
        for j in payload.judgments {
            match entry.answers.get(&j.seq) {
                Some(old) if old == &j => {}
                Some(old) if old.answered_at > j.answered_at => entry.superseded += 1,
                Some(_) => {
                    entry.superseded += 1;
                    entry.answers.insert(j.seq, j);
                }
                None => {
                    entry.answers.insert(j.seq, j);
                }
            }
        }
    }
    // Raters in manifest order.
    Ok(manifest
        .raters
        .iter()
        .filter_map(|r| by_rater.remove(&r.code))
        .collect())
}
