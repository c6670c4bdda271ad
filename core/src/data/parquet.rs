//! Parquet data: one `.parquet` file, or a folder of them (its `.parquet` files, not recursive,
//! sorted by name), with an image column and a caption column.
//!
//! The image column is either plain binary (encoded PNG/JPEG/WebP bytes) or a struct with a
//! binary `bytes` field, which is how Hugging Face `datasets` exports an `Image` feature
//! (`{bytes: binary, path: string}`). The caption column is a string column.
//!
//! Both columns of every file are loaded into memory at [`ParquetSource::open`] (encoded bytes
//! and captions, not decoded pixels): simple, and fine for the data sets this laboratory trains
//! on (up to a few GB of encoded images). Larger sets want webdataset shards
//! ([`super::WebDataset`]), which are read lazily.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::dataset::{
    DataError, Dataset, Example, canonical_display, has_extension, hash_file_identity,
};
use super::preprocess::decode_image;
use crate::fsutil::Fnv64;

/// Image column names tried, in order, when none is given.
pub const DEFAULT_IMAGE_COLUMNS: [&str; 4] = ["image", "jpg", "png", "img"];
/// Caption column names tried, in order, when none is given.
pub const DEFAULT_CAPTION_COLUMNS: [&str; 4] = ["caption", "text", "prompt", "txt"];

/// One row: where it came from and its raw content.
#[derive(Debug, Clone)]
struct Row {
    /// Index into `ParquetSource::files`.
    file: usize,
    /// Row number within that file.
    row: usize,
    image: Option<Vec<u8>>,
    /// The `path` field of a Hugging Face image struct, for error messages.
    image_path: Option<String>,
    caption: Option<String>,
}

/// (image bytes, the struct's `path` field, caption) per row of one file.
type FileRows = Vec<(Option<Vec<u8>>, Option<String>, Option<String>)>;

/// Image/caption pairs from parquet files, held in memory.
#[derive(Debug, Clone)]
pub struct ParquetSource {
    files: Vec<PathBuf>,
    image_column: String,
    caption_column: String,
    rows: Vec<Row>,
    fingerprint: String,
}

impl ParquetSource {
    /// Reads the image and caption columns of `path` (a `.parquet` file or a folder of them).
    /// `None` columns are picked from [`DEFAULT_IMAGE_COLUMNS`] / [`DEFAULT_CAPTION_COLUMNS`]
    /// on the first file, and every file must then have the same columns.
    ///
    /// Errors: [`DataError::Open`] for a missing path, a file that is not parquet, a missing
    /// column (the message lists the columns that exist) or a column of the wrong type;
    /// [`DataError::Empty`] for a folder without `.parquet` files or files without rows. A null
    /// or undecodable image, or a null caption, is a [`DataError::Item`] at [`Dataset::get`].
    pub fn open(
        path: impl AsRef<Path>,
        image_column: Option<&str>,
        caption_column: Option<&str>,
    ) -> Result<Self, DataError> {
        let root = path.as_ref();
        let files = list_files(root)?;
        let mut columns: Option<(String, String)> = None;
        let mut rows = Vec::new();
        let mut hash = Fnv64::new();
        for (file_index, file) in files.iter().enumerate() {
            let open_err = |reason: String| DataError::Open {
                path: file.display().to_string(),
                reason,
            };
            let meta = std::fs::metadata(file).map_err(|e| open_err(e.to_string()))?;
            let name = file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            hash_file_identity(&mut hash, &name, &meta);

            let (file_rows, image, caption) = catch_unwind(AssertUnwindSafe(|| {
                read_file(file, image_column, caption_column, columns.as_ref())
            }))
            .map_err(|_| open_err("the parquet reader crashed on this file".to_string()))?
            .map_err(open_err)?;
            if columns.is_none() {
                columns = Some((image, caption));
            }
            rows.extend(file_rows.into_iter().enumerate().map(
                |(row, (image, image_path, caption))| Row {
                    file: file_index,
                    row,
                    image,
                    image_path,
                    caption,
                },
            ));
        }
        let (image_column, caption_column) = columns.unwrap_or_default();
        if rows.is_empty() {
            return Err(DataError::Empty {
                source_desc: root.display().to_string(),
                detail: ": the parquet files have no rows".to_string(),
            });
        }
        hash.str(&image_column).str(&caption_column);
        let fingerprint = format!(
            "parquet:v1:{}:image={image_column}:caption={caption_column}:n={}:{}",
            canonical_display(root),
            rows.len(),
            hash.hex()
        );
        Ok(ParquetSource {
            files,
            image_column,
            caption_column,
            rows,
            fingerprint,
        })
    }

    /// The parquet files, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The image column in use.
    pub fn image_column(&self) -> &str {
        &self.image_column
    }

    /// The caption column in use.
    pub fn caption_column(&self) -> &str {
        &self.caption_column
    }
}

