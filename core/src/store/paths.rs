//! A store's name and every file name inside it: the only place they are spelled.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::error::StoreError;

const MANIFEST: &str = "manifest.json";
const LIVE: &str = "cka_live.json";
const SAMPLES: &str = "samples";
const PREVIEWS: &str = "xt";

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

    /// `<store>/<tap>/seed<S>.npy`: every written step of `tap` for `seed`,
    /// `[steps, n_prompts, width]`.
    pub fn probe(&self, tap: &str, seed: u64) -> PathBuf {
        self.tap_dir(tap).join(probe_file(seed))
    }

    /// `<store>/<tap>/seed<S>_step<KK>.npy`: one step's file in a store of the first format.
    pub fn probe_v1(&self, tap: &str, seed: u64, step: usize) -> PathBuf {
        self.tap_dir(tap).join(probe_file_v1(seed, step))
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

fn probe_file(seed: u64) -> String {
    format!("seed{seed}.npy")
}

fn probe_file_v1(seed: u64, step: usize) -> String {
    format!("seed{seed}_step{step:02}.npy")
}

/// The seed of a probe file name (`seed3.npy`).
pub(crate) fn parse_probe_file(name: &str) -> Option<u64> {
    name.strip_prefix("seed")?
        .strip_suffix(".npy")?
        .parse()
        .ok()
}

/// `(seed, step)` of a probe file name of the first format (`seed3_step07.npy`).
pub(crate) fn parse_probe_file_v1(name: &str) -> Option<(u64, usize)> {
    let rest = name.strip_prefix("seed")?.strip_suffix(".npy")?;
    let (seed, step) = rest.split_once("_step")?;
    Some((seed.parse().ok()?, step.parse().ok()?))
}
