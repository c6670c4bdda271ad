//! Configuration of the flow model: the variants of the paper's Table 1 and the presets.

use serde::{Deserialize, Serialize};

use crate::codec::CodecConfig;
use crate::llm::LlamaConfig;

/// The ablation variants of the paper's Table 1, plus the U-ViT baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// ConvNeXt encoder + ConvNeXt decoder (JanusFlow).
    Baseline,
    /// ConvNeXt encoder + single-stream decoder ("Changed Decoder").
    DecoderOnly,
    /// Dual-stream encoder + ConvNeXt decoder ("Changed Encoder").
    EncoderOnly,
    /// Dual-stream encoder + single-stream decoder.
    Both,
    /// U-ViT with the LLM as a frozen text encoder.
    Uvit,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Baseline,
        Variant::DecoderOnly,
        Variant::EncoderOnly,
        Variant::Both,
        Variant::Uvit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::DecoderOnly => "decoder-only",
            Variant::EncoderOnly => "encoder-only",
            Variant::Both => "both",
            Variant::Uvit => "uvit",
        }
    }

    pub fn dual_stream_encoder(self) -> bool {
        matches!(self, Variant::EncoderOnly | Variant::Both)
    }

    pub fn single_stream_decoder(self) -> bool {
        matches!(self, Variant::DecoderOnly | Variant::Both)
    }
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown variant `{s}` (baseline | decoder-only | encoder-only | both | uvit)"
                )
            })
    }
}

/// The scales every experiment runs at: `tiny` (the CPU demo), `small` (one GPU, hours),
/// `paper` (TinyLlama-1.1B and the SDXL-VAE, as the paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Tiny,
    Small,
    Paper,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Tiny, Preset::Small, Preset::Paper];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Paper => "paper",
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown preset `{s}` (tiny | small | paper)"))
    }
}

/// Read through [`Preset::from_str`], so a config's bad preset reads as the flag's does.
impl<'de> Deserialize<'de> for Preset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// U-ViT sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UVitConfig {
    pub width: usize,
    pub heads: usize,
    /// Blocks in the encoder half and in the decoder half (plus one middle block).
    pub depth: usize,
}

/// Everything that fixes the shapes of a flow model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    pub preset: Preset,
    pub variant: Variant,
    pub llm: LlamaConfig,
    /// Side of the RGB images the codec maps to latents (384 in the paper).
    pub image_size: usize,
    /// The latent codec (SDXL-VAE in the paper, pixel patches in the CPU demo).
    pub codec: CodecConfig,
    /// Latent channels (4 for SDXL-VAE latents, 3 for the demo's pixels).
    pub latent_channels: usize,
    /// Latent height = width (48 for 384x384 images through the VAE).
    pub latent_size: usize,
    /// Patch size (2: each image token is a 2x2 latent patch).
    pub patch: usize,
    /// Fixed text length T (BOS + caption + pads).
    pub text_len: usize,
    /// Width of the encoder and decoder (768 in the paper).
    pub width: usize,
    /// Attention heads of the transformer heads (width / 64).
    pub heads: usize,
    /// Channels of the sinusoidal timestep features (768 in JanusFlow).
    pub time_channels: usize,
    /// ConvNeXt blocks in the baseline encoder and in the baseline decoder.
    pub convnext_blocks: usize,
    /// Joint blocks of the dual-stream encoder.
    pub joint_blocks: usize,
    /// Parallel blocks of the single-stream decoder.
    pub single_blocks: usize,
    pub mlp_ratio: usize,
    pub uvit: UVitConfig,
}

impl FlowConfig {
    /// Image tokens per side.
    pub fn grid(&self) -> usize {
        self.latent_size / self.patch
    }

