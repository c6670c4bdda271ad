//! Hugging Face safetensors weights: memory-mapped single files and sharded checkpoints
//! (`model.safetensors.index.json`), F32/F16/BF16/F64 on disk, converted to f32 tensor by tensor.
//!
//! The container format is the one documented at <https://github.com/huggingface/safetensors>:
//! an 8-byte little-endian header length, a JSON header, then a row-major data blob. The header is
//! parsed and validated by the `safetensors` crate (offsets contiguous, sizes consistent, file length
//! exact), so truncated and corrupt files are errors before any tensor is read.
//!
//! Modules take their weights through a [`VarBuilder`] (the candle pattern): the builder carries
//! the dotted prefix, so module paths equal checkpoint keys and there is no remap table.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::nn::linear::Linear;
use burn::module::{Initializer, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};

/// Everything that can go wrong while reading weights. Every variant names the file and, where
/// there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot read weights file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{path} is not a valid safetensors file ({reason}); it may be truncated or corrupt: download or convert it again"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("sharded checkpoint index {path} is invalid: {reason}")]
    Index { path: PathBuf, reason: String },
    #[error("no weights in {dir}: expected model.safetensors or model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("tensor `{name}` is missing from {files}")]
    Missing { name: String, files: String },
    #[error(
        "{count} unexpected tensor(s) in {files} that the model does not use: {names}; is this checkpoint for a different architecture or config?"
    )]
    Unexpected {
        count: usize,
        names: String,
        files: String,
    },
    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The module cannot be built for this configuration (checked before any weight is read).
    #[error("{0}")]
    Config(String),
    #[error(
        "tensor `{name}` in {path} holds a non-finite value ({value} at flat index {index}): the weights are damaged (a diverged training or a bad conversion)"
    )]
    NonFinite {
        name: String,
        path: PathBuf,
        index: usize,
        value: f32,
    },
    #[error(
        "tensor `{name}` in {path} has dtype {dtype}, which is not supported (use F32, F16, BF16 or F64)"
    )]
    Dtype {
        name: String,
        path: PathBuf,
        dtype: String,
    },
}

/// One memory-mapped safetensors file with its validated header.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
}

impl SafetensorsFile {
    /// Maps the file and validates its header. Nothing is copied.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|error| WeightError::Io {
            path: path.clone(),
            error,
        })?;
        // SAFETY: the map is read-only; a checkpoint modified while we read it is the user's
        // race, as with every memory-mapped loader (safetensors, candle, transformers).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|error| WeightError::Io {
            path: path.clone(),
            error,
        })?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| WeightError::Corrupt {
                path: path.clone(),
                reason: describe_safetensors_error(&e),
            })?;
        Ok(Self {
            path,
            mmap,
            data_start: 8 + header_len,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in this file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.metadata.tensors().into_keys().collect();
        names.sort();
        names
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.metadata.info(name).map(|i| i.shape.as_slice())
    }

    /// The header entry and the bytes of a tensor.
    fn raw(&self, name: &str) -> Result<(&safetensors::tensor::TensorInfo, &[u8]), WeightError> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| WeightError::Missing {
                name: name.to_string(),
                files: self.path.display().to_string(),
            })?;
        let (begin, end) = info.data_offsets;
        Ok((
            info,
            &self.mmap[self.data_start + begin..self.data_start + end],
        ))
    }

    /// Reads one tensor as f32 (row-major), converting F16/BF16/F64, and checks its shape.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        let (info, bytes) = self.raw(name)?;
        if info.shape != expected {
            return Err(WeightError::Shape {
                name: name.to_string(),
                path: self.path.clone(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let values = decode_f32(bytes, info.dtype).ok_or_else(|| WeightError::Dtype {
            name: name.to_string(),
            path: self.path.clone(),
            dtype: format!("{:?}", info.dtype),
        })?;
        // A NaN or infinite weight makes every output NaN without a word: say where it is.
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(WeightError::NonFinite {
                name: name.to_string(),
                path: self.path.clone(),
                index,
                value: values[index],
            });
        }
        Ok(values)
    }

    /// Reads an integer tensor (I64, I32, U8 or BOOL) as i64 with its shape.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>), WeightError> {
        let (info, bytes) = self.raw(name)?;
        let values = match info.dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("chunk of 4")) as i64)
                .collect(),
            Dtype::U8 | Dtype::BOOL => bytes.iter().map(|&b| b as i64).collect(),
            other => {
                return Err(WeightError::Dtype {
                    name: name.to_string(),
                    path: self.path.clone(),
                    dtype: format!("{other:?} (an integer tensor was expected)"),
                });
            }
        };
        Ok((values, info.shape.clone()))
    }

    /// The dtype of a tensor as the file stores it.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.metadata.info(name).map(|i| i.dtype)
    }
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "file shorter than the 8-byte header length".into(),
        E::HeaderTooLarge => "header length field is implausibly large".into(),
        E::InvalidHeaderLength => "header length points past the end of the file".into(),
        E::MetadataIncompleteBuffer => {
            "data section length does not match the header (truncated file?)".into()
        }
        other => other.to_string(),
    }
}

