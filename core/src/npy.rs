//! NumPy `.npy` files (format versions 1.0 to 3.0): reading the numeric arrays that users hand
//! us, and writing f32 arrays streamed row block by row block to a temporary file that is
//! renamed into place only when complete, so a reader never sees a torn file.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a valid .npy file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path} holds dtype `{descr}`; expected {expected}")]
    Dtype {
        path: PathBuf,
        descr: String,
        expected: &'static str,
    },
    #[error("{path} has shape {found:?}; expected {expected}")]
    Shape {
        path: PathBuf,
        found: Vec<usize>,
        expected: String,
    },
}

/// The element types we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    F16,
    F32,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

impl NpyDtype {
    fn parse(descr: &str) -> Option<Self> {
        Some(match descr {
            "<f2" => Self::F16,
            "<f4" => Self::F32,
            "<f8" => Self::F64,
            "<i8" => Self::I64,
            "<i4" => Self::I32,
            "|u1" => Self::U8,
            "|b1" => Self::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 | Self::I32 => 4,
            Self::F64 | Self::I64 => 8,
            Self::U8 | Self::Bool => 1,
        }
    }
}

/// An array read from disk, as f64 values (exact for every supported dtype except i64 beyond
/// 2^53, which `as_i64` reads exactly).
#[derive(Debug, Clone)]
pub struct NpyArray {
    pub path: PathBuf,
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl NpyArray {
    /// Reads and validates a whole file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, NpyError> {
        let path = path.as_ref().to_path_buf();
        let io = |error| NpyError::Io {
            path: path.clone(),
            error,
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io)?;
        Self::parse(path, bytes)
    }

    /// Parses the bytes of a `.npy` file; `path` names it in errors.
    pub fn parse(path: PathBuf, mut bytes: Vec<u8>) -> Result<Self, NpyError> {
        let h = Header::parse(&path, &bytes)?;
        let data = bytes.len() - h.start;
        if data != h.data_bytes {
            return Err(h.truncated(&path, data));
        }
        bytes.drain(..h.start);
        Ok(Self {
            path,
            dtype: h.dtype,
            shape: h.shape,
            bytes,
        })
    }

