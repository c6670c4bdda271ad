//! An image folder: every `.png`, `.jpg` or `.jpeg` file under a directory (recursively, any
//! case of the extension), each captioned by the sidecar text file with the same stem
//! (`cat.jpg` -> `cat.txt`, trimmed).
//!
//! The file list is taken once at [`ImageFolder::open`], sorted by path so that indices are
//! deterministic; images and captions are read at [`Dataset::get`]. Hidden files and folders
//! (names starting with `.`, such as macOS `._cat.jpg` resource forks) are ignored. Symbolic
//! links are followed; a folder reached twice (a link loop) is walked once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::dataset::{
    DataError, Dataset, Example, canonical_display, has_extension, hash_file_identity,
};
use super::preprocess::decode_image;
use crate::fsutil::Fnv64;

/// Image extensions the folder source picks up (compared ignoring case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// A folder of images with sidecar `.txt` captions.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    /// Image files, sorted.
    images: Vec<PathBuf>,
    fingerprint: String,
}

impl ImageFolder {
    /// Lists the images under `path`.
    ///
    /// Errors: [`DataError::Open`] if `path` is not a readable folder (or a subfolder cannot be
    /// listed); [`DataError::Empty`] if it holds no image file. Missing captions and corrupt
    /// images only show at [`Dataset::get`], as [`DataError::Item`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = path.as_ref().to_path_buf();
        let open_err = |p: &Path, reason: String| DataError::Open {
            path: p.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(&root)
            .map_err(|e| open_err(&root, format!("cannot open image folder: {e}")))?;
        if !meta.is_dir() {
            return Err(open_err(&root, "not a folder".to_string()));
        }

        let mut images = Vec::new();
        let mut visited = HashSet::new();
        walk(&root, &mut images, &mut visited)?;
        images.sort();
        if images.is_empty() {
            return Err(DataError::Empty {
                source_desc: root.display().to_string(),
                detail: ": no .png/.jpg/.jpeg files under it (captions go in sidecar .txt \
                         files with the same name: cat.jpg + cat.txt)"
                    .to_string(),
            });
        }

        let mut hash = Fnv64::new();
        for image in &images {
            for file in [image.clone(), image.with_extension("txt")] {
                let name = relative_name(&root, &file);
                match std::fs::metadata(&file) {
                    Ok(meta) => hash_file_identity(&mut hash, &name, &meta),
                    // A missing sidecar is part of the identity too.
                    Err(_) => {
                        hash.str(&name).str("<missing>");
                    }
                }
            }
        }
        let fingerprint = format!(
            "folder:v1:{}:n={}:{}",
            canonical_display(&root),
            images.len(),
            hash.hex()
        );
        Ok(ImageFolder {
            root,
            images,
            fingerprint,
        })
    }

    /// The folder as given to [`ImageFolder::open`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The image files, in index order.
    pub fn images(&self) -> &[PathBuf] {
        &self.images
    }
}

/// Collects image files under `dir` into `out`, skipping hidden entries.
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut HashSet<PathBuf>,
) -> Result<(), DataError> {
    let open_err = |e: std::io::Error| DataError::Open {
        path: dir.display().to_string(),
        reason: format!("cannot list folder: {e}"),
    };
    // Canonical paths detect symlink loops; a folder that cannot be resolved is walked anyway.
    let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !visited.insert(key) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(open_err)? {
        let entry = entry.map_err(open_err)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        entries.push(entry.path());
    }
    entries.sort();
    for path in entries {
        // Follows symlinks; a dangling link is neither a file nor a folder and is ignored.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, out, visited)?;
        } else if meta.is_file() && has_extension(&path, &IMAGE_EXTENSIONS) {
            out.push(path);
        }
    }
    Ok(())
}

/// `file` relative to `root`, with `/` separators (the file itself if it is not under root).
fn relative_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn get(&self, index: usize, size: usize) -> Result<Example, DataError> {
        let image = self.images.get(index).ok_or_else(|| DataError::Item {
            item: format!("{}[{index}]", self.root.display()),
            reason: format!("index out of range (len {})", self.images.len()),
        })?;
        let item_err = |reason: String| DataError::Item {
            item: image.display().to_string(),
            reason,
        };
        let sidecar = image.with_extension("txt");
        let caption = match std::fs::read_to_string(&sidecar) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(item_err(format!(
                    "no caption: sidecar {} is missing",
                    sidecar.display()
                )));
            }
            Err(e) => {
                return Err(item_err(format!(
                    "cannot read caption {}: {e}",
                    sidecar.display()
                )));
            }
        };
        if caption.is_empty() {
            return Err(item_err(format!("caption {} is empty", sidecar.display())));
        }
        let bytes = std::fs::read(image).map_err(|e| item_err(format!("cannot read: {e}")))?;
        let pixels = decode_image(&bytes, size).map_err(item_err)?;
        Ok(Example { pixels, caption })
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}
