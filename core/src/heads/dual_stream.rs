//! The dual-stream encoder (MODEL.md section 6, a PROPOSAL consistent with the paper's 4.2):
//! SD3's MM-DiT joint attention (Esser et al. 2024; diffusers `JointTransformerBlock`) between a
//! noise stream (2x2 patches of z_t + 2-D sin-cos positions) and a text stream (the LLM's own
//! token embeddings projected to the head width + 1-D sin-cos positions), with separate weights
//! per stream (adaLN-zero, QKV with QK-RMSNorm, output projection, MLP), one joint attention with
//! a key-padding mask on the text, and conditioning `c = Linear(t_emb)`.
//!
//! Outputs: the noise stream through LayerNorm + Linear to the LLM width replaces the baseline's
//! aligner output (and, before the projection, is the decoder's skip); the text stream enters the
//! LLM as a residual on its token embeddings through a zero-initialised Linear, so at
//! initialisation the frozen LLM sees exactly its native embeddings (AMBIG-6).

use crate::nn::linear::Linear;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::convnext::EncoderOutput;
use crate::nn::blocks::{
    LayerNorm, Mlp, Modulation, Norm, PatchEmbed, QkvProjection, add_positions, gated_residual,
    joint_attention, modulate, sincos_2d, sincos_positions,
};
use crate::nn::fused::ops::attention::AttentionMask;
use crate::weights::{LinearInit, VarBuilder, WeightError};

/// One stream's half of a joint block: adaLN-zero (6 chunks), QKV, output projection, MLP.
#[derive(Module, Debug)]
pub struct StreamWeights<B: Backend> {
    pub norm1: Modulation<B>,
    pub attn: QkvProjection<B>,
    pub to_out: Linear<B>,
    pub ff: Mlp<B>,
}

impl<B: Backend> StreamWeights<B> {
    fn new(
        vb: &VarBuilder<B>,
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            norm1: Modulation::new(vb, "norm1", dim, dim, 6)?,
            attn: QkvProjection::new(vb, "attn", dim, heads)?,
            to_out: vb.linear_with("to_out", dim, dim, true, LinearInit::XavierUniform)?,
            ff: Mlp::new(vb, "ff", dim, dim * mlp_ratio)?,
        })
    }
}

/// MM-DiT joint transformer block: `x += gate_msa attn(modulate(LN x))`,
/// `x += gate_mlp MLP(modulate(LN x))` per stream, attention joint over both.
#[derive(Module, Debug)]
pub struct JointBlock<B: Backend> {
    pub image: StreamWeights<B>,
    pub context: StreamWeights<B>,
}

impl<B: Backend> JointBlock<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            image: StreamWeights::new(&vb.pp("image"), dim, heads, mlp_ratio)?,
            context: StreamWeights::new(&vb.pp("context"), dim, heads, mlp_ratio)?,
        })
    }

    /// `x [b, n, d]` (noise), `ctx [b, t, d]` (text), `c [b, d]`, `mask` over `[text; image]`
    /// keys -> updated `(x, ctx)`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        ctx: Tensor<B, 3>,
        c: &Tensor<B, 2>,
        mask: &AttentionMask<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let mi = self.image.norm1.forward(c);
        let mc = self.context.norm1.forward(c);
        let hi = modulate(x.clone(), Norm::Layer, 1e-6, &mi[0], &mi[1]);
        let hc = modulate(ctx.clone(), Norm::Layer, 1e-6, &mc[0], &mc[1]);
        // SD3 reference order: [text; image].
        let outs = joint_attention(
            vec![self.context.attn.forward(hc), self.image.attn.forward(hi)],
            mask,
        );
        let (oc, oi) = (outs[0].clone(), outs[1].clone());
        let x = gated_residual(x, &mi[2], self.image.to_out.forward(oi));
        let ctx = gated_residual(ctx, &mc[2], self.context.to_out.forward(oc));
        let h = modulate(x.clone(), Norm::Layer, 1e-6, &mi[3], &mi[4]);
        let x = gated_residual(x, &mi[5], self.image.ff.forward(h));
        let h = modulate(ctx.clone(), Norm::Layer, 1e-6, &mc[3], &mc[4]);
        let ctx = gated_residual(ctx, &mc[5], self.context.ff.forward(h));
        (x, ctx)
    }
}

/// The dual-stream encoder.
#[derive(Module, Debug)]
pub struct DualStreamEncoder<B: Backend> {
    pub noise_embed: PatchEmbed<B>,
    pub text_embed: Linear<B>,
    pub cond: Linear<B>,
    pub blocks: Vec<JointBlock<B>>,
    pub noise_norm_out: LayerNorm<B>,
    pub noise_proj_out: Linear<B>,
    pub text_norm_out: LayerNorm<B>,
    pub text_proj_out: Linear<B>,
    pub grid: usize,
}

impl<B: Backend> DualStreamEncoder<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder<B>,
        latent_channels: usize,
        patch: usize,
        grid: usize,
        dim: usize,
        heads: usize,
        blocks: usize,
        mlp_ratio: usize,
        llm_width: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            noise_embed: PatchEmbed::new(vb, "noise_embed", latent_channels, dim, patch)?,
            text_embed: vb.linear("text_embed", llm_width, dim, true)?,
            cond: vb.linear("cond", llm_width, dim, true)?,
            blocks: (0..blocks)
                .map(|i| JointBlock::new(&vb.pp("blocks").pp(i), dim, heads, mlp_ratio))
                .collect::<Result<_, _>>()?,
            noise_norm_out: LayerNorm::new(vb, "noise_norm_out", dim, 1e-6)?,
            noise_proj_out: vb.linear("noise_proj_out", dim, llm_width, true)?,
            text_norm_out: LayerNorm::new(vb, "text_norm_out", dim, 1e-6)?,
            text_proj_out: vb.linear_with(
                "text_proj_out",
                dim,
                llm_width,
                true,
                LinearInit::Zeros,
            )?,
            grid,
        })
    }

    /// `z [b, C, H, W]`, `text_embeds [b, t, llm_width]` (the LLM's token embeddings),
    /// `t_emb [b, llm_width]`, `mask` over `[text; image]` keys.
    pub fn forward(
        &self,
        z: Tensor<B, 4>,
        text_embeds: Tensor<B, 3>,
        t_emb: &Tensor<B, 2>,
        mask: &AttentionMask<B>,
    ) -> EncoderOutput<B> {
        let device = z.device();
        let mut x = self.noise_embed.forward(z);
        let [_, n, d] = x.dims();
        x = add_positions(x, sincos_2d::<B>(self.grid, n / self.grid, d, &device));
        let [_, t, _] = text_embeds.dims();
        let mut ctx = add_positions(
            self.text_embed.forward(text_embeds),
            sincos_positions::<B>(t, d, &device),
        );
        let c = self.cond.forward(t_emb.clone());
        for block in &self.blocks {
            (x, ctx) = block.forward(x, ctx, &c, mask);
        }
        let residual = self.text_proj_out.forward(self.text_norm_out.forward(ctx));
        let x_b = x.dims()[0];
        EncoderOutput {
            image_tokens: self
                .noise_proj_out
                .forward(self.noise_norm_out.forward(x.clone())),
            skip: x.reshape([x_b, self.grid, n / self.grid, d]),
            text_residual: Some(residual),
        }
    }
}
