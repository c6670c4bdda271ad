//! What can stop sampling, generating or evaluating a run.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::codec::CodecError;
use crate::data::DataError;
use crate::flow::FlowInputError;
use crate::run::RunError;
use crate::store::StoreError;
use crate::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] FlowInputError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no tap of this model matches `{patterns}` (its taps: {have})")]
    UnknownTap { patterns: String, have: String },
    #[error("{0}")]
    Sampler(#[from] crate::flow::rectified::SamplerError),
    #[error("interpolant times must lie in [0, 1]")]
    Times,
    #[error("this run does not train on the shapes set: give held-out data (--data)")]
    NoHeldOutShapes,
    #[error("the oracle scores shapes scenes; this run trains on other data")]
    NotShapes,
    #[error("the held-out data yields no usable example")]
    NoHeldOut,
    #[error(
        "pooling `{0}` leaves out the BOS token at position 0, but this run's tokenizer adds no BOS (add_bos_token = false); use `mean` or `layer_norm_mean`"
    )]
    NoBos(String),
}

/// An I/O error on `path`.
pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> SampleError + '_ {
    move |error| SampleError::Io {
        path: path.to_path_buf(),
        error,
    }
}