/// The parquet files `root` names: itself, or the sorted `.parquet` files of a folder.
fn list_files(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let open_err = |reason: String| DataError::Open {
        path: root.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(root).map_err(|e| open_err(format!("cannot open: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| open_err(format!("cannot list: {e}")))? {
        let path = entry
            .map_err(|e| open_err(format!("cannot list: {e}")))?
            .path();
        if has_extension(&path, &["parquet"]) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::Empty {
            source_desc: root.display().to_string(),
            detail: ": no .parquet files in this folder".to_string(),
        });
    }
    Ok(files)
}

/// Picks the column: the requested one, the one already chosen for an earlier file, or the first
/// default present.
fn pick_column(
    names: &[String],
    requested: Option<&str>,
    earlier: Option<&str>,
    defaults: &[&str],
    what: &str,
) -> Result<String, String> {
    let existing = || names.join(", ");
    if let Some(want) = requested.or(earlier) {
        return if names.iter().any(|n| n == want) {
            Ok(want.to_string())
        } else {
            Err(format!(
                "no {what} column `{want}`; the columns are: {}",
                existing()
            ))
        };
    }
    defaults
        .iter()
        .find(|d| names.iter().any(|n| n == *d))
        .map(|d| d.to_string())
        .ok_or_else(|| {
            format!(
                "no {what} column (looked for {}; pass one explicitly); the columns are: {}",
                defaults.join(", "),
                existing()
            )
        })
}

/// Reads one file's image and caption columns. Returns the rows and the column names used.
fn read_file(
    file: &Path,
    image_column: Option<&str>,
    caption_column: Option<&str>,
    earlier: Option<&(String, String)>,
) -> Result<(FileRows, String, String), String> {
    let f = File::open(file).map_err(|e| format!("cannot open: {e}"))?;
    let mut reader = ParquetReader::new(f);
    let schema = reader
        .schema()
        .map_err(|e| format!("not a readable parquet file: {e}"))?;
    let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
    let image = pick_column(
        &names,
        image_column,
        earlier.map(|c| c.0.as_str()),
        &DEFAULT_IMAGE_COLUMNS,
        "image",
    )?;
    let caption = pick_column(
        &names,
        caption_column,
        earlier.map(|c| c.1.as_str()),
        &DEFAULT_CAPTION_COLUMNS,
        "caption",
    )?;
    let df = reader
        .with_columns(Some(vec![image.clone(), caption.clone()]))
        .finish()
        .map_err(|e| format!("cannot read columns `{image}`, `{caption}`: {e}"))?;

    let image_series = df
        .column(&image)
        .map_err(|e| e.to_string())?
        .as_materialized_series();
    let (bytes, paths) = image_cells(image_series).map_err(|e| format!("column `{image}` {e}"))?;
    let caption_series = df
        .column(&caption)
        .map_err(|e| e.to_string())?
        .as_materialized_series();
    let captions: Vec<Option<String>> = match caption_series.dtype() {
        DataType::String => caption_series
            .str()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|c| c.map(str::to_string))
            .collect(),
        other => {
            return Err(format!(
                "column `{caption}` is {other}, expected a string caption column"
            ));
        }
    };
    if bytes.len() != captions.len() {
        return Err(format!(
            "columns `{image}` and `{caption}` differ in length ({} vs {})",
            bytes.len(),
            captions.len()
        ));
    }
    let rows = bytes
        .into_iter()
        .zip(paths)
        .zip(captions)
        .map(|((b, p), c)| (b, p, c))
        .collect();
    Ok((rows, image, caption))
}

/// Bytes (and, for a struct column, the `path` field) of an image column.
#[allow(clippy::type_complexity)]
fn image_cells(series: &Series) -> Result<(Vec<Option<Vec<u8>>>, Vec<Option<String>>), String> {
    let binary = |s: &Series| -> Result<Vec<Option<Vec<u8>>>, String> {
        Ok(s.binary()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|b| b.map(<[u8]>::to_vec))
            .collect())
    };
    match series.dtype() {
        DataType::Binary => Ok((binary(series)?, vec![None; series.len()])),
        DataType::Struct(fields) => {
            let has = |name: &str, dtype: &DataType| {
                fields
                    .iter()
                    .any(|f| f.name() == name && f.dtype() == dtype)
            };
            if !has("bytes", &DataType::Binary) {
                return Err(format!(
                    "is a struct without a binary `bytes` field ({}); expected a Hugging Face \
                     Image column {{bytes, path}}",
                    series.dtype()
                ));
            }
            let ca = series.struct_().map_err(|e| e.to_string())?;
            let outer_null = series.is_null();
            let mut bytes = binary(&ca.field_by_name("bytes").map_err(|e| e.to_string())?)?;
            for (b, null) in bytes.iter_mut().zip(outer_null.iter()) {
                if null == Some(true) {
                    *b = None;
                }
            }
            let paths = if has("path", &DataType::String) {
                let p = ca.field_by_name("path").map_err(|e| e.to_string())?;
                p.str()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect()
            } else {
                vec![None; bytes.len()]
            };
            Ok((bytes, paths))
        }
        other => Err(format!(
            "is {other}; expected binary image bytes or a Hugging Face Image struct {{bytes, path}}"
        )),
    }
}

impl Dataset for ParquetSource {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn get(&self, index: usize, size: usize) -> Result<Example, DataError> {
        let row = self.rows.get(index).ok_or_else(|| DataError::Item {
            item: format!("parquet[{index}]"),
            reason: format!("index out of range (len {})", self.rows.len()),
        })?;
        let file = self
            .files
            .get(row.file)
            .map_or_else(String::new, |f| f.display().to_string());
        let item_err = |reason: String| DataError::Item {
            item: format!("{file} row {}", row.row),
            reason,
        };
        let bytes = row.image.as_deref().ok_or_else(|| {
            item_err(match &row.image_path {
                Some(p) => format!(
                    "image `{}` is null (the struct's path is `{p}`; only embedded bytes are read)",
                    self.image_column
                ),
                None => format!("image `{}` is null", self.image_column),
            })
        })?;
        let caption = row
            .caption
            .as_deref()
            .map(str::trim)
            .ok_or_else(|| item_err(format!("caption `{}` is null", self.caption_column)))?;
        if caption.is_empty() {
            return Err(item_err(format!(
                "caption `{}` is empty",
                self.caption_column
            )));
        }
        let pixels = decode_image(bytes, size).map_err(item_err)?;
        Ok(Example {
            pixels,
            caption: caption.to_string(),
        })
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
