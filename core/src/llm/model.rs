//! The Llama decoder (Touvron et al. 2023, "LLaMA"; Hugging Face `LlamaModel`), written to match
//! transformers' `modeling_llama.py` number for number (MODEL.md sections 1.3 to 1.6 and 9):
//! RMSNorm, split-halves `rotate_half` RoPE, grouped-query attention, SwiGLU, causal attention
//! plus a key-padding mask with arange positions, and hidden states in HF indexing.
//!
//! Module paths equal the checkpoint keys of `LlamaForCausalLM` (`model.layers.3.self_attn.q_proj`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;

use crate::nn::linear::Linear;
use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::LlamaConfig;
use crate::nn::RmsNorm;
use crate::nn::fused::ops::act::swiglu;
use crate::nn::fused::ops::attention::{AttentionMask, attention};
use crate::nn::fused::ops::rope as fused_rope;
use crate::weights::{VarBuilder, WeightError, WeightStore};

/// Rotary position embedding tables for positions `0..seq`, computed like transformers'
/// `LlamaRotaryEmbedding` (f32 inverse frequencies, f32 angles, `cat(freqs, freqs)`).
/// Returns `(cos, sin)`, each `[seq, head_dim]`.
pub fn rope_tables(head_dim: usize, theta: f64, seq: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    for p in 0..seq {
        for _ in 0..2 {
            for f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (cos, sin)
}

/// Rotary embedding on `[b, s, heads * head_dim]` (the projection output, heads not yet split):
/// `x cos + rotate_half(x) sin` per head, where `rotate_half(x) = cat(-x[half..], x[..half])`
/// pairs dimension i with i + head_dim/2. `cos` and `signed_sin` are `[1, s * heads * head_dim]`
/// (see [`Rope`]); the sign of `rotate_half` is folded into `signed_sin`, and the flat layout
/// keeps both products on the backend's contiguous fast path.
pub fn apply_rope<B: Backend>(
    x: Tensor<B, 3>,
    heads: usize,
    cos: &Tensor<B, 2>,
    signed_sin: &Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [b, s, width] = x.dims();
    let hd = width / heads;
    let half = hd / 2;
    let per_head = x.clone().reshape([b, s, heads, hd]);
    let swapped = Tensor::cat(
        vec![
            per_head.clone().narrow(3, half, half),
            per_head.narrow(3, 0, half),
        ],
        3,
    )
    .reshape([b, s * width]);
    (x.reshape([b, s * width]) * cos.clone() + swapped * signed_sin.clone()).reshape([b, s, width])
}

/// Llama self-attention with grouped-query heads.
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> LlamaAttention<B> {
    pub fn new(vb: &VarBuilder<B>, c: &LlamaConfig) -> Result<Self, WeightError> {
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        Ok(Self {
            q_proj: vb.linear("q_proj", c.hidden_size, q, c.attention_bias)?,
            k_proj: vb.linear("k_proj", c.hidden_size, kv, c.attention_bias)?,
            v_proj: vb.linear("v_proj", c.hidden_size, kv, c.attention_bias)?,
            o_proj: vb.linear("o_proj", q, c.hidden_size, c.attention_bias)?,
            num_heads: c.num_attention_heads,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        })
    }

    /// `[b, s, hidden] -> [b, s, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor<B, 3>, heads: usize| t.reshape([b, s, heads, hd]);
        let q = fused_rope::rope(self.q_proj.forward(x.clone()), &rope.fused, |q| {
            apply_rope(q, h, &rope.q_cos, &rope.q_sin)
        });
        let k = fused_rope::rope(self.k_proj.forward(x.clone()), &rope.fused, |k| {
            apply_rope(k, kvh, &rope.k_cos, &rope.k_sin)
        });
        let (q, k) = (split(q, h), split(k, kvh));
        let v = split(self.v_proj.forward(x), kvh);
        let out = attention(q, k, v, mask);
        self.o_proj.forward(out.reshape([b, s, h * hd]))
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> LlamaMlp<B> {
    pub fn new(vb: &VarBuilder<B>, c: &LlamaConfig) -> Result<Self, WeightError> {
        let (d, i) = (c.hidden_size, c.intermediate_size);
        Ok(Self {
            gate_proj: vb.linear("gate_proj", d, i, c.mlp_bias)?,
            up_proj: vb.linear("up_proj", d, i, c.mlp_bias)?,
            down_proj: vb.linear("down_proj", i, d, c.mlp_bias)?,
        })
    }

    /// `[b, s, hidden] -> [b, s, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(swiglu(
            self.gate_proj.forward(x.clone()),
            self.up_proj.forward(x),
        ))
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: LlamaAttention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: LlamaMlp<B>,
}

impl<B: Backend> LlamaDecoderLayer<B> {
    pub fn new(vb: &VarBuilder<B>, c: &LlamaConfig) -> Result<Self, WeightError> {
        Ok(Self {
            input_layernorm: RmsNorm::new(vb, "input_layernorm", c.hidden_size, c.rms_norm_eps)?,
            self_attn: LlamaAttention::new(&vb.pp("self_attn"), c)?,
            post_attention_layernorm: RmsNorm::new(
                vb,
                "post_attention_layernorm",
                c.hidden_size,
                c.rms_norm_eps,
            )?,
            mlp: LlamaMlp::new(&vb.pp("mlp"), c)?,
        })
    }

    /// `[b, s, hidden] -> [b, s, hidden]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, mask);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// Rotary tables for one forward pass, laid out flat per head count for [`apply_rope`]:
/// `[1, s * heads * head_dim]` for the query heads and for the KV heads.
pub struct Rope<B: Backend> {
    pub q_cos: Tensor<B, 2>,
    pub q_sin: Tensor<B, 2>,
    pub k_cos: Tensor<B, 2>,
    pub k_sin: Tensor<B, 2>,
    /// The same tables `[seq, head_dim]` for the fused kernel.
    pub fused: fused_rope::Rope,
}

impl<B: Backend> Rope<B> {
    pub fn new(
        head_dim: usize,
        theta: f64,
        seq: usize,
        heads: usize,
        kv_heads: usize,
        device: &B::Device,
    ) -> Self {
        let (cos, sin) = rope_tables(head_dim, theta, seq);
        let half = head_dim / 2;
        // rotate_half(x) * sin == cat(x[half..], x[..half]) * signed_sin.
        let signed_sin: Vec<f32> = sin
            .iter()
            .enumerate()
            .map(|(i, v)| if i % head_dim < half { -v } else { *v })
            .collect();
        let tile = |table: &[f32], heads: usize| {
            let mut flat = Vec::with_capacity(seq * heads * head_dim);
            for row in table.chunks_exact(head_dim) {
                for _ in 0..heads {
                    flat.extend_from_slice(row);
                }
            }
            Tensor::from_data(TensorData::new(flat, [1, seq * heads * head_dim]), device)
        };
        Self {
            q_cos: tile(&cos, heads),
            q_sin: tile(&signed_sin, heads),
            k_cos: tile(&cos, kv_heads),
            k_sin: tile(&signed_sin, kv_heads),
            fused: fused_rope::Rope {
                cos: cos.into(),
                sin: sin.into(),
                head_dim,
            },
        }
    }
}

/// Which hidden states a forward pass returns. Nothing is kept that is not asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HiddenRequest {
    /// HF hidden-state indices: 0 = embeddings, i = after layer i (no norm), L = after the final
    /// norm (equal to `last_hidden_state`).
    pub layers: BTreeSet<usize>,
    /// Also return the raw output of the last layer, before the final norm.
    pub raw_last_layer: bool,
    /// Stop after the deepest requested layer when `last_hidden_state` is not needed.
    pub skip_final: bool,
}

impl HiddenRequest {
    /// Only `last_hidden_state`.
    pub fn none() -> Self {
        Self::default()
    }

    /// The given HF indices, stopping after the deepest one.
    pub fn layers(layers: impl IntoIterator<Item = usize>) -> Self {
        Self {
            layers: layers.into_iter().collect(),
            raw_last_layer: false,
            skip_final: true,
        }
    }
}

/// What a forward pass returns.
pub struct LlamaOutput<B: Backend> {
    /// `[b, s, hidden]` after the final norm; `None` when the request skipped it.
    pub last_hidden_state: Option<Tensor<B, 3>>,
    /// Requested hidden states by HF index, each `[b, s, hidden]`.
    pub hidden_states: BTreeMap<usize, Tensor<B, 3>>,
    /// `[b, s, hidden]` output of the last layer before the final norm, if requested.
    pub raw_last_layer: Option<Tensor<B, 3>>,
}

/// The inner `LlamaModel` (`model.*` in a `LlamaForCausalLM` checkpoint); `lm_head` is not built.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub embed_tokens: Param<Tensor<B, 2>>,
    pub layers: Vec<LlamaDecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    pub hidden_size: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
}

