//! The feature store: the one owner of the probe-store format (docs/RUN_FORMAT.md). A store is a
//! folder of a run (`probes/` for `flowlens sample`, `probes-exp1/` for experiment 1, ...) that
//! holds each requested tap's pooled rows per sampling seed and solver step:
//!
//! - `<store>/<tap>/seed<S>_step<KK>.npy`, f32 or f16 `[n_prompts, width]`;
//! - `<store>/manifest.json` ([`StoreManifest`]), rewritten atomically after each seed: a seed it
//!   lists is complete; files of a seed it does not list yet belong to a seed still being
//!   sampled (readable with [`Seeds::Partial`]);
//! - the images: `samples/seed<S>/<iiii>.png` for `probes`, `<store>/samples/seed<S>/` for the
//!   others, and the decoded `x_t` previews under `.../xt/<iiii>_step<KK>.png`;
//! - `<store>/cka_live.json`: the streaming CKA snapshot ([`LiveCkaSnapshot`]) that
//!   `flowlens sample --cka-pairs` rewrites after every batch.
//!
//! [`StorePaths`] spells every file name, [`StoreWriter`] writes a store seed by seed (from a
//! [`SeedRows`]), [`FeatureStore`] reads one. Nothing outside this module spells a store's file
//! names. [`ProbeObserver`] sees the rows as the sampler produces them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::Weights;
use crate::flow::{TapPooling, TapRequest};

/// The manifest's `format`.
pub const FORMAT: &str = "flowlens.probes.v1";
/// The live snapshot's `format`.
pub const LIVE_FORMAT: &str = "flowlens.cka_live.v1";

const MANIFEST: &str = "manifest.json";
const LIVE: &str = "cka_live.json";
const SAMPLES: &str = "samples";
const PREVIEWS: &str = "xt";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a store name (a plain folder name such as `probes`)")]
    Name(String),
    #[error("{path} does not exist: sample the run with taps first")]
    Missing {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{path} is not a probe manifest")]
    Manifest {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{path}: format `{found}`, this build reads {FORMAT}")]
    Format { path: PathBuf, found: String },
    #[error("{dir}: no tap `{tap}` (the store has {have})")]
    NoTap {
        dir: PathBuf,
        tap: String,
        have: String,
    },
    #[error("{dir}: no tap matches `{pattern}` (the store has {have})")]
    NoMatch {
        dir: PathBuf,
        pattern: String,
        have: String,
    },
    #[error("{dir}: seed {seed} was not sampled (seeds {seeds:?})")]
    NoSeed {
        dir: PathBuf,
        seed: u64,
        seeds: Vec<u64>,
    },
    #[error("{dir}: solver step {step} was not written")]
    NoStep { dir: PathBuf, step: usize },
    #[error("{path}: shape {found:?}, the manifest says {expected:?}")]
    Shape {
        path: PathBuf,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(transparent)]
    Npy(#[from] crate::npy::NpyError),
    #[error("{path}: {reason}")]
    Array { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A store's folder name inside its run: one plain folder name (no separators, not hidden).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StoreName(String);

impl StoreName {
    /// `flowlens sample`'s store; its images are the run's `samples/`.
    pub const SAMPLE: &'static str = "probes";
    /// `flowlens sample --interpolant`'s store.
    pub const INTERPOLANT: &'static str = "probes-interpolant";

    pub fn new(name: &str) -> Result<Self, StoreError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(StoreError::Name(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    /// `probes`.
    pub fn sample() -> Self {
        Self(Self::SAMPLE.into())
    }

    /// `probes-interpolant`.
    pub fn interpolant() -> Self {
        Self(Self::INTERPOLANT.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a folder of a run is named as a store (`probes*`).
    pub fn is_store_folder(name: &str) -> bool {
        name.starts_with(Self::SAMPLE)
    }
}

impl std::fmt::Display for StoreName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for StoreName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        Self::new(s)
    }
}

impl TryFrom<String> for StoreName {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        Self::new(&s)
    }
}

impl From<StoreName> for String {
    fn from(s: StoreName) -> String {
        s.0
    }
}

/// What the rows were computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// Along the Euler sampler's trajectory: step KK is solver step KK (t = KK / steps).
    Sampler,
    /// On interpolants of held-out data: step KK is the KK-th requested time.
    Interpolant,
}

/// Number format of the stored rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeDtype {
    #[default]
    F32,
    F16,
}

/// Which CFG branch the rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    #[default]
    Conditional,
}

/// `<store>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreManifest {
    pub format: String,
    pub mode: StoreMode,
    pub prompts: Vec<String>,
    /// The completed seeds, in sampling order.
    pub seeds: Vec<u64>,
    /// Solver steps (sampler) or times (interpolant).
    pub steps: usize,
    pub times: Vec<f32>,
    pub cfg: f32,
    pub pooling: TapPooling,
    pub branch: Branch,
    pub dtype: ProbeDtype,
    /// Tap name -> width.
    pub taps: BTreeMap<String, usize>,
    pub checkpoint_step: usize,
    pub weights: Weights,
    /// The solver steps that were written (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_steps: Option<Vec<usize>>,
}

/// Every path of one store of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePaths {
    run: PathBuf,
    name: StoreName,
}

