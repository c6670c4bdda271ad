//! `flowlens llm-features`: hidden states of a Hugging Face Llama for the user's own CKA studies.
//!
//! Output folder: `layer_NN.npy` per requested HF hidden-state index (f32, `[n, T, hidden]` with
//! `--pool none`, `[n, hidden]` with `--pool mean` over real tokens only), `input_ids.npy` and
//! `attention_mask.npy` (int64 `[n, T]`, what the model saw), and `meta.json`. Every file is
//! written under a temporary name and renamed when complete; `meta.json` is written last, so its
//! presence means the folder is complete.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::llm::{HiddenRequest, Llama, LlamaConfig};
use flowlens_core::npy::{self, NpyArray, NpyWriter};
use flowlens_core::tokenizer::{LlamaTokenizer, PaddingSide, TokenBatch};
use serde::Serialize;

/// Which hidden states to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSelection {
    All,
    Some(BTreeSet<usize>),
}

impl std::str::FromStr for LayerSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "all" {
            return Ok(Self::All);
        }
        let layers = s
            .split(',')
            .map(|p| {
                p.trim().parse::<usize>().map_err(|_| {
                    format!("`{p}` is not a layer index (use `all` or e.g. `2,12,22`)")
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        if layers.is_empty() {
            return Err("no layers given".into());
        }
        Ok(Self::Some(layers))
    }
}

/// How token positions are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over real (mask = 1) tokens: `[n, hidden]`.
    Mean,
    /// Every position: `[n, T, hidden]`.
    None,
}

/// Where the token ids come from.
#[derive(Debug, Clone)]
pub enum Input {
    Prompts(PathBuf),
    Ids { ids: PathBuf, mask: Option<PathBuf> },
}

#[derive(Debug, Clone)]
pub struct LlmFeaturesArgs {
    pub model: PathBuf,
    pub input: Input,
    pub layers: LayerSelection,
    pub pool: Pooling,
    pub out: PathBuf,
    pub batch_size: usize,
    pub max_len: Option<usize>,
    pub device: DeviceSpec,
    pub progress: bool,
}

#[derive(Serialize)]
struct Meta<'a> {
    format: &'static str,
    model: String,
    config: &'a LlamaConfig,
    layers: &'a [usize],
    layer_files: Vec<String>,
    pooling: Pooling,
    n: usize,
    seq_len: usize,
    hidden_size: usize,
    source: String,
    device: String,
    flowlens_version: &'static str,
}

/// Reads `--input-ids` and `--attention-mask` into a batch, checking shapes and values.
pub fn read_id_arrays(ids_path: &Path, mask_path: Option<&Path>) -> Result<TokenBatch> {
    let ids = NpyArray::read(ids_path)?;
    ids.expect_rank(2, "[n, T] token ids")?;
    let (n, len) = (ids.shape[0], ids.shape[1]);
    ensure!(
        n > 0 && len > 0,
        "{}: empty array {:?}",
        ids_path.display(),
        ids.shape
    );
    let id_values = ids.as_i64()?;
    let mask = match mask_path {
        Some(p) => {
            let m = NpyArray::read(p)?;
            if m.shape != ids.shape {
                bail!(
                    "{}: attention mask has shape {:?}, but the ids in {} have shape {:?}",
                    p.display(),
                    m.shape,
                    ids_path.display(),
                    ids.shape
                );
            }
            let values = m.as_f64();
            if let Some(i) = values.iter().position(|&v| v != 0.0 && v != 1.0) {
                bail!(
                    "{}: mask value {} at row {}, column {}; a mask holds 1 (real token) or 0 (padding)",
                    p.display(),
                    values[i],
                    i / len,
                    i % len
                );
            }
            values.into_iter().map(|v| v as i64).collect()
        }
        None => vec![1; n * len],
    };
    Ok(TokenBatch {
        ids: id_values,
        mask,
        n,
        len,
    })
}

