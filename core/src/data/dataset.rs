//! What every data source provides: a [`Dataset`] of [`Example`]s, the [`DataError`] of an item
//! or a source, and the helpers the file-based sources share to fingerprint their files.

use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::fsutil::Fnv64;

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

    /// Items the source dropped while opening (before [`Dataset::get`] could see them: a
    /// caption without its image, a link member, the unreadable tail of a truncated shard),
    /// with a few reasons, so that every loss is counted.
    fn skipped_at_open(&self) -> (usize, Vec<String>) {
        (0, Vec::new())
    }
}

/// Whether `path`'s extension is one of `exts` (lowercase), ignoring case.
pub(crate) fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Hashes a file's identity: `name`, byte length and modification time (nanoseconds since the
/// epoch; 0 where the platform cannot tell).
pub(crate) fn hash_file_identity(hash: &mut Fnv64, name: &str, meta: &std::fs::Metadata) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    hash.str(name).u64(meta.len()).u64(mtime);
}

/// The canonical form of `path` for fingerprints (the path as given if it cannot be resolved).
pub(crate) fn canonical_display(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
