//! The ConvNeXt block's channels-last pieces: the depthwise `k x k` convolution (stride 1,
//! same padding) and ConvNeXt-V2's global response norm, each one pass per sample each way.
//! Channels are the innermost dimension, so every inner loop runs over contiguous channels.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::fused::par::{map_rows, sum_partials};
use crate::nn::fused::simd::simd_kernel;
use crate::nn::fused::{CpuOp, In, Out, run};

fn per_sample(b: usize) -> Vec<std::ops::Range<usize>> {
    (0..b).map(|i| i..i + 1).collect()
}

/// Depthwise convolution on channels-last `x [b, h, w, c]` with `weight [c, 1, k, k]` (burn's
/// and PyTorch's layout) and `bias [c]`, stride 1, padding `k / 2`. Inputs: x, weight, bias.
#[derive(Debug, Clone)]
pub struct DepthwiseConv;

struct ConvDims {
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    k: usize,
}

fn conv_dims(x: &In<'_>, weight: &In<'_>, bias: &In<'_>) -> ConvDims {
    let &[b, h, w, c] = x.shape else {
        panic!("depthwise conv: input {:?} must be [b, h, w, c]", x.shape);
    };
    let &[wc, 1, k, k2] = weight.shape else {
        panic!(
            "depthwise conv: weight {:?} must be [c, 1, k, k]",
            weight.shape
        );
    };
    assert!(
        wc == c && k == k2 && k % 2 == 1 && bias.data.len() == c,
        "depthwise conv: weight {:?} or bias {:?} do not fit input {:?}",
        weight.shape,
        bias.shape,
        x.shape
    );
    ConvDims { b, h, w, c, k }
}

/// `[c, 1, k, k]` -> `[k, k, c]`, so that a tap's weights over channels are contiguous.
fn taps_last(weight: &[f32], c: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; k * k * c];
    for ch in 0..c {
        for tap in 0..k * k {
            t[tap * c + ch] = weight[ch * k * k + tap];
        }
    }
    t
}

/// The input index `pos + tap - pad` when it lies inside `0..len`.
#[inline(always)]
fn offset(pos: usize, tap: usize, pad: usize, len: usize) -> Option<usize> {
    (pos + tap).checked_sub(pad).filter(|&p| p < len)
}

simd_kernel! {
    /// One sample `[h, w, c]` with taps-last weights `[k, k, c]`.
    fn dwconv_forward(
        xs: &[f32],
        wt: &[f32],
        bias: &[f32],
        out: &mut [f32],
        h: usize,
        w: usize,
        k: usize,
    ) {
        let c = bias.len();
        let pad = k / 2;
        for y in 0..h {
            for xx in 0..w {
                let o = &mut out[(y * w + xx) * c..][..c];
                o.copy_from_slice(bias);
                for ky in 0..k {
                    let Some(iy) = offset(y, ky, pad, h) else { continue };
                    for kx in 0..k {
                        let Some(ix) = offset(xx, kx, pad, w) else { continue };
                        let src = &xs[(iy * w + ix) * c..][..c];
                        let wk = &wt[(ky * k + kx) * c..][..c];
                        for ch in 0..c {
                            o[ch] += src[ch] * wk[ch];
                        }
                    }
                }
            }
        }
    }
}

simd_kernel! {
    /// One sample: the input gradient into `dx`, the weight (taps-last) and bias gradients
    /// added to `dw`, `db`.
    fn dwconv_backward(
        xs: &[f32],
        gs: &[f32],
        wt: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
        h: usize,
        w: usize,
        k: usize,
    ) {
        let c = db.len();
        let pad = k / 2;
        for y in 0..h {
            for xx in 0..w {
                let g = &gs[(y * w + xx) * c..][..c];
                for ch in 0..c {
                    db[ch] += g[ch];
                }
                for ky in 0..k {
                    let Some(iy) = offset(y, ky, pad, h) else { continue };
                    for kx in 0..k {
                        let Some(ix) = offset(xx, kx, pad, w) else { continue };
                        let at = (iy * w + ix) * c;
                        let tap = (ky * k + kx) * c;
                        let (src, wk) = (&xs[at..at + c], &wt[tap..tap + c]);
                        let dst = &mut dx[at..at + c];
                        for ch in 0..c {
                            dst[ch] += g[ch] * wk[ch];
                        }
                        let dwk = &mut dw[tap..tap + c];
                        for ch in 0..c {
                            dwk[ch] += g[ch] * src[ch];
                        }
                    }
                }
            }
        }
    }
}

