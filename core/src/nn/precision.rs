//! Training precision (issue 16): `f32`, `mixed` (f32 master weights and optimiser state, the
//! matrix products and attention of the forward and backward passes in bf16) and `bf16` (the
//! mixed compute path, and the weights rounded to bf16 after every update).
//!
//! burn 0.21 has no autocast: the mixed path casts explicitly, around each linear layer (input,
//! weight and bias to bf16, the product back to f32) and each attention (queries, keys and
//! values to bf16 for the two products; scores, mask and softmax in f32). Gradients flow back
//! through burn's `Cast` op to the f32 parameters. Everything else (norms, activations,
//! residuals, the loss) stays f32. The switch is per thread and scoped ([`compute_in_bf16`]):
//! a training step turns it on for its forward pass, so evaluation and sampling in the same
//! process compute in f32.

use std::cell::Cell;

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// How a run computes and stores its training state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// f32 weights and optimiser state; products and attention in bf16.
    Mixed,
    /// The mixed compute path with the weights rounded to bf16 after every update (the
    /// optimiser's moments stay f32).
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
            Precision::Bf16 => "bf16",
        }
    }

    /// Whether the forward pass computes its products in bf16.
    pub fn bf16_compute(self) -> bool {
        self != Precision::F32
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "mixed" => Ok(Precision::Mixed),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}`: f32, mixed or bf16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static BF16_COMPUTE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread computes products in bf16 now.
pub fn bf16_compute() -> bool {
    BF16_COMPUTE.with(|c| c.get())
}

/// Restores the previous setting when dropped.
pub struct ComputeScope {
    previous: bool,
}

impl Drop for ComputeScope {
    fn drop(&mut self) {
        BF16_COMPUTE.with(|c| c.set(self.previous));
    }
}

/// Computes products in bf16 on this thread (`on`) until the returned scope is dropped.
pub fn compute_in_bf16(on: bool) -> ComputeScope {
    let previous = BF16_COMPUTE.with(|c| c.replace(on));
    ComputeScope { previous }
}

/// `t` in bf16.
pub fn down<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    t.cast(FloatDType::BF16)
}

/// `t` in f32.
pub fn up<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    t.cast(FloatDType::F32)
}

/// `t` rounded to the nearest bf16 value, kept in f32.
pub fn round_to_bf16<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    up(down(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    type A = Autodiff<Flex>;

    #[test]
    fn a_bf16_product_is_close_to_the_f32_one_and_its_gradient_reaches_the_f32_weight() {
        let device = Default::default();
        let x = Tensor::<A, 2>::random([8, 64], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<A, 2>::random([64, 32], Distribution::Normal(0.0, 0.2), &device)
            .require_grad();
        let exact = x.clone().matmul(w.clone());
        let mixed = up(down(x.clone()).matmul(down(w.clone())));
        assert_eq!(mixed.dtype(), burn::tensor::DType::F32);
        let gap: f32 = (mixed.clone() - exact.clone()).abs().max().into_scalar();
        let size: f32 = exact.clone().abs().max().into_scalar();
        // bf16 keeps 8 bits of mantissa: each input is off by up to 2^-9 relative.
        assert!(gap / size < 2e-2, "{gap} of {size}");
        let g_exact = exact.sum().backward();
        let g_mixed = mixed.sum().backward();
        let (ge, gm) = (w.grad(&g_exact).unwrap(), w.grad(&g_mixed).unwrap());
        assert_eq!(gm.dtype(), burn::tensor::DType::F32);
        let gap: f32 = (gm - ge.clone()).abs().max().into_scalar();
        let size: f32 = ge.abs().max().into_scalar();
        assert!(gap / size < 2e-2, "{gap} of {size}");
        // The switch is scoped to the thread.
        assert!(!bf16_compute());
        {
            let _s = compute_in_bf16(true);
            assert!(bf16_compute());
        }
        assert!(!bf16_compute());
        let r = round_to_bf16(Tensor::<Flex, 1>::from_data(
            TensorData::new(vec![1.0f32 + 1.0 / 1024.0], [1]),
            &device,
        ));
        assert_eq!(r.into_data().to_vec::<f32>().unwrap(), vec![1.0]);
    }
}
