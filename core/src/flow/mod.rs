//! The rectified-flow text-to-image model: configuration and presets, the composed model, taps.

pub mod config;
pub mod memory;
pub mod model;
pub mod params;
pub mod rectified;
pub mod taps;

pub use config::{FlowConfig, Preset, UVitConfig, Variant};
pub use model::{FlowInputError, FlowModel, FlowOutput, TimeEmbedding, unconditional_rows};
pub use params::ParamCounts;
pub use taps::{Tap, TapPooling, TapRequest, Taps};
