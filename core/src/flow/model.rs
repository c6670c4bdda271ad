//! The flow model: the LLM between a generation encoder and decoder (JanusFlow; MODEL.md 3.2,
//! 3.5, 5, 6). `forward(z_t, t, text ids, text mask)` predicts the velocity with the sequence
//! layout `[text (fixed length, pads masked), t-token, image tokens]` under causal LLM attention
//! with positions `0..T+1+n` whatever the mask, so conditional and unconditional rows put the
//! image tokens at the same positions.

use std::collections::{BTreeMap, BTreeSet};

use crate::nn::linear::Linear;
use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::config::{FlowConfig, Variant};
use super::taps::{TapRequest, TapSink, Taps, llm_tap_name};
use crate::heads::{
    ConvNextDecoder, ConvNextEncoder, DualStreamEncoder, SingleStreamDecoder, UVit,
};
use crate::llm::{ForwardError, HiddenRequest, Llama};
use crate::nn::blocks::timestep_features;
use crate::nn::fused::ops::attention::AttentionMask;
use crate::weights::{VarBuilder, WeightError};

/// `t [b]` -> sinusoid of `1000 t` (cos first) -> Linear -> SiLU -> Linear: `t_emb [b, llm]`,
/// the LLM's t-token and the condition of every FiLM / adaLN.
#[derive(Module, Debug)]
pub struct TimeEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
    pub channels: usize,
}

impl<B: Backend> TimeEmbedding<B> {
    pub fn new(vb: &VarBuilder<B>, channels: usize, width: usize) -> Result<Self, WeightError> {
        Ok(Self {
            linear_1: vb.linear("linear_1", channels, width, true)?,
            linear_2: vb.linear("linear_2", width, width, true)?,
            channels,
        })
    }

    /// `t [b]` in [0, 1] -> `[b, width]`
    pub fn forward(&self, t: &Tensor<B, 1>) -> Tensor<B, 2> {
        let f = timestep_features(t, self.channels, 1000.0);
        self.linear_2.forward(silu(self.linear_1.forward(f)))
    }
}

/// The flow model of one variant.
#[derive(Module, Debug)]
pub struct FlowModel<B: Backend> {
    pub llm: Llama<B>,
    pub time_embed: TimeEmbedding<B>,
    pub convnext_encoder: Option<ConvNextEncoder<B>>,
    pub dual_stream_encoder: Option<DualStreamEncoder<B>>,
    pub convnext_decoder: Option<ConvNextDecoder<B>>,
    pub single_stream_decoder: Option<SingleStreamDecoder<B>>,
    pub uvit: Option<UVit<B>>,
    pub text_len: usize,
    pub grid: usize,
    pub heads: usize,
    pub uvit_heads: usize,
    pub latent_channels: usize,
    pub latent_size: usize,
}

/// What a forward pass returns.
pub struct FlowOutput<B: Backend> {
    /// `[b, C, H, W]`
    pub velocity: Tensor<B, 4>,
    /// The requested taps, whole (when the request does not pool them at once).
    pub taps: Taps<B>,
    /// The requested taps pooled as they were made, `[rows, width]` (when the request says
    /// how: [`TapRequest::pooled_at_once`]).
    pub pooled: BTreeMap<String, Tensor<B, 2>>,
}

/// Inputs that do not match the model.
#[derive(Debug, thiserror::Error)]
pub enum FlowInputError {
    #[error("latents have shape {found:?}; this model expects [batch, {c}, {s}, {s}]")]
    Latents {
        found: Vec<usize>,
        c: usize,
        s: usize,
    },
    #[error(
        "text ids have shape {found:?}; this model expects [batch, {t}] with the latents' batch"
    )]
    Text { found: Vec<usize>, t: usize },
    #[error(transparent)]
    Llm(#[from] ForwardError),
}

