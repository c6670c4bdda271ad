//! Channels-last (NHWC) inference kernels for convolutional networks on plain host buffers: a
//! convolution with bias and ReLU (1x1 as one GEMM, others as im2col tiles and GEMMs written
//! straight into the output rows), 3x3 max and average pools, channel concatenation, global mean.
//! The FID Inception runs on them end to end (one layout from the first layer to pool3, no
//! per-layer conversions; see `crate::inception`).

use rayon::prelude::*;

use crate::nn::fused::gemm::{Mat, gemm, gemm_with};

/// A feature map `[b, h, w, c]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Nhwc {
    pub data: Vec<f32>,
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    /// From `[b, c, h, w]` values.
    pub fn from_nchw(values: &[f32], [b, c, h, w]: [usize; 4]) -> Self {
        assert_eq!(values.len(), b * c * h * w, "nhwc: input size");
        let mut data = vec![0.0f32; values.len()];
        for bi in 0..b {
            for ci in 0..c {
                let plane = &values[(bi * c + ci) * h * w..][..h * w];
                for (p, &v) in plane.iter().enumerate() {
                    data[(bi * h * w + p) * c + ci] = v;
                }
            }
        }
        Self { data, b, h, w, c }
    }

    /// The mean over every position: `[b, c]`.
    pub fn global_mean(&self) -> Vec<f32> {
        let n = self.h * self.w;
        let mut out = vec![0.0f32; self.b * self.c];
        for (bi, row) in out.chunks_mut(self.c).enumerate() {
            for p in 0..n {
                let at = (bi * n + p) * self.c;
                for (o, &v) in row.iter_mut().zip(&self.data[at..at + self.c]) {
                    *o += v;
                }
            }
            for o in row.iter_mut() {
                *o /= n as f32;
            }
        }
        out
    }
}

/// A convolution's weights as a GEMM operand: `[kh * kw * c_in, c_out]` (row index
/// `(ky * kw + kx) * c_in + ci`, im2col's order), with its geometry and bias.
#[derive(Debug, Clone)]
pub struct ConvWeights {
    pub packed: Vec<f32>,
    pub bias: Vec<f32>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: [usize; 2],
}

impl ConvWeights {
    /// From PyTorch's `[c_out, c_in, kh, kw]` weights.
    pub fn new(
        weight: &[f32],
        bias: Vec<f32>,
        [c_out, c_in, kh, kw]: [usize; 4],
        stride: usize,
        padding: [usize; 2],
    ) -> Self {
        assert_eq!(weight.len(), c_out * c_in * kh * kw, "conv: weight size");
        assert_eq!(bias.len(), c_out, "conv: bias size");
        let k = kh * kw * c_in;
        let mut packed = vec![0.0f32; k * c_out];
        for co in 0..c_out {
            for ci in 0..c_in {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let src = ((co * c_in + ci) * kh + ky) * kw + kx;
                        packed[((ky * kw + kx) * c_in + ci) * c_out + co] = weight[src];
                    }
                }
            }
        }
        Self {
            packed,
            bias,
            c_in,
            c_out,
            kernel: [kh, kw],
            stride,
            padding,
        }
    }
}

/// Output positions per im2col tile (one task each).
const TILE: usize = 128;

