//! Sampling and generating from trained runs, one concern per file:
//!
//! - [`generate`]: batched prompts, per-prompt noise, Euler + CFG, decoding ([`Generator`]);
//! - [`trajectory`]: `flowlens sample`, taps at every solver step into a feature store, images
//!   and `x_t` previews ([`sample_run`]);
//! - [`interpolant`]: taps on interpolants of held-out data ([`probe_interpolant`]);
//! - [`oracle`]: the shapes oracle's adherence and chance level ([`evaluate_shapes`]);
//! - [`image`]: PNG writing.
//!
//! Checkpoint loading is [`crate::checkpoint`]; the feature store's format is [`crate::store`].

pub mod error;
pub mod generate;
pub mod image;
pub mod interpolant;
pub mod oracle;
pub mod trajectory;

pub use error::SampleError;
pub use generate::{Generator, prompt_noise};
pub use image::{write_grid_png, write_png};
pub use interpolant::{InterpolantRequest, probe_interpolant};
pub use oracle::{ShapesEval, evaluate_shapes, shapes_adherence};
pub use trajectory::{SampleRequest, sample_run};