impl<B: Backend> FlowModel<B> {
    /// Builds the model of `config.variant` under `vb` (the LLM under `llm.model`, the rest under
    /// their own names).
    pub fn new(vb: &VarBuilder<B>, c: &FlowConfig) -> Result<Self, WeightError> {
        let v = c.variant;
        let llm_width = c.llm.hidden_size;
        let skip_channels = c.width;
        let enc = vb.pp("encoder");
        let dec = vb.pp("decoder");
        let uses_llm_heads = v != Variant::Uvit;
        Ok(Self {
            llm: Llama::new(&vb.pp("llm").pp("model"), &c.llm)?,
            time_embed: TimeEmbedding::new(&vb.pp("time_embed"), c.time_channels, llm_width)?,
            convnext_encoder: (uses_llm_heads && !v.dual_stream_encoder())
                .then(|| {
                    ConvNextEncoder::new(
                        &enc,
                        c.latent_channels,
                        c.width,
                        c.patch,
                        c.convnext_blocks,
                        llm_width,
                        llm_width,
                    )
                })
                .transpose()?,
            dual_stream_encoder: v
                .dual_stream_encoder()
                .then(|| {
                    DualStreamEncoder::new(
                        &enc,
                        c.latent_channels,
                        c.patch,
                        c.grid(),
                        c.width,
                        c.heads,
                        c.joint_blocks,
                        c.mlp_ratio,
                        llm_width,
                    )
                })
                .transpose()?,
            convnext_decoder: (uses_llm_heads && !v.single_stream_decoder())
                .then(|| {
                    ConvNextDecoder::new(
                        &dec,
                        llm_width,
                        c.llm.rms_norm_eps,
                        c.width,
                        skip_channels,
                        c.convnext_blocks,
                        llm_width,
                        c.latent_channels,
                        c.patch,
                    )
                })
                .transpose()?,
            single_stream_decoder: v
                .single_stream_decoder()
                .then(|| {
                    SingleStreamDecoder::new(
                        &dec,
                        llm_width,
                        c.llm.rms_norm_eps,
                        c.width,
                        c.heads,
                        c.single_blocks,
                        c.mlp_ratio,
                        skip_channels,
                        c.latent_channels,
                        c.patch,
                    )
                })
                .transpose()?,
            uvit: (v == Variant::Uvit)
                .then(|| {
                    UVit::new(
                        &vb.pp("uvit"),
                        llm_width,
                        c.latent_channels,
                        c.patch,
                        c.grid(),
                        c.uvit.width,
                        c.uvit.heads,
                        c.uvit.depth,
                        c.mlp_ratio,
                    )
                })
                .transpose()?,
            text_len: c.text_len,
            grid: c.grid(),
            heads: c.heads,
            uvit_heads: c.uvit.heads,
            latent_channels: c.latent_channels,
            latent_size: c.latent_size,
        })
    }

    /// Stage 1 of training: the LLM (embeddings included) stops receiving gradients; they still
    /// flow through it to the encoder.
    pub fn freeze_llm(mut self) -> Self {
        self.llm = self.llm.no_grad();
        self
    }

    /// A freshly initialised model.
    pub fn init(c: &FlowConfig, device: &B::Device) -> Self {
        Self::new(&VarBuilder::init(device), c).expect("initialisation cannot fail")
    }