impl StorePaths {
    pub fn new(run: impl Into<PathBuf>, name: StoreName) -> Self {
        Self {
            run: run.into(),
            name,
        }
    }

    /// The paths of the store folder `dir` (`<run>/<name>`).
    pub fn of_dir(dir: &Path) -> Result<Self, StoreError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self::new(
            dir.parent().unwrap_or(Path::new("")),
            StoreName::new(&name)?,
        ))
    }

    pub fn run(&self) -> &Path {
        &self.run
    }

    pub fn name(&self) -> &StoreName {
        &self.name
    }

    /// `<run>/<store>`.
    pub fn dir(&self) -> PathBuf {
        self.run.join(self.name.as_str())
    }

    pub fn manifest(&self) -> PathBuf {
        self.dir().join(MANIFEST)
    }

    /// `<store>/cka_live.json`.
    pub fn live_cka(&self) -> PathBuf {
        self.dir().join(LIVE)
    }

    /// The folder of one tap's arrays.
    pub fn tap_dir(&self, tap: &str) -> PathBuf {
        self.dir().join(tap)
    }

    /// `<store>/<tap>/seed<S>_step<KK>.npy`.
    pub fn probe(&self, tap: &str, seed: u64, step: usize) -> PathBuf {
        self.tap_dir(tap).join(probe_file(seed, step))
    }

    /// The folder of the images: the run's `samples/` for `probes`, else `<store>/samples/`.
    pub fn samples_root(&self) -> PathBuf {
        if self.name.as_str() == StoreName::SAMPLE {
            self.run.join(SAMPLES)
        } else {
            self.dir().join(SAMPLES)
        }
    }

    /// The images of `seed`: `samples/seed<S>/` for `probes`, else `<store>/samples/seed<S>/`.
    pub fn samples(&self, seed: u64) -> PathBuf {
        self.samples_root().join(format!("seed{seed}"))
    }

    /// Prompt `i`'s image of `seed` (`0007.png`).
    pub fn sample_png(&self, seed: u64, i: usize) -> PathBuf {
        self.samples(seed).join(format!("{i:04}.png"))
    }

    /// The `x_t` previews of `seed` (`flowlens sample --previews`).
    pub fn previews(&self, seed: u64) -> PathBuf {
        self.samples(seed).join(PREVIEWS)
    }

    /// Prompt `i`'s decoded state at the start of solver step `step`.
    pub fn preview_png(&self, seed: u64, i: usize, step: usize) -> PathBuf {
        self.previews(seed)
            .join(format!("{i:04}_step{step:02}.png"))
    }
}

