//! Data for training and evaluation: a [`Dataset`] of (image, caption) pairs from one of several
//! sources, images centre-cropped and resized to the preset's resolution; the built-in synthetic
//! shapes set and its oracle scorer.
//!
//! Sources ([`DataSource`]): the synthetic shapes set; an image folder with sidecar `.txt`
//! captions; parquet with an image-bytes column and a caption column (Hugging Face `datasets`
//! exports); webdataset `.tar` shards as written by img2dataset. A corrupt, missing or
//! undecodable item is an `Err(DataError::Item)` from [`Dataset::get`]: callers skip and count
//! it; a source that yields nothing is [`DataError::Empty`].

pub mod shapes;

use serde::{Deserialize, Serialize};

pub use shapes::{Adherence, Scene, ShapesDataset};

/// One example: pixels `[3, size, size]` in [-1, 1] (channel-major, sRGB) and the caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub pixels: Vec<f32>,
    pub caption: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// One item cannot be used (corrupt or undecodable image, missing caption): skip it.
    #[error("{item}: {reason}")]
    Item { item: String, reason: String },
    /// The source itself cannot be opened (missing folder, not a parquet file, no such column).
    #[error("{path}: {reason}")]
    Open { path: String, reason: String },
    /// The source holds no usable item.
    #[error("{source_desc}: the data set yields no usable (image, caption) pair{detail}")]
    Empty { source_desc: String, detail: String },
}

/// A finite, indexable set of (image, caption) pairs. `get` must be deterministic: the same index
/// gives the same example (or the same error) every time.
pub trait Dataset: Send + Sync {
    /// Number of items (including ones that will turn out to be unusable).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `index` (`< len()`), centre-cropped and resized to `size` x `size`.
    fn get(&self, index: usize, size: usize) -> Result<Example, DataError>;

    /// A stable description of the source's content for cache keys: kind, location and enough
    /// of the files' identity (names, sizes, modification times) that a change shows.
    fn fingerprint(&self) -> String;
}

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

/// Where training data comes from (the `data` section of a training config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DataSource {
    /// The built-in synthetic shapes set.
    Shapes { seed: u64, len: usize },
}

impl DataSource {
    /// Opens the source.
    pub fn open(&self) -> Result<Box<dyn Dataset>, DataError> {
        match self {
            DataSource::Shapes { seed, len } => Ok(Box::new(ShapesDataset::new(*seed, *len))),
        }
    }
}
