//! transformers' `CLIPModel` (`models/clip/modeling_clip.py`): the text transformer (causal,
//! pooled at the first EOS token), the vision transformer (class token, `pre_layrnorm`, pooled
//! class token through `post_layernorm`), both projections and `logit_scale`. Module paths equal
//! the checkpoint keys; f32 compute.

use crate::nn::linear::Linear;
use burn::module::{Initializer, Module, Param};
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::config::{Activation, ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::nn::blocks::LayerNorm;
use crate::nn::fused::ops::act::{gelu_erf, quick_gelu};
use crate::nn::fused::ops::attention::{AttentionMask, attention};
use crate::weights::{VarBuilder, WeightError};

fn activate<B: Backend>(act: Activation, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match act {
        // x * sigmoid(1.702 x) in one pass (22 ms as composed burn ops on [16, 77, 3072]).
        Activation::QuickGelu => quick_gelu(x),
        Activation::Gelu => gelu_erf(x),
    }
}

/// `CLIPAttention`: multi-head self-attention with q/k/v/out projections (all with bias).
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    pub fn new(vb: &VarBuilder<B>, dim: usize, heads: usize) -> Result<Self, WeightError> {
        Ok(Self {
            q_proj: vb.linear("q_proj", dim, dim, true)?,
            k_proj: vb.linear("k_proj", dim, dim, true)?,
            v_proj: vb.linear("v_proj", dim, dim, true)?,
            out_proj: vb.linear("out_proj", dim, dim, true)?,
            heads,
        })
    }

    /// `[b, s, d]` -> `[b, s, d]`, keys blocked by `mask` (token-major heads: no transposes).
    pub fn forward(&self, x: Tensor<B, 3>, mask: &AttentionMask<B>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let hd = d / self.heads;
        let split = |lin: &Linear<B>| lin.forward(x.clone()).reshape([b, s, self.heads, hd]);
        let out = attention(
            split(&self.q_proj),
            split(&self.k_proj),
            split(&self.v_proj),
            mask,
        );
        self.out_proj.forward(out.reshape([b, s, d]))
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP (fc1, activation, fc2) with residuals.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub self_attn: ClipAttention<B>,
    pub layer_norm2: LayerNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    fn new(
        vb: &VarBuilder<B>,
        dim: usize,
        hidden: usize,
        heads: usize,
        eps: f64,
    ) -> Result<Self, WeightError> {
        let mlp = vb.pp("mlp");
        Ok(Self {
            layer_norm1: LayerNorm::new(vb, "layer_norm1", dim, eps)?,
            self_attn: ClipAttention::new(&vb.pp("self_attn"), dim, heads)?,
            layer_norm2: LayerNorm::new(vb, "layer_norm2", dim, eps)?,
            fc1: mlp.linear("fc1", dim, hidden, true)?,
            fc2: mlp.linear("fc2", hidden, dim, true)?,
        })
    }

    /// `[b, s, d] -> [b, s, d]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: &AttentionMask<B>,
        act: Activation,
    ) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        let h = self.fc2.forward(activate(
            act,
            self.fc1.forward(self.layer_norm2.forward(x.clone())),
        ));
        x + h
    }
}

fn layers<B: Backend>(
    vb: &VarBuilder<B>,
    n: usize,
    dim: usize,
    hidden: usize,
    heads: usize,
    eps: f64,
) -> Result<Vec<ClipEncoderLayer<B>>, WeightError> {
    let vb = vb.pp("encoder").pp("layers");
    (0..n)
        .map(|i| ClipEncoderLayer::new(&vb.pp(i), dim, hidden, heads, eps))
        .collect()
}

/// `CLIPTextTransformer`.
#[derive(Debug)]
pub struct ClipTextTransformer<B: Backend> {
    pub token_embedding: Param<Tensor<B, 2>>,
    pub position_embedding: Param<Tensor<B, 2>>,
    pub layers: Vec<ClipEncoderLayer<B>>,
    pub final_layer_norm: LayerNorm<B>,
    pub config: ClipTextConfig,
    act: Activation,
}

