//! Softmax attention in the token-major layout the projections produce (`[b, s, heads, hd]`,
//! no head transposes), with grouped-query heads, a key-padding mask and causality; blocked
//! scores are never exponentiated. Forward and backward are per (sample, KV head) task: small
//! strided GEMMs and one softmax pass over the probabilities, which are kept for the backward.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::nn::fused::gemm::{Mat, gemm};
use crate::nn::fused::math::exp;
use crate::nn::fused::par::{dot, map_rows, sum};
use crate::nn::fused::simd::simd_kernel;
use crate::nn::fused::{CpuOp, In, Out, run};

/// Which keys each query may attend: a key mask shared by all heads and optional causality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMask {
    /// `[b * s_k]`, true where a key is a real token; `None`: all are.
    pub keys: Option<Arc<[bool]>>,
    /// Query `i` attends only keys `j <= i` (self-attention, `s_q == s_k`).
    pub causal: bool,
}

impl KeyMask {
    /// From a key mask `[b, s_k]` (1 = real token) and causality.
    pub fn new<B: Backend>(keys: Option<&Tensor<B, 2, Int>>, causal: bool) -> Self {
        let keys = keys.map(|m| {
            let data = m.clone().equal_elem(0).bool_not().into_data();
            data.iter::<bool>().collect::<Vec<_>>().into()
        });
        Self { keys, causal }
    }
}

/// `softmax(q k^T / sqrt(hd) + blocked) v` for `q [b, s_q, h, hd]`, `k`, `v` `[b, s_k, kv_h,
/// hd]` (query head `i` reads KV head `i / (h / kv_h)`) -> `[b, s_q, h, hd]`. A query row with
/// every key blocked attends uniformly to all keys, as the additive-bias form does (MODEL.md 9).
/// Inputs: q, k, v.
#[derive(Debug, Clone)]
pub struct Attention {
    pub mask: KeyMask,
}

struct Dims {
    b: usize,
    sq: usize,
    sk: usize,
    h: usize,
    kvh: usize,
    hd: usize,
}

fn dims(q: &In<'_>, k: &In<'_>, v: &In<'_>) -> Dims {
    let (&[b, sq, h, hd], &[bk, sk, kvh, hdk]) = (q.shape, k.shape) else {
        panic!(
            "attention: q {:?} and k {:?} must be [b, s, heads, hd]",
            q.shape, k.shape
        );
    };
    assert!(
        bk == b && hdk == hd && kvh > 0 && h % kvh == 0 && v.shape == k.shape,
        "attention: q {:?}, k {:?}, v {:?} do not fit",
        q.shape,
        k.shape,
        v.shape
    );
    Dims {
        b,
        sq,
        sk,
        h,
        kvh,
        hd,
    }
}

impl KeyMask {
    /// The runs of consecutive real keys of each of `b` samples (all of `0..s_k` without a key
    /// mask).
    fn runs(&self, b: usize, s_k: usize) -> Vec<Vec<Range<usize>>> {
        (0..b)
            .map(|bi| match &self.keys {
                None => std::iter::once(0..s_k).collect(),
                Some(keys) => {
                    let row = &keys[bi * s_k..(bi + 1) * s_k];
                    let mut runs = Vec::new();
                    let mut j = 0;
                    while j < s_k {
                        if row[j] {
                            let start = j;
                            while j < s_k && row[j] {
                                j += 1;
                            }
                            runs.push(start..j);
                        } else {
                            j += 1;
                        }
                    }
                    runs
                }
            })
            .collect()
    }
}

