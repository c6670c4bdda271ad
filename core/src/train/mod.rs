//! Rectified-flow training (MODEL.md 7), one concern per file:
//!
//! - [`config`]: `TrainConfig` (saved as the run's `config.json`), the schedule, the stages, the
//!   checks that name a wrong field;
//! - [`prepare`]: a run made ready (data into the latent cache, the stage-0 [`prior`], the
//!   tokenizer, the model, resume);
//! - [`trainer`]: one optimisation step (loss, accumulation, clipping, AdamW, EMA) and
//!   [`grads`], its optimiser side;
//! - [`train_loop`]: the loop (metrics, evaluations and sample grids through [`hooks`],
//!   checkpoints through [`state`]);
//! - [`transfer`]: experiment 2's second system around a trained run's frozen encoder;
//! - [`parallel`]: data-parallel training on several devices of one process, and [`nodes`]:
//!   on several processes (nodes).
//!
//! A resumed run continues bit for bit: every step draws its randomness from a generator seeded
//! by (seed, step) and its data from the step's position in the seed's data order (a shuffle
//! per epoch), so nothing but the model, optimiser and EMA state needs saving.

pub mod config;
pub mod error;
pub mod grads;
pub mod hooks;
pub mod nccl;
pub mod nodes;
pub mod parallel;
pub mod prepare;
pub mod prior;
pub mod state;
pub mod train_loop;
pub mod trainer;
pub mod transfer;

pub use config::{LlmInit, Schedule, TrainConfig, Transfer};
pub use error::TrainError;
pub use prepare::Prepare;
pub use train_loop::{TrainEvent, train};
pub use trainer::Trainer;