/// Error from a Llama forward pass given inconsistent inputs.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "sequence of {len} tokens is longer than max_position_embeddings = {max} of this model"
    )]
    TooLong { len: usize, max: usize },
    #[error("attention mask has shape {mask:?} but the input has shape {input:?}")]
    MaskShape { mask: Vec<usize>, input: Vec<usize> },
    #[error("hidden state {index} was requested, but this model has only 0..={max}")]
    NoSuchLayer { index: usize, max: usize },
}

impl<B: Backend> Llama<B> {
    /// Builds the model under `vb` (the `model.` prefix of a causal-LM checkpoint goes in `vb`).
    pub fn new(vb: &VarBuilder<B>, c: &LlamaConfig) -> Result<Self, WeightError> {
        let embed_tokens = vb.pp("embed_tokens").param(
            "weight",
            [c.vocab_size, c.hidden_size],
            Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            },
        )?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| LlamaDecoderLayer::new(&vb.pp("layers").pp(i), c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm::new(vb, "norm", c.hidden_size, c.rms_norm_eps)?,
            hidden_size: c.hidden_size,
            head_dim: c.head_dim,
            rope_theta: c.rope_theta,
            max_position_embeddings: c.max_position_embeddings,
        })
    }

    /// Random initialisation (HF's `initializer_range` 0.02 for embeddings).
    pub fn init(c: &LlamaConfig, device: &B::Device) -> Self {
        Self::new(&VarBuilder::init(device).pp("model"), c).expect("initialisation cannot fail")
    }

    /// Loads `model.*` from a Hugging Face checkpoint folder (or file); every tensor in the
    /// checkpoint must be used, except `lm_head.*` and stray buffers.
    pub fn load(c: &LlamaConfig, weights: &Path, device: &B::Device) -> Result<Self, WeightError> {
        let store = Rc::new(WeightStore::open(weights)?);
        check_layer_count(c, &store)?;
        let model = Self::new(&VarBuilder::load(store.clone(), device).pp("model"), c)?;
        store.check_all_used(&["lm_head."])?;
        Ok(model)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Token embeddings: `[b, s]` ids -> `[b, s, hidden]`.
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.embed_tokens.val(), ids)
    }

    /// Forward from token ids `[b, s]`; `mask [b, s]` with 1 = real token.
    pub fn forward_ids(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Option<&Tensor<B, 2, Int>>,
        request: &HiddenRequest,
    ) -> Result<LlamaOutput<B>, ForwardError> {
        self.forward_embeds(self.embed(ids), mask, request)
    }

    /// Forward from input embeddings `[b, s, hidden]` (the flow model feeds its own tokens), with
    /// causal attention, the key-padding `mask [b, s]` (1 = real) and positions `0..s`.
    pub fn forward_embeds(
        &self,
        embeds: Tensor<B, 3>,
        mask: Option<&Tensor<B, 2, Int>>,
        request: &HiddenRequest,
    ) -> Result<LlamaOutput<B>, ForwardError> {
        let mut hidden_states = BTreeMap::new();
        let mut out = self.forward_embeds_visit(embeds, mask, request, &mut |i, x| {
            hidden_states.insert(i, x.clone());
        })?;
        out.hidden_states = hidden_states;
        Ok(out)
    }

    /// [`LlamaModel::forward_embeds`] that hands each requested hidden state to `visit` as it is
    /// made instead of keeping it (`hidden_states` comes back empty): a kept state holds a second
    /// reference to the residual stream, so the next layer cannot update that buffer in place.
    pub fn forward_embeds_visit(
        &self,
        embeds: Tensor<B, 3>,
        mask: Option<&Tensor<B, 2, Int>>,
        request: &HiddenRequest,
        visit: &mut dyn FnMut(usize, &Tensor<B, 3>),
    ) -> Result<LlamaOutput<B>, ForwardError> {
        let [b, s, _] = embeds.dims();
        let n_layers = self.layers.len();
        if s > self.max_position_embeddings {
            return Err(ForwardError::TooLong {
                len: s,
                max: self.max_position_embeddings,
            });
        }
        if let Some(m) = mask
            && m.dims() != [b, s]
        {
            return Err(ForwardError::MaskShape {
                mask: m.dims().to_vec(),
                input: vec![b, s],
            });
        }
        if let Some(&index) = request.layers.iter().next_back()
            && index > n_layers
        {
            return Err(ForwardError::NoSuchLayer {
                index,
                max: n_layers,
            });
        }
        let device = embeds.device();
        let (heads, kv_heads) = match self.layers.first() {
            Some(l) => (l.self_attn.num_heads, l.self_attn.num_kv_heads),
            None => (1, 1),
        };
        let rope = Rope::new(self.head_dim, self.rope_theta, s, heads, kv_heads, &device);
        let attention_mask =
            AttentionMask::new(mask, b, s, true, kv_heads, heads / kv_heads, &device);
        let wants = |i: usize| request.layers.contains(&i);
        // Without the final norm, stop after the deepest requested layer.
        let last_needed = if request.skip_final && !request.raw_last_layer {
            request
                .layers
                .iter()
                .next_back()
                .copied()
                .unwrap_or(0)
                .min(n_layers)
        } else {
            n_layers
        };
        let mut x = embeds;
        if wants(0) {
            visit(0, &x);
        }
        for (i, layer) in self.layers.iter().enumerate().take(last_needed) {
            x = layer.forward(x, &rope, &attention_mask);
            if i + 1 < n_layers && wants(i + 1) {
                visit(i + 1, &x);
            }
        }
        if last_needed < n_layers {
            return Ok(LlamaOutput {
                last_hidden_state: None,
                hidden_states: BTreeMap::new(),
                raw_last_layer: None,
            });
        }
        let raw_last_layer = request.raw_last_layer.then(|| x.clone());
        let last = self.norm.forward(x);
        if wants(n_layers) {
            visit(n_layers, &last);
        }
        Ok(LlamaOutput {
            last_hidden_state: Some(last),
            hidden_states: BTreeMap::new(),
            raw_last_layer,
        })
    }
}

