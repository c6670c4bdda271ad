//! flowlens-core: the model side of the laboratory, in layers (docs/ARCHITECTURE.md; each layer
//! imports only the ones above it):
//!
//! 1. leaves: [`fsutil`] (crash-safe files), [`npy`], [`noise`] (seeded draws), [`weights`]
//!    (safetensors), [`config_json`], [`device`] (cpu | cuda:N), [`tokenizer`];
//! 2. networks: [`nn`] (shared blocks), [`llm`] (the Llama backbone), [`heads`] (ConvNeXt,
//!    dual-stream encoder, single-stream decoder, U-ViT), [`vae`] (SDXL-VAE), [`clip`],
//!    [`inception`] (FID);
//! 3. the generator: [`codec`] (pixels <-> latents), [`flow`] (variants and presets, the flow
//!    model, taps, rectified flow and the Euler + CFG sampler);
//! 4. data: [`data`] (shapes, folders, parquet, webdataset), [`latent_cache`];
//! 5. the run directory: [`run`] (manifest, config, typed metrics), [`checkpoint`], [`store`]
//!    (the feature store);
//! 6. work on runs: [`train`] (training, stage-0 prior, experiment 2's transfer) and [`sample`]
//!    (generation, taps into the store, the shapes oracle).

pub mod checkpoint;
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
pub mod noise;
pub mod npy;
pub mod run;
pub mod sample;
pub mod store;
pub mod tokenizer;
pub mod train;
pub mod vae;
pub mod weights;
