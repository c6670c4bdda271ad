//! Data for training and evaluation: a [`Dataset`] of (image, caption) pairs from one of several
//! sources, images centre-cropped and resized to the preset's resolution; the built-in synthetic
//! shapes set and its oracle scorer.
//!
//! Sources ([`DataSource`]): the synthetic shapes set; an image folder with sidecar `.txt`
//! captions; parquet with an image-bytes column and a caption column (Hugging Face `datasets`
//! exports); webdataset `.tar` shards as written by img2dataset. A corrupt, missing or
//! undecodable item is an `Err(DataError::Item)` from [`Dataset::get`]: callers skip and count
//! it; a source that yields nothing is [`DataError::Empty`].

pub mod dataset;
pub mod folder;
pub mod parquet;
pub mod preprocess;
pub mod shapes;
pub mod webdataset;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use dataset::has_extension;
pub use dataset::{DataError, Dataset, Example};
pub use folder::ImageFolder;
pub use parquet::ParquetSource;
pub use preprocess::decode_image;
pub use shapes::{Adherence, Margin, Scene, ShapesDataset};
pub use webdataset::WebDataset;

impl Dataset for ShapesDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize, size: usize) -> Result<Example, DataError> {
        let (pixels, caption) = self.item(index, size);
        Ok(Example { pixels, caption })
    }

    fn fingerprint(&self) -> String {
        format!(
            "shapes:v1:seed={}:len={}:two={}",
            self.seed, self.len, self.two_objects
        )
    }
}

/// The seed of `shapes` on the command line when none is given (as the training config's default).
pub const SHAPES_DEFAULT_SEED: u64 = 0;
/// The length of `shapes` on the command line when none is given (the tiny preset's default).
pub const SHAPES_DEFAULT_LEN: usize = 2048;

/// Where training data comes from (the `data` section of a training config).
///
/// ```toml
/// [data]
/// kind = "parquet"
/// path = "data/train"
/// image_column = "image"   # optional
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataSource {
    /// The built-in synthetic shapes set.
    Shapes { seed: u64, len: usize },
    /// A folder of `.png`/`.jpg`/`.jpeg` images (searched recursively) with sidecar `.txt`
    /// captions ([`ImageFolder`]).
    Folder { path: PathBuf },
    /// One `.parquet` file or a folder of them, with an image-bytes column and a caption column
    /// ([`ParquetSource`]). Columns default to the first of `image`/`jpg`/`png`/`img` and of
    /// `caption`/`text`/`prompt`/`txt`.
    Parquet {
        path: PathBuf,
        #[serde(default)]
        image_column: Option<String>,
        #[serde(default)]
        caption_column: Option<String>,
    },
    /// Webdataset `.tar` shards as img2dataset writes them ([`WebDataset`]): one shard, a
    /// folder of shards, or a brace pattern such as `data/{00000..00003}.tar`.
    WebDataset { path: String },
}

impl DataSource {
    /// Opens the source.
    pub fn open(&self) -> Result<Box<dyn Dataset>, DataError> {
        Ok(match self {
            DataSource::Shapes { seed, len } => Box::new(ShapesDataset::new(*seed, *len)),
            DataSource::Folder { path } => Box::new(ImageFolder::open(path)?),
            DataSource::Parquet {
                path,
                image_column,
                caption_column,
            } => Box::new(ParquetSource::open(
                path,
                image_column.as_deref(),
                caption_column.as_deref(),
            )?),
            DataSource::WebDataset { path } => Box::new(WebDataset::open(path)?),
        })
    }

