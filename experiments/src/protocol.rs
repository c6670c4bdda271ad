//! The experiment file: one TOML file (assets/experiments/) holds the parameters of every
//! protocol (`[ablation]`, `[exp1]`, `[exp2]`, `[grid]`); each `flowlens` experiment command reads
//! its own section, the demo reads them all. Every field has the paper's value as its default, so
//! a section may be empty; unknown fields are errors that name the file and the field (checked
//! against the defaults' own keys, since serde cannot deny unknown fields of flattened tables).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flowlens_core::flow::Variant;
use serde::{Deserialize, Serialize};

use crate::ablation::config::Ablation;
use crate::exp1::config::Exp1;
use crate::exp2::config::Exp2;
use crate::grid::config::Grid;
use crate::probing::Prompts;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExperimentFile {
    /// Where the experiment writes its runs, results and report (relative to the working
    /// directory); `--out` overrides it.
    #[serde(default = "default_out")]
    pub out: PathBuf,
    #[serde(default)]
    pub ablation: Ablation,
    #[serde(default)]
    pub exp1: Exp1,
    #[serde(default)]
    pub exp2: Exp2,
    #[serde(default)]
    pub grid: Grid,
    /// Train data-parallel on these devices (`"cuda:0,cuda:1"`; `--devices` overrides it);
    /// sampling and analysis run on the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
}

fn default_out() -> PathBuf {
    PathBuf::from("runs/experiment")
}

impl Default for ExperimentFile {
    fn default() -> Self {
        Self {
            out: default_out(),
            ablation: Ablation::default(),
            exp1: Exp1::default(),
            exp2: Exp2::default(),
            grid: Grid::default(),
            devices: None,
        }
    }
}

impl ExperimentFile {
    /// Reads and checks an experiment file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read experiment file {}", path.display()))?;
        let file = Self::parse(&text)
            .with_context(|| format!("experiment file {} is not valid", path.display()))?;
        file.check()
            .with_context(|| format!("experiment file {}", path.display()))?;
        Ok(file)
    }

    /// Parses the TOML text; an unknown field is an error that names it.
    pub fn parse(text: &str) -> Result<Self> {
        let value: toml::Value = toml::from_str(text)?;
        let known = serde_json::to_value(Self::default())?;
        unknown_keys(&value, &known, "")?;
        Ok(value.try_into()?)
    }

    pub fn check(&self) -> Result<()> {
        let a = &self.ablation;
        if a.variants.is_empty() || a.seeds.is_empty() {
            bail!("[ablation] needs at least one variant and one seed");
        }
        if a.steps == 0 {
            bail!("[ablation] steps must be at least 1");
        }
        if let Some(m) = &a.mjhq
            && (m.n < 2 || m.seeds.is_empty() || m.solver_steps == 0)
        {
            bail!("[ablation.mjhq] needs n >= 2, at least one seed and solver_steps >= 1");
        }
        for (section, p) in [
            ("exp1", &self.exp1.probing),
            ("exp2", &self.exp2.probing),
            ("grid", &self.grid.probing),
        ] {
            if p.seeds.is_empty() {
                bail!("[{section}] seeds: give at least one sampling seed");
            }
            if p.solver_steps == 0 || p.batch_size == 0 {
                bail!("[{section}] solver_steps and batch_size must be at least 1");
            }
            if let Prompts::HeldOut(n) = p.prompts
                && n < 4
            {
                bail!("[{section}] prompts: CKA needs at least 4 prompts (debiased estimator)");
            }
        }
        if let Some(&s) = self
            .exp1
            .steps
            .iter()
            .find(|&&s| s >= self.exp1.probing.solver_steps)
        {
            bail!(
                "[exp1] steps: step {s} does not exist with solver_steps = {} (steps are 0..{})",
                self.exp1.probing.solver_steps,
                self.exp1.probing.solver_steps - 1
            );
        }
        if self.exp1.layers.is_empty() || self.exp1.steps.is_empty() {
            bail!("[exp1] layers and steps must not be empty");
        }
        if !(self.exp2.threshold.is_finite()) {
            bail!("[exp2] threshold must be a number");
        }
        Ok(())
    }

    /// The run directory of `variant`'s training seed `seed` in the ablation.
    pub fn ablation_run(&self, variant: Variant, seed: u64) -> PathBuf {
        self.out
            .join("ablation")
            .join(variant.name())
            .join(format!("seed{seed}"))
    }

    /// A run named in exp1/exp2: a variant of the ablation (at `run_seed`) or a directory.
    pub fn resolve_run(&self, name: &str, run_seed: Option<u64>) -> PathBuf {
        match name.parse::<Variant>() {
            Ok(v) => {
                let seed = run_seed.unwrap_or(self.ablation.seeds[0]);
                self.ablation_run(v, seed)
            }
            Err(_) => PathBuf::from(name),
        }
    }
}

