//! The linear layer `x W (+ b)` as one op: the bias is the product's starting value instead of
//! a second pass, the backward is two GEMMs and a column sum, and no output is zero-filled first
//! (burn-flex's matmul zero-fills, then copies every result to realign it).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::fused::gemm::{Mat, gemm_with, product};
use crate::nn::fused::{CpuOp, In, Out, run};

/// `x [..., in] @ weight [in, out]` (+ `bias [out]` with 3 inputs). Inputs: x, weight[, bias].
#[derive(Debug, Clone)]
pub struct LinearOp;

fn dims(x: &In<'_>, w: &In<'_>) -> (usize, usize, usize) {
    let &[d_in, d_out] = w.shape else {
        panic!("linear: weight {:?} must be [in, out]", w.shape);
    };
    assert_eq!(
        x.shape.last(),
        Some(&d_in),
        "linear: input {:?} does not end in the weight's {d_in} inputs",
        x.shape
    );
    (x.data.len() / d_in.max(1), d_in, d_out)
}

fn out_shape(x: &In<'_>, d_out: usize) -> Vec<usize> {
    let mut shape = x.shape.to_vec();
    *shape.last_mut().expect("rank >= 1") = d_out;
    shape
}

fn forward(x: In<'_>, w: In<'_>, bias: Option<In<'_>>) -> Out {
    let (rows, d_in, d_out) = dims(&x, &w);
    let (lhs, rhs) = (Mat::rows(x.data, 0, d_in), Mat::rows(w.data, 0, d_out));
    let data = match bias {
        None => product(rows, d_out, d_in, lhs, rhs, 1.0),
        Some(b) => {
            assert_eq!(
                b.data.len(),
                d_out,
                "linear: bias {:?} is not [{d_out}]",
                b.shape
            );
            let mut out = Vec::with_capacity(rows * d_out);
            for _ in 0..rows {
                out.extend_from_slice(b.data);
            }
            gemm_with(
                rows, d_out, d_in, &mut out, 0, d_out, lhs, rhs, 1.0, true, true,
            );
            out
        }
    };
    Out::new(data, out_shape(&x, d_out))
}

/// `[dx, dweight, dbias]` for the wanted ones.
fn backward(x: In<'_>, w: In<'_>, grad: In<'_>, wanted: [bool; 3]) -> [Option<Out>; 3] {
    let (rows, d_in, d_out) = dims(&x, &w);
    let g = Mat::rows(grad.data, 0, d_out);
    let dx = wanted[0].then(|| {
        let wt = Mat::rows(w.data, 0, d_out).t();
        Out::new(product(rows, d_in, d_out, g, wt, 1.0), x.shape.to_vec())
    });
    let dw = wanted[1].then(|| {
        let xt = Mat::rows(x.data, 0, d_in).t();
        Out::new(product(d_in, d_out, rows, xt, g, 1.0), w.shape.to_vec())
    });
    let db = wanted[2].then(|| {
        let mut total = vec![0.0f32; d_out];
        for row in grad.data.chunks_exact(d_out) {
            for (t, v) in total.iter_mut().zip(row) {
                *t += v;
            }
        }
        Out::new(total, vec![d_out])
    });
    [dx, dw, db]
}

impl CpuOp<2> for LinearOp {
    fn forward(&self, [x, w]: [In<'_>; 2], _train: bool) -> (Out, Option<Out>) {
        (forward(x, w, None), None)
    }

    fn backward(
        &self,
        [x, w]: [In<'_>; 2],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 2],
    ) -> [Option<Out>; 2] {
        let [dx, dw, _] = backward(x, w, grad, [wanted[0], wanted[1], false]);
        [dx, dw]
    }
}

impl CpuOp<3> for LinearOp {
    fn forward(&self, [x, w, b]: [In<'_>; 3], _train: bool) -> (Out, Option<Out>) {
        (forward(x, w, Some(b)), None)
    }

    fn backward(
        &self,
        [x, w, _b]: [In<'_>; 3],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 3],
    ) -> [Option<Out>; 3] {
        backward(x, w, grad, wanted)
    }
}

/// `x [..., in] @ weight [in, out] + bias`.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Tensor<B, D> {
    let fused = match bias {
        Some(b) => run(LinearOp, [&x, weight, b]),
        None => run(LinearOp, [&x, weight]),
    };
    fused.unwrap_or_else(|| composed_linear(x, weight, bias))
}

/// The composed linear layer: one 2-D product over the folded leading dimensions (burn's own
/// `linear` on a `[b, s, in]` input takes its weight gradient as `b` products and a sum).
pub fn composed_linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let y = burn::tensor::module::linear(x.reshape([rows, d_in]), weight.clone(), bias.cloned());
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}
