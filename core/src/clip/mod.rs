//! CLIP (Radford et al. 2021) in transformers' `CLIPModel` layout, for the paper's CLIP score
//! (CLIP ViT-L/14, `openai/clip-vit-large-patch14`): the model ([`model`]), its tokenizer from
//! `tokenizer.json` ([`tokenizer`]) and its image preprocessing ([`preprocess`]).
//!
//! A CLIP folder is what `save_pretrained` writes: `config.json`, `model.safetensors` (or a
//! sharded index), `tokenizer.json` (+ `tokenizer_config.json`), `preprocessor_config.json`.
//! Weights may be F32, F16 or BF16 (converted to f32); the `position_ids` buffers of old
//! checkpoints are ignored.

pub mod config;
pub mod model;
pub mod preprocess;
pub mod tokenizer;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

pub use config::{ClipConfig, ClipConfigError};
pub use model::ClipModel;
pub use preprocess::ClipPreprocess;
pub use tokenizer::ClipTokenizer;

use crate::tokenizer::TokenizerError;
use crate::weights::{VarBuilder, WeightError, WeightStore};

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(transparent)]
    Config(#[from] ClipConfigError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{0}")]
    Preprocess(String),
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
}

/// A loaded CLIP: network, tokenizer and preprocessing.
pub struct Clip<B: Backend> {
    pub model: ClipModel<B>,
    pub tokenizer: ClipTokenizer,
    pub preprocess: ClipPreprocess,
    pub dir: PathBuf,
}

impl<B: Backend> Clip<B> {
    /// Loads a transformers CLIP folder.
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self, ClipError> {
        let dir = dir.as_ref();
        let config = ClipConfig::from_file(dir.join("config.json"))?;
        let store = Rc::new(WeightStore::open(dir)?);
        let logit_scale = read_logit_scale(&store)?;
        let model = ClipModel::new(
            &VarBuilder::load(store.clone(), device),
            &config,
            logit_scale,
        )?;
        store.check_all_used(&[])?;
        let tokenizer = ClipTokenizer::from_dir(dir, config.text_config.max_position_embeddings)?;
        let preprocess = ClipPreprocess::from_dir(dir, config.vision_config.image_size)
            .map_err(ClipError::Preprocess)?;
        if preprocess.crop != config.vision_config.image_size {
            return Err(ClipError::Input {
                path: dir.join("preprocessor_config.json"),
                reason: format!(
                    "crop size {} differs from the vision tower's image_size {}",
                    preprocess.crop, config.vision_config.image_size
                ),
            });
        }
        Ok(Self {
            model,
            tokenizer,
            preprocess,
            dir: dir.to_path_buf(),
        })
    }

    /// Projected text embeddings `[n, projection_dim]` of prompts (not normalised).
    pub fn embed_texts(&self, prompts: &[String]) -> Result<Tensor<B, 2>, ClipError> {
        let batch = self.tokenizer.batch(prompts)?;
        Ok(self
            .model
            .text_features(&batch.ids, &batch.mask, [batch.n, batch.len]))
    }

    /// Projected image embeddings `[n, projection_dim]` of RGB images (preprocessed here).
    pub fn embed_images(&self, images: &[image::RgbImage]) -> Tensor<B, 2> {
        let c = self.preprocess.crop;
        let values: Vec<f32> = images
            .iter()
            .flat_map(|i| self.preprocess.apply(i))
            .collect();
        let device = self.model.text_projection.weight.device();
        let pixels = Tensor::from_data(TensorData::new(values, [images.len(), 3, c, c]), &device);
        self.model.image_features(pixels)
    }
}

/// `logit_scale`: a 0-d tensor in transformers checkpoints (a `[1]` one is accepted too).
fn read_logit_scale(store: &WeightStore) -> Result<f32, WeightError> {
    let shape = store
        .file_of("logit_scale")
        .and_then(|f| f.shape("logit_scale"))
        .map(|s| s.to_vec())
        .unwrap_or_default();
    let expected: &[usize] = if shape == [1] { &[1] } else { &[] };
    Ok(store.read_f32("logit_scale", expected)?[0])
}
