//! JanusFlow's generation encoder and decoder (Ma et al. 2024, "JanusFlow"; deepseek-ai/Janus
//! `janus/janusflow/models/uvit.py`, `modeling_vlm.py`; MODEL.md 3.1 to 3.3): a 2x2 patchify
//! convolution, ConvNeXt blocks with global response norm and FiLM after the residual, the
//! aligners to and from the LLM width, the long skip from encoder to decoder, and RMSNorm + 1x1
//! convolution + pixel shuffle out.

use burn::module::{Initializer, Module, Param};
use crate::nn::linear::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, silu};
use burn::tensor::backend::Backend;

use crate::nn::RmsNorm;
use crate::nn::blocks::{map_to_tokens, per_token, pixel_shuffle, tokens_to_map};
use crate::weights::{VarBuilder, WeightError};

/// Global response normalisation (ConvNeXt-V2) on channels-last `[b, h, w, c]`:
/// `gx = |x|_2 over (h, w)`, `nx = gx / (mean_c gx + 1e-6)`, `out = bias + (weight nx + 1) x`.
#[derive(Module, Debug)]
pub struct GlobalResponseNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> GlobalResponseNorm<B> {
    pub fn new(vb: &VarBuilder<B>, name: &str, c: usize) -> Result<Self, WeightError> {
        let vb = vb.pp(name);
        Ok(Self {
            weight: vb.param("weight", [c], Initializer::Zeros)?,
            bias: vb.param("bias", [c], Initializer::Zeros)?,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, w, c] = x.dims();
        let gx = x.clone().square().sum_dim(1).sum_dim(2).sqrt(); // [b, 1, 1, c]
        let nx = gx.clone() / (gx.mean_dim(3) + 1e-6);
        let weight = self.weight.val().reshape([1, 1, 1, c]);
        let bias = self.bias.val().reshape([1, 1, 1, c]);
        // The per-sample factor is materialised over the positions (see `per_token`).
        let factor = per_token(&(nx * weight + 1.0).reshape([b, c]), h * w).reshape([b, h, w, c]);
        x * factor + bias
    }
}

/// ConvNeXt block with FiLM: depthwise 7x7 conv, channels-last RMSNorm, Linear c->4c, GELU
/// (erf), GRN, Linear 4c->c, residual; then `x (1 + scale) + shift` from `SiLU(t_emb)`.
#[derive(Module, Debug)]
pub struct ConvNextBlock<B: Backend> {
    pub depthwise: Conv2d<B>,
    pub norm: RmsNorm<B>,
    pub channelwise_linear_1: Linear<B>,
    pub channelwise_norm: GlobalResponseNorm<B>,
    pub channelwise_linear_2: Linear<B>,
    pub cond_embeds_mapper: Linear<B>,
}

impl<B: Backend> ConvNextBlock<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize, cond_dim: usize) -> Result<Self, WeightError> {
        Ok(Self {
            depthwise: vb.conv2d("depthwise", c, c, 7, 1, 3, c)?,
            norm: RmsNorm::new(vb, "norm", c, 1e-6)?,
            channelwise_linear_1: vb.linear("channelwise_linear_1", c, 4 * c, true)?,
            channelwise_norm: GlobalResponseNorm::new(vb, "channelwise_norm", 4 * c)?,
            channelwise_linear_2: vb.linear("channelwise_linear_2", 4 * c, c, true)?,
            cond_embeds_mapper: vb.linear("cond_embeds_mapper", cond_dim, 2 * c, true)?,
        })
    }

    /// `x [b, c, h, w]`, `t_emb [b, cond_dim]` -> `[b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>, t_emb: &Tensor<B, 2>) -> Tensor<B, 4> {
        let h = self.depthwise.forward(x.clone()).permute([0, 2, 3, 1]);
        let h = gelu(self.channelwise_linear_1.forward(self.norm.forward(h)));
        let h = self
            .channelwise_linear_2
            .forward(self.channelwise_norm.forward(h));
        let x = x + h.permute([0, 3, 1, 2]);
        let [b, c, _, _] = x.dims();
        let film = self
            .cond_embeds_mapper
            .forward(silu(t_emb.clone()))
            .chunk(2, 1);
        let scale = film[0].clone().reshape([b, c, 1, 1]);
        let shift = film[1].clone().reshape([b, c, 1, 1]);
        x * (scale + 1.0) + shift
    }
}

/// The baseline encoder: `in_conv` (k = s = patch) then ConvNeXt blocks; its output is both the
/// image tokens (through `aligner`, to the LLM width) and the decoder's long skip.
#[derive(Module, Debug)]
pub struct ConvNextEncoder<B: Backend> {
    pub in_conv: Conv2d<B>,
    pub blocks: Vec<ConvNextBlock<B>>,
    pub aligner: Linear<B>,
}

