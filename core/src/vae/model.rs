//! The diffusers `AutoencoderKL` network (diffusers `models/autoencoders/vae.py` `Encoder` and
//! `Decoder`, `models/resnet.py` `ResnetBlock2D`, `models/downsampling.py` `Downsample2D`,
//! `models/upsampling.py` `Upsample2D`, `models/attention_processor.py` `Attention` as built by
//! `UNetMidBlock2D`), in f32. Module paths equal the diffusers checkpoint keys.

use crate::nn::linear::Linear;
use burn::module::{Initializer, Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;

use super::config::VaeConfig;
use crate::nn::scaled_dot_product_attention;
use crate::weights::{VarBuilder, WeightError};

/// The epsilon of every GroupNorm in the VAE (diffusers passes `eps=1e-6` everywhere).
const NORM_EPS: f64 = 1e-6;

/// `nn.GroupNorm(groups, channels, eps)` with weight and bias.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub groups: usize,
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        name: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<Self, WeightError> {
        let vb = vb.pp(name);
        Ok(Self {
            weight: vb.param("weight", [channels], Initializer::Ones)?,
            bias: vb.param("bias", [channels], Initializer::Zeros)?,
            groups,
            eps,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`: statistics over each group of `c / groups` channels and
    /// all positions (biased variance, as PyTorch).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let g = x.reshape([b, self.groups, (c / self.groups) * h * w]);
        let mean = g.clone().mean_dim(2);
        let centred = g - mean;
        let var = centred.clone().square().mean_dim(2);
        let normed = (centred * (var + self.eps).sqrt().recip()).reshape([b, c, h * w]);
        let weight = self.weight.val().reshape([1, c, 1]);
        let bias = self.bias.val().reshape([1, c, 1]);
        (normed * weight + bias).reshape([b, c, h, w])
    }
}

/// diffusers `ResnetBlock2D` without time embedding: norm1, SiLU, conv1, norm2, SiLU, conv2, plus
/// the (1x1 `conv_shortcut` when the width changes) shortcut.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    /// `count` blocks `vb.0 .. vb.{count-1}`: the first maps `c_in` to `out` channels, the rest
    /// keep `out` (diffusers' `resnets` list of a down or up block).
    pub fn stack(
        vb: &VarBuilder<B>,
        count: usize,
        c_in: usize,
        out: usize,
        groups: usize,
    ) -> Result<Vec<Self>, WeightError> {
        (0..count)
            .map(|j| Self::new(&vb.pp(j), if j == 0 { c_in } else { out }, out, groups))
            .collect()
    }

    pub fn new(
        vb: &VarBuilder<B>,
        c_in: usize,
        c_out: usize,
        groups: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            norm1: GroupNorm::new(vb, "norm1", groups, c_in, NORM_EPS)?,
            conv1: vb.conv2d("conv1", c_in, c_out, 3, 1, 1, 1)?,
            norm2: GroupNorm::new(vb, "norm2", groups, c_out, NORM_EPS)?,
            conv2: vb.conv2d("conv2", c_out, c_out, 3, 1, 1, 1)?,
            conv_shortcut: if c_in != c_out {
                Some(vb.conv2d("conv_shortcut", c_in, c_out, 1, 1, 0, 1)?)
            } else {
                None
            },
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(silu(self.norm2.forward(h)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}

/// The VAE's single-head self-attention over positions (`Attention` with
/// `_from_deprecated_attn_block=True`, heads = 1, head dim = channels), with its GroupNorm and
/// residual.
#[derive(Module, Debug)]
pub struct SpatialAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    pub to_out: Linear<B>,
}

impl<B: Backend> SpatialAttention<B> {
    pub fn new(vb: &VarBuilder<B>, channels: usize, groups: usize) -> Result<Self, WeightError> {
        Ok(Self {
            group_norm: GroupNorm::new(vb, "group_norm", groups, channels, NORM_EPS)?,
            to_q: vb.linear("to_q", channels, channels, true)?,
            to_k: vb.linear("to_k", channels, channels, true)?,
            to_v: vb.linear("to_v", channels, channels, true)?,
            to_out: vb.pp("to_out").linear("0", channels, channels, true)?,
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]` (attention over the `h w` positions).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let head = |lin: &Linear<B>| lin.forward(tokens.clone()).unsqueeze_dim::<4>(1);
        let attended = scaled_dot_product_attention(
            head(&self.to_q),
            head(&self.to_k),
            head(&self.to_v),
            None,
        )
        .squeeze_dim::<3>(1);
        let out = self
            .to_out
            .forward(attended)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        out + x
    }
}

/// `UNetMidBlock2D` without time embedding: resnet, (attention), resnet.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock<B>>,
    pub attention: Option<SpatialAttention<B>>,
}

impl<B: Backend> MidBlock<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        channels: usize,
        groups: usize,
        attention: bool,
    ) -> Result<Self, WeightError> {
        let r = vb.pp("resnets");
        Ok(Self {
            resnets: vec![
                ResnetBlock::new(&r.pp(0), channels, channels, groups)?,
                ResnetBlock::new(&r.pp(1), channels, channels, groups)?,
            ],
            attention: if attention {
                Some(SpatialAttention::new(
                    &vb.pp("attentions").pp(0),
                    channels,
                    groups,
                )?)
            } else {
                None
            },
        })
    }

    /// `[b, c, h, w] -> [b, c, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x);
        if let Some(attention) = &self.attention {
            x = attention.forward(x);
        }
        self.resnets[1].forward(x)
    }
}

