//! Rotary position embedding on the projection output `[b, s, heads * hd]`, one pass each way:
//! `x cos + rotate_half(x) sin` per head, `rotate_half(x) = cat(-x[half..], x[..half])`.

use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::fused::par::{chunk_rows, map_rows, ranges};
use crate::nn::fused::{CpuOp, In, Out, run};

/// The rotation of [`rope`] with its tables `cos`, `sin` `[positions, hd]` (the same for
/// every head). Input: x `[b, s, heads * hd]`, `s <= positions`.
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Arc<[f32]>,
    pub sin: Arc<[f32]>,
    pub head_dim: usize,
}

impl Rope {
    fn run(&self, x: In<'_>, inverse: bool) -> Out {
        let &[b, s, width] = x.shape else {
            panic!("rope: input {:?} must be [b, s, heads * hd]", x.shape);
        };
        let hd = self.head_dim;
        let half = hd / 2;
        assert!(
            hd % 2 == 0 && width % hd == 0 && s * hd <= self.cos.len(),
            "rope: input {:?} does not fit head_dim {hd} and {} positions",
            x.shape,
            self.cos.len() / hd.max(1)
        );
        let mut out = vec![0.0f32; b * s * width];
        let rows = b * s;
        map_rows(
            &mut out,
            width,
            &ranges(rows, chunk_rows(width)),
            |r, piece| {
                for (i, row) in r.enumerate() {
                    let p = row % s;
                    let (cos, sin) = (
                        &self.cos[p * hd..(p + 1) * hd],
                        &self.sin[p * hd..(p + 1) * hd],
                    );
                    let src = &x.data[row * width..(row + 1) * width];
                    let dst = &mut piece[i * width..(i + 1) * width];
                    for (xs, o) in src.chunks_exact(hd).zip(dst.chunks_exact_mut(hd)) {
                        for j in 0..half {
                            if inverse {
                                // The transpose: d x_j = g_j cos_j + g_{j+half} sin_{j+half}, and
                                // d x_{j+half} = g_{j+half} cos_{j+half} - g_j sin_j.
                                o[j] = xs[j] * cos[j] + xs[j + half] * sin[j + half];
                                o[j + half] = xs[j + half] * cos[j + half] - xs[j] * sin[j];
                            } else {
                                o[j] = xs[j] * cos[j] - xs[j + half] * sin[j];
                                o[j + half] = xs[j + half] * cos[j + half] + xs[j] * sin[j + half];
                            }
                        }
                    }
                }
            },
        );
        Out::new(out, x.shape.to_vec())
    }
}

impl CpuOp<1> for Rope {
    fn forward(&self, [x]: [In<'_>; 1], _train: bool) -> (Out, Option<Out>) {
        (self.run(x, false), None)
    }

    fn backward(
        &self,
        _inputs: [In<'_>; 1],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        _wanted: [bool; 1],
    ) -> [Option<Out>; 1] {
        [Some(self.run(grad, true))]
    }
}

/// Rotary embedding of `x [b, s, heads * hd]` by the tables of `op`, or `composed()` where the
/// fused kernel does not run.
pub fn rope<B: Backend>(
    x: Tensor<B, 3>,
    op: &Rope,
    composed: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    run(op.clone(), [&x]).unwrap_or_else(|| composed(x))
}