    /// Velocity for `z [b, C, H, W]` at times `t [b]` given text `ids [b, T]` with `mask [b, T]`
    /// (1 = real token; an unconditional CFG row keeps only BOS), plus the requested taps.
    pub fn forward(
        &self,
        z: Tensor<B, 4>,
        t: Tensor<B, 1>,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        taps: &TapRequest,
    ) -> Result<FlowOutput<B>, FlowInputError> {
        let [b, c, h, w] = z.dims();
        if c != self.latent_channels || h != self.latent_size || w != self.latent_size {
            return Err(FlowInputError::Latents {
                found: z.dims().to_vec(),
                c: self.latent_channels,
                s: self.latent_size,
            });
        }
        if ids.dims() != [b, self.text_len] || mask.dims() != [b, self.text_len] {
            return Err(FlowInputError::Text {
                found: ids.dims().to_vec(),
                t: self.text_len,
            });
        }
        let device = z.device();
        let n = self.grid * self.grid;
        let tl = self.text_len;
        let t_emb = self.time_embed.forward(&t);
        let text_embeds = self.llm.embed(ids.clone());
        let mut sink = TapSink::new(taps);
        let ones = |len: usize| Tensor::<B, 2, Int>::ones([b, len], &device);

        if let Some(uvit) = &self.uvit {
            // The LLM as a frozen text encoder over the caption alone.
            let text = self
                .llm
                .forward_embeds(text_embeds, Some(&mask), &HiddenRequest::none())?;
            let key_mask = Tensor::cat(vec![ones(1), mask.clone(), ones(n)], 1);
            let mask = AttentionMask::new(
                Some(&key_mask),
                b,
                1 + tl + n,
                false,
                self.uvit_heads,
                1,
                &device,
            );
            let velocity = uvit.forward(
                z,
                text.last_hidden_state.expect("full forward"),
                &t_emb,
                &mask,
            );
            return Ok(FlowOutput {
                velocity,
                taps: sink.taps,
                pooled: sink.pooled,
            });
        }

        let enc = match (&self.convnext_encoder, &self.dual_stream_encoder) {
            (Some(e), _) => e.forward(z, &t_emb),
            (None, Some(e)) => {
                let key_mask = Tensor::cat(vec![mask.clone(), ones(n)], 1);
                let mask =
                    AttentionMask::new(Some(&key_mask), b, tl + n, false, self.heads, 1, &device);
                e.forward(z, text_embeds.clone(), &t_emb, &mask)
            }
            (None, None) => unreachable!("every LLM variant has an encoder"),
        };
        let text_in = match enc.text_residual {
            Some(r) => text_embeds + r,
            None => text_embeds,
        };
        sink.offer("enc.text", || text_in.clone(), Some(&mask));
        sink.offer("enc.noise", || enc.image_tokens.clone(), None);
        let seq = Tensor::cat(
            vec![
                text_in,
                t_emb.clone().unsqueeze_dim::<3>(1),
                enc.image_tokens,
            ],
            1,
        );
        let llm_mask = Tensor::cat(vec![mask.clone(), ones(1 + n)], 1);
        let layers: BTreeSet<usize> = (0..=self.llm.num_layers())
            .filter(|&l| {
                taps.wants(&llm_tap_name(l, "text")) || taps.wants(&llm_tap_name(l, "image"))
            })
            .collect();
        let request = HiddenRequest {
            layers: layers.clone(),
            raw_last_layer: false,
            skip_final: false,
        };
        let out = self
            .llm
            .forward_embeds_visit(seq, Some(&llm_mask), &request, &mut |l, hs| {
                for (part, start, len, m) in
                    [("text", 0, tl, Some(&mask)), ("image", tl + 1, n, None)]
                {
                    sink.offer(
                        &llm_tap_name(l, part),
                        || hs.clone().narrow(1, start, len),
                        m,
                    );
                }
            })?;
        let last = out.last_hidden_state.expect("full forward");
        let velocity = match (&self.convnext_decoder, &self.single_stream_decoder) {
            (Some(d), _) => {
                let image_hidden = last.narrow(1, tl + 1, n);
                let (velocity, input) = d.forward_with_input(image_hidden, enc.skip, &t_emb);
                sink.offer("dec.input", || input, None);
                velocity
            }
            (None, Some(d)) => {
                let s = tl + 1 + n;
                let mask = AttentionMask::new(Some(&llm_mask), b, s, false, self.heads, 1, &device);
                let (velocity, input) = d.forward_with_input(last, enc.skip, &t_emb, &mask);
                sink.offer("dec.input", || input, None);
                velocity
            }
            (None, None) => unreachable!("every LLM variant has a decoder"),
        };
        Ok(FlowOutput {
            velocity,
            taps: sink.taps,
            pooled: sink.pooled,
        })
    }
}

/// The unconditional rows of classifier-free guidance (MODEL.md 3.5): same ids with every text
/// position but BOS (position 0) replaced by `pad_id` and masked; the length is unchanged, so the
/// t-token and image tokens keep their positions.
pub fn unconditional_rows<B: Backend>(
    ids: &Tensor<B, 2, Int>,
    pad_id: u32,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let [b, t] = ids.dims();
    let device = ids.device();
    let bos = ids.clone().narrow(1, 0, 1);
    let pads = Tensor::<B, 2, Int>::full([b, t - 1], pad_id as i64, &device);
    let mask = Tensor::cat(
        vec![
            Tensor::<B, 2, Int>::ones([b, 1], &device),
            Tensor::<B, 2, Int>::zeros([b, t - 1], &device),
        ],
        1,
    );
    (Tensor::cat(vec![bos, pads], 1), mask)
}