/// `DownEncoderBlock2D`: resnets, then (except the last block) `Downsample2D` with
/// `padding=0`: zero-pad right and bottom by one, stride-2 3x3 convolution.
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock<B>>,
    pub downsampler: Option<Conv2d<B>>,
}

/// `UpDecoderBlock2D`: resnets, then (except the last block) `Upsample2D`: nearest x2, 3x3
/// convolution.
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock<B>>,
    pub upsampler: Option<Conv2d<B>>,
}

/// Nearest-neighbour x2 up-sampling, `[b, c, h, w] -> [b, c, 2h, 2w]` (exact copies, as
/// `F.interpolate(scale_factor=2.0, mode="nearest")`).
pub fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

/// diffusers `Encoder` (`double_z=True`): conv_in, down blocks, mid block, GroupNorm, SiLU,
/// conv_out to `2 * latent_channels` moments.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownBlock<B>>,
    pub mid_block: MidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    pub fn new(vb: &VarBuilder<B>, c: &VaeConfig) -> Result<Self, WeightError> {
        let groups = c.norm_num_groups;
        let channels = &c.block_out_channels;
        let last = *channels.last().expect("checked non-empty");
        let mut down_blocks = Vec::new();
        let mut out = channels[0];
        for (i, &width) in channels.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let c_in = out;
            out = width;
            let resnets =
                ResnetBlock::stack(&vb.pp("resnets"), c.layers_per_block, c_in, out, groups)?;
            let downsampler = if i + 1 < channels.len() {
                Some(
                    vb.pp("downsamplers")
                        .pp(0)
                        .conv2d("conv", out, out, 3, 2, 0, 1)?,
                )
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                downsampler,
            });
        }
        Ok(Self {
            conv_in: vb.conv2d("conv_in", c.in_channels, channels[0], 3, 1, 1, 1)?,
            down_blocks,
            mid_block: MidBlock::new(&vb.pp("mid_block"), last, groups, c.mid_block_add_attention)?,
            conv_norm_out: GroupNorm::new(vb, "conv_norm_out", groups, last, NORM_EPS)?,
            conv_out: vb.conv2d("conv_out", last, 2 * c.latent_channels, 3, 1, 1, 1)?,
        })
    }

    /// Pixels `[b, in_channels, h, w]` -> moments `[b, 2 latent_channels, h / f, w / f]` with
    /// `f` the down-sampling factor (h and w multiples of `f`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for block in &self.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x);
            }
            if let Some(conv) = &block.downsampler {
                x = conv.forward(x.pad((0, 1, 0, 1), PadMode::Constant(0.0)));
            }
        }
        let x = self.mid_block.forward(x);
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}

/// diffusers `Decoder`: conv_in, mid block, up blocks (widths reversed, `layers_per_block + 1`
/// resnets each), GroupNorm, SiLU, conv_out.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: MidBlock<B>,
    pub up_blocks: Vec<UpBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    pub fn new(vb: &VarBuilder<B>, c: &VaeConfig) -> Result<Self, WeightError> {
        let groups = c.norm_num_groups;
        let reversed: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::new();
        let mut out = reversed[0];
        for (i, &width) in reversed.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let c_in = out;
            out = width;
            // The decoder's up blocks hold one resnet more than the encoder's down blocks.
            let resnets =
                ResnetBlock::stack(&vb.pp("resnets"), c.layers_per_block + 1, c_in, out, groups)?;
            let upsampler = if i + 1 < reversed.len() {
                Some(
                    vb.pp("upsamplers")
                        .pp(0)
                        .conv2d("conv", out, out, 3, 1, 1, 1)?,
                )
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        let first = c.block_out_channels[0];
        Ok(Self {
            conv_in: vb.conv2d("conv_in", c.latent_channels, reversed[0], 3, 1, 1, 1)?,
            mid_block: MidBlock::new(
                &vb.pp("mid_block"),
                reversed[0],
                groups,
                c.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(vb, "conv_norm_out", groups, first, NORM_EPS)?,
            conv_out: vb.conv2d("conv_out", first, c.out_channels, 3, 1, 1, 1)?,
        })
    }

    /// Latents `[b, latent_channels, h, w]` -> pixels `[b, out_channels, h f, w f]`.
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x);
            }
            if let Some(conv) = &block.upsampler {
                x = conv.forward(upsample_nearest2x(x));
            }
        }
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}
