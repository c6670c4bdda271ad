//! The diffusers `AutoencoderKL` `config.json` (diffusers `models/autoencoders/autoencoder_kl.py`
//! constructor arguments), validated into the runtime configuration of [`super::Vae`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What is wrong with a VAE folder or its config.
#[derive(Debug, thiserror::Error)]
pub enum VaeConfigError {
    #[error("cannot read VAE config {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("VAE config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The fields of a diffusers `AutoencoderKL` config.json that the architecture depends on, with
/// diffusers' defaults (unknown fields such as `_diffusers_version` are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "default_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "default_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    #[serde(default)]
    pub sample_size: Option<serde_json::Value>,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn one() -> usize {
    1
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn silu() -> String {
    "silu".into()
}
fn default_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn default_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn default_channels() -> Vec<usize> {
    vec![64]
}
fn default_scaling() -> f64 {
    0.18215
}

impl VaeConfig {
    /// The SDXL-VAE (`stabilityai/sdxl-vae`, MODEL.md section 2.1).
    pub fn sdxl() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into(); 4],
            up_block_types: vec!["UpDecoderBlock2D".into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.13025,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            sample_size: Some(serde_json::json!(1024)),
        }
    }

    /// Reads and validates `config.json` (errors name the file and the field).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, VaeConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| VaeConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates config JSON; `path` is only used in messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, VaeConfigError> {
        let invalid = |reason: String| VaeConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let config: Self = crate::config_json::parse_named(text).map_err(invalid)?;
        config.check().map_err(invalid)?;
        Ok(config)
    }

    /// The architectural constraints the implementation relies on.
    pub fn check(&self) -> Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("field `block_out_channels` is empty".into());
        }
        if self.down_block_types.len() != n {
            return Err(format!(
                "field `down_block_types` has {} entries but `block_out_channels` has {n}",
                self.down_block_types.len()
            ));
        }
        if self.up_block_types.len() != n {
            return Err(format!(
                "field `up_block_types` has {} entries but `block_out_channels` has {n}",
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(format!(
                "field `down_block_types`: `{t}` is not supported (only DownEncoderBlock2D)"
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return Err(format!(
                "field `up_block_types`: `{t}` is not supported (only UpDecoderBlock2D)"
            ));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(format!(
                "field `act_fn`: `{}` is not supported (only silu)",
                self.act_fn
            ));
        }
        if self.layers_per_block == 0 {
            return Err("field `layers_per_block` must be at least 1".into());
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("norm_num_groups", self.norm_num_groups),
        ] {
            if v == 0 {
                return Err(format!("field `{name}` must be positive"));
            }
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| c == 0 || c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "field `block_out_channels`: {c} is not a positive multiple of `norm_num_groups` ({})",
                self.norm_num_groups
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(format!(
                "field `scaling_factor`: {} is not a positive number",
                self.scaling_factor
            ));
        }
        Ok(())
    }

    /// Spatial down-sampling factor of the encoder (2 per down-sampler).
    pub fn downsampling(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_config_json_parses_to_the_preset() {
        let text = r#"{"_class_name": "AutoencoderKL", "_diffusers_version": "0.18.0.dev0",
            "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 1024, "scaling_factor": 0.13025,
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;
        let c = VaeConfig::from_json(text, Path::new("config.json")).unwrap();
        assert_eq!(c, VaeConfig::sdxl());
        assert_eq!(c.downsampling(), 8);
    }

    #[test]
    fn bad_config_fields_are_named() {
        let bad = [
            (r#"{"block_out_channels": "wide"}"#, "block_out_channels"),
            (
                r#"{"block_out_channels": [30, 64], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"]}"#,
                "norm_num_groups",
            ),
            (r#"{"block_out_channels": [64, 64]}"#, "down_block_types"),
            (r#"{"act_fn": "gelu"}"#, "act_fn"),
            (r#"{"scaling_factor": -1.0}"#, "scaling_factor"),
            (
                r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#,
                "AttnDownEncoderBlock2D",
            ),
        ];
        for (text, field) in bad {
            let e = VaeConfig::from_json(text, Path::new("x/config.json"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field) && e.contains("x/config.json"), "{e}");
        }
    }
}
