//! Files in and out of the experiments: `.npy` feature matrices and feature-store arrays as the
//! analysis crate's arrays, result JSON, prompt files, comma-separated flag lists, progress bars.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use flowlens_core::npy::NpyArray;
use flowlens_core::store::Features;
use ndarray::Array2;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A `[n, d]` feature matrix from a `.npy` file (f32, f64 or integer), as f64; `FILE.npy:K`
/// takes entry K along the first axis of a stacked `[k, n, d]` file (a feature store's
/// `<tap>/seed<S>.npy` holds every written solver step).
pub fn read_matrix(path: &Path) -> Result<Array2<f64>> {
    let a = match slab_of(path) {
        Some((file, k)) => NpyArray::read_slab(&file, k)?,
        None => NpyArray::read(path)?,
    };
    if a.shape.len() == 3 {
        bail!(
            "{} is a stack of {} matrices {:?}; choose one with {}:K (K = 0..{}; in a feature \
             store's seed file K is the index of the written solver step)",
            path.display(),
            a.shape[0],
            &a.shape[1..],
            path.display(),
            a.shape[0].saturating_sub(1)
        );
    }
    a.expect_rank(2, "[n, d] features (rows = samples)")?;
    let (n, d) = (a.shape[0], a.shape[1]);
    ensure!(
        n > 0 && d > 0,
        "{}: empty array {:?}",
        path.display(),
        a.shape
    );
    Array2::from_shape_vec((n, d), a.as_f64())
        .with_context(|| format!("{}: shape {:?}", path.display(), a.shape))
}

/// `(FILE, K)` of `FILE:K` when `FILE` exists and the path itself does not.
fn slab_of(path: &Path) -> Option<(std::path::PathBuf, usize)> {
    if path.exists() {
        return None;
    }
    let text = path.to_str()?;
    let (file, k) = text.rsplit_once(':')?;
    let k = k.parse().ok()?;
    let file = std::path::PathBuf::from(file);
    file.is_file().then_some((file, k))
}

/// A feature-store array as a matrix.
pub fn matrix(f: Features) -> Array2<f64> {
    Array2::from_shape_vec((f.rows, f.width), f.values).expect("rows x width values")
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid result", path.display()))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    flowlens_core::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A TOML value as JSON; a `nan` or `inf` (which JSON cannot hold) is an error that names its
/// key, instead of turning into `null`.
pub fn toml_to_json(value: &toml::Value) -> Result<serde_json::Value> {
    fn go(v: &toml::Value, path: &str) -> Result<serde_json::Value> {
        let key = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        Ok(match v {
            toml::Value::Float(f) if !f.is_finite() => {
                bail!("field `{path}`: {f} is not a number this configuration can hold")
            }
            toml::Value::Table(t) => serde_json::Value::Object(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), go(v, &key(k))?)))
                    .collect::<Result<_>>()?,
            ),
            toml::Value::Array(a) => serde_json::Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| go(v, &key(&i.to_string())))
                    .collect::<Result<_>>()?,
            ),
            other => serde_json::to_value(other)?,
        })
    }
    go(value, "")
}

/// `T` from a JSON value; an error names the field (`prior.steps`) and what was wrong.
pub fn from_json_named<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            anyhow::anyhow!("{}", e.into_inner())
        } else {
            anyhow::anyhow!("field `{path}`: {}", e.into_inner())
        }
    })
}

/// A comma-separated list of a flag (`--seeds 0,1,2`); the error names the flag and the item.
pub fn parse_list<T: std::str::FromStr>(flag: &str, text: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{flag}: `{}` is not a valid value", s.trim()))
        })
        .collect()
}

/// Reads a prompts file: one prompt per line; trailing blank lines are ignored, blank lines in
/// between are an error (they would silently shift rows).
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let mut prompts: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    while prompts.last().is_some_and(|p| p.trim().is_empty()) {
        prompts.pop();
    }
    if let Some(i) = prompts.iter().position(|p| p.trim().is_empty()) {
        bail!(
            "{}: line {} is blank; a prompts file has one prompt per line",
            path.display(),
            i + 1
        );
    }
    ensure!(!prompts.is_empty(), "{}: no prompts", path.display());
    Ok(prompts)
}

/// A progress bar on stderr (hidden when `show` is false or stderr is not a terminal).
pub fn progress_bar(len: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} sequences ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_is_read_from_a_plain_file_or_one_entry_of_a_stacked_file() {
        let dir = tempfile::tempdir().unwrap();
        let flat = dir.path().join("x.npy");
        flowlens_core::npy::write_f32(&flat, &[2, 3], &[1.0; 6]).unwrap();
        assert_eq!(read_matrix(&flat).unwrap().dim(), (2, 3));
        let stacked = dir.path().join("seed0.npy");
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        flowlens_core::npy::write_f32(&stacked, &[2, 2, 3], &values).unwrap();
        let m = read_matrix(&dir.path().join("seed0.npy:1")).unwrap();
        assert_eq!(m.dim(), (2, 3));
        assert_eq!(m[[0, 0]], 6.0);
        let err = read_matrix(&stacked).unwrap_err().to_string();
        assert!(err.contains("seed0.npy:K (K = 0..1"), "{err}");
        assert!(read_matrix(&dir.path().join("seed0.npy:2")).is_err());
    }
}
