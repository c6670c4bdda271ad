//! A linear layer `y = x W + b` (`W` stored `[in, out]`, as burn's `nn::Linear`, whose record it
//! shares: checkpoints of either load into the other) that always computes one 2-D product: the
//! leading dimensions are folded into the rows. Through burn's default `linear` a `[b, s, in]`
//! input took its weight gradient as `b` products into a `[b, in, out]` tensor and a sum over
//! `b`; folded, the gradient is one GEMM, with no batch of weight-sized temporaries. On the CPU
//! the layer is one fused op (`nn::fused::ops::linear`).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[d_in, d_out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// `x [..., d_in] -> [..., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        use crate::nn::precision::{bf16_compute, down, up};
        let bias = self.bias.as_ref().map(|b| b.val());
        if bf16_compute() {
            // Mixed precision: the product in bf16, the result back in f32.
            let bias = bias.map(down);
            return up(crate::nn::fused::ops::linear::linear(
                down(x),
                &down(self.weight.val()),
                bias.as_ref(),
            ));
        }
        crate::nn::fused::ops::linear::linear(x, &self.weight.val(), bias.as_ref())
    }
}