    /// Parses a command-line data flag:
    ///
    /// - `shapes` (seed [`SHAPES_DEFAULT_SEED`], [`SHAPES_DEFAULT_LEN`] items) or
    ///   `shapes:SEED:LEN`;
    /// - `folder:PATH`, `parquet:PATH` (default columns), `webdataset:PATH` (a shard, a folder of
    ///   shards or a brace pattern);
    /// - a bare path, its kind guessed: a `.parquet` file, or a folder holding `.parquet` files,
    ///   is parquet; a `.tar` file, a folder holding `.tar` files, or a pattern with `{` ending
    ///   in `.tar` is webdataset; any other folder is an image folder.
    ///
    /// Only the syntax (and, for a bare path, its existence) is checked here; [`DataSource::open`]
    /// checks the content.
    pub fn parse_cli(spec: &str) -> Result<DataSource, String> {
        const HELP: &str = "expected shapes, shapes:SEED:LEN, folder:PATH, parquet:PATH, \
                            webdataset:PATH, or an existing folder, .parquet or .tar path";
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(format!("empty data source: {HELP}"));
        }
        if spec == "shapes" {
            return Ok(DataSource::Shapes {
                seed: SHAPES_DEFAULT_SEED,
                len: SHAPES_DEFAULT_LEN,
            });
        }
        if let Some(rest) = spec.strip_prefix("shapes:") {
            let (seed, len) = rest
                .split_once(':')
                .ok_or_else(|| format!("`{spec}`: expected shapes:SEED:LEN"))?;
            let seed = seed
                .parse::<u64>()
                .map_err(|e| format!("`{spec}`: bad seed `{seed}`: {e}"))?;
            let len = len
                .parse::<usize>()
                .map_err(|e| format!("`{spec}`: bad length `{len}`: {e}"))?;
            if len == 0 {
                return Err(format!("`{spec}`: the length must be at least 1"));
            }
            return Ok(DataSource::Shapes { seed, len });
        }
        let non_empty = |kind: &str, rest: &str| {
            if rest.is_empty() {
                Err(format!("`{spec}`: missing path after `{kind}:`"))
            } else {
                Ok(())
            }
        };
        if let Some(rest) = spec.strip_prefix("folder:") {
            non_empty("folder", rest)?;
            return Ok(DataSource::Folder { path: rest.into() });
        }
        if let Some(rest) = spec.strip_prefix("parquet:") {
            non_empty("parquet", rest)?;
            return Ok(DataSource::Parquet {
                path: rest.into(),
                image_column: None,
                caption_column: None,
            });
        }
        if let Some(rest) = spec.strip_prefix("webdataset:") {
            non_empty("webdataset", rest)?;
            return Ok(DataSource::WebDataset { path: rest.into() });
        }
        guess_kind(spec).map_err(|why| format!("`{spec}`: {why}; {HELP}"))
    }
}

/// The source a bare path names (see [`DataSource::parse_cli`]).
fn guess_kind(spec: &str) -> Result<DataSource, String> {
    let path = Path::new(spec);
    let parquet = || DataSource::Parquet {
        path: path.to_path_buf(),
        image_column: None,
        caption_column: None,
    };
    let webdataset = || DataSource::WebDataset {
        path: spec.to_string(),
    };
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot list folder: {e}"))?;
        let mut has_parquet = false;
        for entry in entries.flatten() {
            let p = entry.path();
            if has_extension(&p, &["tar"]) && p.is_file() {
                return Ok(webdataset());
            }
            has_parquet |= has_extension(&p, &["parquet"]) && p.is_file();
        }
        return Ok(if has_parquet {
            parquet()
        } else {
            DataSource::Folder {
                path: path.to_path_buf(),
            }
        });
    }
    if path.is_file() {
        if has_extension(path, &["parquet"]) {
            return Ok(parquet());
        }
        if has_extension(path, &["tar"]) {
            return Ok(webdataset());
        }
        return Err("a file that is neither .parquet nor .tar".to_string());
    }
    if spec.contains('{') && spec.to_ascii_lowercase().ends_with(".tar") {
        return Ok(webdataset());
    }
    Err("no such file or folder".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::Fnv64;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(Fnv64::new().hex(), "cbf29ce484222325");
        assert_eq!(Fnv64::new().bytes(b"a").hex(), "af63dc4c8601ec8c");
        assert_eq!(Fnv64::new().bytes(b"foobar").hex(), "85944171f73967e8");
    }

    #[test]
    fn data_source_serde_names() {
        let src: DataSource =
            serde_json::from_str(r#"{"kind": "webdataset", "path": "a/{0..3}.tar"}"#)
                .expect("webdataset");
        assert_eq!(
            src,
            DataSource::WebDataset {
                path: "a/{0..3}.tar".into()
            }
        );
        let src: DataSource =
            serde_json::from_str(r#"{"kind": "parquet", "path": "x.parquet"}"#).expect("parquet");
        assert_eq!(
            src,
            DataSource::Parquet {
                path: "x.parquet".into(),
                image_column: None,
                caption_column: None
            }
        );
        assert!(
            serde_json::from_str::<DataSource>(r#"{"kind": "folder", "path": "x", "extra": 1}"#)
                .is_err()
        );
    }
}
