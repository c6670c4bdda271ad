//! Building blocks shared by every network in the crate: RMSNorm, attention masks and scaled
//! dot-product attention. One implementation each, used by the Llama backbone and the heads.

use burn::module::{Initializer, Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use crate::weights::{VarBuilder, WeightError};

/// The value written into blocked attention scores: finite, so that a query row with every key
/// blocked (a left-padding position) gives a uniform distribution instead of NaN (MODEL.md 9).
pub const MASKED_SCORE: f32 = f32::MIN;

/// RMSNorm as in Hugging Face Llama: `x * rsqrt(mean(x^2) + eps)`, then times the weight.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// `name.weight` of shape [dim], initialised to ones.
    pub fn new(vb: &VarBuilder<B>, name: &str, dim: usize, eps: f64) -> Result<Self, WeightError> {
        Ok(Self {
            weight: vb.pp(name).param("weight", [dim], Initializer::Ones)?,
            eps,
        })
    }

    /// `[..., dim] -> [..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let inv_rms = (x.clone().square().mean_dim(D - 1) + self.eps)
            .sqrt()
            .recip();
        x * inv_rms * self.weight.val().unsqueeze()
    }
}

/// Which (query, key) pairs attention may not use, as a boolean tensor `[batch, 1, q, k]`
/// (true = blocked), from a key mask `[batch, k]` (1 = real token) and causality.
pub fn blocked_attention<B: Backend>(
    key_mask: Option<&Tensor<B, 2, Int>>,
    batch: usize,
    seq: usize,
    causal: bool,
    device: &B::Device,
) -> Option<Tensor<B, 4, Bool>> {
    // burn's `tril_mask` is true *outside* the lower triangle: exactly the future keys (k > q).
    let causal_block = causal.then(|| {
        Tensor::<B, 2, Bool>::tril_mask([seq, seq], 0, device)
            .unsqueeze::<4>()
            .expand([batch, 1, seq, seq])
    });
    let pad_block = key_mask.map(|m| {
        m.clone()
            .equal_elem(0)
            .reshape([batch, 1, 1, seq])
            .expand([batch, 1, seq, seq])
    });
    match (causal_block, pad_block) {
        (Some(c), Some(p)) => Some(c.bool_or(p)),
        (c, p) => c.or(p),
    }
}

/// Softmax attention over heads: `q [b, h, s_q, hd]`, `k`/`v` `[b, h, s_k, hd]`,
/// `blocked [b, 1, s_q, s_k]` -> `[b, h, s_q, hd]`. Softmax in the tensors' dtype (f32 here).
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    blocked: Option<&Tensor<B, 4, Bool>>,
) -> Tensor<B, 4> {
    let [b, h, s_q, hd] = q.dims();
    let s_k = k.dims()[2];
    let scale = 1.0 / (hd as f64).sqrt();
    let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
    if let Some(blocked) = blocked {
        scores = scores.mask_fill(blocked.clone().expand([b, h, s_q, s_k]), MASKED_SCORE);
    }
    softmax(scores, 3).matmul(v)
}
