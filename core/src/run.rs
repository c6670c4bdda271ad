//! The run directory: the contract between trainer, sampler, analysis and app (layout in
//! docs/RUN_FORMAT.md). Every file a reader may open while a writer works is either append-only
//! (`metrics.jsonl`) or written under a temporary name and renamed into place (everything else),
//! so readers never see a torn file; a reader of `metrics.jsonl` skips a last line that a killed
//! writer left unfinished.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// Version of the layout described in docs/RUN_FORMAT.md.
pub const RUN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a flowlens run directory ({reason})")]
    NotARun { path: PathBuf, reason: String },
    #[error(
        "{path} already holds a run; pass --resume to continue it or choose another --run folder"
    )]
    Exists { path: PathBuf },
    #[error("{path}: {error}")]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error(
        "{path} is being written by another process ({holder}); two writers would interleave its metrics and overwrite its checkpoints: wait for it to finish or stop it"
    )]
    Locked { path: PathBuf, holder: LockHolder },
    #[error(
        "{path} is a folder that holds other files ({found}) and is not a flowlens run: flowlens would overwrite them; choose an empty or new --run folder"
    )]
    NotEmpty { path: PathBuf, found: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |error| RunError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The file whose lock marks the one process writing a run.
pub const LOCK: &str = "writer.lock";

/// Who holds a run's writer lock (written into the lock file by the holder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    /// The holder's command line.
    pub command: String,
    /// Seconds since the Unix epoch when it took the lock.
    pub since_unix: u64,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid == 0 {
            return f.write_str("a process that is starting");
        }
        write!(f, "pid {}: {}", self.pid, self.command)
    }
}

