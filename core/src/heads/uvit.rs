//! The U-ViT baseline (Bao et al. 2023, "All are Worth Words"; MODEL.md AMBIG-18): time, text
//! and 2x2 latent patches are all tokens of one transformer with long skip connections between
//! shallow and deep blocks. The text tokens are the frozen LLM's last hidden state over the
//! caption alone (the LLM is a text encoder here and never sees image tokens).

use crate::nn::linear::Linear;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::blocks::{
    LayerNorm, Mlp, PatchEmbed, QkvProjection, add_positions, joint_attention, sincos_2d,
    sincos_positions, unpatchify,
};
use crate::nn::fused::ops::attention::AttentionMask;
use crate::weights::{LinearInit, VarBuilder, WeightError};

/// Pre-norm transformer block; blocks of the decoder half first merge their long skip with
/// `skip_linear([x, skip])`.
#[derive(Module, Debug)]
pub struct UVitBlock<B: Backend> {
    pub skip_linear: Option<Linear<B>>,
    pub norm1: LayerNorm<B>,
    pub attn: QkvProjection<B>,
    pub to_out: Linear<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> UVitBlock<B> {
    fn new(
        vb: &VarBuilder<B>,
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
        skip: bool,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            skip_linear: if skip {
                Some(vb.linear_with(
                    "skip_linear",
                    2 * dim,
                    dim,
                    true,
                    LinearInit::XavierUniform,
                )?)
            } else {
                None
            },
            norm1: LayerNorm::new(vb, "norm1", dim, 1e-6)?,
            attn: QkvProjection::new(vb, "attn", dim, heads)?,
            to_out: vb.linear_with("to_out", dim, dim, true, LinearInit::XavierUniform)?,
            norm2: LayerNorm::new(vb, "norm2", dim, 1e-6)?,
            mlp: Mlp::new(vb, "mlp", dim, dim * mlp_ratio)?,
        })
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        skip: Option<Tensor<B, 3>>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let x = match (&self.skip_linear, skip) {
            (Some(linear), Some(skip)) => linear.forward(Tensor::cat(vec![x, skip], 2)),
            _ => x,
        };
        let a =
            joint_attention(vec![self.attn.forward(self.norm1.forward(x.clone()))], mask).remove(0);
        let x = x + self.to_out.forward(a);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// The U-ViT.
#[derive(Module, Debug)]
pub struct UVit<B: Backend> {
    pub time_proj: Linear<B>,
    pub text_proj: Linear<B>,
    pub patch_embed: PatchEmbed<B>,
    pub in_blocks: Vec<UVitBlock<B>>,
    pub mid_block: UVitBlock<B>,
    pub out_blocks: Vec<UVitBlock<B>>,
    pub norm_out: LayerNorm<B>,
    pub proj_out: Linear<B>,
    pub grid: usize,
    pub patch: usize,
    pub latent_channels: usize,
}

impl<B: Backend> UVit<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder<B>,
        llm_width: usize,
        latent_channels: usize,
        patch: usize,
        grid: usize,
        dim: usize,
        heads: usize,
        depth: usize,
        mlp_ratio: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            time_proj: vb.linear("time_proj", llm_width, dim, true)?,
            text_proj: vb.linear("text_proj", llm_width, dim, true)?,
            patch_embed: PatchEmbed::new(vb, "patch_embed", latent_channels, dim, patch)?,
            in_blocks: (0..depth)
                .map(|i| UVitBlock::new(&vb.pp("in_blocks").pp(i), dim, heads, mlp_ratio, false))
                .collect::<Result<_, _>>()?,
            mid_block: UVitBlock::new(&vb.pp("mid_block"), dim, heads, mlp_ratio, false)?,
            out_blocks: (0..depth)
                .map(|i| UVitBlock::new(&vb.pp("out_blocks").pp(i), dim, heads, mlp_ratio, true))
                .collect::<Result<_, _>>()?,
            norm_out: LayerNorm::new(vb, "norm_out", dim, 1e-6)?,
            proj_out: vb.linear_with(
                "proj_out",
                dim,
                patch * patch * latent_channels,
                true,
                LinearInit::Zeros,
            )?,
            grid,
            patch,
            latent_channels,
        })
    }

    /// `z [b, C, H, W]`, `text_hidden [b, t, llm_width]`, `t_emb [b, llm_width]`, `mask` over
    /// `[t-token; text; image]` keys -> velocity `[b, C, H, W]`.
    pub fn forward(
        &self,
        z: Tensor<B, 4>,
        text_hidden: Tensor<B, 3>,
        t_emb: &Tensor<B, 2>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 4> {
        let device = z.device();
        let image = self.patch_embed.forward(z);
        let [_, n, d] = image.dims();
        let image = add_positions(image, sincos_2d::<B>(self.grid, n / self.grid, d, &device));
        let [_, t, _] = text_hidden.dims();
        let text = add_positions(
            self.text_proj.forward(text_hidden),
            sincos_positions::<B>(t, d, &device),
        );
        let time = self.time_proj.forward(t_emb.clone()).unsqueeze_dim::<3>(1);
        let mut x = Tensor::cat(vec![time, text, image], 1);
        let mut skips = Vec::with_capacity(self.in_blocks.len());
        for block in &self.in_blocks {
            x = block.forward(x, None, mask);
            skips.push(x.clone());
        }
        x = self.mid_block.forward(x, None, mask);
        for block in &self.out_blocks {
            x = block.forward(x, skips.pop(), mask);
        }
        let image = self.norm_out.forward(x.narrow(1, 1 + t, n));
        unpatchify(
            self.proj_out.forward(image),
            self.grid,
            n / self.grid,
            self.patch,
            self.latent_channels,
        )
    }
}