impl CpuOp<3> for DepthwiseConv {
    fn forward(&self, [x, weight, bias]: [In<'_>; 3], _train: bool) -> (Out, Option<Out>) {
        let ConvDims { b, h, w, c, k } = conv_dims(&x, &weight, &bias);
        let wt = taps_last(weight.data, c, k);
        let n = h * w * c;
        let mut out = vec![0.0f32; b * n];
        map_rows(&mut out, n, &per_sample(b), |r, piece| {
            dwconv_forward(&x.data[r.start * n..][..n], &wt, bias.data, piece, h, w, k);
        });
        (Out::new(out, x.shape.to_vec()), None)
    }

    fn backward(
        &self,
        [x, weight, bias]: [In<'_>; 3],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 3],
    ) -> [Option<Out>; 3] {
        let ConvDims { b, h, w, c, k } = conv_dims(&x, &weight, &bias);
        let wt = taps_last(weight.data, c, k);
        let n = h * w * c;
        let mut dx = vec![0.0f32; b * n];
        let partials = map_rows(&mut dx, n, &per_sample(b), |r, piece| {
            let (xs, gs) = (&x.data[r.start * n..][..n], &grad.data[r.start * n..][..n]);
            let mut dw = vec![0.0f32; k * k * c];
            let mut db = vec![0.0f32; c];
            dwconv_backward(xs, gs, &wt, piece, &mut dw, &mut db, h, w, k);
            (dw, db)
        });
        let dweight = wanted[1].then(|| {
            let total = sum_partials(partials.iter().map(|p| p.0.clone()), k * k * c);
            // [k, k, c] back to [c, 1, k, k].
            let mut out = vec![0.0f32; c * k * k];
            for ch in 0..c {
                for tap in 0..k * k {
                    out[ch * k * k + tap] = total[tap * c + ch];
                }
            }
            Out::new(out, weight.shape.to_vec())
        });
        let dbias = wanted[2].then(|| {
            let total = sum_partials(partials.iter().map(|p| p.1.clone()), c);
            Out::new(total, bias.shape.to_vec())
        });
        [
            wanted[0].then(|| Out::new(dx, x.shape.to_vec())),
            dweight,
            dbias,
        ]
    }
}

/// ConvNeXt-V2's global response norm on `x [b, positions, c]`: `gx = |x|_2` over positions,
/// `nx = gx / (mean_c gx + 1e-6)`, `out = x (weight nx + 1) + bias`. Inputs: x, weight, bias.
#[derive(Debug, Clone)]
pub struct GlobalResponseNorm;

const GRN_EPS: f32 = 1e-6;

fn grn_dims(x: &In<'_>, weight: &In<'_>, bias: &In<'_>) -> (usize, usize, usize) {
    let &[b, n, c] = x.shape else {
        panic!("GRN: input {:?} must be [b, positions, c]", x.shape);
    };
    assert!(
        weight.data.len() == c && bias.data.len() == c,
        "GRN: weight {:?} or bias {:?} do not fit input {:?}",
        weight.shape,
        bias.shape,
        x.shape
    );
    (b, n, c)
}

/// `gx [c]` of one sample `[n, c]`.
#[inline(always)]
fn norms(xs: &[f32], c: usize) -> Vec<f32> {
    let mut gx = vec![0.0f32; c];
    for row in xs.chunks_exact(c) {
        for ch in 0..c {
            gx[ch] += row[ch] * row[ch];
        }
    }
    gx.iter_mut().for_each(|g| *g = g.sqrt());
    gx
}

simd_kernel! {
    /// One sample `[n, c]` into `out`; returns its norms `gx [c]`.
    fn grn_forward(xs: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) -> Vec<f32> {
        let c = weight.len();
        let gx = norms(xs, c);
        let denom = gx.iter().sum::<f32>() / c as f32 + GRN_EPS;
        let f: Vec<f32> = (0..c).map(|ch| gx[ch] / denom * weight[ch] + 1.0).collect();
        for (src, o) in xs.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            for ch in 0..c {
                o[ch] = src[ch] * f[ch] + bias[ch];
            }
        }
        gx
    }
}

simd_kernel! {
    /// One sample: the input gradient into `dx`; returns its (weight, bias) gradients.
    fn grn_backward(
        xs: &[f32],
        gs: &[f32],
        gx: &[f32],
        wv: &[f32],
        dx: &mut [f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let c = wv.len();
        let denom = gx.iter().sum::<f32>() / c as f32 + GRN_EPS;
        let nx: Vec<f32> = gx.iter().map(|g| g / denom).collect();
        let mut a = vec![0.0f32; c];
        let mut db = vec![0.0f32; c];
        for (xr, gr) in xs.chunks_exact(c).zip(gs.chunks_exact(c)) {
            for ch in 0..c {
                a[ch] += gr[ch] * xr[ch];
                db[ch] += gr[ch];
            }
        }
        let dnx: Vec<f32> = (0..c).map(|ch| a[ch] * wv[ch]).collect();
        let cross: f32 = (0..c).map(|ch| dnx[ch] * gx[ch]).sum::<f32>();
        // Through gx = sqrt(sum x^2): d gx / d x = x / gx (0 where a channel is all zero).
        let kx: Vec<f32> = (0..c)
            .map(|ch| {
                let dgx = dnx[ch] / denom - cross / (denom * denom) / c as f32;
                if gx[ch] > 0.0 { dgx / gx[ch] } else { 0.0 }
            })
            .collect();
        let f: Vec<f32> = (0..c).map(|ch| nx[ch] * wv[ch] + 1.0).collect();
        let rows = xs.chunks_exact(c).zip(gs.chunks_exact(c)).zip(dx.chunks_exact_mut(c));
        for ((xr, gr), o) in rows {
            for ch in 0..c {
                o[ch] = gr[ch] * f[ch] + kx[ch] * xr[ch];
            }
        }
        let dw: Vec<f32> = (0..c).map(|ch| a[ch] * nx[ch]).collect();
        (dw, db)
    }
}

impl CpuOp<3> for GlobalResponseNorm {
    fn forward(&self, [x, weight, bias]: [In<'_>; 3], train: bool) -> (Out, Option<Out>) {
        let (b, n, c) = grn_dims(&x, &weight, &bias);
        let mut out = vec![0.0f32; b * n * c];
        let gxs = map_rows(&mut out, n * c, &per_sample(b), |r, piece| {
            grn_forward(
                &x.data[r.start * n * c..][..n * c],
                weight.data,
                bias.data,
                piece,
            )
        });
        let aux = train.then(|| Out::new(gxs.concat(), vec![b, c]));
        (Out::new(out, x.shape.to_vec()), aux)
    }

    fn backward(
        &self,
        [x, weight, bias]: [In<'_>; 3],
        _output: Option<In<'_>>,
        aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 3],
    ) -> [Option<Out>; 3] {
        let (b, n, c) = grn_dims(&x, &weight, &bias);
        let gx_all = aux.expect("GRN backward reads the norms").data;
        let m = n * c;
        let mut dx = vec![0.0f32; b * m];
        let partials = map_rows(&mut dx, m, &per_sample(b), |r, piece| {
            let s = r.start;
            let (xs, gs) = (&x.data[s * m..][..m], &grad.data[s * m..][..m]);
            grn_backward(xs, gs, &gx_all[s * c..(s + 1) * c], weight.data, piece)
        });
        let total = |pick: fn(&GrnPartial) -> &Vec<f32>, shape: &[usize]| {
            Out::new(
                sum_partials(partials.iter().map(|p| pick(p).clone()), c),
                shape.to_vec(),
            )
        };
        [
            wanted[0].then(|| Out::new(dx, x.shape.to_vec())),
            wanted[1].then(|| total(|p| &p.0, weight.shape)),
            wanted[2].then(|| total(|p| &p.1, bias.shape)),
        ]
    }
}

/// Depthwise convolution of channels-last `x [b, h, w, c]`; `weight [c, 1, k, k]`, `bias [c]`.
pub fn depthwise_conv_channels_last<B: Backend>(
    x: Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: &Tensor<B, 1>,
) -> Tensor<B, 4> {
    run(DepthwiseConv, [&x, weight, bias]).unwrap_or_else(|| {
        let [_, _, _, c] = x.dims();
        let k = weight.dims()[2];
        let options = burn::tensor::ops::ConvOptions::new([1, 1], [k / 2, k / 2], [1, 1], c);
        burn::tensor::module::conv2d(
            x.permute([0, 3, 1, 2]),
            weight.clone(),
            Some(bias.clone()),
            options,
        )
        .permute([0, 2, 3, 1])
    })
}

/// Global response norm of `x [b, positions, c]`.
pub fn global_response_norm<B: Backend>(
    x: Tensor<B, 3>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
) -> Tensor<B, 3> {
    run(GlobalResponseNorm, [&x, weight, bias]).unwrap_or_else(|| composed_grn(x, weight, bias))
}

/// The composed global response norm (the reference of the kernel).
pub fn composed_grn<B: Backend>(
    x: Tensor<B, 3>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
) -> Tensor<B, 3> {
    let [b, n, c] = x.dims();
    let gx = x.clone().square().sum_dim(1).sqrt(); // [b, 1, c]
    let nx = gx.clone() / (gx.mean_dim(2) + GRN_EPS as f64);
    let factor = (nx * weight.clone().reshape([1, 1, c]) + 1.0).reshape([b, c]);
    x * super::norm::per_token(&factor, n) + bias.clone().reshape([1, 1, c])
}

/// One sample's weight and bias gradients of the response norm.
type GrnPartial = (Vec<f32>, Vec<f32>);