/// An exclusive lock on a run directory, held for the life of a writer (training, sampling into
/// its feature stores, evaluation): an OS file lock on `writer.lock`, released when the process
/// ends however it ends, so a killed writer never leaves a stale lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the writer lock of the run folder `root` (creating the folder), or says who holds
    /// it. A reader checking liveness holds a shared lock for an instant: that is waited out.
    pub fn acquire(root: &Path) -> Result<Self, RunError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let path = root.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        for attempt in 0..40 {
            match file.try_lock() {
                Ok(()) => {
                    let holder = LockHolder {
                        pid: std::process::id(),
                        command: std::env::args().collect::<Vec<_>>().join(" "),
                        since_unix: unix_now(),
                    };
                    let text = serde_json::to_string(&holder).expect("a holder is JSON");
                    file.set_len(0).map_err(io(&path))?;
                    file.write_all(text.as_bytes()).map_err(io(&path))?;
                    file.flush().map_err(io(&path))?;
                    return Ok(Self { _file: file });
                }
                Err(std::fs::TryLockError::WouldBlock) if attempt < 39 => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(RunError::Locked {
                        path: root.to_path_buf(),
                        holder: read_holder(&path),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Who writes the run in `root` now (`None`: nobody).
    pub fn holder(root: &Path) -> Option<LockHolder> {
        let path = root.join(LOCK);
        let file = File::open(&path).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(std::fs::TryLockError::WouldBlock) => Some(read_holder(&path)),
            Err(std::fs::TryLockError::Error(_)) => None,
        }
    }
}

fn read_holder(path: &Path) -> LockHolder {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(LockHolder {
            pid: 0,
            command: String::new(),
            since_unix: 0,
        })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What produced a run: enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// FNV-1a 64 of the canonical (key-sorted) JSON of the resolved config, hex.
    pub config_hash: String,
    /// `git rev-parse HEAD` of the working directory when available.
    pub git_revision: Option<String>,
    pub seeds: Vec<u64>,
    pub crate_versions: BTreeMap<String, String>,
    pub device: String,
    pub command_line: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

impl Manifest {
    /// A manifest for `config` run with `seeds` on `device`, from this process.
    pub fn new(config: &serde_json::Value, seeds: Vec<u64>, device: &str) -> Self {
        let mut crate_versions = BTreeMap::new();
        crate_versions.insert("flowlens".into(), env!("CARGO_PKG_VERSION").into());
        crate_versions.insert("burn".into(), "0.21.0".into());
        Self {
            format_version: RUN_FORMAT_VERSION,
            config_hash: config_hash(config),
            git_revision: git_revision(),
            seeds,
            crate_versions,
            device: device.into(),
            command_line: std::env::args().collect(),
            created_unix: unix_now(),
        }
    }
}

/// FNV-1a 64 of the canonical JSON text (serde_json's maps are key-sorted).
pub fn config_hash(config: &serde_json::Value) -> String {
    format!(
        "{:016x}",
        crate::fsutil::fnv1a64(config.to_string().as_bytes())
    )
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub const CONFIG: &'static str = "config.json";
    pub const MANIFEST: &'static str = "manifest.json";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const SUBDIRS: [&'static str; 3] = ["checkpoints", "samples", "probes"];

    /// The names a run folder holds before its manifest marks it as a run (what a start that
    /// failed half-way may have left): such a folder can be started again.
    pub const OWN: [&'static str; 8] = [
        LOCK,
        Self::CONFIG,
        Self::METRICS,
        "tokenizer.json",
        "tokenizer_config.json",
        "checkpoints",
        "samples",
        "probes",
    ];

    /// Checks that a new run may start in `root`: the folder is absent, empty, or holds only
    /// what an unfinished start leaves ([`RunDir::OWN`]); a run is [`RunError::Exists`], any
    /// other file is [`RunError::NotEmpty`] (flowlens never overwrites a folder it did not make).
    pub fn check_new(root: &Path) -> Result<(), RunError> {
        if root.join(Self::MANIFEST).exists() {
            return Err(RunError::Exists {
                path: root.to_path_buf(),
            });
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            return Ok(());
        };
        let mut foreign: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !Self::OWN.contains(&n.as_str()))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        foreign.sort();
        let found = if foreign.len() > 3 {
            format!("{}, ... {} in all", foreign[..3].join(", "), foreign.len())
        } else {
            foreign.join(", ")
        };
        Err(RunError::NotEmpty {
            path: root.to_path_buf(),
            found,
        })
    }

    /// Creates a new run (the folder may exist but must not hold a run yet).
    pub fn create(root: impl AsRef<Path>) -> Result<Self, RunError> {
        let root = root.as_ref().to_path_buf();
        Self::check_new(&root)?;
        for sub in Self::SUBDIRS {
            std::fs::create_dir_all(root.join(sub)).map_err(io(&root))?;
        }
        Ok(Self { root })
    }

    /// Opens an existing run, checking its manifest's format version.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, RunError> {
        let root = root.as_ref().to_path_buf();
        let run = Self { root: root.clone() };
        let manifest = run.manifest()?;
        if manifest.format_version != RUN_FORMAT_VERSION {
            return Err(RunError::NotARun {
                path: root,
                reason: format!(
                    "format version {} (this flowlens reads version {RUN_FORMAT_VERSION})",
                    manifest.format_version
                ),
            });
        }
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), RunError> {
        let path = self.path(name);
        let text = serde_json::to_string_pretty(value).map_err(|error| RunError::Json {
            path: path.clone(),
            error,
        })?;
        write_atomic(&path, text.as_bytes()).map_err(io(&path))
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T, RunError> {
        let path = self.path(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RunError::NotARun {
                    path: self.root.clone(),
                    reason: format!("no {name}"),
                }
            } else {
                io(&path)(e)
            }
        })?;
        serde_json::from_str(&text).map_err(|error| RunError::Json { path, error })
    }

    /// Writes the resolved config (atomically).
    pub fn write_config(&self, config: &impl Serialize) -> Result<(), RunError> {
        self.write_json(Self::CONFIG, config)
    }

    pub fn config<T: for<'de> Deserialize<'de>>(&self) -> Result<T, RunError> {
        self.read_json(Self::CONFIG)
    }

    /// Writes the manifest (atomically); its presence marks the folder as a run.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<(), RunError> {
        self.write_json(Self::MANIFEST, manifest)
    }

    pub fn manifest(&self) -> Result<Manifest, RunError> {
        self.read_json(Self::MANIFEST)
    }

    /// The append-only metrics log.
    pub fn metrics_writer(&self) -> Result<MetricsWriter, RunError> {
        let path = self.path(Self::METRICS);
        // A killed writer may have left half a line: end it so the next record starts cleanly.
        let needs_newline = std::fs::read(&path)
            .map(|b| b.last().is_some_and(|&c| c != b'\n'))
            .unwrap_or(false);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if needs_newline {
            file.write_all(b"\n").map_err(io(&path))?;
        }
        Ok(MetricsWriter { path, file })
    }

    /// Every complete metrics record, typed (a torn or malformed line is skipped).
    pub fn read_records(&self) -> Result<Vec<MetricRecord>, RunError> {
        Ok(self
            .read_metrics()?
            .into_iter()
            .map(MetricRecord::from_value)
            .collect())
    }

    /// Every complete metrics record (a torn or malformed line is skipped, as a live reader must).
    pub fn read_metrics(&self) -> Result<Vec<serde_json::Value>, RunError> {
        let path = self.path(Self::METRICS);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io(&path))?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v.is_object()
            {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// One line of `metrics.jsonl`: a training step, an event, or (written by a newer flowlens or by
/// hand) something else, kept as JSON so that readers skip it without failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricRecord {
    Event(Event),
    Step(StepRecord),
    Other(serde_json::Value),
}

