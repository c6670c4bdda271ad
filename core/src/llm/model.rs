//! The Llama decoder (Touvron et al. 2023, "LLaMA"; Hugging Face `LlamaModel`), written to match
//! transformers' `modeling_llama.py` number for number (MODEL.md sections 1.3 to 1.6 and 9):
//! RMSNorm, split-halves `rotate_half` RoPE, grouped-query attention, SwiGLU, causal attention
//! plus a key-padding mask with arange positions, and hidden states in HF indexing.
//!
//! Module paths equal the checkpoint keys of `LlamaForCausalLM` (`model.layers.3.self_attn.q_proj`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;

use burn::module::{Initializer, Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::LlamaConfig;
use crate::nn::{RmsNorm, blocked_attention, scaled_dot_product_attention};
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

/// Rotary embedding applied to `[b, heads, seq, head_dim]`: `x cos + rotate_half(x) sin`, where
/// `rotate_half(x) = cat(-x[half..], x[..half])` pairs dimension i with i + head_dim/2.
pub fn apply_rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [_, _, _, hd] = x.dims();
    let half = hd / 2;
    let first = x.clone().narrow(3, 0, half);
    let second = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.clone() + rotated * sin.clone()
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

    /// `[b, s, hidden] -> [b, s, hidden]`; `cos`/`sin` are `[1, 1, s, head_dim]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        blocked: Option<&burn::tensor::Tensor<B, 4, burn::tensor::Bool>>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split = |t: Tensor<B, 3>, heads: usize| t.reshape([b, s, heads, hd]).swap_dims(1, 2);
        let q = apply_rope(
            split(self.q_proj.forward(x.clone()), h),
            &rope.cos,
            &rope.sin,
        );
        let k = apply_rope(
            split(self.k_proj.forward(x.clone()), kvh),
            &rope.cos,
            &rope.sin,
        );
        let v = split(self.v_proj.forward(x), kvh);
        let (k, v) = (repeat_kv(k, h / kvh), repeat_kv(v, h / kvh));
        let out = scaled_dot_product_attention(q, k, v, blocked);
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, h * hd]))
    }
}

/// Expands `[b, kv_heads, s, hd]` to `[b, kv_heads * n_rep, s, hd]`, each KV head repeated
/// `n_rep` times contiguously (transformers' `repeat_kv`).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, n_rep: usize) -> Tensor<B, 4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kvh, s, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kvh, n_rep, s, hd])
        .reshape([b, kvh * n_rep, s, hd])
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
        self.down_proj
            .forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
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
        blocked: Option<&Tensor<B, 4, burn::tensor::Bool>>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, blocked);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// Cos/sin tables on the device, `[1, 1, seq, head_dim]` each.
pub struct Rope<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    pub fn new(head_dim: usize, theta: f64, seq: usize, device: &B::Device) -> Self {
        let (cos, sin) = rope_tables(head_dim, theta, seq);
        let table =
            |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, seq, head_dim]), device);
        Self {
            cos: table(cos),
            sin: table(sin),
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
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: i64, vocab: usize },
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

    /// Checks that every id is inside the vocabulary (an out-of-range id would otherwise panic
    /// inside the backend).
    pub fn check_ids(&self, ids: &[i64]) -> Result<(), ForwardError> {
        let vocab = self.embed_tokens.dims()[0];
        match ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            Some(&id) => Err(ForwardError::TokenOutOfRange { id, vocab }),
            None => Ok(()),
        }
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
        let rope = Rope::new(self.head_dim, self.rope_theta, s, &device);
        let blocked = blocked_attention(mask, b, s, true, &device);
        let mut hidden_states = BTreeMap::new();
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
            hidden_states.insert(0, x.clone());
        }
        for (i, layer) in self.layers.iter().enumerate().take(last_needed) {
            x = layer.forward(x, &rope, blocked.as_ref());
            if i + 1 < n_layers && wants(i + 1) {
                hidden_states.insert(i + 1, x.clone());
            }
        }
        if last_needed < n_layers {
            return Ok(LlamaOutput {
                last_hidden_state: None,
                hidden_states,
                raw_last_layer: None,
            });
        }
        let raw_last_layer = request.raw_last_layer.then(|| x.clone());
        let last = self.norm.forward(x);
        if wants(n_layers) {
            hidden_states.insert(n_layers, last.clone());
        }
        Ok(LlamaOutput {
            last_hidden_state: Some(last),
            hidden_states,
            raw_last_layer,
        })
    }
}