    /// Image tokens.
    pub fn image_tokens(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Every tap the model of this configuration returns (docs: flow/taps.rs); the U-ViT
    /// baseline returns none.
    pub fn tap_names(&self) -> Vec<String> {
        if self.variant == Variant::Uvit {
            return Vec::new();
        }
        let mut names = vec!["enc.text".to_string(), "enc.noise".to_string()];
        for l in 0..=self.llm.num_hidden_layers {
            names.push(crate::flow::taps::llm_tap_name(l, "text"));
            names.push(crate::flow::taps::llm_tap_name(l, "image"));
        }
        names.push("dec.input".into());
        names
    }

    /// LLM sequence length: text, the t-token, image tokens.
    pub fn sequence_len(&self) -> usize {
        self.text_len + 1 + self.image_tokens()
    }

    /// The paper: TinyLlama-1.1B, SDXL-VAE latents 4x48x48, heads of width 768 (MODEL.md).
    pub fn paper(variant: Variant) -> Self {
        Self {
            preset: Preset::Paper,
            variant,
            llm: LlamaConfig::tiny_llama_1_1b(),
            image_size: 384,
            codec: CodecConfig::SdxlVae,
            latent_channels: 4,
            latent_size: 48,
            patch: 2,
            text_len: 128,
            width: 768,
            heads: 12,
            time_channels: 768,
            convnext_blocks: 2,
            joint_blocks: 2,
            single_blocks: 6,
            mlp_ratio: 4,
            // The LLM (1.1B, frozen text encoder) plus ~0.2B of U-ViT: ~1.3B in all, as the
            // paper's compute-matched baselines (AMBIG-18).
            uvit: UVitConfig {
                width: 1024,
                heads: 16,
                depth: 7,
            },
        }
    }

    /// A single-GPU scale: a 12-layer Llama at width 768 with the TinyLlama vocabulary, 4x32x32
    /// latents (256x256 images), heads of width 512.
    pub fn small(variant: Variant) -> Self {
        Self {
            preset: Preset::Small,
            variant,
            llm: LlamaConfig {
                hidden_size: 768,
                intermediate_size: 2048,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                num_key_value_heads: 4,
                head_dim: 64,
                ..LlamaConfig::tiny_llama_1_1b()
            },
            image_size: 256,
            codec: CodecConfig::SdxlVae,
            latent_channels: 4,
            latent_size: 32,
            patch: 2,
            text_len: 64,
            width: 512,
            heads: 8,
            time_channels: 512,
            convnext_blocks: 2,
            joint_blocks: 2,
            single_blocks: 4,
            mlp_ratio: 4,
            uvit: UVitConfig {
                width: 512,
                heads: 8,
                depth: 4,
            },
        }
    }

    /// The CPU demo: a small Llama over the demo tokenizer's (at most) 512-token vocabulary,
    /// 32x32 RGB images as 12x16x16 pixel-patch latents (no VAE), 8x8 image tokens, heads of
    /// width 128.
    pub fn tiny(variant: Variant) -> Self {
        Self {
            preset: Preset::Tiny,
            variant,
            llm: LlamaConfig {
                vocab_size: 512,
                hidden_size: 128,
                intermediate_size: 344,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                head_dim: 32,
                max_position_embeddings: 512,
                ..LlamaConfig::small_test(512)
            },
            image_size: 32,
            codec: CodecConfig::Pixels { factor: 2 },
            latent_channels: 12,
            latent_size: 16,
            patch: 2,
            text_len: 16,
            width: 128,
            heads: 4,
            time_channels: 128,
            convnext_blocks: 2,
            joint_blocks: 2,
            single_blocks: 2,
            mlp_ratio: 4,
            uvit: UVitConfig {
                width: 128,
                heads: 4,
                depth: 1,
            },
        }
    }

    /// The configuration of `preset`.
    pub fn of(preset: Preset, variant: Variant) -> Self {
        match preset {
            Preset::Paper => Self::paper(variant),
            Preset::Small => Self::small(variant),
            Preset::Tiny => Self::tiny(variant),
        }
    }
}