impl<B: Backend> ClipTextTransformer<B> {
    pub fn new(vb: &VarBuilder<B>, c: &ClipTextConfig) -> Result<Self, WeightError> {
        let emb = vb.pp("embeddings");
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Ok(Self {
            token_embedding: emb.pp("token_embedding").param(
                "weight",
                [c.vocab_size, c.hidden_size],
                normal.clone(),
            )?,
            position_embedding: emb.pp("position_embedding").param(
                "weight",
                [c.max_position_embeddings, c.hidden_size],
                normal,
            )?,
            layers: layers(
                vb,
                c.num_hidden_layers,
                c.hidden_size,
                c.intermediate_size,
                c.num_attention_heads,
                c.layer_norm_eps,
            )?,
            final_layer_norm: LayerNorm::new(
                vb,
                "final_layer_norm",
                c.hidden_size,
                c.layer_norm_eps,
            )?,
            config: c.clone(),
            act: Activation::parse(&c.hidden_act)
                .map_err(|e| WeightError::Config(format!("CLIP text_config.hidden_act: {e}")))?,
        })
    }

    /// The pooled output `[b, d]` of token ids `[b, s]` (s <= max_position_embeddings) with
    /// their attention mask `[b, s]` (1 = token): the final-norm state at the first EOS token
    /// (or, for legacy configs with `eos_token_id == 2`, at the largest id, as transformers).
    pub fn forward(&self, ids: &[i64], mask: &[i64], shape: [usize; 2]) -> Tensor<B, 2> {
        let [b, s] = shape;
        let device = self.token_embedding.device();
        let d = self.config.hidden_size;
        let ids_t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [b, s]), &device);
        let mask_t =
            Tensor::<B, 2, Int>::from_data(TensorData::new(mask.to_vec(), [b, s]), &device);
        let positions = self
            .position_embedding
            .val()
            .slice([0..s, 0..d])
            .unsqueeze_dim::<3>(0);
        let mut x = burn::tensor::module::embedding(self.token_embedding.val(), ids_t) + positions;
        let heads = self.config.num_attention_heads;
        let mask = AttentionMask::new(Some(&mask_t), b, s, true, heads, 1, &device);
        for layer in &self.layers {
            x = layer.forward(x, &mask, self.act);
        }
        let x = self.final_layer_norm.forward(x);
        let pooled: Vec<i64> = (0..b)
            .map(|i| {
                let row = &ids[i * s..(i + 1) * s];
                let at = if self.config.eos_token_id == 2 {
                    // argmax, first occurrence of the maximum.
                    let max = row.iter().copied().max().unwrap_or(0);
                    row.iter().position(|&t| t == max).unwrap_or(0)
                } else {
                    // transformers' `(ids == eos).int().argmax(-1)`: 0 when there is none.
                    row.iter()
                        .position(|&t| t == self.config.eos_token_id)
                        .unwrap_or(0)
                };
                (i * s + at) as i64
            })
            .collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(pooled, [b]), &device);
        x.reshape([b * s, d]).select(0, index)
    }
}

/// `CLIPVisionTransformer`.
#[derive(Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    pub class_embedding: Param<Tensor<B, 1>>,
    pub patch_embedding: Conv2d<B>,
    pub position_embedding: Param<Tensor<B, 2>>,
    pub pre_layrnorm: LayerNorm<B>,
    pub layers: Vec<ClipEncoderLayer<B>>,
    pub post_layernorm: LayerNorm<B>,
    pub config: ClipVisionConfig,
    act: Activation,
}

