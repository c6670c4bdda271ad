//! What can stop a training run, each with what to do about it.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use crate::codec::CodecError;
use crate::data::DataError;
use crate::flow::FlowInputError;
use crate::latent_cache::CacheError;
use crate::run::RunError;
use crate::tokenizer::TokenizerError;
use crate::train::prior::PriorError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Config(#[from] crate::train::config::ConfigError),
    #[error(
        "--resume with a different configuration than {path} holds (only --steps may change); these fields differ: {fields}; drop the overrides that change them"
    )]
    ResumeChanged { path: PathBuf, fields: String },
    #[error(
        "{run} was trained on other data than its data source gives now (latent cache {was} then, {now} now: the files changed); resuming would train on a different set: restore the data, or start a new run"
    )]
    DataChanged {
        run: PathBuf,
        was: PathBuf,
        now: PathBuf,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(
        "no checkpoint of the run loads (the newest, {newest}: {error}); move the damaged checkpoints out of checkpoints/ and resume, or start a new run"
    )]
    NoLoadableCheckpoint {
        newest: PathBuf,
        error: Box<TrainError>,
    },
    #[error(
        "step {step}: the loss is not finite ({loss}); the first non-finite tensor was {first}. Diagnosis in {diagnosis}; the last good checkpoint is kept"
    )]
    NonFinite {
        step: usize,
        loss: f32,
        first: String,
        diagnosis: PathBuf,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(
        "latent cache {cache} holds latents of shape {found:?}, the model expects {expected:?}"
    )]
    LatentShape {
        cache: PathBuf,
        found: [usize; 3],
        expected: [usize; 3],
    },
    #[error(transparent)]
    Prior(#[from] PriorError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path} is missing: the LLM folder needs its tokenizer")]
    NoTokenizer { path: PathBuf },
    #[error("the tokenizer has {tokens} tokens, more than the LLM's vocabulary ({vocab})")]
    Vocabulary { tokens: usize, vocab: usize },
    #[error(transparent)]
    Transfer(#[from] crate::train::transfer::TransferError),
    #[error(transparent)]
    Model(#[from] FlowInputError),
    #[error(transparent)]
    Sample(#[from] crate::sample::SampleError),
    #[error(transparent)]
    Weights(#[from] CheckpointError),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A data-parallel run cannot go on (a device failed, did not answer, or its replica
    /// drifted from the first device's).
    #[error("data-parallel training: {0}")]
    Parallel(String),
}
