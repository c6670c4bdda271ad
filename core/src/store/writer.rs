//! Writing a feature store seed by seed, and the observer that sees rows as they are sampled.

use std::collections::BTreeMap;

use crate::checkpoint::Weights;
use crate::flow::TapPooling;
use crate::store::error::{StoreError, io};
use crate::store::manifest::{Branch, FORMAT, ProbeDtype, StoreManifest, StoreMode};
use crate::store::paths::StorePaths;

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
    /// A writer for a store that replaces whatever an earlier call left under this name: the
    /// store's folder and its image folders (`samples/seed<S>/`, for `probes` in the run's
    /// `samples/`, whose training grids stay), so no stale array or image sits beside new ones.
    pub fn create(paths: StorePaths, header: StoreHeader) -> Result<Self, StoreError> {
        let dir = paths.dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let root = paths.samples_root();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let seed_folder = name
                    .strip_prefix("seed")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if seed_folder && e.path().is_dir() {
                    std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
                }
            }
        }
        Ok(Self::new(paths, header))
    }

    /// A writer that adds to the store's folder as it is (see [`StoreWriter::create`]).
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
        let steps = self.manifest.written_steps();
        // One file per tap holds every written step, `[steps, n, width]`: 13 files per seed for
        // a sampler with all taps instead of 13 x 30 (creating, writing and renaming a file
        // costs more than its bytes at this size). They are written first and made durable in
        // one sync; the manifest that lists the seed is written only after they all are.
        let mut batch = crate::fsutil::AtomicBatch::new();
        for (tap, per_step) in &rows.values {
            let dir = self.paths.tap_dir(tap);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let path = self.paths.probe(tap, rows.seed);
            if !per_step.keys().eq(steps.iter()) {
                return Err(StoreError::Array {
                    path,
                    reason: format!(
                        "rows for steps {:?}, the store writes steps {steps:?}",
                        per_step.keys().collect::<Vec<_>>()
                    ),
                });
            }
            let w = rows.widths[tap];
            let values: Vec<f32> = per_step.values().flatten().copied().collect();
            let shape = [steps.len(), n, w];
            let bytes = match self.manifest.dtype {
                ProbeDtype::F32 => crate::npy::f32_bytes(&shape, &values),
                ProbeDtype::F16 => crate::npy::f16_bytes(&shape, &values),
            };
            batch.write(&path, &bytes).map_err(io(&path))?;
        }
        let dir = self.paths.dir();
        batch.commit().map_err(io(&dir))?;
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
