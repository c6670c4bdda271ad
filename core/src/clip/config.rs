//! transformers' `CLIPConfig` / `CLIPTextConfig` / `CLIPVisionConfig` (config.json of a
//! `CLIPModel`, transformers `models/clip/configuration_clip.py`), with transformers' defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ClipConfigError {
    #[error("cannot read CLIP config {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("CLIP config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
    pub pad_token_id: i64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            bos_token_id: 49406,
            eos_token_id: 49407,
            pad_token_id: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipConfig {
    #[serde(default)]
    pub text_config: ClipTextConfig,
    #[serde(default)]
    pub vision_config: ClipVisionConfig,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
}

fn default_projection() -> usize {
    512
}

/// The activations transformers' `ACT2FN` maps these names to, that CLIP checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl Activation {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(format!("`{other}` is not supported (quick_gelu or gelu)")),
        }
    }
}

impl ClipConfig {
    /// CLIP ViT-L/14 (`openai/clip-vit-large-patch14`), the paper's CLIP score network.
    pub fn vit_l_14() -> Self {
        Self {
            text_config: ClipTextConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_attention_heads: 12,
                eos_token_id: 2,
                bos_token_id: 0,
                ..Default::default()
            },
            vision_config: ClipVisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                patch_size: 14,
                ..Default::default()
            },
            projection_dim: 768,
        }
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClipConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ClipConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&text, path)
    }

    pub fn from_json(text: &str, path: &Path) -> Result<Self, ClipConfigError> {
        let invalid = |reason: String| ClipConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let config: Self = crate::config_json::parse_named(text).map_err(invalid)?;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        for (name, value) in [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.image_size", v.image_size),
            ("projection_dim", self.projection_dim),
        ] {
            if value == 0 {
                return Err(format!("field `{name}` must be positive"));
            }
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err(format!(
                "field `text_config.num_attention_heads` ({}) does not divide `hidden_size` ({})",
                t.num_attention_heads, t.hidden_size
            ));
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(format!(
                "field `vision_config.num_attention_heads` ({}) does not divide `hidden_size` ({})",
                v.num_attention_heads, v.hidden_size
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "field `vision_config.patch_size` ({}) does not divide `image_size` ({})",
                v.patch_size, v.image_size
            ));
        }
        Activation::parse(&t.hidden_act)
            .map_err(|e| format!("field `text_config.hidden_act`: {e}"))?;
        Activation::parse(&v.hidden_act)
            .map_err(|e| format!("field `vision_config.hidden_act`: {e}"))?;
        Ok(())
    }
}
