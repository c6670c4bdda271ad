//! Elementwise activations with their derivatives in one pass each way: GELU (erf and tanh
//! forms), SiLU, and SwiGLU's `silu(gate) * up`.

use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, silu};
use burn::tensor::backend::Backend;

use crate::nn::fused::math::{erf, exp, tanh};
use crate::nn::fused::par::{chunk_rows, map_rows, ranges};
use crate::nn::fused::{CpuOp, In, Out, run};

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The activation of [`Activation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `x Phi(x) = x (1 + erf(x / sqrt 2)) / 2`
    GeluErf,
    /// `x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2`
    GeluTanh,
    /// `x sigmoid(x)`
    Silu,
}

#[inline(always)]
fn value_and_slope(kind: Kind, x: f32) -> (f32, f32) {
    match kind {
        Kind::GeluErf => {
            let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
            (x * cdf, cdf + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x))
        }
        Kind::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
            let t = tanh(u);
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
            (
                0.5 * x * (1.0 + t),
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du,
            )
        }
        Kind::Silu => {
            let s = 1.0 / (1.0 + exp(-x));
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
    }
}

#[inline(always)]
fn value(kind: Kind, x: f32) -> f32 {
    match kind {
        Kind::GeluErf => x * 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)),
        Kind::GeluTanh => 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))),
        Kind::Silu => x / (1.0 + exp(-x)),
    }
}

/// Elementwise `f(x)` for one of [`Kind`]. Input: x.
#[derive(Debug, Clone)]
pub struct Activation(pub Kind);

/// A flat elementwise map over pieces of `out`, parallel when large.
fn elementwise(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let width = 1024;
    let rows = out.len().div_ceil(width);
    // The last row may be short: map_rows needs whole rows, so the tail is done separately.
    let whole = out.len() / width;
    let (head, tail) = out.split_at_mut(whole * width);
    map_rows(
        head,
        width,
        &ranges(whole, chunk_rows(width)),
        |r, piece| f(r.start * width, piece),
    );
    if rows > whole {
        f(whole * width, tail);
    }
}

impl CpuOp<1> for Activation {
    fn forward(&self, [x]: [In<'_>; 1], _train: bool) -> (Out, Option<Out>) {
        let kind = self.0;
        let mut out = vec![0.0f32; x.data.len()];
        elementwise(&mut out, |at, piece| {
            let xs = &x.data[at..at + piece.len()];
            for (o, &v) in piece.iter_mut().zip(xs) {
                *o = value(kind, v);
            }
        });
        (Out::new(out, x.shape.to_vec()), None)
    }

    fn backward(
        &self,
        [x]: [In<'_>; 1],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        _wanted: [bool; 1],
    ) -> [Option<Out>; 1] {
        let kind = self.0;
        let mut dx = vec![0.0f32; x.data.len()];
        elementwise(&mut dx, |at, piece| {
            let n = piece.len();
            let (xs, gs) = (&x.data[at..at + n], &grad.data[at..at + n]);
            for i in 0..n {
                piece[i] = gs[i] * value_and_slope(kind, xs[i]).1;
            }
        });
        [Some(Out::new(dx, x.shape.to_vec()))]
    }
}

/// `silu(gate) * up` (Llama's SwiGLU). Inputs: gate, up.
#[derive(Debug, Clone)]
pub struct SwiGlu;

impl CpuOp<2> for SwiGlu {
    fn forward(&self, [g, u]: [In<'_>; 2], _train: bool) -> (Out, Option<Out>) {
        assert_eq!(
            g.data.len(),
            u.data.len(),
            "swiglu: gate {:?} and up {:?} differ",
            g.shape,
            u.shape
        );
        let mut out = vec![0.0f32; g.data.len()];
        elementwise(&mut out, |at, piece| {
            let n = piece.len();
            let (gs, us) = (&g.data[at..at + n], &u.data[at..at + n]);
            for i in 0..n {
                piece[i] = value(Kind::Silu, gs[i]) * us[i];
            }
        });
        (Out::new(out, g.shape.to_vec()), None)
    }

    fn backward(
        &self,
        [g, u]: [In<'_>; 2],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 2],
    ) -> [Option<Out>; 2] {
        let n = g.data.len();
        // One buffer [dgate | dup] filled in one pass, then split.
        let mut both = vec![0.0f32; 2 * n];
        let (dg, du) = both.split_at_mut(n);
        elementwise(dg, |at, piece| {
            let m = piece.len();
            let (gs, us, ys) = (
                &g.data[at..at + m],
                &u.data[at..at + m],
                &grad.data[at..at + m],
            );
            for i in 0..m {
                piece[i] = ys[i] * us[i] * value_and_slope(Kind::Silu, gs[i]).1;
            }
        });
        elementwise(du, |at, piece| {
            let m = piece.len();
            let (gs, ys) = (&g.data[at..at + m], &grad.data[at..at + m]);
            for i in 0..m {
                piece[i] = ys[i] * value(Kind::Silu, gs[i]);
            }
        });
        let du = both.split_off(n);
        [
            wanted[0].then(|| Out::new(both, g.shape.to_vec())),
            wanted[1].then(|| Out::new(du, u.shape.to_vec())),
        ]
    }
}

/// GELU with the exact (erf) form.
pub fn gelu_erf<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    run(Activation(Kind::GeluErf), [&x]).unwrap_or_else(|| gelu(x))
}

/// GELU with the tanh approximation.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    run(Activation(Kind::GeluTanh), [&x]).unwrap_or_else(|| gelu_approximate(x))
}

/// `silu(gate) * up`.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    run(SwiGlu, [&gate, &up]).unwrap_or_else(|| silu(gate) * up)
}
