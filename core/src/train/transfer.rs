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

use crate::checkpoint::{CheckpointChoice, CheckpointError, Weights, load_run_model};
use crate::flow::{FlowConfig, FlowModel};
use crate::train::config::Transfer;

/// Why a transfer cannot be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("a transfer copies a dual-stream encoder; the {variant} variant has none")]
    NoEncoder { variant: &'static str },
    #[error("the model has no dual-stream encoder")]
    ModelWithoutEncoder,
    #[error("transfer source {run}: {error}")]
    Source {
        run: PathBuf,
        error: CheckpointError,
    },
    #[error("transfer source {run} is a {variant} run without a dual-stream encoder")]
    SourceWithoutEncoder { run: PathBuf, variant: &'static str },
    #[error("transfer source {run} has another LLM or width than this model")]
    Shapes { run: PathBuf },
    #[error(transparent)]
    Load(#[from] CheckpointError),
    #[error("{run} was not trained with a transfer")]
    NotTransferred { run: PathBuf },
    #[error("{0} vs {1} frozen tensors")]
    Count(usize, usize),
    #[error("frozen tensor {0} differs")]
    Differs(usize),
}

/// Copies the source's encoder, time embedding and LLM into `model` and freezes the encoder, the
/// time embedding and the token embeddings.
pub fn apply<B: Backend>(
    mut model: FlowModel<B>,
    flow: &FlowConfig,
    t: &Transfer,
    device: &B::Device,
) -> Result<FlowModel<B>, TransferError> {
    if !flow.variant.dual_stream_encoder() {
        return Err(TransferError::NoEncoder {
            variant: flow.variant.name(),
        });
    }
    let src = load_run_model::<B>(
        &t.from,
        Weights::Ema,
        CheckpointChoice::Step(t.step),
        device,
    )
    .map_err(|error| TransferError::Source {
        run: t.from.clone(),
        error,
    })?;
    let Some(encoder) = src.model.dual_stream_encoder else {
        return Err(TransferError::SourceWithoutEncoder {
            run: t.from.clone(),
            variant: src.config.variant.name(),
        });
    };
    if src.flow.llm != flow.llm || src.flow.width != flow.width {
        return Err(TransferError::Shapes {
            run: t.from.clone(),
        });
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

fn frozen_values<B: Backend>(m: &FlowModel<B>) -> Result<Vec<Vec<f32>>, TransferError> {
    let mut v = Values(Vec::new());
    m.dual_stream_encoder
        .as_ref()
        .ok_or(TransferError::ModelWithoutEncoder)?
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
) -> Result<usize, TransferError> {
    let d = load_run_model::<B>(dst, Weights::Ema, CheckpointChoice::Latest, device)?;
    let Some(t) = &d.config.transfer else {
        return Err(TransferError::NotTransferred {
            run: dst.to_path_buf(),
        });
    };
    let s = load_run_model::<B>(src, Weights::Ema, CheckpointChoice::Step(t.step), device)?;
    let (a, b) = (frozen_values(&s.model)?, frozen_values(&d.model)?);
    if a.len() != b.len() {
        return Err(TransferError::Count(a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x.len() != y.len() || x.iter().zip(y).any(|(p, q)| p.to_bits() != q.to_bits()) {
            return Err(TransferError::Differs(i));
        }
    }
    Ok(a.len())
}
