//! Transformer and convolution pieces shared by the generation heads (MODEL.md sections 3 to 6):
//! layer norm, adaLN modulation, the GELU-tanh MLP, the attention projection with QK-RMSNorm and
//! one joint attention for any number of streams, sinusoidal embeddings, patchify / unpatchify and
//! pixel shuffle. Each exists once; the dual-stream encoder, the single-stream decoder and the
//! U-ViT all build on these.

use crate::nn::linear::Linear;
use burn::module::{Initializer, Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::RmsNorm;
use super::fused::ops::act::gelu_tanh;
use super::fused::ops::attention::{AttentionMask, attention};
use super::fused::ops::norm::layer_norm_affine;
use crate::weights::{LinearInit, VarBuilder, WeightError};

pub use super::fused::ops::norm::{Norm, gated_residual, layer_norm, modulate, per_token};

/// `nn.LayerNorm(dim)` with weight and bias.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(vb: &VarBuilder<B>, name: &str, dim: usize, eps: f64) -> Result<Self, WeightError> {
        let vb = vb.pp(name);
        Ok(Self {
            weight: vb.param("weight", [dim], Initializer::Ones)?,
            bias: vb.param("bias", [dim], Initializer::Zeros)?,
            eps,
        })
    }

    /// `[..., dim] -> [..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        layer_norm_affine(x, &self.weight.val(), &self.bias.val(), self.eps)
    }
}

/// `x [b, n, d] + pos [1, n, d]`, through a flat view so that the position table is one shared
/// row (the backend's fast broadcast) instead of a strided broadcast.
pub fn add_positions<B: Backend>(x: Tensor<B, 3>, pos: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    (x.reshape([b, n * d]) + pos.reshape([1, n * d])).reshape([b, n, d])
}

/// Adaptive-norm modulation: `Linear(SiLU(c)) -> k` chunks of `[b, dim]` (adaLN; zero-initialised
/// for adaLN-zero so every gate starts at 0 and the block starts as the identity).
#[derive(Module, Debug)]
pub struct Modulation<B: Backend> {
    pub linear: Linear<B>,
    pub chunks: usize,
}

impl<B: Backend> Modulation<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        name: &str,
        cond_dim: usize,
        dim: usize,
        chunks: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            linear: vb.pp(name).linear_with(
                "linear",
                cond_dim,
                chunks * dim,
                true,
                LinearInit::Zeros,
            )?,
            chunks,
        })
    }

    /// `c [b, cond_dim]` -> `chunks` tensors `[b, dim]`, in the order of the weight rows.
    pub fn forward(&self, c: &Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
        self.linear.forward(silu(c.clone())).chunk(self.chunks, 1)
    }
}

/// The transformer MLP: `fc2(gelu_tanh(fc1(x)))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        name: &str,
        dim: usize,
        hidden: usize,
    ) -> Result<Self, WeightError> {
        let vb = vb.pp(name);
        Ok(Self {
            fc1: vb.linear_with("fc1", dim, hidden, true, LinearInit::XavierUniform)?,
            fc2: vb.linear_with("fc2", hidden, dim, true, LinearInit::XavierUniform)?,
        })
    }

    /// `[b, s, dim] -> [b, s, dim]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(gelu_tanh(self.fc1.forward(x)))
    }
}

/// Q, K, V projections of one stream with per-head RMSNorm on Q and K (QK-norm, SD3.5/Flux).
#[derive(Module, Debug)]
pub struct QkvProjection<B: Backend> {
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    pub norm_q: RmsNorm<B>,
    pub norm_k: RmsNorm<B>,
    pub heads: usize,
}