fn probe_file(seed: u64, step: usize) -> String {
    format!("seed{seed}_step{step:02}.npy")
}

/// `(seed, step)` of a probe file name (`seed3_step07.npy`).
fn parse_probe_file(name: &str) -> Option<(u64, usize)> {
    let rest = name.strip_prefix("seed")?.strip_suffix(".npy")?;
    let (seed, step) = rest.split_once("_step")?;
    Some((seed.parse().ok()?, step.parse().ok()?))
}

/// Which seeds a read may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeds {
    /// Only seeds the manifest lists (complete ones).
    Complete,
    /// Also a seed still being sampled (its files are each complete: written then renamed).
    Partial,
}

/// One stored array: `rows` prompts x `width` features, as f64 (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub rows: usize,
    pub width: usize,
    pub values: Vec<f64>,
}

/// An opened feature store.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    pub paths: StorePaths,
    pub manifest: StoreManifest,
}

impl std::ops::Deref for FeatureStore {
    type Target = StorePaths;
    fn deref(&self) -> &StorePaths {
        &self.paths
    }
}

impl FeatureStore {
    /// Opens the store `name` of `run`.
    pub fn open(run: &Path, name: &StoreName) -> Result<Self, StoreError> {
        Self::open_paths(StorePaths::new(run, name.clone()))
    }

    /// Opens the store folder `dir` (`<run>/<name>`).
    pub fn open_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open_paths(StorePaths::of_dir(dir)?)
    }

    fn open_paths(paths: StorePaths) -> Result<Self, StoreError> {
        let path = paths.manifest();
        let text = std::fs::read_to_string(&path).map_err(|error| StoreError::Missing {
            path: path.clone(),
            error,
        })?;
        let manifest: StoreManifest =
            serde_json::from_str(&text).map_err(|error| StoreError::Manifest {
                path: path.clone(),
                error,
            })?;
        if manifest.format != FORMAT {
            return Err(StoreError::Format {
                path,
                found: manifest.format,
            });
        }
        Ok(Self { paths, manifest })
    }

    /// Whether solver step `step` was written.
    pub fn has_step(&self, step: usize) -> bool {
        step < self.manifest.steps
            && self
                .manifest
                .tap_steps
                .as_ref()
                .is_none_or(|s| s.contains(&step))
    }

    /// The written solver steps, in order.
    pub fn written_steps(&self) -> Vec<usize> {
        (0..self.manifest.steps)
            .filter(|&s| self.has_step(s))
            .collect()
    }

    /// The time of step `step` (`times[step]`, or `step / steps` where the manifest has none).
    pub fn time(&self, step: usize) -> f64 {
        self.manifest
            .times
            .get(step)
            .map_or(step as f64 / self.manifest.steps.max(1) as f64, |&t| {
                t as f64
            })
    }

    /// The store's tap names, comma-separated (for error messages).
    pub fn tap_list(&self) -> String {
        self.manifest
            .taps
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Tap names matching a pattern (`llm.h*.image`), sorted.
    pub fn taps_matching(&self, pattern: &str) -> Vec<String> {
        let request = TapRequest::parse(pattern);
        self.manifest
            .taps
            .keys()
            .filter(|t| request.wants(t))
            .cloned()
            .collect()
    }

    /// An error unless the store has `tap`.
    pub fn check_tap(&self, tap: &str) -> Result<(), StoreError> {
        if self.manifest.taps.contains_key(tap) {
            Ok(())
        } else {
            Err(StoreError::NoTap {
                dir: self.dir(),
                tap: tap.to_string(),
                have: self.tap_list(),
            })
        }
    }

    /// The rows of a grid of `a` against the taps matching `pattern` (`a` itself left out).
    pub fn grid_rows(&self, a: &str, pattern: &str) -> Result<Vec<String>, StoreError> {
        self.check_tap(a)?;
        let rows: Vec<String> = self
            .taps_matching(pattern)
            .into_iter()
            .filter(|t| t != a)
            .collect();
        if rows.is_empty() {
            return Err(StoreError::NoMatch {
                dir: self.dir(),
                pattern: pattern.to_string(),
                have: self.tap_list(),
            });
        }
        Ok(rows)
    }

    /// Seeds and steps with an array of `tap` on disk, a seed still being sampled included.
    pub fn present(&self, tap: &str) -> BTreeSet<(u64, usize)> {
        let Ok(entries) = std::fs::read_dir(self.tap_dir(tap)) else {
            return BTreeSet::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_probe_file(&e.file_name().to_string_lossy()))
            .collect()
    }

    /// The `[n_prompts, width]` rows of `tap` at `step` for `seed`.
    pub fn read(
        &self,
        tap: &str,
        seed: u64,
        step: usize,
        seeds: Seeds,
    ) -> Result<Features, StoreError> {
        let path = self.probe(tap, seed, step);
        let n = self.manifest.prompts.len();
        if seeds == Seeds::Partial {
            let f = read_array(&path)?;
            if f.rows != n {
                return Err(StoreError::Array {
                    path,
                    reason: format!("{} rows, the store has {n} prompts", f.rows),
                });
            }
            return Ok(f);
        }
        self.check_tap(tap)?;
        if !self.manifest.seeds.contains(&seed) {
            return Err(StoreError::NoSeed {
                dir: self.dir(),
                seed,
                seeds: self.manifest.seeds.clone(),
            });
        }
        if !self.has_step(step) {
            return Err(StoreError::NoStep {
                dir: self.dir(),
                step,
            });
        }
        let f = read_array(&path)?;
        let w = self.manifest.taps[tap];
        if (f.rows, f.width) != (n, w) {
            return Err(StoreError::Shape {
                path,
                found: vec![f.rows, f.width],
                expected: vec![n, w],
            });
        }
        Ok(f)
    }
}

