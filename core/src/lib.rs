//! flowlens-core: the model side of the laboratory. The Llama backbone and its Hugging Face
//! weights, tokenizer and config loading; shared network blocks; devices and backends; crash-safe
//! file helpers. See the repository's ARCHITECTURE.md for the layer map.

pub mod clip;
pub mod codec;
pub mod config_json;
pub mod data;
pub mod device;
pub mod flow;
pub mod fsutil;
pub mod heads;
pub mod inception;
pub mod latent_cache;
pub mod llm;
pub mod nn;
pub mod npy;
pub mod run;
pub mod sample;
pub mod tokenizer;
pub mod train;
pub mod vae;
pub mod weights;
