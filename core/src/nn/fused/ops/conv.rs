//! The ConvNeXt block's channels-last pieces: the depthwise `k x k` convolution (stride 1,
//! same padding) and ConvNeXt-V2's global response norm, each one pass per sample each way.
//! Channels are the innermost dimension, so every inner loop runs over contiguous channels.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::fused::par::{map_rows, sum_partials};
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

/// The input row `y + dy - pad` and column range of taps valid at output `(y, x)`.
#[inline]
fn offset(pos: usize, tap: usize, pad: usize, len: usize) -> Option<usize> {
    (pos + tap).checked_sub(pad).filter(|&p| p < len)
}

impl CpuOp<3> for DepthwiseConv {
    fn forward(&self, [x, weight, bias]: [In<'_>; 3], _train: bool) -> (Out, Option<Out>) {
        let ConvDims { b, h, w, c, k } = conv_dims(&x, &weight, &bias);
        let pad = k / 2;
        let wt = taps_last(weight.data, c, k);
        let mut out = vec![0.0f32; b * h * w * c];
        map_rows(&mut out, h * w * c, &per_sample(b), |r, piece| {
            let xs = &x.data[r.start * h * w * c..][..h * w * c];
            for y in 0..h {
                for xx in 0..w {
                    let o = &mut piece[(y * w + xx) * c..][..c];
                    o.copy_from_slice(bias.data);
                    for ky in 0..k {
                        let Some(iy) = offset(y, ky, pad, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = offset(xx, kx, pad, w) else {
                                continue;
                            };
                            let src = &xs[(iy * w + ix) * c..][..c];
                            let wk = &wt[(ky * k + kx) * c..][..c];
                            for ch in 0..c {
                                o[ch] += src[ch] * wk[ch];
                            }
                        }
                    }
                }
            }
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
        let pad = k / 2;
        let wt = taps_last(weight.data, c, k);
        let mut dx = vec![0.0f32; b * h * w * c];
        let partials = map_rows(&mut dx, h * w * c, &per_sample(b), |r, piece| {
            let xs = &x.data[r.start * h * w * c..][..h * w * c];
            let gs = &grad.data[r.start * h * w * c..][..h * w * c];
            let mut dw = vec![0.0f32; k * k * c];
            let mut db = vec![0.0f32; c];
            for y in 0..h {
                for xx in 0..w {
                    let g = &gs[(y * w + xx) * c..][..c];
                    for ch in 0..c {
                        db[ch] += g[ch];
                    }
                    for ky in 0..k {
                        let Some(iy) = offset(y, ky, pad, h) else {
                            continue;
                        };
                        for kx in 0..k {
                            let Some(ix) = offset(xx, kx, pad, w) else {
                                continue;
                            };
                            let at = (iy * w + ix) * c;
                            let tap = (ky * k + kx) * c;
                            let (src, wk) = (&xs[at..at + c], &wt[tap..tap + c]);
                            let dst = &mut piece[at..at + c];
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
            Out::new(
                sum_partials(partials.iter().map(|p| p.1.clone()), c),
                bias.shape.to_vec(),
            )
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
fn norms(xs: &[f32], n: usize, c: usize) -> Vec<f32> {
    let mut gx = vec![0.0f32; c];
    for p in 0..n {
        let row = &xs[p * c..(p + 1) * c];
        for ch in 0..c {
            gx[ch] += row[ch] * row[ch];
        }
    }
    gx.iter_mut().for_each(|g| *g = g.sqrt());
    gx
}

impl CpuOp<3> for GlobalResponseNorm {
    fn forward(&self, [x, weight, bias]: [In<'_>; 3], train: bool) -> (Out, Option<Out>) {
        let (b, n, c) = grn_dims(&x, &weight, &bias);
        let mut out = vec![0.0f32; b * n * c];
        let gxs = map_rows(&mut out, n * c, &per_sample(b), |r, piece| {
            let xs = &x.data[r.start * n * c..][..n * c];
            let gx = norms(xs, n, c);
            let denom = gx.iter().sum::<f32>() / c as f32 + GRN_EPS;
            let f: Vec<f32> = (0..c)
                .map(|ch| gx[ch] / denom * weight.data[ch] + 1.0)
                .collect();
            for p in 0..n {
                let (src, o) = (&xs[p * c..(p + 1) * c], &mut piece[p * c..(p + 1) * c]);
                for ch in 0..c {
                    o[ch] = src[ch] * f[ch] + bias.data[ch];
                }
            }
            gx
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
        let wv = weight.data;
        let mut dx = vec![0.0f32; b * n * c];
        let partials = map_rows(&mut dx, n * c, &per_sample(b), |r, piece| {
            let s = r.start;
            let xs = &x.data[s * n * c..][..n * c];
            let gs = &grad.data[s * n * c..][..n * c];
            let gx = &gx_all[s * c..(s + 1) * c];
            let denom = gx.iter().sum::<f32>() / c as f32 + GRN_EPS;
            let nx: Vec<f32> = gx.iter().map(|g| g / denom).collect();
            let mut a = vec![0.0f32; c];
            let mut db = vec![0.0f32; c];
            for p in 0..n {
                let (xr, gr) = (&xs[p * c..(p + 1) * c], &gs[p * c..(p + 1) * c]);
                for ch in 0..c {
                    a[ch] += gr[ch] * xr[ch];
                    db[ch] += gr[ch];
                }
            }
            let dnx: Vec<f32> = (0..c).map(|ch| a[ch] * wv[ch]).collect();
            let cross: f32 = (0..c).map(|ch| dnx[ch] * gx[ch]).sum::<f32>();
            let dgx: Vec<f32> = (0..c)
                .map(|ch| dnx[ch] / denom - cross / (denom * denom) / c as f32)
                .collect();
            // Through gx = sqrt(sum x^2): d gx / d x = x / gx (0 where a channel is all zero).
            let k: Vec<f32> = (0..c)
                .map(|ch| if gx[ch] > 0.0 { dgx[ch] / gx[ch] } else { 0.0 })
                .collect();
            let f: Vec<f32> = (0..c).map(|ch| nx[ch] * wv[ch] + 1.0).collect();
            for p in 0..n {
                let (xr, gr) = (&xs[p * c..(p + 1) * c], &gs[p * c..(p + 1) * c]);
                let o = &mut piece[p * c..(p + 1) * c];
                for ch in 0..c {
                    o[ch] = gr[ch] * f[ch] + k[ch] * xr[ch];
                }
            }
            let dw: Vec<f32> = (0..c).map(|ch| a[ch] * nx[ch]).collect();
            (dw, db)
        });
        [
            wanted[0].then(|| Out::new(dx, x.shape.to_vec())),
            wanted[1].then(|| {
                Out::new(
                    sum_partials(partials.iter().map(|p| p.0.clone()), c),
                    weight.shape.to_vec(),
                )
            }),
            wanted[2].then(|| {
                Out::new(
                    sum_partials(partials.iter().map(|p| p.1.clone()), c),
                    bias.shape.to_vec(),
                )
            }),
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