/// Decodes little-endian bytes of a float dtype into f32; `None` for non-float dtypes.
fn decode_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

/// A checkpoint: one or several safetensors files with a name -> file map.
pub struct WeightStore {
    files: Vec<SafetensorsFile>,
    by_name: HashMap<String, usize>,
    used: RefCell<BTreeSet<String>>,
    aliases: HashMap<String, Alias>,
}

/// Where a module's (canonical) tensor name is stored in a checkpoint of another layout, e.g. a
/// diffusers VAE key in the single-file LDM layout (see [`WeightStore::with_aliases`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The name in the file.
    pub stored: String,
    /// The file stores the tensor with two trailing unit dimensions (a 1x1 convolution weight
    /// `[out, in, 1, 1]` standing for a linear layer `[out, in]`); same row-major data.
    pub squeeze_1x1: bool,
}

/// Tensor name suffixes that exporters sometimes leave behind and that are never weights.
const STRAY_BUFFERS: &[&str] = &["rotary_emb.inv_freq", "position_ids", "num_batches_tracked"];

impl WeightStore {
    /// Opens `dir/model.safetensors`, or the shards listed in `dir/model.safetensors.index.json`,
    /// or a single file path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        if path.is_file() {
            return Self::from_files(vec![SafetensorsFile::open(path)?]);
        }
        let index = path.join("model.safetensors.index.json");
        let single = path.join("model.safetensors");
        if single.is_file() {
            Self::from_files(vec![SafetensorsFile::open(single)?])
        } else if index.is_file() {
            Self::open_index(&index)
        } else {
            Err(WeightError::NoWeights {
                dir: path.to_path_buf(),
            })
        }
    }

    /// Opens a sharded checkpoint from its index (`{"weight_map": {name: shard_file}}`).
    pub fn open_index(index: &Path) -> Result<Self, WeightError> {
        let text = std::fs::read_to_string(index).map_err(|error| WeightError::Io {
            path: index.to_path_buf(),
            error,
        })?;
        let bad = |reason: String| WeightError::Index {
            path: index.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("weight_map entry `{name}` is not a file name")))?;
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(bad(format!(
                    "weight_map entry `{name}` points outside the checkpoint folder: {file}"
                )));
            }
            shards
                .entry(file.to_string())
                .or_default()
                .push(name.clone());
        }
        let mut files = Vec::new();
        for (file, names) in &shards {
            let shard = SafetensorsFile::open(dir.join(file))?;
            for name in names {
                if shard.shape(name).is_none() {
                    return Err(bad(format!(
                        "weight_map says `{name}` is in {file}, but that shard does not hold it"
                    )));
                }
            }
            files.push(shard);
        }
        Self::from_files(files)
    }

    /// Builds a store from already opened files; a name present in two files is an error.
    pub fn from_files(files: Vec<SafetensorsFile>) -> Result<Self, WeightError> {
        let mut by_name = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.names() {
                if let Some(prev) = by_name.insert(name.clone(), i) {
                    return Err(WeightError::Corrupt {
                        path: f.path.clone(),
                        reason: format!(
                            "tensor `{name}` is also in {}",
                            files[prev].path.display()
                        ),
                    });
                }
            }
        }
        Ok(Self {
            files,
            by_name,
            used: RefCell::new(BTreeSet::new()),
            aliases: HashMap::new(),
        })
    }

    /// Reads canonical names through `aliases` (canonical name -> stored name): for checkpoints
    /// whose layout differs from the module paths only by names (and 1x1 squeezes). Names
    /// without an alias are read as they are.
    pub fn with_aliases(mut self, aliases: impl IntoIterator<Item = (String, Alias)>) -> Self {
        self.aliases.extend(aliases);
        self
    }

    fn describe_files(&self) -> String {
        match self.files.as_slice() {
            [one] => one.path.display().to_string(),
            many => format!(
                "{} shards in {}",
                many.len(),
                many[0]
                    .path
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// The file that holds `name`.
    pub fn file_of(&self, name: &str) -> Option<&SafetensorsFile> {
        self.by_name.get(name).map(|&i| &self.files[i])
    }

    /// Reads a tensor as f32 with a shape check, and marks it used.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        let (stored, shape) = match self.aliases.get(name) {
            Some(alias) if alias.squeeze_1x1 => {
                let mut shape = expected.to_vec();
                shape.extend([1, 1]);
                (alias.stored.as_str(), shape)
            }
            Some(alias) => (alias.stored.as_str(), expected.to_vec()),
            None => (name, expected.to_vec()),
        };
        let file = self.file_of(stored).ok_or_else(|| WeightError::Missing {
            name: stored.to_string(),
            files: self.describe_files(),
        })?;
        let data = file.read_f32(stored, &shape)?;
        self.used.borrow_mut().insert(stored.to_string());
        Ok(data)
    }

    /// Errors with the list of tensors that no module asked for, except known stray buffers and
    /// the names matched by `allowed_unused` (prefix match, e.g. `lm_head.`).
    pub fn check_all_used(&self, allowed_unused: &[&str]) -> Result<(), WeightError> {
        let used = self.used.borrow();
        let unexpected: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !used.contains(n))
            .filter(|n| !STRAY_BUFFERS.iter().any(|s| n.ends_with(s)))
            .filter(|n| !allowed_unused.iter().any(|p| n.starts_with(p)))
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unexpected.iter().take(12).map(|s| s.as_str()).collect();
        let more = unexpected.len().saturating_sub(shown.len());
        Err(WeightError::Unexpected {
            count: unexpected.len(),
            names: if more > 0 {
                format!("{} and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            },
            files: self.describe_files(),
        })
    }
}

/// Where a [`VarBuilder`] takes its values from.
#[derive(Clone)]
enum Source {
    /// Fresh parameters from initialisers (training from scratch, tests).
    Init,
    /// Values from a checkpoint; every read is shape-checked.
    Load(Rc<WeightStore>),
    /// Values from a function of the checkpoint key and its (checkpoint-layout) shape, e.g. a
    /// deterministic formula that a reference implementation evaluates identically.
    Generated(Rc<WeightFn>),
}

/// `(checkpoint key, checkpoint-layout shape) -> row-major values`.
pub type WeightFn = dyn Fn(&str, &[usize]) -> Vec<f32>;

/// Builds module parameters under a dotted prefix, either freshly initialised or loaded from a
/// checkpoint, so that a module's construction code is the single place that knows its names.
#[derive(Clone)]
pub struct VarBuilder<'d, B: Backend> {
    source: Source,
    prefix: String,
    device: &'d B::Device,
}