    /// Entry `index` along the first axis of the file (shape `shape[1..]`), read without the
    /// rest of the data: one solver step of a feature store's `[steps, n, width]` arrays. The
    /// file's length is checked against its header first, so a truncated file is an error.
    pub fn read_slab(path: impl AsRef<Path>, index: usize) -> Result<Self, NpyError> {
        use std::io::{Seek, SeekFrom};
        let path = path.as_ref().to_path_buf();
        let io = |error| NpyError::Io {
            path: path.clone(),
            error,
        };
        let mut file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        // The fixed part, then the header whose length it gives.
        let mut prefix = vec![0u8; len.min(12)];
        file.read_exact(&mut prefix).map_err(io)?;
        let header_end = Header::end(&path, &prefix)?;
        if header_end > len {
            return Err(NpyError::Format {
                path,
                reason: "header runs past the end of the file".into(),
            });
        }
        prefix.resize(header_end, 0);
        if header_end > 12 {
            file.read_exact(&mut prefix[12..]).map_err(io)?;
        }
        let h = Header::parse(&path, &prefix)?;
        if len - h.start != h.data_bytes {
            return Err(h.truncated(&path, len - h.start));
        }
        let Some((&count, inner)) = h.shape.split_first() else {
            return Err(NpyError::Shape {
                path,
                found: h.shape,
                expected: "an array of rank 1 or more".into(),
            });
        };
        if index >= count {
            return Err(NpyError::Shape {
                path,
                found: h.shape.clone(),
                expected: format!("at least {} entries along the first axis", index + 1),
            });
        }
        let slab = h.data_bytes / count;
        let mut bytes = vec![0u8; slab];
        file.seek(SeekFrom::Start((h.start + index * slab) as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(io)?;
        Ok(Self {
            path,
            dtype: h.dtype,
            shape: inner.to_vec(),
            bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values as f64.
    pub fn as_f64(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.dtype {
            NpyDtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            NpyDtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            NpyDtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            NpyDtype::I64 => self
                .as_i64_unchecked()
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            NpyDtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            NpyDtype::U8 | NpyDtype::Bool => b.iter().map(|&v| v as f64).collect(),
        }
    }

    /// Values as f32.
    pub fn as_f32(&self) -> Vec<f32> {
        match self.dtype {
            NpyDtype::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            _ => self.as_f64().into_iter().map(|v| v as f32).collect(),
        }
    }

    fn as_i64_unchecked(&self) -> Vec<i64> {
        self.bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Integer values; errors for float arrays holding non-integers.
    pub fn as_i64(&self) -> Result<Vec<i64>, NpyError> {
        match self.dtype {
            NpyDtype::I64 => Ok(self.as_i64_unchecked()),
            NpyDtype::I32 | NpyDtype::U8 | NpyDtype::Bool => {
                Ok(self.as_f64().into_iter().map(|v| v as i64).collect())
            }
            NpyDtype::F16 | NpyDtype::F32 | NpyDtype::F64 => {
                let v = self.as_f64();
                if v.iter().all(|x| x.fract() == 0.0 && x.is_finite()) {
                    Ok(v.into_iter().map(|x| x as i64).collect())
                } else {
                    Err(NpyError::Dtype {
                        path: self.path.clone(),
                        descr: format!("{:?} with non-integer values", self.dtype),
                        expected: "integers",
                    })
                }
            }
        }
    }

    /// Errors unless the array has `rank` dimensions.
    pub fn expect_rank(&self, rank: usize, what: &str) -> Result<(), NpyError> {
        if self.shape.len() == rank {
            Ok(())
        } else {
            Err(NpyError::Shape {
                path: self.path.clone(),
                found: self.shape.clone(),
                expected: what.to_string(),
            })
        }
    }
}

/// A `.npy` file's header: the element type, the shape, where the data starts and how many
/// bytes it must have.
struct Header {
    dtype: NpyDtype,
    descr: String,
    shape: Vec<usize>,
    start: usize,
    data_bytes: usize,
}

impl Header {
    /// Where the header of a file starting with `prefix` (at least its first 12 bytes, or the
    /// whole file if shorter) ends.
    fn end(path: &Path, prefix: &[u8]) -> Result<usize, NpyError> {
        let bad = |reason: &str| NpyError::Format {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if prefix.len() < 10 || &prefix[..6] != b"\x93NUMPY" {
            return Err(bad("missing the \\x93NUMPY magic"));
        }
        match prefix[6] {
            1 => Ok(10 + u16::from_le_bytes([prefix[8], prefix[9]]) as usize),
            2 | 3 => {
                if prefix.len() < 12 {
                    return Err(bad("truncated header"));
                }
                let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
                Ok(12 + len as usize)
            }
            v => Err(NpyError::Format {
                path: path.to_path_buf(),
                reason: format!("unsupported format version {v}"),
            }),
        }
    }

    /// The header of a file starting with `bytes` (the header at least).
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, NpyError> {
        let bad = |reason: String| NpyError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let end = Self::end(path, bytes)?;
        let start = if bytes[6] == 1 { 10 } else { 12 };
        if end > bytes.len() {
            return Err(bad("header runs past the end of the file".into()));
        }
        let header = std::str::from_utf8(&bytes[start..end])
            .map_err(|_| bad("header is not text".into()))?;
        let descr = dict_value(header, "descr")
            .ok_or_else(|| bad(format!("no `descr` in header {header:?}")))?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
        let fortran = dict_value(header, "fortran_order")
            .ok_or_else(|| bad("no `fortran_order` in header".into()))?;
        if fortran.trim() != "False" {
            return Err(bad(
                "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
            ));
        }
        let shape_text =
            dict_value(header, "shape").ok_or_else(|| bad("no `shape` in header".into()))?;
        let shape = shape_text
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad(format!("bad shape {shape_text}")))?;
        let dtype = NpyDtype::parse(&descr).ok_or_else(|| NpyError::Dtype {
            path: path.to_path_buf(),
            descr: descr.clone(),
            expected: "one of <f4, <f8, <i8, <i4, |u1, |b1 (little-endian)",
        })?;
        let data_bytes = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|count| count.checked_mul(dtype.size()))
            .ok_or_else(|| bad("shape overflows".into()))?;
        Ok(Self {
            dtype,
            descr,
            shape,
            start: end,
            data_bytes,
        })
    }

    fn truncated(&self, path: &Path, found: usize) -> NpyError {
        NpyError::Format {
            path: path.to_path_buf(),
            reason: format!(
                "data section has {found} bytes, shape {:?} of {} needs {} (truncated?)",
                self.shape, self.descr, self.data_bytes
            ),
        }
    }
}

/// The raw text of `'key': value` in a NumPy header dict (value up to the next top-level comma).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pattern_a = format!("'{key}':");
    let pattern_b = format!("\"{key}\":");
    let start = header
        .find(&pattern_a)
        .map(|i| i + pattern_a.len())
        .or_else(|| header.find(&pattern_b).map(|i| i + pattern_b.len()))?;
    let rest = &header[start..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    Some(rest.trim())
}

fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Total of magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Streams an f32 array of known shape to `path`: data goes to `path.partial`, which
/// [`NpyWriter::finish`] checks for completeness, fsyncs and renames into place.
pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    remaining: usize,
}

impl NpyWriter {
    pub fn create(path: impl AsRef<Path>, shape: &[usize]) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let tmp = crate::fsutil::partial_path(&path);
        let mut out = BufWriter::new(File::create(&tmp)?);
        out.write_all(&header_bytes("<f4", shape))?;
        Ok(Self {
            path,
            tmp,
            out,
            remaining: shape.iter().product(),
        })
    }

    /// Appends values in row-major order.
    pub fn write(&mut self, values: &[f32]) -> std::io::Result<()> {
        if values.len() > self.remaining {
            return Err(std::io::Error::other(format!(
                "{}: more values written than the declared shape holds",
                self.path.display()
            )));
        }
        self.remaining -= values.len();
        let mut buf = Vec::with_capacity(values.len() * 4);
        for v in values {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        self.out.write_all(&buf)
    }

    /// Completes the file: all values must have been written.
    pub fn finish(self) -> std::io::Result<PathBuf> {
        if self.remaining != 0 {
            return Err(std::io::Error::other(format!(
                "{}: {} values missing from the declared shape",
                self.path.display(),
                self.remaining
            )));
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        Ok(self.path)
    }
}

/// Writes a whole f32 array atomically.
pub fn write_f32(path: impl AsRef<Path>, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    let mut w = NpyWriter::create(path, shape)?;
    w.write(values)?;
    w.finish().map(|_| ())
}

/// Writes a whole array as IEEE half precision (`<f2`), atomically: half the bytes of f32, with
/// a relative rounding error of at most 2^-11 (values beyond 65504 become infinite).
pub fn write_f16(path: impl AsRef<Path>, shape: &[usize], values: &[f32]) -> std::io::Result<()> {
    crate::fsutil::write_atomic(path.as_ref(), &f16_bytes(shape, values))
}

/// The bytes of a whole `<f4` file of `values` (row-major, `shape`).
pub fn f32_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut bytes = header_bytes("<f4", shape);
    bytes.reserve(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// The bytes of a whole `<f2` file of `values` rounded to half precision (see [`write_f16`]).
pub fn f16_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let mut bytes = header_bytes("<f2", shape);
    bytes.reserve(values.len() * 2);
    for v in values {
        bytes.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
    }
    bytes
}

/// Writes a whole f64 array atomically (statistics that need double precision, e.g. FID's mean
/// and covariance).
pub fn write_f64(path: impl AsRef<Path>, shape: &[usize], values: &[f64]) -> std::io::Result<()> {
    let mut bytes = header_bytes("<f8", shape);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::fsutil::write_atomic(path.as_ref(), &bytes)
}

/// Writes a whole i64 array atomically (used for token ids and masks).
pub fn write_i64(path: impl AsRef<Path>, shape: &[usize], values: &[i64]) -> std::io::Result<()> {
    let path = path.as_ref();
    let mut bytes = header_bytes("<i8", shape);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_f32_arrays_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_f32(&p, &[2, 3, 4], &values).unwrap();
        let a = NpyArray::read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.as_f32(), values);
        assert!(!dir.path().join("a.npy.partial").exists());
    }

    #[test]
    fn a_slab_of_a_stacked_array_reads_alone_and_a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let values: Vec<f32> = (0..24).map(|i| i as f32 - 5.0).collect();
        write_f32(&p, &[3, 2, 4], &values).unwrap();
        for k in 0..3 {
            let s = NpyArray::read_slab(&p, k).unwrap();
            assert_eq!(s.shape, vec![2, 4]);
            assert_eq!(s.as_f32(), values[k * 8..(k + 1) * 8]);
        }
        let err = NpyArray::read_slab(&p, 3).unwrap_err().to_string();
        assert!(err.contains("at least 4 entries"), "{err}");
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 5, 11, 60, bytes.len() - 1] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(NpyArray::read_slab(&p, 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_and_random_bytes_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_i64(&p, &[3, 2], &[1, 2, 3, 4, 5, 6]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for cut in 0..bytes.len() {
            assert!(NpyArray::parse(p.clone(), bytes[..cut].to_vec()).is_err());
        }
        let mut state = 0x1234_5678_u64;
        for _ in 0..500 {
            let n = (state % 200) as usize;
            let mut junk = b"\x93NUMPY\x01\x00".to_vec();
            for _ in 0..n {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                junk.push((state >> 33) as u8);
            }
            let _ = NpyArray::parse(p.clone(), junk);
        }
    }
}
