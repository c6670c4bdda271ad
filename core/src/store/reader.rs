//! Reading a feature store: complete seeds through the manifest, a seed still being sampled
//! file by file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::flow::TapRequest;
use crate::npy::NpyArray;
use crate::store::error::StoreError;
use crate::store::manifest::{FORMAT, FORMAT_V1, StoreManifest};
use crate::store::paths::{StoreName, StorePaths, parse_probe_file, parse_probe_file_v1};

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
        if manifest.format != FORMAT && manifest.format != FORMAT_V1 {
            return Err(StoreError::Format {
                path,
                found: manifest.format,
            });
        }
        Ok(Self { paths, manifest })
    }

    /// Whether solver step `step` was written.
    pub fn has_step(&self, step: usize) -> bool {
        self.manifest.has_step(step)
    }

    /// The written solver steps, in order.
    pub fn written_steps(&self) -> Vec<usize> {
        self.manifest.written_steps()
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
        let names = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned());
        if self.manifest.one_file_per_step() {
            return names.filter_map(|n| parse_probe_file_v1(&n)).collect();
        }
        // A seed's file is written whole and renamed into place: it holds every written step.
        let steps = self.written_steps();
        names
            .filter_map(|n| parse_probe_file(&n))
            .flat_map(|seed| steps.iter().map(move |&k| (seed, k)))
            .collect()
    }

    /// The file of `tap` and `seed` that holds `step`, and where along its first axis (`None`
    /// for the first format's file of that step alone).
    fn locate(
        &self,
        tap: &str,
        seed: u64,
        step: usize,
    ) -> Result<(PathBuf, Option<usize>), StoreError> {
        if self.manifest.one_file_per_step() {
            return Ok((self.probe_v1(tap, seed, step), None));
        }
        let index = self
            .written_steps()
            .iter()
            .position(|&k| k == step)
            .ok_or_else(|| StoreError::NoStep {
                dir: self.dir(),
                step,
            })?;
        Ok((self.probe(tap, seed), Some(index)))
    }

    /// The `[n_prompts, width]` rows of `tap` at `step` for `seed`.
    pub fn read(
        &self,
        tap: &str,
        seed: u64,
        step: usize,
        seeds: Seeds,
    ) -> Result<Features, StoreError> {
        let n = self.manifest.prompts.len();
        if seeds == Seeds::Partial {
            let (path, index) = self.locate(tap, seed, step)?;
            let f = read_features(&path, index)?;
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
        let (path, index) = self.locate(tap, seed, step)?;
        let f = read_features(&path, index)?;
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

/// The `[n, d]` rows of a step: entry `index` of a `[steps, n, d]` file, or a whole `[n, d]`
/// file.
fn read_features(path: &Path, index: Option<usize>) -> Result<Features, StoreError> {
    match index {
        None => read_array(path),
        Some(k) => features(NpyArray::read_slab(path, k)?),
    }
}

/// A `[n, d]` array of a `.npy` file (f32, f16, f64 or integer), as f64.
pub fn read_array(path: &Path) -> Result<Features, StoreError> {
    features(NpyArray::read(path)?)
}

fn features(a: NpyArray) -> Result<Features, StoreError> {
    let array = |reason: String| StoreError::Array {
        path: a.path.clone(),
        reason,
    };
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
