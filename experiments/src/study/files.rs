//! The study directory (docs/STUDY_FORMAT.md): its file names, the manifest (the resolved,
//! blind design), the key (which system made which image), the audit log, and the write rule
//! of the run directory (whole files written under a temporary name and renamed; logs
//! appended).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::design::{Prompt, SamplerSpec};

/// The manifest's format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// The paths of a study directory.
#[derive(Debug, Clone)]
pub struct StudyDir {
    pub root: PathBuf,
}

impl StudyDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn toml(&self) -> PathBuf {
        self.root.join("study.toml")
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn key(&self) -> PathBuf {
        self.root.join("key.json")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock.json")
    }
    pub fn unblinded(&self) -> PathBuf {
        self.root.join("unblinded.json")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn image(&self, id: &str) -> PathBuf {
        self.images().join(format!("{id}.png"))
    }
    pub fn html(&self) -> PathBuf {
        self.root.join("html")
    }
    pub fn ratings(&self) -> PathBuf {
        self.root.join("ratings")
    }
    pub fn audit(&self) -> PathBuf {
        self.root.join("audit.log")
    }
    pub fn analysis(&self) -> PathBuf {
        self.root.join("analysis")
    }

    /// Opens an existing study directory (it must hold a manifest).
    pub fn open(root: &Path) -> Result<Self> {
        let dir = Self::new(root);
        if !dir.manifest().is_file() {
            bail!(
                "{} is not a study directory (no manifest.json); create one with `flowlens study new`",
                root.display()
            );
        }
        Ok(dir)
    }

    pub fn read_manifest(&self) -> Result<Manifest> {
        read_json(&self.manifest())
    }

    /// The manifest's sha256 (what ratings files carry).
    pub fn manifest_sha256(&self) -> Result<String> {
        let bytes = std::fs::read(self.manifest())
            .with_context(|| format!("cannot read {}", self.manifest().display()))?;
        Ok(sha256_hex(&bytes))
    }

    pub fn read_lock(&self) -> Result<Option<Lock>> {
        if !self.lock().is_file() {
            return Ok(None);
        }
        read_json(&self.lock()).map(Some)
    }

    /// The lock, or an error telling the user to lock first.
    pub fn require_lock(&self, what: &str) -> Result<Lock> {
        self.read_lock()?.with_context(|| {
            format!(
                "{what} needs a locked study: run `flowlens study lock {}` first (it freezes the design and the pre-registered analysis)",
                self.root.display()
            )
        })
    }

    /// Appends one line to the audit log.
    pub fn audit_line(&self, event: &str) -> Result<()> {
        let who = who();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.audit())
            .with_context(|| format!("cannot append to {}", self.audit().display()))?;
        writeln!(f, "{}\t{who}\t{event}", utc_now())?;
        f.sync_all()?;
        Ok(())
    }
}

/// Who runs this command: `$USER`, `$LOGNAME` or `$USERNAME`, else `unknown`.
pub fn who() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// One system as the manifest records it (provenance; which image it made is in the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemRecord {
    pub name: String,
    /// The run directory or the image folder.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_step: Option<usize>,
    /// sha256 over the checkpoint folder's files (name and bytes, in name order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// `[c, h, w]` of the initial noise (run systems).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_shape: Option<[usize; 3]>,
}

/// A main item: one prompt, one seed, one system pair's two images (in id order, not system
/// order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub prompt: String,
    pub seed: u64,
    pub images: [String; 2],
}

/// A gold item: the answer is known by construction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldItem {
    pub id: String,
    /// The prompt shown with it.
    pub prompt: String,
    pub criterion: String,
    pub images: [String; 2],
    /// The image a careful rater picks.
    pub answer: String,
}

/// One screen of a rater's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub seq: usize,
    pub item: String,
    /// `main`, `gold` or `repeat` (a main item again, sides swapped).
    pub kind: String,
    pub criterion: String,
    pub left: String,
    pub right: String,
}

/// A rater's assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rater {
    pub code: String,
    pub tasks: Vec<Task>,
}

/// `manifest.json`: the resolved design, blind (no image id is tied to a system here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub study_id: String,
    pub study_seed: u64,
    pub flowlens_version: String,
    /// sha256 of the design part of study.toml (everything but `[analysis]`).
    pub design_sha256: String,
    pub systems: Vec<SystemRecord>,
    /// Whether every system's image of a (prompt, seed) started from the same initial noise.
    pub same_noise: bool,
    pub sampler: SamplerSpec,
    pub prompts: Vec<Prompt>,
    pub seeds: Vec<u64>,
    /// Every image of the study: id -> sha256 of its PNG bytes.
    pub images: BTreeMap<String, String>,
    pub image_size: [u32; 2],
    pub items: Vec<Item>,
    pub gold: Vec<GoldItem>,
    pub raters: Vec<Rater>,
    pub created: String,
}

impl Manifest {
    pub fn rater(&self, code: &str) -> Option<&Rater> {
        self.raters.iter().find(|r| r.code == code)
    }
    pub fn prompt(&self, id: &str) -> Option<&Prompt> {
        self.prompts.iter().find(|p| p.id == id)
    }
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }
    pub fn gold_item(&self, id: &str) -> Option<&GoldItem> {
        self.gold.iter().find(|i| i.id == id)
    }
    /// The prompt shown with an item or a gold item.
    pub fn prompt_of(&self, item: &str) -> Option<&Prompt> {
        let id = self
            .item(item)
            .map(|i| &i.prompt)
            .or_else(|| self.gold_item(item).map(|g| &g.prompt))?;
        self.prompt(id)
    }
}

/// What made one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub system: String,
    pub prompt: String,
    pub seed: u64,
    /// `main`, or `degraded` (a gold item's degraded copy).
    pub role: String,
}

/// `key.json`: never embedded, never read while the study is blind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    pub study_id: String,
    /// The HMAC secret of the image ids (hex).
    pub secret: String,
    pub images: BTreeMap<String, KeyEntry>,
}

/// `lock.json`: the frozen study.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    pub toml_sha256: String,
    pub manifest_sha256: String,
    pub locked: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| anyhow::anyhow!("{}: field `{}`: {}", path.display(), e.path(), e.inner()))
}

/// Writes `bytes` to `path` whole: a temporary file in the same folder, synced, renamed.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.partial",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}", path.display())
    })
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_whole(path, text.as_bytes())
}

/// The time now, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
