//! Elementwise activations with their derivatives in one pass each way: GELU (erf and tanh
//! forms), CLIP's quick GELU, SiLU, and SwiGLU's `silu(gate) * up`.

use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, silu};
use burn::tensor::backend::Backend;

use crate::nn::fused::math::{erf, exp, tanh};

use crate::nn::fused::par::{elementwise, elementwise_pair};
use crate::nn::fused::simd::simd_kernel;
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
    /// `x sigmoid(1.702 x)` (CLIP's `quick_gelu`)
    QuickGelu,
    /// `x sigmoid(x)`
    Silu,
}

/// The slope of quick GELU's sigmoid.
const QUICK: f32 = 1.702;

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
        Kind::QuickGelu => {
            let s = 1.0 / (1.0 + exp(-QUICK * x));
            (x * s, s * (1.0 + QUICK * x * (1.0 - s)))
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
        Kind::QuickGelu => x / (1.0 + exp(-QUICK * x)),
        Kind::Silu => x / (1.0 + exp(-x)),
    }
}

/// `out_i = f(kind, x_i, out_i)` with the activation chosen outside the loop, so that each loop
/// vectorises.
#[inline(always)]
fn map_kind(kind: Kind, xs: &[f32], out: &mut [f32], f: impl Fn(Kind, f32, f32) -> f32) {
    macro_rules! each {
        ($k:expr) => {
            for (o, &v) in out.iter_mut().zip(xs) {
                *o = f($k, v, *o);
            }
        };
    }
    match kind {
        Kind::GeluErf => each!(Kind::GeluErf),
        Kind::GeluTanh => each!(Kind::GeluTanh),
        Kind::QuickGelu => each!(Kind::QuickGelu),
        Kind::Silu => each!(Kind::Silu),
    }
}

simd_kernel! {
    fn activation_forward(kind: Kind, xs: &[f32], out: &mut [f32]) {
        map_kind(kind, xs, out, |k, v, _| value(k, v));
    }
}

simd_kernel! {
    /// `out = grad * f'(x)`; `out` holds the gradient on entry.
    fn activation_backward(kind: Kind, xs: &[f32], out: &mut [f32]) {
        map_kind(kind, xs, out, |k, v, g| g * value_and_slope(k, v).1);
    }
}

simd_kernel! {
    fn swiglu_forward(g: &[f32], u: &[f32], out: &mut [f32]) {
        for ((o, &gv), &uv) in out.iter_mut().zip(g).zip(u) {
            *o = value(Kind::Silu, gv) * uv;
        }
    }
}

simd_kernel! {
    /// `dg = grad * up * silu'(gate)` and `du = grad * silu(gate)`, both holding `grad` on entry.
    fn swiglu_backward(g: &[f32], u: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for (((a, b), &gv), &uv) in dg.iter_mut().zip(du.iter_mut()).zip(g).zip(u) {
            let (s, slope) = value_and_slope(Kind::Silu, gv);
            *a *= uv * slope;
            *b *= s;
        }
    }
}

/// Elementwise `f(x)` for one of [`Kind`]. Input: x.
#[derive(Debug, Clone)]
pub struct Activation(pub Kind);

impl CpuOp<1> for Activation {
    fn forward(&self, [x]: [In<'_>; 1], _train: bool) -> (Out, Option<Out>) {
        let mut out = vec![0.0f32; x.data.len()];
        elementwise(&mut out, |at, piece| {
            activation_forward(self.0, &x.data[at..at + piece.len()], piece)
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
        let mut dx = grad.data.to_vec();
        elementwise(&mut dx, |at, piece| {
            activation_backward(self.0, &x.data[at..at + piece.len()], piece)
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
            swiglu_forward(&g.data[at..at + n], &u.data[at..at + n], piece)
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
        let mut dg = grad.data.to_vec();
        let mut du = grad.data.to_vec();
        elementwise_pair(&mut dg, &mut du, |at, a, b| {
            let n = a.len();
            swiglu_backward(&g.data[at..at + n], &u.data[at..at + n], a, b)
        });
        [
            wanted[0].then(|| Out::new(dg, g.shape.to_vec())),
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

/// CLIP's `quick_gelu`, `x sigmoid(1.702 x)`; the composed form is `x / (1 + exp(-1.702 x))`
/// (large negative x give x / inf = -0, never NaN).
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    run(Activation(Kind::QuickGelu), [&x]).unwrap_or_else(|| composed_quick_gelu(x))
}

pub fn composed_quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() / ((x * -QUICK).exp() + 1.0)
}

/// `silu(gate) * up`.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    run(SwiGlu, [&gate, &up]).unwrap_or_else(|| silu(gate) * up)
}
