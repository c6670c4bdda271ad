//! Llama configuration: a serde mirror of Hugging Face's `config.json` (both dialects) and the
//! validated runtime config with its presets.
//!
//! Dialects (MODEL.md section 9): TinyLlama's own files carry top-level `rope_theta` and
//! `torch_dtype`; transformers 5 writes `rope_parameters: {rope_type, rope_theta}` and `dtype`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A config that could not be read or does not describe a model we can run. Names the file and
/// the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read model config {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("model config {path} is malformed: field `{field}`: {error}")]
    Parse {
        path: PathBuf,
        field: String,
        error: serde_json::Error,
    },
    #[error("model config {path}: field `{field}` {problem}")]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
}

/// The fields of a Hugging Face `LlamaConfig` that the forward pass depends on, as they appear
/// in `config.json`. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct HfLlamaConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub rope_parameters: Option<HfRopeParameters>,
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub mlp_bias: Option<bool>,
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
}

/// transformers 5's `rope_parameters`.
#[derive(Debug, Clone, Deserialize)]
pub struct HfRopeParameters {
    #[serde(default)]
    pub rope_type: Option<String>,
    #[serde(default)]
    pub rope_theta: Option<f64>,
}

/// A token id field, which some configs write as a list (`eos_token_id: [2, 32000]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(id) => Some(*id),
            TokenIds::Many(ids) => ids.first().copied(),
        }
    }
}

/// The validated configuration the Llama module is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// The dtype the checkpoint was saved in, as the config states it (`bfloat16`, `float32`...).
    /// Weights are always computed in f32 here; this is kept for the record.
    pub checkpoint_dtype: Option<String>,
}