/// Fails on the first key of `user` that the defaults (`known`) do not have; free-form tables
/// (`train`, the training overrides) and enum values (`prompts`) are not descended into.
fn unknown_keys(user: &toml::Value, known: &serde_json::Value, path: &str) -> Result<()> {
    let (Some(user), Some(known)) = (user.as_table(), known.as_object()) else {
        return Ok(());
    };
    for (key, value) in user {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match known.get(key) {
            None => {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort_unstable();
                bail!(
                    "unknown field `{here}`; the fields here are: {}",
                    names.join(", ")
                );
            }
            Some(k) if key != "train" && key != "prompts" => unknown_keys(value, k, &here)?,
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ablation_mjhq_table_parses_with_defaults_and_rejects_typos() {
        let file = ExperimentFile::parse(
            "[ablation.mjhq]\nbenchmark = \"data/MJHQ-30K\"\nclip = \"models/clip\"\ninception = \"formula\"\n",
        )
        .unwrap();
        let m = file.ablation.mjhq.as_ref().unwrap();
        assert_eq!(
            (m.n, m.seeds.clone(), m.solver_steps),
            (30_000, vec![0], 30)
        );
        file.check().unwrap();
        assert!(ExperimentFile::default().ablation.mjhq.is_none());
        let typo = ExperimentFile::parse(
            "[ablation.mjhq]\nbenchmark = \"b\"\nclip = \"c\"\ninception = \"i\"\nseed = [1]\n",
        )
        .unwrap_err();
        assert!(format!("{typo:#}").contains("seed"), "{typo:#}");
        let bad = ExperimentFile::parse(
            "[ablation.mjhq]\nbenchmark = \"b\"\nclip = \"c\"\ninception = \"i\"\nn = 1\n",
        )
        .unwrap();
        assert!(bad.check().unwrap_err().to_string().contains("n >= 2"));
    }

    #[test]
    fn defaults_are_the_papers_and_files_parse() {
        let empty = ExperimentFile::parse("").unwrap();
        assert_eq!(empty, ExperimentFile::default());
        assert_eq!(empty.exp1.layers, vec![2, 12, 22]);
        assert_eq!(empty.exp1.steps, vec![9, 18, 27]);
        assert_eq!(empty.exp1.probing.seeds.len(), 5);
        assert_eq!(empty.exp2.threshold, 0.5);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/experiments");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            ExperimentFile::load(&path).unwrap();
        }
    }

    #[test]
    fn unknown_fields_and_bad_steps_are_named() {
        let e = ExperimentFile::parse("[exp1]\nlayerz = [1]\n").unwrap_err();
        assert!(e.to_string().contains("exp1.layerz"), "{e}");
        let f = ExperimentFile::parse("[exp1]\nsteps = [30]\nseeds = [1, 2]\n").unwrap();
        assert_eq!(f.exp1.probing.seeds, vec![1, 2]);
        let e = f.check().unwrap_err().to_string();
        assert!(e.contains("[exp1] steps"), "{e}");
        let e = ExperimentFile::parse("[exp2]\nestimator = \"fast\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("fast"), "{e:#}");
    }
}
