//! Row normalisations with a per-group affine: RMSNorm, layer norm, adaLN `modulate` and FiLM
//! (no norm), and the adaLN-zero gated residual. One kernel each way for all of them.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::nn::fused::par::{chunk_rows, dot, group_ranges, map_rows, sum, sum_partials};
use crate::nn::fused::simd::simd_kernel;
use crate::nn::fused::{CpuOp, In, Out, run};

/// The normalisation of a row before its affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// `x` itself (FiLM / modulate alone).
    None,
    /// `x / sqrt(mean(x^2) + eps)`.
    Rms,
    /// `(x - mean) / sqrt(var + eps)`, the biased variance.
    Layer,
}

/// `norm(x) * scale[g] + shift[g]` on rows of `x [rows, d]`, where `scale` and `shift` are
/// `[groups, d]` and row `r` belongs to group `r / (rows / groups)` (a per-sample modulation
/// over tokens, or one shared weight with `groups = 1`). Inputs: x, scale, shift.
#[derive(Debug, Clone)]
pub struct NormAffine {
    pub norm: Norm,
    pub eps: f32,
}

struct Geometry {
    d: usize,
    rows: usize,
    group_rows: usize,
}

fn geometry(x: &In<'_>, scale: &In<'_>, shift: &In<'_>) -> Geometry {
    let d = *x.shape.last().expect("norm input has a last dimension");
    let rows = x.data.len() / d.max(1);
    let groups = scale.data.len() / d.max(1);
    assert!(
        groups > 0 && rows.is_multiple_of(groups) && scale.data.len() == groups * d,
        "norm: scale {:?} does not divide input {:?} into groups of rows",
        scale.shape,
        x.shape
    );
    assert_eq!(
        shift.data.len(),
        scale.data.len(),
        "norm: shift and scale differ"
    );
    Geometry {
        d,
        rows,
        group_rows: rows / groups,
    }
}

/// Mean (0 for RMS and none) and reciprocal standard deviation (1 for none) of one row.
#[inline(always)]
fn row_stats(norm: Norm, eps: f32, row: &[f32]) -> (f32, f32) {
    let d = row.len() as f32;
    match norm {
        Norm::None => (0.0, 1.0),
        Norm::Rms => (0.0, 1.0 / (dot(row, row) / d + eps).sqrt()),
        Norm::Layer => {
            let mean = sum(row) / d;
            let mut acc = [0.0f32; 8];
            let mut it = row.chunks_exact(8);
            for c in &mut it {
                for k in 0..8 {
                    let v = c[k] - mean;
                    acc[k] += v * v;
                }
            }
            let tail: f32 = it.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
            let var = (acc.iter().sum::<f32>() + tail) / d;
            (mean, 1.0 / (var + eps).sqrt())
        }
    }
}

simd_kernel! {
    /// Rows `x [n, d]` of one group -> `out [n, d]`, their (mean, rstd) pushed to `stats`.
    fn norm_rows_forward(
        norm: Norm,
        eps: f32,
        x: &[f32],
        sc: &[f32],
        sh: &[f32],
        out: &mut [f32],
        stats: &mut Vec<f32>,
    ) {
        let d = sc.len();
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let (mean, rstd) = row_stats(norm, eps, row);
            match norm {
                Norm::None => {
                    for j in 0..d {
                        o[j] = row[j] * sc[j] + sh[j];
                    }
                }
                Norm::Rms => {
                    for j in 0..d {
                        o[j] = row[j] * rstd * sc[j] + sh[j];
                    }
                }
                Norm::Layer => {
                    for j in 0..d {
                        o[j] = (row[j] - mean) * rstd * sc[j] + sh[j];
                    }
                }
            }
            stats.extend([mean, rstd]);
        }
    }
}