/// Runs the command.
pub fn run(args: LlmFeaturesArgs) -> Result<PathBuf> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        args.max_len != Some(0),
        "--max-len 0: a sequence needs at least one token (its BOS); give the longest token count to keep"
    );
    let config_path = args.model.join("config.json");
    let config = LlamaConfig::from_file(&config_path)?;
    let (batch, source) = match &args.input {
        Input::Prompts(path) => {
            let prompts = crate::io::read_prompts(path)?;
            let tok = LlamaTokenizer::from_path(&args.model)?;
            let batch = tok.encode_batch(&prompts, args.max_len, PaddingSide::Right)?;
            (batch, format!("prompts:{}", path.display()))
        }
        Input::Ids { ids, mask } => (
            read_id_arrays(ids, mask.as_deref())?,
            format!("input_ids:{}", ids.display()),
        ),
    };
    if let Some(row) = (0..batch.n).find(|&r| {
        batch.mask[r * batch.len..(r + 1) * batch.len]
            .iter()
            .all(|&m| m == 0)
    }) {
        bail!("row {row} has no real tokens (its attention mask is all zeros)");
    }
    if let Some(pos) = batch
        .ids
        .iter()
        .position(|&id| id < 0 || id as usize >= config.vocab_size)
    {
        bail!(
            "token id {} at row {}, column {} is outside the vocabulary of {} (size {})",
            batch.ids[pos],
            pos / batch.len,
            pos % batch.len,
            config_path.display(),
            config.vocab_size
        );
    }
    ensure!(
        batch.len <= config.max_position_embeddings,
        "sequences of {} tokens exceed max_position_embeddings = {} of {}; pass --max-len",
        batch.len,
        config.max_position_embeddings,
        config_path.display()
    );
    // The config is checked against the weights before its layers are enumerated.
    flowlens_core::llm::model::check_layer_count(
        &config,
        &flowlens_core::weights::WeightStore::open(&args.model)?,
    )?;
    let layers: Vec<usize> = match &args.layers {
        LayerSelection::All => (0..=config.num_hidden_layers).collect(),
        LayerSelection::Some(set) => set.iter().copied().collect(),
    };
    if let Some(&bad) = layers.iter().find(|&&l| l > config.num_hidden_layers) {
        bail!(
            "layer {bad} does not exist: this model has hidden states 0..={} (0 = embeddings, {} = after the final norm)",
            config.num_hidden_layers,
            config.num_hidden_layers
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    remove_earlier_outputs(&args.out)?;
    let device = args.device;
    let task = FeatureTask {
        args: &args,
        config: &config,
        batch: &batch,
        layers: &layers,
    };
    device.run(task)??;
    npy::write_i64(
        args.out.join("input_ids.npy"),
        &[batch.n, batch.len],
        &batch.ids,
    )?;
    npy::write_i64(
        args.out.join("attention_mask.npy"),
        &[batch.n, batch.len],
        &batch.mask,
    )?;
    let meta = Meta {
        format: "flowlens.llm-features.v1",
        model: args.model.display().to_string(),
        config: &config,
        layers: &layers,
        layer_files: layers.iter().map(|l| layer_file_name(*l)).collect(),
        pooling: args.pool,
        n: batch.n,
        seq_len: batch.len,
        hidden_size: config.hidden_size,
        source,
        device: device.to_string(),
        flowlens_version: env!("CARGO_PKG_VERSION"),
    };
    let meta_path = args.out.join("meta.json");
    flowlens_core::fsutil::write_atomic(
        &meta_path,
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )
    .with_context(|| format!("cannot write {}", meta_path.display()))?;
    Ok(args.out.clone())
}

/// Removes what an earlier call wrote into `out` (meta.json first, then the layer, id and mask
/// arrays), so that no layer of another call sits beside this call's; other files are left.
fn remove_earlier_outputs(out: &Path) -> Result<()> {
    let meta = out.join("meta.json");
    if meta.exists() {
        std::fs::remove_file(&meta).with_context(|| format!("cannot remove {}", meta.display()))?;
    }
    for entry in std::fs::read_dir(out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let layer = name
            .strip_prefix("layer_")
            .and_then(|n| n.strip_suffix(".npy"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if layer || name == "input_ids.npy" || name == "attention_mask.npy" {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// `layer_NN.npy` with two digits.
pub fn layer_file_name(layer: usize) -> String {
    format!("layer_{layer:02}.npy")
}

struct FeatureTask<'a> {
    args: &'a LlmFeaturesArgs,
    config: &'a LlamaConfig,
    batch: &'a TokenBatch,
    layers: &'a [usize],
}

impl BackendTask for FeatureTask<'_> {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let FeatureTask {
            args,
            config,
            batch,
            layers,
        } = self;
        let model = Llama::<B>::load(config, &args.model, &device)
            .with_context(|| format!("cannot load the model in {}", args.model.display()))?;
        let d = config.hidden_size;
        let shape: Vec<usize> = match args.pool {
            Pooling::Mean => vec![batch.n, d],
            Pooling::None => vec![batch.n, batch.len, d],
        };
        let mut writers = layers
            .iter()
            .map(|&l| {
                let path = args.out.join(layer_file_name(l));
                NpyWriter::create(&path, &shape)
                    .with_context(|| format!("cannot create {}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let request = HiddenRequest::layers(layers.iter().copied());
        let bar = crate::io::progress_bar(batch.n as u64, args.progress);
        for start in (0..batch.n).step_by(args.batch_size) {
            let end = (start + args.batch_size).min(batch.n);
            let rows = batch.rows(start, end);
            let (b, s) = (rows.n, rows.len);
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.ids, [b, s]), &device);
            let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.mask, [b, s]), &device);
            let out = model.forward_ids(ids, Some(&mask), &request)?;
            for (writer, layer) in writers.iter_mut().zip(layers) {
                let h = out.hidden_states[layer].clone();
                let h = match args.pool {
                    Pooling::Mean => masked_mean(h, &mask),
                    Pooling::None => h.reshape([b, s * d]),
                };
                let values = h
                    .into_data()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("reading features back from the device: {e:?}"))?;
                writer
                    .write(&values)
                    .with_context(|| format!("writing {}", layer_file_name(*layer)))?;
            }
            bar.inc((end - start) as u64);
        }
        bar.finish_and_clear();
        for (writer, layer) in writers.into_iter().zip(layers) {
            writer
                .finish()
                .with_context(|| format!("finishing {}", layer_file_name(*layer)))?;
        }
        Ok(())
    }
}

/// Mean over real tokens: `h [b, s, d]`, `mask [b, s]` (1 = real) -> `[b, d]`.
pub fn masked_mean<B: Backend>(h: Tensor<B, 3>, mask: &Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [b, s, d] = h.dims();
    let m = mask.clone().float().reshape([b, s, 1]);
    let count = m.clone().sum_dim(1).reshape([b, 1]);
    (h * m).sum_dim(1).reshape([b, d]) / count
}