impl LlamaConfig {
    /// TinyLlama-1.1B (MODEL.md 1.1): 22 layers, width 2048, 32 heads, 4 KV heads, SwiGLU 5632.
    pub fn tiny_llama_1_1b() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 2048,
            intermediate_size: 5632,
            num_hidden_layers: 22,
            num_attention_heads: 32,
            num_key_value_heads: 4,
            head_dim: 64,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: None,
            checkpoint_dtype: Some("bfloat16".into()),
        }
    }

    /// A small Llama for tests and the CPU demo: width 64, 2 layers, 4 heads, 2 KV heads (GQA).
    pub fn small_test(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 160,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            pad_token_id: None,
            checkpoint_dtype: None,
        }
    }

    /// `num_layers` layers of TinyLlama-1.1B at full width (benchmarks, shape tests).
    pub fn tiny_llama_slice(num_layers: usize) -> Self {
        Self {
            num_hidden_layers: num_layers,
            ..Self::tiny_llama_1_1b()
        }
    }

    /// Query heads per KV head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Number of parameters, `lm_head` included unless tied.
    pub fn num_parameters(&self) -> usize {
        let d = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let ab = usize::from(self.attention_bias);
        let mb = usize::from(self.mlp_bias);
        let attn = d * q + q * ab + 2 * (d * kv + kv * ab) + q * d + d * ab;
        let mlp = 2 * (d * self.intermediate_size + self.intermediate_size * mb)
            + self.intermediate_size * d
            + d * mb;
        let layer = attn + mlp + 2 * d;
        let embed = self.vocab_size * d;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + self.num_hidden_layers * layer + d + head
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` is only used in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let hf: HfLlamaConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                field: e.path().to_string(),
                error: e.into_inner(),
            })?;
        Self::from_hf(hf, path)
    }

    /// The Hugging Face `config.json` of this configuration (what `LlamaForCausalLM` reads).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": "silu",
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.checkpoint_dtype.as_deref().unwrap_or("float32"),
        })
    }

    /// Whether two configurations build modules of the same shapes (token ids and dtype aside).
    pub fn same_shapes(&self, other: &Self) -> bool {
        (
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.attention_bias,
            self.mlp_bias,
        ) == (
            other.vocab_size,
            other.hidden_size,
            other.intermediate_size,
            other.num_hidden_layers,
            other.num_attention_heads,
            other.num_key_value_heads,
            other.head_dim,
            other.attention_bias,
            other.mlp_bias,
        ) && self.rope_theta == other.rope_theta
            && self.rms_norm_eps == other.rms_norm_eps
    }

    /// Validates an `HfLlamaConfig`.
    pub fn from_hf(hf: HfLlamaConfig, path: &Path) -> Result<Self, ConfigError> {
        let field = |field: &'static str, problem: String| ConfigError::Field {
            path: path.to_path_buf(),
            field,
            problem,
        };
        if let Some(t) = &hf.model_type
            && t != "llama"
        {
            return Err(field(
                "model_type",
                format!("is `{t}`; only `llama` checkpoints are supported"),
            ));
        }
        if let Some(act) = &hf.hidden_act
            && act != "silu"
        {
            return Err(field(
                "hidden_act",
                format!("is `{act}`; Llama uses `silu`"),
            ));
        }
        for (name, value) in [
            ("vocab_size", hf.vocab_size),
            ("hidden_size", hf.hidden_size),
            ("intermediate_size", hf.intermediate_size),
            ("num_hidden_layers", hf.num_hidden_layers),
            ("num_attention_heads", hf.num_attention_heads),
        ] {
            if value == 0 {
                return Err(field(name, "must be positive".into()));
            }
        }
        let heads = hf.num_attention_heads;
        let kv_heads = hf.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(field(
                "num_key_value_heads",
                format!("is {kv_heads}, which does not divide num_attention_heads = {heads}"),
            ));
        }
        let head_dim = match hf.head_dim {
            Some(h) => h,
            None => {
                if !hf.hidden_size.is_multiple_of(heads) {
                    return Err(field(
                        "hidden_size",
                        format!(
                            "is {}, not divisible by num_attention_heads = {heads} (and no head_dim is given)",
                            hf.hidden_size
                        ),
                    ));
                }
                hf.hidden_size / heads
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(field(
                "head_dim",
                format!("is {head_dim}; rotary embeddings need a positive even head dimension"),
            ));
        }
        if let Some(scaling) = &hf.rope_scaling
            && !scaling.is_null()
        {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            if kind != "default" {
                return Err(field(
                    "rope_scaling",
                    format!("asks for `{kind}` scaling, which is not supported (only plain RoPE)"),
                ));
            }
        }
        let mut rope_theta = hf.rope_theta;
        if let Some(params) = &hf.rope_parameters {
            if let Some(kind) = &params.rope_type
                && kind != "default"
            {
                return Err(field(
                    "rope_parameters",
                    format!("asks for rope_type `{kind}`, which is not supported (only `default`)"),
                ));
            }
            rope_theta = rope_theta.or(params.rope_theta);
        }
        let rope_theta = rope_theta.unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(field("rope_theta", format!("is {rope_theta}; must be > 0")));
        }
        let rms_norm_eps = hf.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
            return Err(field(
                "rms_norm_eps",
                format!("is {rms_norm_eps}; must be > 0"),
            ));
        }
        Ok(Self {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
            rms_norm_eps,
            rope_theta,
            attention_bias: hf.attention_bias.unwrap_or(false),
            mlp_bias: hf.mlp_bias.unwrap_or(false),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            bos_token_id: hf.bos_token_id.as_ref().and_then(TokenIds::first),
            eos_token_id: hf.eos_token_id.as_ref().and_then(TokenIds::first),
            pad_token_id: hf.pad_token_id.as_ref().and_then(TokenIds::first),
            checkpoint_dtype: hf.dtype.or(hf.torch_dtype),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINYLLAMA_CONFIG: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1,
      "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
      "intermediate_size": 5632, "max_position_embeddings": 2048, "model_type": "llama",
      "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
      "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.35.0",
      "use_cache": true, "vocab_size": 32000
    }"#;

    #[test]
    fn tinyllama_config_json_gives_the_preset() {
        let c = LlamaConfig::from_json_str(TINYLLAMA_CONFIG, Path::new("config.json")).unwrap();
        assert_eq!(c, LlamaConfig::tiny_llama_1_1b());
        assert_eq!(c.num_parameters(), 1_100_048_384);
    }

    #[test]
    fn transformers5_dialect_reads_rope_parameters_and_dtype() {
        let text = TINYLLAMA_CONFIG
            .replace(
                r#""rope_scaling": null, "rope_theta": 10000.0,"#,
                r#""rope_parameters": {"rope_type": "default", "rope_theta": 500.0},"#,
            )
            .replace("torch_dtype", "dtype");
        let c = LlamaConfig::from_json_str(&text, Path::new("c.json")).unwrap();
        assert_eq!(c.rope_theta, 500.0);
        assert_eq!(c.checkpoint_dtype.as_deref(), Some("bfloat16"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                TINYLLAMA_CONFIG
                    .replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 5"),
                "num_key_value_heads",
            ),
            (
                TINYLLAMA_CONFIG.replace("\"hidden_size\": 2048,", ""),
                "hidden_size",
            ),
            (
                TINYLLAMA_CONFIG.replace("\"silu\"", "\"gelu\""),
                "hidden_act",
            ),
            (
                TINYLLAMA_CONFIG.replace(
                    "\"rope_scaling\": null",
                    "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
                ),
                "rope_scaling",
            ),
            (
                TINYLLAMA_CONFIG.replace("\"vocab_size\": 32000", "\"vocab_size\": \"many\""),
                "vocab_size",
            ),
        ];
        for (text, name) in cases {
            let err = LlamaConfig::from_json_str(&text, Path::new("model/config.json"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "error `{err}` should name `{name}`");
            assert!(
                err.contains("model/config.json"),
                "error `{err}` should name the file"
            );
        }
    }
}
