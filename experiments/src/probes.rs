//! Reading a run's feature store (`probes*/`, docs/RUN_FORMAT.md) for the analyses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use serde::Deserialize;

/// `probes*/manifest.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub mode: String,
    pub prompts: Vec<String>,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub times: Vec<f32>,
    pub cfg: f32,
    pub pooling: String,
    pub taps: BTreeMap<String, usize>,
    pub checkpoint_step: usize,
    pub weights: String,
    /// The solver steps that were written (all when absent).
    #[serde(default)]
    pub tap_steps: Option<Vec<usize>>,
}

/// An opened feature store.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} does not exist: sample the run with taps first",
                path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a probe manifest", path.display()))?;
        if manifest.format != "flowlens.probes.v1" {
            bail!(
                "{}: format `{}`, this build reads flowlens.probes.v1",
                path.display(),
                manifest.format
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
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
        let request = flowlens_core::flow::TapRequest::parse(pattern);
        self.manifest
            .taps
            .keys()
            .filter(|t| request.wants(t))
            .cloned()
            .collect()
    }

    pub fn path(&self, tap: &str, seed: u64, step: usize) -> PathBuf {
        self.dir
            .join(tap)
            .join(format!("seed{seed}_step{step:02}.npy"))
    }

    /// The `[n_prompts, width]` features of `tap` at `step` for `seed`, as f64.
    pub fn read(&self, tap: &str, seed: u64, step: usize) -> Result<Array2<f64>> {
        if !self.manifest.taps.contains_key(tap) {
            bail!(
                "{}: no tap `{tap}` (the store has {})",
                self.dir.display(),
                self.tap_list()
            );
        }
        if !self.manifest.seeds.contains(&seed) {
            bail!(
                "{}: seed {seed} was not sampled (seeds {:?})",
                self.dir.display(),
                self.manifest.seeds
            );
        }
        if !self.has_step(step) {
            bail!("{}: solver step {step} was not written", self.dir.display());
        }
        let x = crate::io::read_matrix(&self.path(tap, seed, step))?;
        let (n, w) = (self.manifest.prompts.len(), self.manifest.taps[tap]);
        if x.dim() != (n, w) {
            bail!(
                "{}: shape {:?}, the manifest says [{n}, {w}]",
                self.path(tap, seed, step).display(),
                x.dim()
            );
        }
        Ok(x)
    }
}

/// Layer number of an LLM tap name (`llm.h12.text` -> 12).
pub fn llm_layer(tap: &str) -> Option<usize> {
    tap.strip_prefix("llm.h")?.split('.').next()?.parse().ok()
}