simd_kernel! {
    /// The input gradient of rows of one group into `out`, their scale and shift gradients
    /// added to `dscale`, `dshift`; `stats` (mean, rstd) per row or `None` for no norm.
    fn norm_rows_backward(
        norm: Norm,
        x: &[f32],
        grad: &[f32],
        stats: Option<&[f32]>,
        sc: &[f32],
        out: &mut [f32],
        dscale: &mut [f32],
        dshift: &mut [f32],
    ) {
        let d = sc.len();
        let mut gxh = vec![0.0f32; d];
        let mut xh = vec![0.0f32; d];
        let rows = x.chunks_exact(d).zip(grad.chunks_exact(d)).zip(out.chunks_exact_mut(d));
        for (i, ((row, gy), o)) in rows.enumerate() {
            let (mean, rstd) = stats.map_or((0.0, 1.0), |s| (s[2 * i], s[2 * i + 1]));
            for j in 0..d {
                xh[j] = (row[j] - mean) * rstd;
                gxh[j] = gy[j] * sc[j];
                dscale[j] += gy[j] * xh[j];
                dshift[j] += gy[j];
            }
            match norm {
                Norm::None => o.copy_from_slice(&gxh),
                Norm::Rms => {
                    let c = dot(&gxh, &xh) / d as f32;
                    for j in 0..d {
                        o[j] = rstd * (gxh[j] - xh[j] * c);
                    }
                }
                Norm::Layer => {
                    let m = sum(&gxh) / d as f32;
                    let c = dot(&gxh, &xh) / d as f32;
                    for j in 0..d {
                        o[j] = rstd * (gxh[j] - m - xh[j] * c);
                    }
                }
            }
        }
    }
}