/// A `[n, d]` array of a `.npy` file (f32, f16, f64 or integer), as f64.
pub fn read_array(path: &Path) -> Result<Features, StoreError> {
    let array = |reason: String| StoreError::Array {
        path: path.to_path_buf(),
        reason,
    };
    let a = crate::npy::NpyArray::read(path)?;
    a.expect_rank(2, "[n, d] features (rows = samples)")?;
    let (rows, width) = (a.shape[0], a.shape[1]);
    if rows == 0 || width == 0 {
        return Err(array(format!("empty array {:?}", a.shape)));
    }
    Ok(Features {
        rows,
        width,
        values: a.as_f64(),
    })
}

/// Sees the pooled rows of every tap as batches land: `rows` are prompts
/// `offset..offset + rows.len() / width` of `seed` at solver step (or interpolant time index)
/// `step`.
pub trait ProbeObserver {
    fn on_rows(
        &mut self,
        seed: u64,
        step: usize,
        tap: &str,
        offset: usize,
        rows: &[f32],
        width: usize,
    );
    /// All of `seed`'s probes are on disk and the manifest lists it.
    fn on_seed_done(&mut self, _seed: u64) {}
}

/// An observer that does nothing.
pub struct NoObserver;

impl ProbeObserver for NoObserver {
    fn on_rows(&mut self, _: u64, _: usize, _: &str, _: usize, _: &[f32], _: usize) {}
}

/// One seed's rows as they arrive batch by batch: `values[tap][step]`, `[n, width]`.
#[derive(Debug, Clone)]
pub struct SeedRows {
    pub seed: u64,
    n: usize,
    values: BTreeMap<String, BTreeMap<usize, Vec<f32>>>,
    widths: BTreeMap<String, usize>,
}

impl SeedRows {
    /// Room for `n` prompts of `seed`.
    pub fn new(seed: u64, n: usize) -> Self {
        Self {
            seed,
            n,
            values: BTreeMap::new(),
            widths: BTreeMap::new(),
        }
    }

