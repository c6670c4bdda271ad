//! Rotary position embedding on the projection output `[b, s, heads * hd]`, one pass each way:
//! `x cos + rotate_half(x) sin` per head, `rotate_half(x) = cat(-x[half..], x[..half])`.

use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::fused::par::{chunk_rows, map_rows, ranges};
use crate::nn::fused::simd::simd_kernel;
use crate::nn::fused::{CpuOp, In, Out, run};

/// The rotation of [`rope`] with its tables `cos`, `sin` `[positions, hd]` (the same for
/// every head). Input: x `[b, s, heads * hd]`, `s <= positions`.
#[derive(Debug, Clone)]
pub struct Rope {
    pub cos: Arc<[f32]>,
    pub sin: Arc<[f32]>,
    pub head_dim: usize,
}

simd_kernel! {
    /// Rows of `[b * s, width]` from row `first` (position = row mod `s`) rotated, or
    /// (`inverse`) multiplied by the rotation's transpose.
    fn rope_rows(
        src: &[f32],
        out: &mut [f32],
        width: usize,
        cos: &[f32],
        sin: &[f32],
        first: usize,
        s: usize,
        hd: usize,
        inverse: bool,
    ) {
        let half = hd / 2;
        let rows = src.chunks_exact(width).zip(out.chunks_exact_mut(width));
        for (i, (row, dst)) in rows.enumerate() {
            let p = (first + i) % s;
            let (cos, sin) = (&cos[p * hd..(p + 1) * hd], &sin[p * hd..(p + 1) * hd]);
            for (xs, o) in row.chunks_exact(hd).zip(dst.chunks_exact_mut(hd)) {
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
    }
}

impl Rope {
    fn run(&self, x: In<'_>, inverse: bool) -> Out {
        let &[b, s, width] = x.shape else {
            panic!("rope: input {:?} must be [b, s, heads * hd]", x.shape);
        };
        let hd = self.head_dim;
        assert!(
            hd.is_multiple_of(2) && width.is_multiple_of(hd) && s * hd <= self.cos.len(),
            "rope: input {:?} does not fit head_dim {hd} and {} positions",
            x.shape,
            self.cos.len() / hd.max(1)
        );
        let mut out = vec![0.0f32; b * s * width];
        map_rows(
            &mut out,
            width,
            &ranges(b * s, chunk_rows(width)),
            |r, piece| {
                let src = &x.data[r.start * width..r.end * width];
                rope_rows(
                    src, piece, width, &self.cos, &self.sin, r.start, s, hd, inverse,
                );
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