/// A training step's record (no `event` field).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    /// The step's mean loss (computed in f32; exact as f64).
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
    pub stage: u8,
    /// Seconds of the step spent averaging the gradients across devices (data-parallel runs
    /// only; the first device's wait included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_s: Option<f64>,
}

/// A record with an `event` field (docs/RUN_FORMAT.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run continued from the checkpoint of `from_step`; the steps after it are logged again.
    Resume { from_step: usize },
    /// The training data, at step 0: the latent cache folder, its items and what was skipped.
    Data {
        cache: PathBuf,
        items: usize,
        skipped: usize,
        skipped_examples: Vec<String>,
    },
    /// The stage-0 language-model prior: its folder, whether it was reused, its report.
    Prior {
        dir: PathBuf,
        reused: bool,
        report: serde_json::Value,
    },
    /// An oracle evaluation of the EMA weights on held-out shapes scenes.
    Eval {
        step: usize,
        adherence: crate::data::Adherence,
        chance: crate::data::Adherence,
        /// Adherence above chance per image, with its SE (absent in runs before it existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        margin: Option<crate::data::Margin>,
        seconds: f64,
    },
    /// A sample grid was written.
    Samples { step: usize, path: PathBuf },
    /// An MJHQ-30k evaluation of checkpoint `step` (`flowlens train --mjhq`).
    EvalMjhq {
        step: usize,
        n: usize,
        fid: f64,
        fid_std: f64,
        clip_score: f64,
        clip_score_std: f64,
    },
}

/// Appends one JSON object per line to `metrics.jsonl`.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricRecord {
    /// A record of a parsed line (anything unknown is [`MetricRecord::Other`]).
    pub fn from_value(value: serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or(MetricRecord::Other(value))
    }
}

impl From<StepRecord> for MetricRecord {
    fn from(r: StepRecord) -> Self {
        MetricRecord::Step(r)
    }
}

impl From<Event> for MetricRecord {
    fn from(e: Event) -> Self {
        MetricRecord::Event(e)
    }
}

impl MetricsWriter {
    /// Appends a typed record, its keys sorted as every line of the file.
    pub fn record(&mut self, record: impl Into<MetricRecord>) -> Result<(), RunError> {
        let value = serde_json::to_value(record.into()).map_err(|error| RunError::Json {
            path: self.path.clone(),
            error,
        })?;
        self.log(&value)
    }