impl CpuOp<3> for NormAffine {
    fn forward(&self, [x, scale, shift]: [In<'_>; 3], train: bool) -> (Out, Option<Out>) {
        let Geometry {
            d,
            rows,
            group_rows,
        } = geometry(&x, &scale, &shift);
        let mut out = vec![0.0f32; rows * d];
        let ranges = group_ranges(rows, group_rows, chunk_rows(d));
        let stats = map_rows(&mut out, d, &ranges, |range, piece| {
            let g = range.start / group_rows;
            let mut stats = Vec::with_capacity(2 * range.len());
            norm_rows_forward(
                self.norm,
                self.eps,
                &x.data[range.start * d..range.end * d],
                &scale.data[g * d..(g + 1) * d],
                &shift.data[g * d..(g + 1) * d],
                piece,
                &mut stats,
            );
            stats
        });
        let aux =
            (train && self.norm != Norm::None).then(|| Out::new(stats.concat(), vec![rows, 2]));
        (Out::new(out, x.shape.to_vec()), aux)
    }

    fn backward(
        &self,
        [x, scale, shift]: [In<'_>; 3],
        _output: Option<In<'_>>,
        aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 3],
    ) -> [Option<Out>; 3] {
        let Geometry {
            d,
            rows,
            group_rows,
        } = geometry(&x, &scale, &shift);
        let groups = rows / group_rows;
        let stats = aux.map(|a| a.data);
        let mut dx = vec![0.0f32; rows * d];
        let ranges = group_ranges(rows, group_rows, chunk_rows(d));
        let partials = map_rows(&mut dx, d, &ranges, |range, piece| {
            let g = range.start / group_rows;
            let mut dscale = vec![0.0f32; d];
            let mut dshift = vec![0.0f32; d];
            norm_rows_backward(
                self.norm,
                &x.data[range.start * d..range.end * d],
                &grad.data[range.start * d..range.end * d],
                stats.map(|s| &s[2 * range.start..2 * range.end]),
                &scale.data[g * d..(g + 1) * d],
                piece,
                &mut dscale,
                &mut dshift,
            );
            (g, dscale, dshift)
        });
        let per_group = |pick: fn(&GroupPartial) -> &Vec<f32>| {
            let mut out = Vec::with_capacity(groups * d);
            for g in 0..groups {
                let parts = partials
                    .iter()
                    .filter(|p| p.0 == g)
                    .map(|p| pick(p).clone());
                out.extend(sum_partials(parts, d));
            }
            Out::new(out, scale.shape.to_vec())
        };
        [
            wanted[0].then(|| Out::new(dx, x.shape.to_vec())),
            wanted[1].then(|| per_group(|p| &p.1)),
            wanted[2].then(|| per_group(|p| &p.2)),
        ]
    }
}

simd_kernel! {
    fn gated_rows_forward(res: &[f32], gate: &[f32], x: &[f32], out: &mut [f32]) {
        let d = gate.len();
        for ((o, r), xr) in out.chunks_exact_mut(d).zip(res.chunks_exact(d)).zip(x.chunks_exact(d)) {
            for j in 0..d {
                o[j] = r[j] + gate[j] * xr[j];
            }
        }
    }
}

simd_kernel! {
    fn gated_rows_backward(gate: &[f32], x: &[f32], grad: &[f32], out: &mut [f32], dgate: &mut [f32]) {
        let d = gate.len();
        for ((o, gy), xr) in out.chunks_exact_mut(d).zip(grad.chunks_exact(d)).zip(x.chunks_exact(d)) {
            for j in 0..d {
                o[j] = gy[j] * gate[j];
                dgate[j] += gy[j] * xr[j];
            }
        }
    }
}

/// `res + gate[g] * x` on rows `[rows, d]` with `gate [groups, d]` (adaLN-zero's gated
/// residual). Inputs: res, gate, x.
#[derive(Debug, Clone)]
pub struct GatedResidual;

impl CpuOp<3> for GatedResidual {
    fn forward(&self, [res, gate, x]: [In<'_>; 3], _train: bool) -> (Out, Option<Out>) {
        let Geometry {
            d,
            rows,
            group_rows,
        } = geometry(&x, &gate, &gate);
        assert_eq!(
            res.data.len(),
            x.data.len(),
            "gated residual: shapes differ"
        );
        let mut out = vec![0.0f32; rows * d];
        let ranges = group_ranges(rows, group_rows, chunk_rows(d));
        map_rows(&mut out, d, &ranges, |range, piece| {
            let g = range.start / group_rows;
            let rows = range.start * d..range.end * d;
            gated_rows_forward(
                &res.data[rows.clone()],
                &gate.data[g * d..(g + 1) * d],
                &x.data[rows],
                piece,
            );
        });
        (Out::new(out, x.shape.to_vec()), None)
    }

    fn backward(
        &self,
        [_res, gate, x]: [In<'_>; 3],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 3],
    ) -> [Option<Out>; 3] {
        let Geometry {
            d,
            rows,
            group_rows,
        } = geometry(&x, &gate, &gate);
        let groups = rows / group_rows;
        let mut dx = vec![0.0f32; rows * d];
        let ranges = group_ranges(rows, group_rows, chunk_rows(d));
        let partials = map_rows(&mut dx, d, &ranges, |range, piece| {
            let g = range.start / group_rows;
            let rows = range.start * d..range.end * d;
            let mut dgate = vec![0.0f32; d];
            gated_rows_backward(
                &gate.data[g * d..(g + 1) * d],
                &x.data[rows.clone()],
                &grad.data[rows],
                piece,
                &mut dgate,
            );
            (g, dgate)
        });
        let dgate = wanted[1].then(|| {
            let mut out = Vec::with_capacity(groups * d);
            for g in 0..groups {
                let parts = partials.iter().filter(|p| p.0 == g).map(|p| p.1.clone());
                out.extend(sum_partials(parts, d));
            }
            Out::new(out, gate.shape.to_vec())
        });
        [
            wanted[0].then(|| Out::new(grad.data.to_vec(), grad.shape.to_vec())),
            dgate,
            wanted[2].then(|| Out::new(dx, x.shape.to_vec())),
        ]
    }
}

fn norm_affine<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    scale: &Tensor<B, 2>,
    shift: &Tensor<B, 2>,
    norm: Norm,
    eps: f64,
) -> Option<Tensor<B, D>> {
    let op = NormAffine {
        norm,
        eps: eps as f32,
    };
    run(op, [x, scale, shift])
}

/// RMSNorm with a weight `[d]` over the last dimension (Hugging Face Llama's order:
/// `x * rsqrt(mean(x^2) + eps) * weight`).
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let d = weight.dims()[0];
    let w = weight.clone().reshape([1, d]);
    let zero = Tensor::zeros([1, d], &x.device());
    norm_affine(&x, &w, &zero, Norm::Rms, eps).unwrap_or_else(|| composed_rms_norm(x, weight, eps))
}

/// The composed RMSNorm: the reference of [`rms_norm`] and the path of other backends.
pub fn composed_rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let inv_rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt().recip();
    x * inv_rms * weight.clone().unsqueeze()
}