    /// Prompts `offset..offset + rows.len() / width` of `tap` at `step`.
    pub fn add(&mut self, tap: &str, step: usize, offset: usize, rows: &[f32], width: usize) {
        self.widths.insert(tap.to_string(), width);
        let n = self.n;
        let slot = self
            .values
            .entry(tap.to_string())
            .or_default()
            .entry(step)
            .or_insert_with(|| vec![0f32; n * width]);
        slot[offset * width..offset * width + rows.len()].copy_from_slice(rows);
    }
}

/// What a store's manifest says besides its seeds and taps.
#[derive(Debug, Clone)]
pub struct StoreHeader {
    pub mode: StoreMode,
    pub prompts: Vec<String>,
    pub times: Vec<f32>,
    pub cfg: f32,
    pub pooling: TapPooling,
    pub dtype: ProbeDtype,
    pub checkpoint_step: usize,
    pub weights: Weights,
    pub tap_steps: Option<Vec<usize>>,
}

/// Writes a store seed by seed: each seed's arrays, then the manifest that lists it.
pub struct StoreWriter {
    paths: StorePaths,
    manifest: StoreManifest,
}

impl StoreWriter {
    pub fn new(paths: StorePaths, header: StoreHeader) -> Self {
        let manifest = StoreManifest {
            format: FORMAT.into(),
            mode: header.mode,
            prompts: header.prompts,
            seeds: Vec::new(),
            steps: header.times.len(),
            times: header.times,
            cfg: header.cfg,
            pooling: header.pooling,
            branch: Branch::Conditional,
            dtype: header.dtype,
            taps: BTreeMap::new(),
            checkpoint_step: header.checkpoint_step,
            weights: header.weights,
            tap_steps: header.tap_steps,
        };
        Self { paths, manifest }
    }

    pub fn paths(&self) -> &StorePaths {
        &self.paths
    }

    /// Writes one seed's arrays (each atomically), then the manifest that lists the seed.
    pub fn write_seed(&mut self, rows: SeedRows) -> Result<(), StoreError> {
        let n = self.manifest.prompts.len();
        for (tap, per_step) in &rows.values {
            let dir = self.paths.tap_dir(tap);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let w = rows.widths[tap];
            for (&k, values) in per_step {
                let path = self.paths.probe(tap, rows.seed, k);
                match self.manifest.dtype {
                    ProbeDtype::F32 => crate::npy::write_f32(&path, &[n, w], values),
                    ProbeDtype::F16 => crate::npy::write_f16(&path, &[n, w], values),
                }
                .map_err(io(&path))?;
            }
        }
        self.manifest.taps.extend(rows.widths);
        self.manifest.seeds.push(rows.seed);
        let dir = self.paths.dir();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = self.paths.manifest();
        let text =
            serde_json::to_string_pretty(&self.manifest).map_err(|error| StoreError::Json {
                path: path.clone(),
                error,
            })?;
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(io(&path))
    }
}

/// `<store>/cka_live.json`: exact streaming CKA per tap pair and solver step over the rows seen
/// so far (fields in file order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveCkaSnapshot {
    pub format: String,
    /// Mean seconds per accumulator update.
    pub mean_update_seconds: f64,
    pub pairs: Vec<LivePair>,
    /// What the accumulators pool (`all seeds so far`).
    pub pooled_over: String,
    pub updates: usize,
}

/// One tap pair of a [`LiveCkaSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivePair {
    pub a: String,
    pub b: String,
    pub steps: Vec<LiveStep>,
}

/// One solver step of a [`LivePair`]: both estimators (`None` while undefined) over `n` rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStep {
    pub biased: Option<f64>,
    pub debiased: Option<f64>,
    pub n: usize,
    pub step: usize,
}