/// An error unless the checkpoint holds exactly the `num_hidden_layers` decoder layers its
/// config states (checked before anything is built or enumerated for them: a config that says
/// 10^9 layers is one message, not gigabytes of allocation).
pub fn check_layer_count(c: &LlamaConfig, store: &WeightStore) -> Result<(), WeightError> {
    let held: BTreeSet<usize> = store
        .names()
        .iter()
        .filter_map(|n| {
            n.strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    if held.len() != c.num_hidden_layers
        || held
            .iter()
            .next_back()
            .is_some_and(|&l| l + 1 != held.len())
    {
        return Err(WeightError::Config(format!(
            "the config states num_hidden_layers = {}, the weights hold {} decoder layer(s) (model.layers.0 to model.layers.{}): the config does not belong to these weights",
            c.num_hidden_layers,
            held.len(),
            held.len().saturating_sub(1)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend as B;
    use burn::backend::Autodiff;

    #[test]
    fn rope_pairs_dimension_i_with_i_plus_half_like_transformers() {
        let (b, s, heads, hd) = (2, 5, 3, 8);
        let device = Default::default();
        let values: Vec<f32> = (0..b * s * heads * hd)
            .map(|i| ((i * 37) % 17) as f32 - 8.0)
            .collect();
        let x =
            Tensor::<B, 3>::from_data(TensorData::new(values.clone(), [b, s, heads * hd]), &device);
        let rope = Rope::<B>::new(hd, 10000.0, s, heads, heads, &device);
        let ours: Vec<f32> = apply_rope(x, heads, &rope.q_cos, &rope.q_sin)
            .into_data()
            .to_vec()
            .unwrap();
        // transformers: q * cos + rotate_half(q) * sin, rotate_half = cat(-q[half:], q[:half]).
        let (cos, sin) = rope_tables(hd, 10000.0, s);
        let half = hd / 2;
        for bi in 0..b {
            for p in 0..s {
                for h in 0..heads {
                    let base = ((bi * s + p) * heads + h) * hd;
                    for i in 0..hd {
                        let rot = if i < half {
                            -values[base + i + half]
                        } else {
                            values[base + i - half]
                        };
                        let expected = values[base + i] * cos[p * hd + i] + rot * sin[p * hd + i];
                        assert!(
                            (ours[base + i] - expected).abs() < 1e-5,
                            "b{bi} p{p} h{h} i{i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_are_finite_with_left_padding() {
        type A = Autodiff<B>;
        let device = Default::default();
        let model = Llama::<A>::init(&LlamaConfig::small_test(64), &device);
        let ids = Tensor::<A, 2, Int>::from_data(
            TensorData::new(vec![2i64, 2, 1, 5, 1, 7, 8, 9], [2, 4]),
            &device,
        );
        let mask = Tensor::<A, 2, Int>::from_data(
            TensorData::new(vec![0i64, 0, 1, 1, 1, 1, 1, 1], [2, 4]),
            &device,
        );
        let out = model
            .forward_ids(ids, Some(&mask), &HiddenRequest::none())
            .unwrap();
        let loss = out.last_hidden_state.unwrap().square().mean();
        let grads = loss.backward();
        let g: Vec<f32> = model.layers[0]
            .self_attn
            .q_proj
            .weight
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0));
    }
}