impl<B: Backend> QkvProjection<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        name: &str,
        dim: usize,
        heads: usize,
    ) -> Result<Self, WeightError> {
        let vb = vb.pp(name);
        let hd = dim / heads;
        Ok(Self {
            to_q: vb.linear_with("to_q", dim, dim, true, LinearInit::XavierUniform)?,
            to_k: vb.linear_with("to_k", dim, dim, true, LinearInit::XavierUniform)?,
            to_v: vb.linear_with("to_v", dim, dim, true, LinearInit::XavierUniform)?,
            norm_q: RmsNorm::new(&vb, "norm_q", hd, 1e-6)?,
            norm_k: RmsNorm::new(&vb, "norm_k", hd, 1e-6)?,
            heads,
        })
    }

    /// `[b, s, dim]` -> q, k, v each `[b, s, heads, head_dim]` (token-major, as the projections
    /// lay them out: no copies).
    pub fn forward(&self, x: Tensor<B, 3>) -> [Tensor<B, 4>; 3] {
        let [b, s, d] = x.dims();
        let split = |t: Tensor<B, 3>| t.reshape([b, s, self.heads, d / self.heads]);
        [
            self.norm_q.forward(split(self.to_q.forward(x.clone()))),
            self.norm_k.forward(split(self.to_k.forward(x.clone()))),
            split(self.to_v.forward(x)),
        ]
    }
}

/// One softmax attention over the concatenation of several streams' tokens (MM-DiT joint
/// attention; a single stream is the ordinary case), heads token-major `[b, s_i, heads, hd]`;
/// `mask` over the concatenated tokens. Returns each stream's output `[b, s_i, dim]`.
pub fn joint_attention<B: Backend>(
    parts: Vec<[Tensor<B, 4>; 3]>,
    mask: &AttentionMask<B>,
) -> Vec<Tensor<B, 3>> {
    let lens: Vec<usize> = parts.iter().map(|p| p[0].dims()[1]).collect();
    let [b, _, h, hd] = parts[0][0].dims();
    let mut qs = Vec::new();
    let mut ks = Vec::new();
    let mut vs = Vec::new();
    for [q, k, v] in parts {
        qs.push(q);
        ks.push(k);
        vs.push(v);
    }
    let cat = |t: Vec<Tensor<B, 4>>| {
        if t.len() == 1 {
            t.into_iter().next().expect("one")
        } else {
            Tensor::cat(t, 1)
        }
    };
    let out = attention(cat(qs), cat(ks), cat(vs), mask);
    let total: usize = lens.iter().sum();
    let out = out.reshape([b, total, h * hd]);
    if lens.len() == 1 {
        return vec![out];
    }
    let mut start = 0;
    lens.iter()
        .map(|&n| {
            let part = out.clone().narrow(1, start, n);
            start += n;
            part
        })
        .collect()
}

/// Sinusoidal timestep features as diffusers' `get_timestep_embedding` (JanusFlow: 768 channels
/// of `1000 t`, `flip_sin_to_cos=True` so cosines come first, `downscale_freq_shift=0`):
/// `freq_i = exp(-ln(10000) i / half)`. `t [b]` -> `[b, channels]`.
pub fn timestep_features<B: Backend>(
    t: &Tensor<B, 1>,
    channels: usize,
    scale: f64,
) -> Tensor<B, 2> {
    let half = channels / 2;
    let device = t.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let freqs =
        Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze_dim::<2>(0);
    let args = (t.clone() * scale).unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1)
}

/// 1-D sin-cos position embedding (MAE/SD3 `get_1d_sincos_pos_embed_from_grid`) for positions,
/// `[n, dim]`: `[sin(p w), cos(p w)]` with `w_i = 1 / 10000^(i / (dim/2))`.
pub fn sincos_1d(positions: &[f64], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(positions.len() * dim);
    for &p in positions {
        let omega = |i: usize| 1.0 / 10000f64.powf(i as f64 / half as f64);
        out.extend((0..half).map(|i| (p * omega(i)).sin() as f32));
        out.extend((0..half).map(|i| (p * omega(i)).cos() as f32));
    }
    out
}