impl LiveCkaSnapshot {
    /// Writes the snapshot atomically (creating the store folder).
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|error| StoreError::Json {
            path: path.to_path_buf(),
            error,
        })?;
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(io(path))
    }

    /// Reads a snapshot; a file of another format is an error.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let snapshot: Self = serde_json::from_str(&text).map_err(|error| StoreError::Json {
            path: path.to_path_buf(),
            error,
        })?;
        if snapshot.format != LIVE_FORMAT {
            return Err(StoreError::Format {
                path: path.to_path_buf(),
                found: snapshot.format,
            });
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(prompts: usize, steps: usize) -> StoreHeader {
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts: (0..prompts).map(|i| format!("prompt {i}")).collect(),
            times: (0..steps).map(|k| k as f32 / steps as f32).collect(),
            cfg: 2.0,
            pooling: TapPooling::Mean,
            dtype: ProbeDtype::F32,
            checkpoint_step: 7,
            weights: Weights::Ema,
            tap_steps: None,
        }
    }

    #[test]
    fn a_written_store_reads_back_complete_and_partial_seeds() {
        let run = tempfile::tempdir().unwrap();
        let paths = StorePaths::new(run.path(), StoreName::new("probes-x").unwrap());
        let mut w = StoreWriter::new(paths.clone(), header(3, 2));
        let mut rows = SeedRows::new(5, 3);
        for step in 0..2 {
            rows.add("enc.text", step, 0, &[1.0, 2.0, 3.0, 4.0], 2);
            rows.add("enc.text", step, 2, &[5.0, 6.0 + step as f32], 2);
        }
        w.write_seed(rows).unwrap();
        let store = FeatureStore::open(run.path(), paths.name()).unwrap();
        assert_eq!(store.manifest.seeds, vec![5]);
        assert_eq!(store.manifest.taps["enc.text"], 2);
        let f = store.read("enc.text", 5, 1, Seeds::Complete).unwrap();
        assert_eq!((f.rows, f.width), (3, 2));
        assert_eq!(f.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 7.0]);
        assert!(matches!(
            store.read("enc.noise", 5, 1, Seeds::Complete),
            Err(StoreError::NoTap { .. })
        ));
        // A seed still being sampled: its files are there, the manifest does not list it yet.
        crate::npy::write_f32(store.probe("enc.text", 6, 0), &[3, 2], &[0.5; 6]).unwrap();
        assert!(matches!(
            store.read("enc.text", 6, 0, Seeds::Complete),
            Err(StoreError::NoSeed { .. })
        ));
        assert_eq!(
            store.read("enc.text", 6, 0, Seeds::Partial).unwrap().values,
            vec![0.5; 6]
        );
        let present: Vec<_> = store.present("enc.text").into_iter().collect();
        assert_eq!(present, vec![(5, 0), (5, 1), (6, 0)]);
        // Images: `probes` keeps them in the run's samples/, other stores in their own folder.
        assert_eq!(
            store.sample_png(5, 7),
            run.path().join("probes-x/samples/seed5/0007.png")
        );
        let sample = StorePaths::new(run.path(), StoreName::sample());
        assert_eq!(
            sample.preview_png(1, 2, 3),
            run.path().join("samples/seed1/xt/0002_step03.png")
        );
        for bad in ["", "a/b", ".hidden", "a\\b"] {
            assert!(StoreName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_live_snapshot_round_trips_with_its_keys_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes").join(LIVE);
        let snapshot = LiveCkaSnapshot {
            format: LIVE_FORMAT.into(),
            mean_update_seconds: 0.25,
            pairs: vec![LivePair {
                a: "enc.text".into(),
                b: "llm.h01.text".into(),
                steps: vec![LiveStep {
                    biased: Some(0.5),
                    debiased: None,
                    n: 8,
                    step: 0,
                }],
            }],
            pooled_over: "all seeds so far".into(),
            updates: 1,
        };
        snapshot.write(&path).unwrap();
        assert_eq!(LiveCkaSnapshot::read(&path).unwrap(), snapshot);
        // serde_json's maps are key-sorted: the typed file reads as the untyped one did.
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&value).unwrap(), text);
    }
}