/// Softmax in place of one row of scores whose allowed keys are `runs` cut at `limit` (causal:
/// query `i` sees keys `< i + 1`); blocked keys get 0 without an `exp`, and a row with no
/// allowed key the uniform distribution.
#[inline(always)]
fn softmax_row(row: &mut [f32], runs: &[Range<usize>], limit: usize) {
    let clipped = runs
        .iter()
        .map(|r| r.start..r.end.min(limit))
        .filter(|r| !r.is_empty());
    let mut max = f32::NEG_INFINITY;
    let mut any = false;
    for r in clipped.clone() {
        max = max.max(max_of(&row[r]));
        any = true;
    }
    if !any {
        row.fill(1.0 / row.len() as f32);
        return;
    }
    let mut total = 0.0f32;
    let mut end = 0;
    for r in clipped {
        row[end..r.start].fill(0.0);
        for s in &mut row[r.clone()] {
            *s = exp(*s - max);
        }
        total += sum(&row[r.clone()]);
        end = r.end;
    }
    row[end..].fill(0.0);
    let inv = 1.0 / total;
    for s in row.iter_mut() {
        *s *= inv;
    }
}

simd_kernel! {
    /// Softmax of the `[s_q, s_k]` scores of one head in place (row `i` sees keys `<= i` when
    /// causal).
    fn softmax_rows(p: &mut [f32], sk: usize, runs: &[Range<usize>], causal: bool) {
        for (i, row) in p.chunks_exact_mut(sk).enumerate() {
            softmax_row(row, runs, if causal { i + 1 } else { sk });
        }
    }
}

simd_kernel! {
    /// `dS = P (dP - rowsum(P dP)) scale` in place of `dP`, rows of `sk`.
    fn softmax_backward_rows(probs: &[f32], ds: &mut [f32], sk: usize, scale: f32) {
        for (prow, drow) in probs.chunks_exact(sk).zip(ds.chunks_exact_mut(sk)) {
            let dsum = dot(prow, drow);
            for j in 0..sk {
                drow[j] = prow[j] * (drow[j] - dsum) * scale;
            }
        }
    }
}