/// 2-D sin-cos position embedding on an `h x w` grid, row-major tokens (MAE/SD3
/// `get_2d_sincos_pos_embed`: the first half of the channels encodes the column, the second the
/// row). `[h * w, dim]` as a device tensor `[1, h * w, dim]`.
pub fn sincos_2d<B: Backend>(h: usize, w: usize, dim: usize, device: &B::Device) -> Tensor<B, 3> {
    let cols: Vec<f64> = (0..h * w).map(|i| (i % w) as f64).collect();
    let rows: Vec<f64> = (0..h * w).map(|i| (i / w) as f64).collect();
    let (a, b) = (sincos_1d(&cols, dim / 2), sincos_1d(&rows, dim / 2));
    let mut out = Vec::with_capacity(h * w * dim);
    for i in 0..h * w {
        out.extend_from_slice(&a[i * dim / 2..(i + 1) * dim / 2]);
        out.extend_from_slice(&b[i * dim / 2..(i + 1) * dim / 2]);
    }
    Tensor::from_data(TensorData::new(out, [1, h * w, dim]), device)
}

/// 1-D sin-cos positions `0..n` as `[1, n, dim]`.
pub fn sincos_positions<B: Backend>(n: usize, dim: usize, device: &B::Device) -> Tensor<B, 3> {
    let p: Vec<f64> = (0..n).map(|i| i as f64).collect();
    Tensor::from_data(TensorData::new(sincos_1d(&p, dim), [1, n, dim]), device)
}

/// A `p x p` stride-`p` convolution patchify: `[b, c, H, W] -> [b, (H/p)(W/p), dim]`, row-major
/// tokens (token = h * (W/p) + w).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: Conv2d<B>,
}

impl<B: Backend> PatchEmbed<B> {
    pub fn new(
        vb: &VarBuilder<B>,
        name: &str,
        c_in: usize,
        dim: usize,
        patch: usize,
    ) -> Result<Self, WeightError> {
        Ok(Self {
            proj: vb.conv2d(name, c_in, dim, patch, patch, 0, 1)?,
        })
    }

    /// `[b, c, H, W]` -> feature map `[b, dim, H/p, W/p]`.
    pub fn forward_map(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.proj.forward(x)
    }

    /// `[b, c, H, W]` -> tokens `[b, (H/p)(W/p), dim]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 3> {
        map_to_tokens(self.forward_map(x))
    }
}

/// `[b, d, h, w] -> [b, h * w, d]` (row-major tokens).
pub fn map_to_tokens<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, d, h, w] = x.dims();
    x.reshape([b, d, h * w]).swap_dims(1, 2)
}

/// `[b, h * w, d] -> [b, d, h, w]`.
pub fn tokens_to_map<B: Backend>(x: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 4> {
    let [b, _, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, d, h, w])
}

/// SD3's unpatchify: tokens `[b, h * w, p * p * c]` in `(p, q, c)` channel order ->
/// `[b, c, h * p, w * p]` (`einsum("nhwpqc->nchpwq")`).
pub fn unpatchify<B: Backend>(
    x: Tensor<B, 3>,
    h: usize,
    w: usize,
    p: usize,
    c: usize,
) -> Tensor<B, 4> {
    let [b, _, _] = x.dims();
    x.reshape([b, h, w, p, p, c])
        .permute([0, 5, 1, 3, 2, 4])
        .reshape([b, c, h * p, w * p])
}

/// PyTorch's `PixelShuffle(r)`: `[b, c r^2, h, w] -> [b, c, h r, w r]`; output channel `c` at
/// sub-position `(i, j)` reads input channel `c r^2 + i r + j`.
pub fn pixel_shuffle<B: Backend>(x: Tensor<B, 4>, r: usize) -> Tensor<B, 4> {
    let [b, cr, h, w] = x.dims();
    let c = cr / (r * r);
    x.reshape([b, c, r, r, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([b, c, h * r, w * r])
}
