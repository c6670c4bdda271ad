//! The runs folder as the app sees it: every run directory below it (docs/RUN_FORMAT.md), grouped
//! by the experiment folder it belongs to (`demo / ablation`), with its status, configuration,
//! manifest and feature stores. Scanning reads files only; it runs on a worker thread.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use flowlens_core::checkpoint;
use flowlens_core::run::{LOCK, LockHolder, MetricRecord, RUN_FORMAT_VERSION, RunDir, RunLock};
use flowlens_core::store::{FeatureStore, StoreManifest, StoreName};
use serde_json::Value;

/// Folders inside a run that never hold another run (not descended into).
const RUN_PARTS: &[&str] = &["checkpoints", "samples", "report", "figures", "tables"];

/// Seconds since a run's metrics were last written for a run without a writer lock (written by
/// an older flowlens) to count as running; a run with a lock file is running exactly while its
/// writer holds the lock.
pub const LIVE_SECONDS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Its writer holds the run's lock (or a child of this app is running it).
    Running,
    /// Reached its step budget.
    Finished,
    /// Stopped before its budget (interrupted, killed): `--resume` continues it.
    Stopped,
    /// Stopped on a non-finite loss (`nan_diagnosis.json`) or its child exited with an error.
    Crashed,
    /// No training step logged yet.
    Empty,
    /// A run directory of another format version than this flowlens reads.
    Unsupported,
}

impl RunStatus {
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Stopped => "stopped",
            RunStatus::Crashed => "crashed",
            RunStatus::Empty => "empty",
            RunStatus::Unsupported => "unsupported format",
        }
    }
}

/// A feature store (`probes*/`) of a run.
#[derive(Debug, Clone)]
pub struct StoreInfo {
    pub name: String,
    pub manifest: StoreManifest,
    /// x_t previews were saved (`--previews`) for its first seed.
    pub previews: bool,
}

/// One run directory.
#[derive(Debug, Clone)]
pub struct RunEntry {
    pub path: PathBuf,
    /// The experiment folder and protocol it belongs to (`demo/ablation`), or the folder that
    /// holds it relative to the runs root (`.` at the top).
    pub group: String,
    /// Its name inside the group (`both/seed0`).
    pub name: String,
    pub manifest: Value,
    pub config: Value,
    pub variant: String,
    pub preset: String,
    pub steps_total: Option<u64>,
    pub last_step: Option<u64>,
    /// The newest complete checkpoint (`checkpoints/step-N`).
    pub checkpoint: Option<u64>,
    pub last_loss: Option<f64>,
    pub status: RunStatus,
    pub modified: Option<SystemTime>,
    pub stores: Vec<StoreInfo>,
    /// `probes*/cka_live.json` files (streaming CKA of `flowlens sample --cka-pairs`, present
    /// while a store is still being written).
    pub live_cka: Vec<PathBuf>,
    /// The latest `samples/grid-step*.png`.
    pub latest_grid: Option<PathBuf>,
    pub nan_diagnosis: Option<Value>,
    /// The process writing the run now (holding its lock), if any.
    pub writer: Option<LockHolder>,
}

impl RunEntry {
    pub fn label(&self) -> String {
        format!("{} / {}", self.group, self.name)
    }

    pub fn store(&self, name: &str) -> Option<&StoreInfo> {
        self.stores.iter().find(|s| s.name == name)
    }
}

/// Every run below `root`, sorted by group then name. Unreadable folders are skipped, never an
/// error: a run being created may lack its config for a moment.
pub fn scan(root: &Path) -> std::io::Result<Vec<RunEntry>> {
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} is not a folder: pass --runs DIR (a folder of run directories, e.g. runs/demo)",
                root.display()
            ),
        ));
    }
    let mut runs = Vec::new();
    visit(root, root, 0, &mut runs);
    runs.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    Ok(runs)
}

fn visit(root: &Path, dir: &Path, depth: usize, out: &mut Vec<RunEntry>) {
    if depth > 7 {
        return;
    }
    if dir.join(RunDir::MANIFEST).is_file() && dir.join(RunDir::CONFIG).is_file() {
        if let Some(run) = read_run(root, dir) {
            out.push(run);
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && !StoreName::is_store_folder(name)
                && !name.contains(".partial")
                && !RUN_PARTS.contains(&name)
        })
        .collect();
    dirs.sort();
    for d in dirs {
        visit(root, &d, depth + 1, out);
    }
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Group and name of a run: the nearest ancestor holding an `experiment.toml` plus the protocol
/// folder below it form the group (`demo/ablation`), the rest is the name (`both/seed0`).
fn group_and_name(root: &Path, dir: &Path) -> (String, String) {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    for i in (0..parts.len().saturating_sub(1)).rev() {
        let ancestor: PathBuf = root.join(parts[..i].iter().collect::<PathBuf>());
        if ancestor.join("experiment.toml").is_file() && i + 1 < parts.len() {
            let mut group: Vec<&str> = parts[..i].iter().map(String::as_str).collect();
            group.push(&parts[i]);
            let group = group.join("/");
            return (group, parts[i + 1..].join("/"));
        }
    }
    match parts.split_last() {
        Some((name, [])) => (".".into(), name.clone()),
        Some((name, parent)) => (parent.join("/"), name.clone()),
        None => (".".into(), root.display().to_string()),
    }
}

fn read_run(root: &Path, dir: &Path) -> Option<RunEntry> {
    let manifest = read_json(&dir.join(RunDir::MANIFEST))?;
    let config = read_json(&dir.join(RunDir::CONFIG)).unwrap_or(Value::Null);
    let (group, name) = group_and_name(root, dir);
    let metrics = dir.join(RunDir::METRICS);
    let modified = std::fs::metadata(&metrics).and_then(|m| m.modified()).ok();
    let (last_step, last_loss) = last_step_record(&metrics);
    let steps_total = config.get("steps").and_then(Value::as_u64);
    let nan_diagnosis = read_json(&dir.join("nan_diagnosis.json"));
    let writer = RunLock::holder(dir);
    let recently = !dir.join(LOCK).exists()
        && modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|d| d < Duration::from_secs(LIVE_SECONDS));
    let format_ok =
        manifest.get("format_version").and_then(Value::as_u64) == Some(RUN_FORMAT_VERSION as u64);
    let checkpoint = latest_checkpoint(dir);
    // Step records are numbered from 0; the checkpoint folder names count steps done.
    let done = checkpoint.max(last_step.map(|s| s + 1));
    let finished = matches!((done, steps_total), (Some(s), Some(t)) if s >= t);
    let status = if !format_ok {
        RunStatus::Unsupported
    } else if writer.is_some() {
        RunStatus::Running
    } else if nan_diagnosis.is_some() {
        RunStatus::Crashed
    } else if finished {
        RunStatus::Finished
    } else if recently {
        RunStatus::Running
    } else if last_step.is_none() {
        RunStatus::Empty
    } else {
        RunStatus::Stopped
    };
    Some(RunEntry {
        path: dir.to_path_buf(),
        group,
        name,
        variant: config
            .get("variant")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        preset: config
            .get("preset")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        manifest,
        config,
        steps_total,
        last_step,
        checkpoint,
        last_loss,
        status,
        modified,
        stores: stores(dir),
        live_cka: live_cka_files(dir),
        latest_grid: latest_grid(dir),
        nan_diagnosis,
        writer,
    })
}