    /// Appends a record (one `write` of the whole line, then a flush to the OS).
    pub fn log(&mut self, record: &serde_json::Value) -> Result<(), RunError> {
        let mut line = record.to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))
    }

    /// Forces the records to disk (call at checkpoints).
    pub fn sync(&mut self) -> Result<(), RunError> {
        self.file.sync_data().map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_is_created_once_and_reopened_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("r")).unwrap();
        let config = json!({"preset": "tiny", "steps": 60});
        run.write_config(&config).unwrap();
        let manifest = Manifest::new(&config, vec![0], "cpu");
        run.write_manifest(&manifest).unwrap();
        assert!(matches!(
            RunDir::create(run.root()),
            Err(RunError::Exists { .. })
        ));
        let again = RunDir::open(run.root()).unwrap();
        assert_eq!(again.manifest().unwrap(), manifest);
        assert_eq!(again.config::<serde_json::Value>().unwrap(), config);
        for sub in RunDir::SUBDIRS {
            assert!(run.path(sub).is_dir());
        }
        let not_a_run = tempfile::tempdir().unwrap();
        assert!(matches!(
            RunDir::open(not_a_run.path()),
            Err(RunError::NotARun { .. })
        ));
    }

    #[test]
    fn typed_records_are_written_as_the_untyped_ones_were_and_read_back() {
        let step = StepRecord {
            step: 3,
            loss: 0.1234567f32 as f64,
            lr: 1e-3,
            grad_norm: 0.5,
            samples_per_s: 20.0,
            stage: 1,
            exchange_s: None,
        };
        let value = serde_json::to_value(MetricRecord::from(step)).unwrap();
        assert_eq!(
            value.to_string(),
            r#"{"grad_norm":0.5,"loss":0.12345670163631439,"lr":0.001,"samples_per_s":20.0,"stage":1,"step":3}"#
        );
        assert_eq!(MetricRecord::from_value(value), MetricRecord::Step(step));
        let resume = serde_json::to_value(MetricRecord::from(Event::Resume { from_step: 4 }));
        assert_eq!(resume.unwrap(), json!({"event": "resume", "from_step": 4}));
        let odd = json!({"event": "from the future", "step": 1});
        assert_eq!(
            MetricRecord::from_value(odd.clone()),
            MetricRecord::Other(odd)
        );
    }

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid_and_the_lock_dies_with_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let holder = RunLock::holder(dir.path()).expect("held");
        assert_eq!(holder.pid, std::process::id());
        let second = RunLock::acquire(dir.path()).unwrap_err();
        let text = second.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(first);
        assert!(RunLock::holder(dir.path()).is_none());
        let _again = RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_folder_with_other_files_is_not_taken_for_a_new_run() {
        let dir = tempfile::tempdir().unwrap();
        RunDir::check_new(&dir.path().join("absent")).unwrap();
        std::fs::write(dir.path().join(RunDir::CONFIG), "{}").unwrap();
        std::fs::write(dir.path().join(LOCK), "").unwrap();
        RunDir::check_new(dir.path()).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), "x").unwrap();
        let e = RunDir::check_new(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("not a flowlens run"),
            "{e}"
        );
    }

    #[test]
    fn config_hash_ignores_key_order_and_sees_values() {
        let a = serde_json::from_str::<serde_json::Value>(r#"{"a": 1, "b": [1, 2]}"#).unwrap();
        let b = serde_json::from_str::<serde_json::Value>(r#"{"b": [1, 2], "a": 1}"#).unwrap();
        let c = serde_json::from_str::<serde_json::Value>(r#"{"b": [1, 3], "a": 1}"#).unwrap();
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&c));
    }

    #[test]
    fn metrics_survive_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let mut w = run.metrics_writer().unwrap();
        for step in 0..3 {
            w.log(&json!({"step": step, "loss": 1.0 / (step + 1) as f64}))
                .unwrap();
        }
        drop(w);
        // A writer killed mid-line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(run.path(RunDir::METRICS))
            .unwrap();
        f.write_all(br#"{"step": 3, "lo"#).unwrap();
        assert_eq!(run.read_metrics().unwrap().len(), 3);
        let mut w = run.metrics_writer().unwrap();
        w.log(&json!({"step": 3, "loss": 0.25})).unwrap();
        let records = run.read_metrics().unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[3]["step"], 3);
    }
}
