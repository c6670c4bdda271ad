//! JanusFlow's generation encoder and decoder (Ma et al. 2024, "JanusFlow"; deepseek-ai/Janus
//! `janus/janusflow/models/uvit.py`, `modeling_vlm.py`; MODEL.md 3.1 to 3.3): a 2x2 patchify
//! convolution, ConvNeXt blocks with global response norm and FiLM after the residual, the
//! aligners to and from the LLM width, the long skip from encoder to decoder, and RMSNorm + 1x1
//! convolution + pixel shuffle out.

use crate::nn::linear::Linear;
use burn::module::{Initializer, Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;

use crate::nn::RmsNorm;
use crate::nn::blocks::{Norm, modulate, pixel_shuffle};
use crate::nn::fused::ops::act::gelu_erf;
use crate::nn::fused::ops::conv::{depthwise_conv_channels_last, global_response_norm};
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
        global_response_norm(
            x.reshape([b, h * w, c]),
            &self.weight.val(),
            &self.bias.val(),
        )
        .reshape([b, h, w, c])
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

    /// `x [b, c, h, w]`, `t_emb [b, cond_dim]` -> `[b, c, h, w]` (PyTorch's layout; the heads
    /// run [`ConvNextBlock::forward_channels_last`]).
    pub fn forward(&self, x: Tensor<B, 4>, t_emb: &Tensor<B, 2>) -> Tensor<B, 4> {
        self.forward_channels_last(x.permute([0, 2, 3, 1]), t_emb)
            .permute([0, 3, 1, 2])
    }

    /// `x [b, h, w, c]`, `t_emb [b, cond_dim]` -> `[b, h, w, c]`: the whole block channels-last,
    /// so that no op between the depthwise convolution and the FiLM changes the layout.
    pub fn forward_channels_last(&self, x: Tensor<B, 4>, t_emb: &Tensor<B, 2>) -> Tensor<B, 4> {
        let [b, hh, ww, c] = x.dims();
        let bias = match &self.depthwise.bias {
            Some(bias) => bias.val(),
            None => Tensor::zeros([c], &x.device()),
        };
        let h = depthwise_conv_channels_last(x.clone(), &self.depthwise.weight.val(), &bias);
        let h = gelu_erf(self.channelwise_linear_1.forward(self.norm.forward(h)));
        let h = self
            .channelwise_linear_2
            .forward(self.channelwise_norm.forward(h));
        let x = (x + h).reshape([b, hh * ww, c]);
        let film = self
            .cond_embeds_mapper
            .forward(silu(t_emb.clone()))
            .chunk(2, 1);
        modulate(x, Norm::None, 0.0, &film[1], &film[0]).reshape([b, hh, ww, c])
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
    /// `[b, grid, grid, skip_channels]`, channels-last (the layout both decoders read).
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
        let mut x = self.in_conv.forward(z).permute([0, 2, 3, 1]);
        for block in &self.blocks {
            x = block.forward_channels_last(x, t_emb);
        }
        let [b, g, gw, c] = x.dims();
        EncoderOutput {
            image_tokens: self.aligner.forward(x.clone().reshape([b, g * gw, c])),
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
    /// `skip [b, g, g, skip_c]` (channels-last), `t_emb` -> velocity `[b, C, g p, g p]`.
    pub fn forward(
        &self,
        image_hidden: Tensor<B, 3>,
        skip: Tensor<B, 4>,
        t_emb: &Tensor<B, 2>,
    ) -> Tensor<B, 4> {
        self.forward_with_input(image_hidden, skip, t_emb).0
    }

    /// [`ConvNextDecoder::forward`] and the decoder's input stream `aligner(aligner_norm(h))`
    /// `[b, tokens, width]` (the `dec.input` tap, computed once).
    pub fn forward_with_input(
        &self,
        image_hidden: Tensor<B, 3>,
        skip: Tensor<B, 4>,
        t_emb: &Tensor<B, 2>,
    ) -> (Tensor<B, 4>, Tensor<B, 3>) {
        let [b, g, gw, _] = skip.dims();
        let aligned = self
            .aligner
            .forward(self.aligner_norm.forward(image_hidden));
        let x = self.input_norm.forward(aligned.clone());
        let width = x.dims()[2];
        let mut x = Tensor::cat(vec![x.reshape([b, g, gw, width]), skip], 3);
        for block in &self.blocks {
            x = block.forward_channels_last(x, t_emb);
        }
        let x = self.out_norm.forward(x);
        // The 1x1 convolution on channels-last features is a linear layer over channels.
        let [out_c, in_c, _, _] = self.out_conv.weight.dims();
        let y = burn::tensor::module::linear(
            x.reshape([b * g * gw, in_c]),
            self.out_conv
                .weight
                .val()
                .reshape([out_c, in_c])
                .transpose(),
            self.out_conv.bias.as_ref().map(|bias| bias.val()),
        );
        let y = y.reshape([b, g, gw, out_c]).permute([0, 3, 1, 2]);
        (pixel_shuffle(y, self.patch), aligned)
    }
}
