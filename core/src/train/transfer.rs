//! Experiment 2's second system (paper section 7.2: "using the same trained dual-stream encoder
//! for both systems"): a dual-stream-encoder + ConvNeXt-decoder model that starts from a trained
//! `both` run's EMA weights for everything upstream of the decoder (the dual-stream encoder, the
//! time embedding that conditions it, the LLM) and keeps the encoder, the time embedding and the
//! LLM's token embeddings (the text stream's input) frozen, so that the encoder is bit-identical
//! in both systems; the LLM's layers and the fresh ConvNeXt decoder train with the usual recipe.
//! Frozen parameters get no gradients, no optimiser updates and no EMA updates.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::flow::{FlowConfig, FlowModel};
use crate::sample::{CheckpointChoice, Weights, load_run_model};

/// Where the transferred weights come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The source run (a `both` run).
    pub from: PathBuf,
    /// Its checkpoint step (EMA weights).
    pub step: usize,
}

/// Copies the source's encoder, time embedding and LLM into `model` and freezes the encoder, the
/// time embedding and the token embeddings.
pub fn apply<B: Backend>(
    mut model: FlowModel<B>,
    flow: &FlowConfig,
    t: &Transfer,
    device: &B::Device,
) -> Result<FlowModel<B>, String> {
    if !flow.variant.dual_stream_encoder() {
        return Err(format!(
            "a transfer copies a dual-stream encoder; the {} variant has none",
            flow.variant.name()
        ));
    }
    let src = load_run_model::<B>(
        &t.from,
        Weights::Ema,
        CheckpointChoice::Step(t.step),
        device,
    )
    .map_err(|e| format!("transfer source {}: {e}", t.from.display()))?;
    let Some(encoder) = src.model.dual_stream_encoder else {
        return Err(format!(
            "transfer source {} is a {} run without a dual-stream encoder",
            t.from.display(),
            src.config.variant.name()
        ));
    };
    if src.flow.llm != flow.llm || src.flow.width != flow.width {
        return Err(format!(
            "transfer source {} has another LLM or width than this model",
            t.from.display()
        ));
    }
    model.dual_stream_encoder = Some(encoder.no_grad());
    model.time_embed = src.model.time_embed.no_grad();
    let mut llm = src.model.llm;
    llm.embed_tokens = llm.embed_tokens.set_require_grad(false);
    model.llm = llm;
    Ok(model)
}

/// Every float tensor of a module, in visiting order, as host values.
struct Values(Vec<Vec<f32>>);

impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(
            param
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 values"),
        );
    }
}

fn frozen_values<B: Backend>(m: &FlowModel<B>) -> Result<Vec<Vec<f32>>, String> {
    let mut v = Values(Vec::new());
    m.dual_stream_encoder
        .as_ref()
        .ok_or("the model has no dual-stream encoder")?
        .visit(&mut v);
    m.time_embed.visit(&mut v);
    v.0.push(
        m.llm
            .embed_tokens
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 values"),
    );
    Ok(v.0)
}

/// Checks that the EMA weights of `dst` (latest checkpoint, a run trained with a transfer from
/// `src`) hold exactly the source's frozen tensors, bit for bit; returns how many tensors were
/// compared.
pub fn check_frozen_identical<B: Backend>(
    src: &Path,
    dst: &Path,
    device: &B::Device,
) -> Result<usize, String> {
    let d = load_run_model::<B>(dst, Weights::Ema, CheckpointChoice::Latest, device)
        .map_err(|e| e.to_string())?;
    let Some(t) = &d.config.transfer else {
        return Err(format!("{} was not trained with a transfer", dst.display()));
    };
    let s = load_run_model::<B>(src, Weights::Ema, CheckpointChoice::Step(t.step), device)
        .map_err(|e| e.to_string())?;
    let (a, b) = (frozen_values(&s.model)?, frozen_values(&d.model)?);
    if a.len() != b.len() {
        return Err(format!("{} vs {} frozen tensors", a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x.len() != y.len() || x.iter().zip(y).any(|(p, q)| p.to_bits() != q.to_bits()) {
            return Err(format!("frozen tensor {i} differs"));
        }
    }
    Ok(a.len())
}