/// `relu(conv(x) + bias)`, NHWC in and out.
pub fn conv_relu(x: &Nhwc, cw: &ConvWeights) -> Nhwc {
    assert_eq!(x.c, cw.c_in, "conv: input channels");
    let ([kh, kw], [ph, pw], s) = (cw.kernel, cw.padding, cw.stride);
    let oh = (x.h + 2 * ph - kh) / s + 1;
    let ow = (x.w + 2 * pw - kw) / s + 1;
    let rows = x.b * oh * ow;
    let (k, n) = (kh * kw * cw.c_in, cw.c_out);
    // Each output row starts as the bias; the products accumulate onto it.
    let mut out = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        out.extend_from_slice(&cw.bias);
    }
    let w = Mat::rows(&cw.packed, 0, n);
    if [kh, kw] == [1, 1] && s == 1 {
        gemm_with(
            rows,
            n,
            k,
            &mut out,
            0,
            n,
            Mat::rows(&x.data, 0, k),
            w,
            1.0,
            true,
            true,
        );
    } else {
        out.par_chunks_mut(TILE * n)
            .enumerate()
            .for_each(|(t, piece)| {
                let first = t * TILE;
                let len = piece.len() / n;
                let mut cols = vec![0.0f32; len * k];
                for (r, col) in cols.chunks_mut(k).enumerate() {
                    let at = first + r;
                    let (bi, oy, ox) = (at / (oh * ow), at / ow % oh, at % ow);
                    for ky in 0..kh {
                        let iy = (oy * s + ky) as isize - ph as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * s + kx) as isize - pw as isize;
                            if ix < 0 || ix >= x.w as isize {
                                continue;
                            }
                            let src = ((bi * x.h + iy as usize) * x.w + ix as usize) * x.c;
                            col[(ky * kw + kx) * x.c..][..x.c]
                                .copy_from_slice(&x.data[src..src + x.c]);
                        }
                    }
                }
                gemm(len, n, k, piece, 0, n, Mat::rows(&cols, 0, k), w, 1.0, true);
            });
    }
    for v in out.iter_mut() {
        *v = v.max(0.0);
    }
    Nhwc {
        data: out,
        b: x.b,
        h: oh,
        w: ow,
        c: n,
    }
}

/// 3x3 pool with `stride`, padding 1 when the stride is 1 (else none): the maximum, or the mean
/// over the window's positions inside the map (`count_include_pad=False`).
pub fn pool_3x3(x: &Nhwc, stride: usize, max: bool) -> Nhwc {
    let pad = usize::from(stride == 1);
    let oh = (x.h + 2 * pad - 3) / stride + 1;
    let ow = (x.w + 2 * pad - 3) / stride + 1;
    let c = x.c;
    let mut out = vec![0.0f32; x.b * oh * ow * c];
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, line)| {
            let (bi, oy) = (row / oh, row % oh);
            for ox in 0..ow {
                let o = &mut line[ox * c..(ox + 1) * c];
                o.fill(if max { f32::NEG_INFINITY } else { 0.0 });
                let mut count = 0usize;
                for ky in 0..3 {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= x.h as isize {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if ix < 0 || ix >= x.w as isize {
                            continue;
                        }
                        count += 1;
                        let at = ((bi * x.h + iy as usize) * x.w + ix as usize) * c;
                        let src = &x.data[at..at + c];
                        if max {
                            for (a, &v) in o.iter_mut().zip(src) {
                                *a = a.max(v);
                            }
                        } else {
                            for (a, &v) in o.iter_mut().zip(src) {
                                *a += v;
                            }
                        }
                    }
                }
                if !max {
                    for a in o.iter_mut() {
                        *a /= count as f32;
                    }
                }
            }
        });
    Nhwc {
        data: out,
        b: x.b,
        h: oh,
        w: ow,
        c,
    }
}

/// Concatenation along channels.
pub fn cat_channels(parts: &[Nhwc]) -> Nhwc {
    let first = &parts[0];
    let c: usize = parts.iter().map(|p| p.c).sum();
    let positions = first.b * first.h * first.w;
    let mut data = Vec::with_capacity(positions * c);
    for p in 0..positions {
        for part in parts {
            assert_eq!(
                (part.b, part.h, part.w),
                (first.b, first.h, first.w),
                "cat: maps differ in size"
            );
            data.extend_from_slice(&part.data[p * part.c..(p + 1) * part.c]);
        }
    }
    Nhwc {
        data,
        b: first.b,
        h: first.h,
        w: first.w,
        c,
    }
}