/// The feature stores of a run: `probes*/` folders with a readable manifest.
pub fn stores(dir: &Path) -> Vec<StoreInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<StoreInfo> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !StoreName::is_store_folder(&name) || !e.path().is_dir() {
                return None;
            }
            let store = FeatureStore::open(dir, &StoreName::new(&name).ok()?).ok()?;
            let seed = store.manifest.seeds.first().copied().unwrap_or(0);
            let previews = store.previews(seed).is_dir();
            Some(StoreInfo {
                name,
                manifest: store.manifest,
                previews,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The newest complete checkpoint's step (a `.partial` folder is an unfinished one).
pub fn latest_checkpoint(dir: &Path) -> Option<u64> {
    checkpoint::list(dir).last().map(|c| c.0 as u64)
}

fn live_cka_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| StoreName::new(&e.file_name().to_string_lossy()).ok())
        .filter(|name| StoreName::is_store_folder(name.as_str()))
        .map(|name| flowlens_core::store::StorePaths::new(dir, name).live_cka())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn latest_grid(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir.join("samples")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("grid-step") && n.ends_with(".png"))
        })
        .max()
}

/// The step and loss of the last complete training record of `metrics.jsonl`, read from its
/// tail only.
fn last_step_record(path: &Path) -> (Option<u64>, Option<f64>) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (None, None);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return (None, None);
    }
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        return (None, None);
    }
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return (None, None),
    };
    for line in complete.lines().rev() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let MetricRecord::Step(r) = MetricRecord::from_value(v) {
            return (Some(r.step as u64), Some(r.loss));
        }
    }
    (None, None)
}

/// Visits every leaf of a JSON value with its dotted path (`a.b.c`; array items as `a.0` when
/// they are objects or arrays, else the array is one leaf).
pub fn walk_leaves(value: &Value, visit: &mut impl FnMut(&str, &Value)) {
    fn go(prefix: &str, v: &Value, visit: &mut impl FnMut(&str, &Value)) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    go(&key(k), v, visit);
                }
            }
            Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                for (i, v) in items.iter().enumerate() {
                    go(&key(&i.to_string()), v, visit);
                }
            }
            other => visit(prefix, other),
        }
    }
    go("", value, visit);
}

/// A JSON value flattened to `a.b.c -> value`.
pub fn flatten(value: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk_leaves(value, &mut |k, v| {
        out.insert(k.to_string(), v.to_string());
    });
    out
}

/// One row of a configuration comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffRow {
    pub key: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

impl DiffRow {
    pub fn differs(&self) -> bool {
        self.a != self.b
    }
}

/// Two configurations side by side, key by key.
pub fn diff(a: &Value, b: &Value) -> Vec<DiffRow> {
    let (fa, fb) = (flatten(a), flatten(b));
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| DiffRow {
            key: k.clone(),
            a: fa.get(k).cloned(),
            b: fb.get(k).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_diff_lists_changed_added_and_removed_keys() {
        let a = json!({"lr": 0.001, "prior": {"steps": 300}, "variant": "both"});
        let b = json!({"lr": 0.001, "prior": {"steps": 200}, "seed": 1});
        let rows = diff(&a, &b);
        let changed: Vec<&str> = rows
            .iter()
            .filter(|r| r.differs())
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(changed, ["prior.steps", "seed", "variant"]);
        assert!(!rows.iter().find(|r| r.key == "lr").unwrap().differs());
    }

    #[test]
    fn runs_inside_an_experiment_folder_are_grouped_by_protocol() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("demo/ablation/both/seed0")).unwrap();
        std::fs::write(root.path().join("demo/experiment.toml"), "").unwrap();
        let (g, n) = group_and_name(root.path(), &root.path().join("demo/ablation/both/seed0"));
        assert_eq!((g.as_str(), n.as_str()), ("demo/ablation", "both/seed0"));
        let (g, n) = group_and_name(root.path(), &root.path().join("tiny-both"));
        assert_eq!((g.as_str(), n.as_str()), (".", "tiny-both"));
    }
}
