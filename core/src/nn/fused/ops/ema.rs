//! The EMA update of a weight, `ema * decay + w * (1 - decay)`, in one pass instead of three
//! (two scalar products and a sum, each a full read and write of the tensor). The same f32
//! operations in the same order as the composed form, so the values are identical.

use crate::nn::fused::par::elementwise;
use crate::nn::fused::simd::simd_kernel;
use crate::nn::fused::{CpuOp, In, Out, run};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `a * decay + b * keep` with both factors already rounded to f32 (as burn's scalar ops round
/// them). Inputs: a (the running average), b (the weight).
#[derive(Debug, Clone)]
pub struct Ema {
    pub decay: f32,
    pub keep: f32,
}

simd_kernel! {
    fn ema_rows(a: &[f32], b: &[f32], decay: f32, keep: f32, out: &mut [f32]) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = x * decay + y * keep;
        }
    }
}

impl CpuOp<2> for Ema {
    fn forward(&self, [a, b]: [In<'_>; 2], _train: bool) -> (Out, Option<Out>) {
        assert_eq!(
            a.shape, b.shape,
            "ema: average {:?} and weight {:?} differ",
            a.shape, b.shape
        );
        let mut out = vec![0.0f32; a.data.len()];
        elementwise(&mut out, |at, piece| {
            let n = piece.len();
            ema_rows(
                &a.data[at..at + n],
                &b.data[at..at + n],
                self.decay,
                self.keep,
                piece,
            )
        });
        (Out::new(out, a.shape.to_vec()), None)
    }

    fn backward(
        &self,
        [a, b]: [In<'_>; 2],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 2],
    ) -> [Option<Out>; 2] {
        let scaled = |f: f32, shape: &[usize]| {
            Out::new(grad.data.iter().map(|g| g * f).collect(), shape.to_vec())
        };
        [
            wanted[0].then(|| scaled(self.decay, a.shape)),
            wanted[1].then(|| scaled(self.keep, b.shape)),
        ]
    }
}

/// `average * decay + weight * (1 - decay)`.
pub fn ema<B: Backend, const D: usize>(
    average: Tensor<B, D>,
    weight: Tensor<B, D>,
    decay: f64,
) -> Tensor<B, D> {
    let op = Ema {
        decay: decay as f32,
        keep: (1.0 - decay) as f32,
    };
    run(op, [&average, &weight]).unwrap_or_else(|| composed_ema(average, weight, decay))
}

pub fn composed_ema<B: Backend, const D: usize>(
    average: Tensor<B, D>,
    weight: Tensor<B, D>,
    decay: f64,
) -> Tensor<B, D> {
    average * decay + weight * (1.0 - decay)
}
