//! Reading a feature store: complete seeds through the manifest, a seed still being sampled
//! file by file.

use std::collections::BTreeSet;
use std::path::Path;

use crate::flow::TapRequest;
use crate::store::error::StoreError;
use crate::store::manifest::{FORMAT, StoreManifest};
use crate::store::paths::{StoreName, StorePaths, parse_probe_file};

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