/// Layer norm over the last dimension with weight and bias `[d]` (`nn.LayerNorm`).
pub fn layer_norm_affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let d = weight.dims()[0];
    let (w, b) = (weight.clone().reshape([1, d]), bias.clone().reshape([1, d]));
    norm_affine(&x, &w, &b, Norm::Layer, eps).unwrap_or_else(|| {
        composed_layer_norm(x, eps) * weight.clone().unsqueeze() + bias.clone().unsqueeze()
    })
}

/// Layer norm over the last dimension without affine parameters (`elementwise_affine=False`).
pub fn layer_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let d = x.dims()[D - 1];
    let device = x.device();
    let (one, zero) = (
        Tensor::ones([1, d], &device),
        Tensor::zeros([1, d], &device),
    );
    norm_affine(&x, &one, &zero, Norm::Layer, eps).unwrap_or_else(|| composed_layer_norm(x, eps))
}

/// Layer norm without affine parameters, composed.
pub fn composed_layer_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    let mean = x.clone().mean_dim(D - 1);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(D - 1);
    centred * (var + eps).sqrt().recip()
}

/// `norm(x) * (1 + scale) + shift` for `x [b, s, d]` and per-sample `shift`, `scale` `[b, d]`:
/// adaLN's modulate after a layer norm without affine (`Norm::Layer`), or FiLM on the raw
/// input (`Norm::None`).
pub fn modulate<B: Backend>(
    x: Tensor<B, 3>,
    norm: Norm,
    eps: f64,
    shift: &Tensor<B, 2>,
    scale: &Tensor<B, 2>,
) -> Tensor<B, 3> {
    let scale1 = scale.clone() + 1.0;
    norm_affine(&x, &scale1, shift, norm, eps).unwrap_or_else(|| {
        let x = match norm {
            Norm::None => x,
            Norm::Layer => composed_layer_norm(x, eps),
            Norm::Rms => {
                let inv_rms = (x.clone().square().mean_dim(2) + eps).sqrt().recip();
                x * inv_rms
            }
        };
        let s = x.dims()[1];
        x * (per_token(&scale1, s)) + per_token(shift, s)
    })
}

/// `res + gate * x` for `x`, `res` `[b, s, d]` and a per-sample `gate [b, d]`.
pub fn gated_residual<B: Backend>(
    res: Tensor<B, 3>,
    gate: &Tensor<B, 2>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    run(GatedResidual, [&res, gate, &x]).unwrap_or_else(|| {
        let s = x.dims()[1];
        res + per_token(gate, s) * x
    })
}

/// `v [b, dim]` repeated over `tokens`: `[b, tokens, dim]`. A per-sample vector broadcast over
/// tokens is not one of the patterns the flex backend's binary ops accelerate, so the composed
/// versions materialise per-sample modulations first.
pub fn per_token<B: Backend>(v: &Tensor<B, 2>, tokens: usize) -> Tensor<B, 3> {
    v.clone().unsqueeze_dim::<3>(1).repeat_dim(1, tokens)
}

/// One range of rows' group index and its scale and shift gradients.
type GroupPartial = (usize, Vec<f32>, Vec<f32>);
