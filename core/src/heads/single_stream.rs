//! The single-stream decoder (MODEL.md section 5, a PROPOSAL consistent with the paper's 4.4):
//! every LLM output position (text, t-token, image tokens) through shared-weight parallel
//! transformer blocks (Dehghani et al. 2023, ViT-22B; Flux's single-stream block) with adaLN,
//! bidirectional attention with a key-padding mask, the encoder skip added to the image tokens,
//! and the image tokens out through an adaLN-modulated norm, a zero-initialised linear and SD3's
//! unpatchify.

use crate::nn::linear::Linear;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::RmsNorm;
use crate::nn::blocks::{
    Modulation, Norm, QkvProjection, add_positions, gated_residual, joint_attention, modulate,
    sincos_2d, unpatchify,
};
use crate::nn::fused::ops::act::gelu_tanh;
use crate::nn::fused::ops::attention::AttentionMask;
use crate::weights::{LinearInit, VarBuilder, WeightError};

/// A parallel block: `h = modulate(LN x)`; `x += gate * proj_out([attn(h), gelu(mlp_in(h))])`.
#[derive(Module, Debug)]
pub struct ParallelBlock<B: Backend> {
    pub norm: Modulation<B>,
    pub attn: QkvProjection<B>,
    pub mlp_in: Linear<B>,
    pub proj_out: Linear<B>,
}

impl<B: Backend> ParallelBlock<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        dim: usize,
        heads: usize,
        mlp_ratio: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            norm: Modulation::new(vb, "norm", dim, dim, 3)?,
            attn: QkvProjection::new(vb, "attn", dim, heads)?,
            mlp_in: vb.linear_with(
                "mlp_in",
                dim,
                dim * mlp_ratio,
                true,
                LinearInit::XavierUniform,
            )?,
            proj_out: vb.linear_with(
                "proj_out",
                dim * (1 + mlp_ratio),
                dim,
                true,
                LinearInit::XavierUniform,
            )?,
        })
    }

    /// `x [b, s, d]`, `c [b, d]`, `mask` over all keys -> `[b, s, d]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        c: &Tensor<B, 2>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let m = self.norm.forward(c);
        let h = modulate(x.clone(), Norm::Layer, 1e-6, &m[0], &m[1]);
        let attn = joint_attention(vec![self.attn.forward(h.clone())], mask).remove(0);
        let mlp = gelu_tanh(self.mlp_in.forward(h));
        gated_residual(
            x,
            &m[2],
            self.proj_out.forward(Tensor::cat(vec![attn, mlp], 2)),
        )
    }
}

/// The single-stream decoder.
#[derive(Module, Debug)]
pub struct SingleStreamDecoder<B: Backend> {
    pub norm_in: RmsNorm<B>,
    pub proj_in: Linear<B>,
    pub skip_proj: Linear<B>,
    pub cond: Linear<B>,
    pub blocks: Vec<ParallelBlock<B>>,
    pub norm_out: Modulation<B>,
    pub proj_out: Linear<B>,
    pub patch: usize,
    pub latent_channels: usize,
}

impl<B: Backend> SingleStreamDecoder<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder<B>,
        llm_width: usize,
        llm_eps: f64,
        dim: usize,
        heads: usize,
        blocks: usize,
        mlp_ratio: usize,
        skip_channels: usize,
        latent_channels: usize,
        patch: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            norm_in: RmsNorm::new(vb, "norm_in", llm_width, llm_eps)?,
            proj_in: vb.linear("proj_in", llm_width, dim, true)?,
            skip_proj: vb.linear("skip_proj", skip_channels, dim, true)?,
            cond: vb.linear("cond", llm_width, dim, true)?,
            blocks: (0..blocks)
                .map(|i| ParallelBlock::new(&vb.pp("blocks").pp(i), dim, heads, mlp_ratio))
                .collect::<Result<_, _>>()?,
            // AdaLayerNormContinuous: scale first, then shift.
            norm_out: Modulation::new(vb, "norm_out", dim, dim, 2)?,
            proj_out: vb.linear_with(
                "proj_out",
                dim,
                patch * patch * latent_channels,
                true,
                LinearInit::Zeros,
            )?,
            patch,
            latent_channels,
        })
    }

    /// `hidden [b, s, llm_width]` (the LLM's last hidden state at every position; the image
    /// tokens are the last `g * g`), `skip [b, skip_c, g, g]`, `t_emb`, `mask` over all keys ->
    /// velocity `[b, C, g p, g p]`.
    pub fn forward(
        &self,
        hidden: Tensor<B, 3>,
        skip: Tensor<B, 4>,
        t_emb: &Tensor<B, 2>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 4> {
        self.forward_with_input(hidden, skip, t_emb, mask).0
    }

    /// [`SingleStreamDecoder::forward`] and the decoder's input stream at the image positions,
    /// `proj_in(norm_in(h))` `[b, g * g, dim]` (the `dec.input` tap, computed once).
    pub fn forward_with_input(
        &self,
        hidden: Tensor<B, 3>,
        skip: Tensor<B, 4>,
        t_emb: &Tensor<B, 2>,
        mask: &AttentionMask<B>,
    ) -> (Tensor<B, 4>, Tensor<B, 3>) {
        let [b, g, gw, skip_c] = skip.dims();
        let n = g * gw;
        let [_, s, _] = hidden.dims();
        let device = hidden.device();
        let u = self.proj_in.forward(self.norm_in.forward(hidden));
        let d = u.dims()[2];
        let image_extra = add_positions(
            self.skip_proj.forward(skip.reshape([b, n, skip_c])),
            sincos_2d::<B>(g, gw, d, &device),
        );
        let prefix = u.clone().narrow(1, 0, s - n);
        let input = u.narrow(1, s - n, n);
        let image = input.clone() + image_extra;
        let mut x = Tensor::cat(vec![prefix, image], 1);
        let c = self.cond.forward(t_emb.clone());
        for block in &self.blocks {
            x = block.forward(x, &c, mask);
        }
        let m = self.norm_out.forward(&c);
        let image = modulate(x.narrow(1, s - n, n), Norm::Layer, 1e-6, &m[1], &m[0]);
        let velocity = unpatchify(
            self.proj_out.forward(image),
            g,
            gw,
            self.patch,
            self.latent_channels,
        );
        (velocity, input)
    }
}