/// What an encoder hands on: image tokens for the LLM, the skip for the decoder, and (dual
/// stream) the text residual and the streams themselves for taps.
pub struct EncoderOutput<B: Backend> {
    /// `[b, tokens, llm_width]`
    pub image_tokens: Tensor<B, 3>,
    /// `[b, skip_channels, grid, grid]`
    pub skip: Tensor<B, 4>,
    /// `[b, text_len, llm_width]` residual added to the LLM's text embeddings (dual stream only).
    pub text_residual: Option<Tensor<B, 3>>,
}

impl<B: Backend> ConvNextEncoder<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder<B>,
        latent_channels: usize,
        width: usize,
        patch: usize,
        blocks: usize,
        cond_dim: usize,
        llm_width: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            in_conv: vb.conv2d("in_conv", latent_channels, width, patch, patch, 0, 1)?,
            blocks: (0..blocks)
                .map(|i| ConvNextBlock::new(&vb.pp("blocks").pp(i), width, cond_dim))
                .collect::<Result<_, _>>()?,
            aligner: vb.linear("aligner", width, llm_width, true)?,
        })
    }

    /// `z [b, C, H, W]`, `t_emb [b, cond]` -> tokens `[b, (H/p)(W/p), llm_width]` and skip.
    pub fn forward(&self, z: Tensor<B, 4>, t_emb: &Tensor<B, 2>) -> EncoderOutput<B> {
        let mut x = self.in_conv.forward(z);
        for block in &self.blocks {
            x = block.forward(x, t_emb);
        }
        EncoderOutput {
            image_tokens: self.aligner.forward(map_to_tokens(x.clone())),
            skip: x,
            text_residual: None,
        }
    }
}

/// The baseline decoder: `aligner_norm` (RMSNorm at the LLM's eps) and `aligner` back to the
/// head width, `input_norm`, concatenation with the skip, ConvNeXt blocks at twice the width,
/// then RMSNorm + 1x1 conv + pixel shuffle.
#[derive(Module, Debug)]
pub struct ConvNextDecoder<B: Backend> {
    pub aligner_norm: RmsNorm<B>,
    pub aligner: Linear<B>,
    pub input_norm: RmsNorm<B>,
    pub blocks: Vec<ConvNextBlock<B>>,
    pub out_norm: RmsNorm<B>,
    pub out_conv: Conv2d<B>,
    pub patch: usize,
}

impl<B: Backend> ConvNextDecoder<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder<B>,
        llm_width: usize,
        llm_eps: f64,
        width: usize,
        skip_channels: usize,
        blocks: usize,
        cond_dim: usize,
        latent_channels: usize,
        patch: usize,
    ) -> Result<Self, WeightError> {
        let c = width + skip_channels;
        Ok(Self {
            aligner_norm: RmsNorm::new(vb, "aligner_norm", llm_width, llm_eps)?,
            aligner: vb.linear("aligner", llm_width, width, true)?,
            input_norm: RmsNorm::new(vb, "input_norm", width, 1e-6)?,
            blocks: (0..blocks)
                .map(|i| ConvNextBlock::new(&vb.pp("blocks").pp(i), c, cond_dim))
                .collect::<Result<_, _>>()?,
            out_norm: RmsNorm::new(vb, "out_norm", c, 1e-6)?,
            out_conv: vb.conv2d("out_conv", c, latent_channels * patch * patch, 1, 1, 0, 1)?,
            patch,
        })
    }

    /// `image_hidden [b, tokens, llm_width]` (the LLM's last hidden state at image positions),
    /// `skip [b, skip_c, g, g]`, `t_emb` -> velocity `[b, C, g p, g p]`.
    pub fn forward(
        &self,
        image_hidden: Tensor<B, 3>,
        skip: Tensor<B, 4>,
        t_emb: &Tensor<B, 2>,
    ) -> Tensor<B, 4> {
        let [_, _, g, gw] = skip.dims();
        let x = self
            .aligner
            .forward(self.aligner_norm.forward(image_hidden));
        let x = self.input_norm.forward(x);
        let mut x = Tensor::cat(vec![tokens_to_map(x, g, gw), skip], 1);
        for block in &self.blocks {
            x = block.forward(x, t_emb);
        }
        let x = self
            .out_norm
            .forward(x.permute([0, 2, 3, 1]))
            .permute([0, 3, 1, 2]);
        pixel_shuffle(self.out_conv.forward(x), self.patch)
    }
}
