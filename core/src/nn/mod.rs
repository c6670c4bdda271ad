//! Building blocks shared by every network in the crate: RMSNorm, attention masks and scaled
//! dot-product attention. One implementation each, used by the Llama backbone and the heads.

pub mod blocks;
pub mod fused;
pub mod linear;
pub mod precision;

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
        fused::ops::norm::rms_norm(x, &self.weight.val(), self.eps)
    }
}

/// The additive attention bias `[batch, 1, q, k]`: 0 where attention is allowed, [`MASKED_SCORE`]
/// where it is blocked, from a key mask `[batch, k]` (1 = real token) and causality. Built once per
/// forward pass and broadcast over heads (and layers).
pub fn attention_bias<B: Backend>(
    key_mask: Option<&Tensor<B, 2, Int>>,
    batch: usize,
    seq: usize,
    causal: bool,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
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
    let blocked = match (causal_block, pad_block) {
        (Some(c), Some(p)) => Some(c.bool_or(p)),
        (c, p) => c.or(p),
    }?;
    Some(Tensor::<B, 4>::zeros([batch, 1, seq, seq], device).mask_fill(blocked, MASKED_SCORE))
}

/// Lays a `[b, 1, s_q, s_k]` bias out for [`scaled_dot_product_attention`] with `kv_heads` KV
/// heads and `group` query heads per KV head: `[b, kv_heads, group * s_q, s_k]`, materialised
/// once per forward pass so that every layer adds it with a contiguous (SIMD) add.
pub fn grouped_bias<B: Backend>(bias: Tensor<B, 4>, kv_heads: usize, group: usize) -> Tensor<B, 4> {
    let [b, _, s_q, s_k] = bias.dims();
    bias.unsqueeze_dim::<5>(2)
        .expand([b, kv_heads, group, s_q, s_k])
        .reshape([b, kv_heads, group * s_q, s_k])
}

/// Softmax attention with grouped-query heads: `q [b, h, s_q, hd]`, `k`/`v` `[b, kv_h, s_k, hd]`
/// where `kv_h` divides `h` and query head `i` reads KV head `i / (h / kv_h)` (transformers'
/// `repeat_kv`, without copying K and V); `bias` from [`grouped_bias`], `[b, kv_h, group * s_q,
/// s_k]` -> `[b, h, s_q, hd]`.
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<&Tensor<B, 4>>,
) -> Tensor<B, 4> {
    let [b, h, s_q, hd] = q.dims();
    let [_, kv_h, _, _] = k.dims();
    let group = h / kv_h;
    let scale = 1.0 / (hd as f64).sqrt();
    // The `group` query heads that share a KV head become one longer query sequence.
    let q = q.reshape([b, kv_h, group * s_q, hd]);
    let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
    if let Some(bias) = bias {
        scores = scores + bias.clone();
    }
    softmax(scores, 3).matmul(v).reshape([b, h, s_q, hd])
}