impl<'d, B: Backend> VarBuilder<'d, B> {
    /// Parameters from initialisers.
    pub fn init(device: &'d B::Device) -> Self {
        Self {
            source: Source::Init,
            prefix: String::new(),
            device,
        }
    }

    /// Parameters from a checkpoint.
    pub fn load(store: Rc<WeightStore>, device: &'d B::Device) -> Self {
        Self {
            source: Source::Load(store),
            prefix: String::new(),
            device,
        }
    }

    /// Parameters computed by `f(key, shape)` (checkpoint layout: linear weights `[out, in]`).
    pub fn generated(f: Rc<WeightFn>, device: &'d B::Device) -> Self {
        Self {
            source: Source::Generated(f),
            prefix: String::new(),
            device,
        }
    }

    pub fn device(&self) -> &'d B::Device {
        self.device
    }

    /// A builder for a sub-module: `vb.pp("layers").pp(3)` names `layers.3.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            source: self.source.clone(),
            prefix,
            device: self.device,
        }
    }

    /// The full checkpoint key of `name` under this builder.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A parameter of the given (checkpoint-layout) shape.
    pub fn param<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Initializer,
    ) -> Result<Param<Tensor<B, D>>, WeightError> {
        Ok(Param::from_tensor(self.tensor(name, shape, init)?))
    }

    /// A tensor of the given (checkpoint-layout) shape, loaded or initialised.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Initializer,
    ) -> Result<Tensor<B, D>, WeightError> {
        match &self.source {
            Source::Init => {
                let fan_in = if D >= 2 {
                    Some(shape[1..].iter().product())
                } else {
                    None
                };
                let fan_out = if D >= 1 { Some(shape[0]) } else { None };
                Ok(init.init_with(shape, fan_in, fan_out, self.device).val())
            }
            Source::Load(store) => {
                let data = store.read_f32(&self.key(name), &shape)?;
                Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
            }
            Source::Generated(f) => {
                let data = f(&self.key(name), &shape);
                assert_eq!(
                    data.len(),
                    shape.iter().product::<usize>(),
                    "{}",
                    self.key(name)
                );
                Ok(Tensor::from_data(TensorData::new(data, shape), self.device))
            }
        }
    }

    /// Checkpoint-layout values of a loaded or generated tensor (never called for fresh
    /// parameters).
    fn read_raw(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, WeightError> {
        match &self.source {
            Source::Load(store) => store.read_f32(&self.key(name), shape),
            Source::Generated(f) => Ok(f(&self.key(name), shape)),
            Source::Init => unreachable!("read_raw is only called for loaded or generated weights"),
        }
    }

    /// A PyTorch `nn.Linear(d_in, d_out)` at `name`: the checkpoint holds `weight` as [out, in]
    /// (y = x W^T + b); burn keeps [in, out], so the weight is transposed on the host while
    /// loading (a contiguous leaf tensor, as autodiff needs). Initialisation is PyTorch's
    /// default for weight and bias: U(-1/sqrt(in), 1/sqrt(in)).
    pub fn linear(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear<B>, WeightError> {
        self.linear_with(name, d_in, d_out, bias, LinearInit::Default)
    }

    /// [`VarBuilder::linear`] with a chosen initialisation (zero-init for adaLN-zero
    /// modulations and output layers, Xavier for transformer blocks).
    pub fn linear_with(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init: LinearInit,
    ) -> Result<Linear<B>, WeightError> {
        let vb = self.pp(name);
        let bound = 1.0 / (d_in as f64).sqrt();
        let (w_init, b_init) = match init {
            LinearInit::Default => (
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                },
                Initializer::Uniform {
                    min: -bound,
                    max: bound,
                },
            ),
            LinearInit::Zeros => (Initializer::Zeros, Initializer::Zeros),
            LinearInit::XavierUniform => {
                let a = (6.0 / (d_in + d_out) as f64).sqrt();
                (Initializer::Uniform { min: -a, max: a }, Initializer::Zeros)
            }
        };
        let weight = match &self.source {
            Source::Init => Param::from_tensor(
                w_init
                    .init_with([d_in, d_out], Some(d_in), Some(d_out), self.device)
                    .val(),
            ),
            Source::Load(_) | Source::Generated(_) => {
                let rows = vb.read_raw("weight", &[d_out, d_in])?;
                let mut cols = vec![0f32; rows.len()];
                for (o, row) in rows.chunks_exact(d_in).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        cols[i * d_out + o] = v;
                    }
                }
                Param::from_tensor(Tensor::from_data(
                    TensorData::new(cols, [d_in, d_out]),
                    self.device,
                ))
            }
        };
        let bias = if bias {
            Some(vb.param("bias", [d_out], b_init)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A PyTorch `nn.Conv2d` at `name` (weight `[out, in / groups, k, k]`, same layout in burn),
    /// symmetric padding; PyTorch's default initialisation.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &self,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Conv2d<B>, WeightError> {
        let vb = self.pp(name);
        let fan_in = c_in / groups * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let uniform = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        Ok(Conv2d {
            weight: vb.param(
                "weight",
                [c_out, c_in / groups, kernel, kernel],
                uniform.clone(),
            )?,
            bias: Some(vb.param("bias", [c_out], uniform)?),
            stride: [stride, stride],
            kernel_size: [kernel, kernel],
            dilation: [1, 1],
            padding: burn::nn::PaddingConfig2d::Explicit(padding, padding, padding, padding),
            groups,
        })
    }
}

/// How a fresh [`VarBuilder::linear_with`] layer is initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearInit {
    /// PyTorch's `nn.Linear` default.
    Default,
    /// All zeros (adaLN-zero modulations, zero-initialised residual and output projections).
    Zeros,
    /// Xavier-uniform weight, zero bias (DiT/SD3 transformer blocks).
    XavierUniform,
}

/// Writes f32 tensors `(name, shape, values)` as a safetensors file, atomically (temporary file,
/// fsync, rename). Names are written in sorted order, as `safetensors.torch.save_file` does.
pub fn write_safetensors_f32(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
) -> Result<(), String> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("{}: tensor {n}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = safetensors::tensor::serialize(views, None)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::fsutil::write_atomic(path, &data).map_err(|e| format!("{}: {e}", path.display()))
}
