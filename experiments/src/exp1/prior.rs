//! The frozen-prior reading of experiment 1 ("alignment to the LLM prior"): the pre-trained LLM
//! both models started from, frozen, run on the caption alone (no image tokens), its hidden
//! states at the probed layers pooled over the text tokens as the stores pool their text taps.
//! One common target for both models, read beside each model's own LLM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flowlens_core::flow::FlowConfig;
use flowlens_core::flow::taps::{Tap, TapPooling};
use flowlens_core::llm::{HiddenRequest, Llama, LlamaConfig};
use flowlens_core::run::{Event, MetricRecord, RunDir};
use flowlens_core::tokenizer::{LlamaTokenizer, PaddingSide};
use flowlens_core::train::{LlmInit, TrainConfig};
use ndarray::Array2;

/// The prior's pooled hidden states, per HF layer index: `[n prompts, hidden]`.
#[derive(Debug, Clone)]
pub struct PriorFeatures {
    pub dir: PathBuf,
    pub layers: BTreeMap<usize, Array2<f64>>,
}

/// The LLM a run started from: the stage-0 prior's folder (from the run's `prior` record) or
/// the pre-trained folder; `None` for a randomly initialised LLM (no prior to compare with).
pub fn prior_dir(run: &Path) -> Result<Option<PathBuf>> {
    let r = RunDir::open(run)?;
    let config: TrainConfig = r.config()?;
    match config.llm_init {
        LlmInit::Random => Ok(None),
        LlmInit::Pretrained(p) => Ok(Some(p)),
        LlmInit::Prior => {
            let dir = r.read_records()?.into_iter().find_map(|m| match m {
                MetricRecord::Event(Event::Prior { dir, .. }) => Some(dir),
                _ => None,
            });
            match dir {
                Some(d) => Ok(Some(d)),
                None => bail!(
                    "{}: the run starts from the stage-0 prior but its metrics.jsonl has no `prior` record naming the prior's folder",
                    run.display()
                ),
            }
        }
    }
}

/// The prior's features for `prompts` at `layers`, tokenised as the run's model saw them (its
/// tokenizer, its text length, right padding), pooled with `pooling`.
pub fn prior_features<B: Backend>(
    run: &Path,
    dir: &Path,
    prompts: &[String],
    layers: &[usize],
    pooling: TapPooling,
    device: &B::Device,
) -> Result<PriorFeatures> {
    let r = RunDir::open(run)?;
    let config: TrainConfig = r.config()?;
    let flow = FlowConfig::of(config.preset, config.variant);
    let llm_config = LlamaConfig::from_file(dir.join("config.json"))
        .with_context(|| format!("the prior of {} in {}", run.display(), dir.display()))?;
    if !llm_config.same_shapes(&flow.llm) {
        bail!(
            "the prior in {} does not have the shapes of the LLM of {}",
            dir.display(),
            run.display()
        );
    }
    let model = Llama::<B>::load(&llm_config, dir, device)
        .with_context(|| format!("cannot load the prior in {}", dir.display()))?;
    let tokenizer = LlamaTokenizer::from_path(r.path("tokenizer.json"))?;
    let tokens = tokenizer.encode_batch(prompts, Some(flow.text_len), PaddingSide::Right)?;
    let request = HiddenRequest::layers(layers.iter().copied());
    let mut out: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let d = llm_config.hidden_size;
    for start in (0..tokens.n).step_by(32) {
        let rows = tokens.rows(start, (start + 32).min(tokens.n));
        let (b, s) = (rows.n, rows.len);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.ids, [b, s]), device);
        let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.mask, [b, s]), device);
        let h = model.forward_ids(ids, Some(&mask), &request)?;
        for &l in layers {
            let tap = Tap {
                value: h.hidden_states[&l].clone(),
                mask: Some(mask.clone()),
            };
            let pooled = tap.pool(pooling).into_data().convert::<f32>();
            let values = pooled
                .to_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("reading the prior's features: {e:?}"))?;
            out.entry(l)
                .or_default()
                .extend(values.into_iter().map(f64::from));
        }
    }
    let layers = out
        .into_iter()
        .map(|(l, v)| Ok((l, Array2::from_shape_vec((tokens.n, d), v)?)))
        .collect::<Result<_>>()?;
    Ok(PriorFeatures {
        dir: dir.to_path_buf(),
        layers,
    })
}