impl<B: Backend> ClipVisionTransformer<B> {
    pub fn new(vb: &VarBuilder<B>, c: &ClipVisionConfig) -> Result<Self, WeightError> {
        let emb = vb.pp("embeddings");
        let (d, p) = (c.hidden_size, c.patch_size);
        let positions = (c.image_size / p).pow(2) + 1;
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let patch = emb.pp("patch_embedding");
        Ok(Self {
            class_embedding: emb.param("class_embedding", [d], normal.clone())?,
            patch_embedding: Conv2d {
                weight: patch.param("weight", [d, c.num_channels, p, p], normal.clone())?,
                bias: None,
                stride: [p, p],
                kernel_size: [p, p],
                dilation: [1, 1],
                padding: burn::nn::PaddingConfig2d::Valid,
                groups: 1,
            },
            position_embedding: emb.pp("position_embedding").param(
                "weight",
                [positions, d],
                normal,
            )?,
            // The key is spelled `pre_layrnorm` in every CLIP checkpoint (MODEL.md section 9).
            pre_layrnorm: LayerNorm::new(vb, "pre_layrnorm", d, c.layer_norm_eps)?,
            layers: layers(
                vb,
                c.num_hidden_layers,
                d,
                c.intermediate_size,
                c.num_attention_heads,
                c.layer_norm_eps,
            )?,
            post_layernorm: LayerNorm::new(vb, "post_layernorm", d, c.layer_norm_eps)?,
            config: c.clone(),
            act: Activation::parse(&c.hidden_act)
                .map_err(|e| WeightError::Config(format!("CLIP vision_config.hidden_act: {e}")))?,
        })
    }

    /// Preprocessed pixels `[b, 3, image_size, image_size]` -> pooled output `[b, d]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let b = pixels.dims()[0];
        let d = self.config.hidden_size;
        let patches = self.patch_embedding.forward(pixels);
        let [_, _, gh, gw] = patches.dims();
        let patches = patches.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .expand([b, 1, d]);
        let x = Tensor::cat(vec![class, patches], 1)
            + self.position_embedding.val().unsqueeze_dim::<3>(0);
        let mut x = self.pre_layrnorm.forward(x);
        let [_, s, _] = x.dims();
        let heads = self.config.num_attention_heads;
        let mask = AttentionMask::new(None, b, s, false, heads, 1, &x.device());
        for layer in &self.layers {
            x = layer.forward(x, &mask, self.act);
        }
        let cls = x.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        self.post_layernorm.forward(cls)
    }
}

/// transformers' `CLIPModel`.
#[derive(Debug)]
pub struct ClipModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
    pub vision_model: ClipVisionTransformer<B>,
    /// `[text d] -> [projection_dim]`, no bias.
    pub text_projection: Linear<B>,
    /// `[vision d] -> [projection_dim]`, no bias.
    pub visual_projection: Linear<B>,
    /// `log` of the logit scale (a 0-d tensor in the checkpoint).
    pub logit_scale: f32,
    pub config: ClipConfig,
}

impl<B: Backend> ClipModel<B> {
    /// Builds the model; `logit_scale` is read separately (it is 0-d).
    pub fn new(vb: &VarBuilder<B>, c: &ClipConfig, logit_scale: f32) -> Result<Self, WeightError> {
        Ok(Self {
            text_model: ClipTextTransformer::new(&vb.pp("text_model"), &c.text_config)?,
            vision_model: ClipVisionTransformer::new(&vb.pp("vision_model"), &c.vision_config)?,
            text_projection: vb.linear(
                "text_projection",
                c.text_config.hidden_size,
                c.projection_dim,
                false,
            )?,
            visual_projection: vb.linear(
                "visual_projection",
                c.vision_config.hidden_size,
                c.projection_dim,
                false,
            )?,
            logit_scale,
            config: c.clone(),
        })
    }

    /// `get_text_features`: ids/mask `[b, s]` -> projected text embeddings `[b, projection_dim]`
    /// (not normalised).
    pub fn text_features(&self, ids: &[i64], mask: &[i64], shape: [usize; 2]) -> Tensor<B, 2> {
        self.text_projection
            .forward(self.text_model.forward(ids, mask, shape))
    }

    /// `get_image_features`: preprocessed pixels `[b, 3, s, s]` -> projected image embeddings
    /// `[b, projection_dim]` (not normalised).
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        self.visual_projection
            .forward(self.vision_model.forward(pixels))
    }

    /// `logits_per_image` `[n_images, n_texts]` = exp(logit_scale) * cos(image, text).
    pub fn logits_per_image(&self, image: Tensor<B, 2>, text: Tensor<B, 2>) -> Tensor<B, 2> {
        let normalise = |x: Tensor<B, 2>| x.clone() / x.square().sum_dim(1).sqrt();
        normalise(image).matmul(normalise(text).transpose()) * self.logit_scale.exp()
    }
}
