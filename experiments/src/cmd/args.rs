//! Flags several commands share.

use flowlens_core::checkpoint::{CheckpointChoice, Weights};

/// Which checkpoint and which weights of a run.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArgs {
    /// `latest`, `best` or a step number.
    #[arg(long, default_value = "latest")]
    pub checkpoint: CheckpointChoice,
    /// `ema` (default), `ema2` (the second EMA rate) or `model` (raw weights).
    #[arg(long, value_enum, default_value_t = WeightsChoice::Ema)]
    pub weights: WeightsChoice,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WeightsChoice {
    Ema,
    Ema2,
    Model,
}

impl WeightsChoice {
    pub fn get(self) -> Weights {
        match self {
            WeightsChoice::Ema => Weights::Ema,
            WeightsChoice::Ema2 => Weights::Ema2,
            WeightsChoice::Model => Weights::Model,
        }
    }
}