/// The largest of `a` (eight running maxima, so that it vectorises).
#[inline(always)]
fn max_of(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut it = a.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    it.remainder()
        .iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

impl CpuOp<3> for Attention {
    fn forward(&self, [q, k, v]: [In<'_>; 3], _train: bool) -> (Out, Option<Out>) {
        let Dims {
            b,
            sq,
            sk,
            h,
            kvh,
            hd,
        } = dims(&q, &k, &v);
        let group = h / kvh;
        let scale = 1.0 / (hd as f32).sqrt();
        let task = group * sq * sk;
        let mut probs = vec![0.0f32; b * h * sq * sk];
        let ranges: Vec<_> = (0..b * kvh).map(|t| t..t + 1).collect();
        let runs = self.mask.runs(b, sk);
        // Each task: the probabilities of its `group` heads (its piece of `probs`) and their
        // outputs [group, sq, hd], scattered below.
        let outs = map_rows(&mut probs, task, &ranges, |r, p| {
            let (bi, gi) = (r.start / kvh, r.start % kvh);
            let kv_at = (bi * sk * kvh + gi) * hd;
            let (kr, vr) = (
                Mat::rows(k.data, kv_at, kvh * hd),
                Mat::rows(v.data, kv_at, kvh * hd),
            );
            let mut out = vec![0.0f32; group * sq * hd];
            for hh in 0..group {
                let head = gi * group + hh;
                let qh = Mat::rows(q.data, (bi * sq * h + head) * hd, h * hd);
                let ph = hh * sq * sk;
                gemm(sq, sk, hd, p, ph, sk, qh, kr.t(), scale, false);
                softmax_rows(&mut p[ph..ph + sq * sk], sk, &runs[bi], self.mask.causal);
                let pm = Mat::rows(p, ph, sk);
                gemm(sq, hd, sk, &mut out, hh * sq * hd, hd, pm, vr, 1.0, false);
            }
            out
        });
        let mut o = vec![0.0f32; b * sq * h * hd];
        for (t, local) in outs.iter().enumerate() {
            let (bi, gi) = (t / kvh, t % kvh);
            for hh in 0..group {
                let head = gi * group + hh;
                for i in 0..sq {
                    let src = &local[(hh * sq + i) * hd..][..hd];
                    o[((bi * sq + i) * h + head) * hd..][..hd].copy_from_slice(src);
                }
            }
        }
        (
            Out::new(o, q.shape.to_vec()),
            Some(Out::new(probs, vec![b, h, sq, sk])),
        )
    }

    fn backward(
        &self,
        [q, k, v]: [In<'_>; 3],
        _output: Option<In<'_>>,
        aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; 3],
    ) -> [Option<Out>; 3] {
        let Dims {
            b,
            sq,
            sk,
            h,
            kvh,
            hd,
        } = dims(&q, &k, &v);
        let group = h / kvh;
        let scale = 1.0 / (hd as f32).sqrt();
        let probs = aux
            .expect("attention backward reads the probabilities")
            .data;
        // Per task: dS for its heads (scratch), then local dq [group, sq, hd], dk, dv [sk, hd].
        let task = group * sq * sk;
        let mut ds = vec![0.0f32; b * h * sq * sk];
        let ranges: Vec<_> = (0..b * kvh).map(|t| t..t + 1).collect();
        let locals = map_rows(&mut ds, task, &ranges, |r, dsp| {
            let (bi, gi) = (r.start / kvh, r.start % kvh);
            let kv_at = (bi * sk * kvh + gi) * hd;
            let (kr, vr) = (
                Mat::rows(k.data, kv_at, kvh * hd),
                Mat::rows(v.data, kv_at, kvh * hd),
            );
            let mut dq = vec![0.0f32; group * sq * hd];
            let mut dk = vec![0.0f32; sk * hd];
            let mut dv = vec![0.0f32; sk * hd];
            for hh in 0..group {
                let head = gi * group + hh;
                let at = (bi * h + head) * sq * sk;
                let ph = Mat::rows(probs, at, sk);
                let doh = Mat::rows(grad.data, (bi * sq * h + head) * hd, h * hd);
                let qh = Mat::rows(q.data, (bi * sq * h + head) * hd, h * hd);
                // dV += P^T dO
                gemm(sk, hd, sq, &mut dv, 0, hd, ph.t(), doh, 1.0, hh > 0);
                // dP = dO V^T, into this head's dS scratch
                let off = hh * sq * sk;
                gemm(sq, sk, hd, dsp, off, sk, doh, vr.t(), 1.0, false);
                // dS = P (dP - rowsum(P dP)) / sqrt(hd)
                let prows = &probs[at..at + sq * sk];
                softmax_backward_rows(prows, &mut dsp[off..off + sq * sk], sk, scale);
                let dsm = Mat::rows(dsp, off, sk);
                // dQ = dS K, dK += dS^T Q
                gemm(sq, hd, sk, &mut dq, hh * sq * hd, hd, dsm, kr, 1.0, false);
                gemm(sk, hd, sq, &mut dk, 0, hd, dsm.t(), qh, 1.0, hh > 0);
            }
            (dq, dk, dv)
        });
        let mut dq = vec![0.0f32; b * sq * h * hd];
        let mut dk = vec![0.0f32; b * sk * kvh * hd];
        let mut dv = vec![0.0f32; b * sk * kvh * hd];
        for (t, (lq, lk, lv)) in locals.iter().enumerate() {
            let (bi, gi) = (t / kvh, t % kvh);
            for hh in 0..group {
                let head = gi * group + hh;
                for i in 0..sq {
                    dq[((bi * sq + i) * h + head) * hd..][..hd]
                        .copy_from_slice(&lq[(hh * sq + i) * hd..][..hd]);
                }
            }
            for j in 0..sk {
                let at = ((bi * sk + j) * kvh + gi) * hd;
                dk[at..at + hd].copy_from_slice(&lk[j * hd..(j + 1) * hd]);
                dv[at..at + hd].copy_from_slice(&lv[j * hd..(j + 1) * hd]);
            }
        }
        [
            wanted[0].then(|| Out::new(dq, q.shape.to_vec())),
            wanted[1].then(|| Out::new(dk, k.shape.to_vec())),
            wanted[2].then(|| Out::new(dv, v.shape.to_vec())),
        ]
    }
}

/// The mask of one forward pass in both forms: the host copy the fused kernel reads and, for
/// backends it does not serve, the additive bias of the composed path (`[b, kv_h, group * s, s]`,
/// built once and broadcast over layers).
#[derive(Debug, Clone)]
pub struct AttentionMask<B: Backend> {
    key_mask: Option<Tensor<B, 2, Int>>,
    keys: KeyMask,
    bias: Option<Tensor<B, 4>>,
    kv_heads: usize,
    group: usize,
}

impl<B: Backend> AttentionMask<B> {
    /// Self-attention over `seq` tokens with `kv_heads` KV heads of `group` query heads each;
    /// `key_mask [batch, seq]` (1 = real token) and causality block keys.
    pub fn new(
        key_mask: Option<&Tensor<B, 2, Int>>,
        batch: usize,
        seq: usize,
        causal: bool,
        kv_heads: usize,
        group: usize,
        device: &B::Device,
    ) -> Self {
        let fused = crate::nn::fused::available::<B>();
        let bias = (!fused)
            .then(|| crate::nn::attention_bias(key_mask, batch, seq, causal, device))
            .flatten()
            .map(|bias| crate::nn::grouped_bias(bias, kv_heads, group));
        Self {
            key_mask: key_mask.cloned(),
            keys: if fused {
                KeyMask::new(key_mask, causal)
            } else {
                KeyMask { keys: None, causal }
            },
            bias,
            kv_heads,
            group,
        }
    }

    /// The additive bias of the composed path.
    fn bias(&self, batch: usize, seq: usize, device: &B::Device) -> Option<Tensor<B, 4>> {
        self.bias.clone().or_else(|| {
            crate::nn::attention_bias(self.key_mask.as_ref(), batch, seq, self.keys.causal, device)
                .map(|bias| crate::nn::grouped_bias(bias, self.kv_heads, self.group))
        })
    }
}

/// [`attention`] in mixed precision (`[b, s, heads, head_dim]` in and out, f32): the two
/// products in bf16, the scores, the mask and the softmax in f32, as autocast does.
fn mixed_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
) -> Tensor<B, 4> {
    use crate::nn::precision::{down, up};
    let [b, s, h, hd] = q.dims();
    let [_, _, kv_h, _] = k.dims();
    let group = h / kv_h;
    let heads = |t: Tensor<B, 4>| down(t.swap_dims(1, 2));
    let (q, k, v) = (heads(q), heads(k), heads(v));
    let q = q.reshape([b, kv_h, group * s, hd]);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut scores = up(q.matmul(k.swap_dims(2, 3))) * scale;
    if let Some(bias) = mask.bias(b, s, &scores.device()) {
        scores = scores + bias;
    }
    let probs = burn::tensor::activation::softmax(scores, 3);
    up(down(probs).matmul(v))
        .reshape([b, h, s, hd])
        .swap_dims(1, 2)
}

/// Attention over token-major heads: `q [b, s_q, h, hd]`, `k`, `v` `[b, s_k, kv_h, hd]` ->
/// `[b, s_q, h, hd]`, through the fused kernel or the composed
/// [`crate::nn::scaled_dot_product_attention`] with the mask's bias.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: &AttentionMask<B>,
) -> Tensor<B, 4> {
    if crate::nn::precision::bf16_compute() {
        return mixed_attention(q, k, v, mask);
    }
    let op = Attention {
        mask: mask.keys.clone(),
    };
    run(op, [&q, &k, &v]).unwrap_or_else(|| {
        let [b, s, _, _] = q.dims();
        let bias = mask.bias(b, s, &q.device());
        let heads = |t: Tensor<B, 4>| t.swap_dims(1, 2);
        crate::nn::scaled_dot_product_attention(heads(q), heads(k), heads(v), bias.as_ref())
            .swap_dims(1, 2)
    })
}
