//! Memory planning for training (issue 16, `flowlens model-info --memory`): what one device
//! holds at the peak of a stage-2 optimiser step, from the config alone.
//!
//! - **weights**: every parameter in f32 (the master copy, also under `mixed` and `bf16`);
//! - **EMA**: one f32 copy per EMA rate (on the first device only);
//! - **gradients**: one f32 value per trainable parameter (stage 2 trains the LLM too);
//! - **optimiser state**: AdamW's two f32 moments per trainable parameter;
//! - **gradient buffer** (several devices): the flat buffer the devices average and the
//!   average itself, f32;
//! - **activations**: what the autodiff graph keeps for the backward pass of one micro-batch
//!   (`batch_size / devices` rows), counted per block from the tensors its operations save
//!   (inputs of every linear layer, normalisation inputs and outputs, activation inputs and
//!   outputs), in f32, or bf16 for the inputs of the products under `mixed`/`bf16`; plus the
//!   **attention matrices**, `[rows, heads, seq, seq]` per attention layer: one (the
//!   probabilities) on the CPU's fused attention, two (scores and probabilities) on burn's
//!   composed attention, which CUDA runs;
//! - under `mixed`/`bf16`, the bf16 copies of the weights that the products keep.
//!
//! The counts are an estimate; `cargo bench -p flowlens-core --bench memory` measures the peak
//! resident memory of real steps at the tiny and small presets and docs/PERFORMANCE.md states
//! the error.

use serde::Serialize;

use super::config::{FlowConfig, Variant};
use super::params::ParamCounts;
use crate::nn::precision::Precision;

/// Where the attention runs: how many `[rows, heads, seq, seq]` matrices each attention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// The CPU's fused attention: the probabilities.
    Fused,
    /// burn's composed attention (CUDA): the scaled scores and the probabilities.
    Composed,
}

impl AttentionKind {
    fn kept(self) -> usize {
        match self {
            AttentionKind::Fused => 1,
            AttentionKind::Composed => 2,
        }
    }
}

/// Bytes of each part of one device's training state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    pub rows_per_device: usize,
    pub weights: u64,
    pub ema: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub gradient_buffer: u64,
    /// Saved activations besides the attention matrices.
    pub activations: u64,
    pub attention: u64,
    /// bf16 copies of the weights kept by the products (`mixed`, `bf16`).
    pub bf16_weights: u64,
    pub total: u64,
}

/// Elements the backward pass keeps per token of a pre-norm transformer block of width `d`
/// with an MLP of `hidden` (and a gated one when `gated`), besides the attention matrices:
/// norm input and output, the QKV input, queries, keys, values, the attention output, the
/// residual, the second norm's input and output, the MLP's hidden activations (in, out).
fn transformer_block(d: usize, kv: usize, hidden: usize, gated: bool) -> usize {
    let attention = 2 * d + d + 2 * kv + d;
    let mlp = 2 * d + if gated { 3 * hidden } else { 2 * hidden };
    attention + mlp
}

/// A ConvNeXt block per spatial position of `c` channels: the depthwise input, the norm's input
/// and output, the expansion's output, GELU's output, GRN's input and output, the projection.
fn convnext_block(c: usize) -> usize {
    3 * c + 4 * (4 * c)
}

/// Which share of the activations are inputs of products (stored in bf16 under `mixed`).
const PRODUCT_SHARE: f64 = 0.5;

/// One device's memory at the peak of a stage-2 step of `batch_size` rows split over `devices`.
pub fn plan(
    c: &FlowConfig,
    batch_size: usize,
    devices: usize,
    precision: Precision,
    attention: AttentionKind,
    ema_rates: usize,
) -> MemoryPlan {
    let counts = ParamCounts::of(c);
    let p = counts.total as u64;
    let f32b = 4u64;
    let rows = batch_size.div_ceil(devices.max(1));
    let weights = p * f32b;
    let ema = ema_rates as u64 * p * f32b;
    let gradients = p * f32b;
    let optimizer = 2 * p * f32b;
    let gradient_buffer = if devices > 1 { 2 * p * f32b } else { 0 };
    let l = &c.llm;
    let (tl, n) = (c.text_len, c.image_tokens());
    let seq = tl + 1 + n;
    let kv = l.num_key_value_heads * l.head_dim;
    let mut elements = 0usize; // per row (sample)
    let mut matrices = 0usize; // attention matrix elements per row
    let kept = attention.kept();
    let w = c.width;
    if c.variant == Variant::Uvit {
        // The LLM encodes the caption alone and is frozen: nothing of it is kept.
        let u = &c.uvit;
        let s = 1 + tl + n;
        let blocks = 2 * u.depth + 1;
        elements += blocks * s * transformer_block(u.width, u.width, c.mlp_ratio * u.width, false);
        matrices += blocks * kept * u.heads * s * s;
    } else {
        elements += l.num_hidden_layers
            * seq
            * transformer_block(l.hidden_size, kv, l.intermediate_size, true);
        matrices += l.num_hidden_layers * kept * l.num_attention_heads * seq * seq;
        if c.variant.dual_stream_encoder() {
            let s = tl + n;
            // Two streams of separate weights, one joint attention; adaLN doubles the norms.
            elements +=
                c.joint_blocks * s * (transformer_block(w, w, c.mlp_ratio * w, false) + 2 * w);
            matrices += c.joint_blocks * kept * c.heads * s * s;
        } else {
            elements += c.convnext_blocks * n * convnext_block(w);
        }
        if c.variant.single_stream_decoder() {
            elements +=
                c.single_blocks * seq * (transformer_block(w, w, c.mlp_ratio * w, false) + w);
            matrices += c.single_blocks * kept * c.heads * seq * seq;
        } else {
            elements += c.convnext_blocks * n * convnext_block(2 * w);
        }
    }
    let mixed = precision != Precision::F32;
    let per_element = if mixed {
        f32b as f64 * (1.0 - PRODUCT_SHARE) + 2.0 * PRODUCT_SHARE
    } else {
        f32b as f64
    };
    let activations = (rows as f64 * elements as f64 * per_element) as u64;
    let attention = rows as u64 * matrices as u64 * f32b;
    let bf16_weights = if mixed { 2 * p } else { 0 };
    let total = weights
        + ema
        + gradients
        + optimizer
        + gradient_buffer
        + activations
        + attention
        + bf16_weights;
    MemoryPlan {
        rows_per_device: rows,
        weights,
        ema,
        gradients,
        optimizer,
        gradient_buffer,
        activations,
        attention,
        bf16_weights,
        total,
    }
}

fn gib(b: u64) -> String {
    let g = b as f64 / (1u64 << 30) as f64;
    if g >= 10.0 {
        format!("{g:.1} GiB")
    } else if g >= 0.01 {
        format!("{g:.2} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

impl MemoryPlan {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let rows = [
            ("weights (f32 master)", self.weights),
            ("EMA weights (first device)", self.ema),
            ("gradients", self.gradients),
            ("optimiser state (AdamW moments)", self.optimizer),
            ("gradient buffer (several devices)", self.gradient_buffer),
            ("activations kept for backward", self.activations),
            ("attention matrices kept for backward", self.attention),
            ("bf16 weight copies (mixed, bf16)", self.bf16_weights),
        ];
        let mut out = format!("{:<40}{:>14}\n{}\n", "per device", "memory", "=".repeat(54));
        for (name, b) in rows {
            out.push_str(&format!("{name:<40}{:>14}\n", gib(b)));
        }
        out.push_str(&format!(
            "{}\n{:<40}{:>14}\n",
            "-".repeat(54),
            "total",
            gib(self.total)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Preset;

    #[test]
    fn the_plan_scales_as_its_parts_should() {
        let c = FlowConfig::of(Preset::Paper, Variant::Both);
        let one = plan(&c, 8, 1, Precision::F32, AttentionKind::Composed, 1);
        let p = ParamCounts::of(&c).total as u64;
        assert_eq!(one.weights, 4 * p);
        assert_eq!(one.optimizer, 8 * p);
        assert_eq!(one.gradient_buffer, 0);
        // Eight devices: an eighth of the rows each, the same weights, a gradient buffer.
        let eight = plan(&c, 8, 8, Precision::F32, AttentionKind::Composed, 1);
        assert_eq!(eight.rows_per_device, 1);
        assert_eq!(eight.weights, one.weights);
        assert_eq!(eight.attention * 8, one.attention);
        assert!(eight.gradient_buffer > 0);
        // Attention of the LLM alone: 22 layers x 32 heads x 705^2 x 4 bytes x 2 matrices.
        let llm = 22u64 * 32 * 705 * 705 * 4 * 2;
        assert!(eight.attention > llm && eight.attention < 2 * llm);
        // Mixed precision: the same state, fewer activation bytes, bf16 weight copies.
        let mixed = plan(&c, 8, 1, Precision::Mixed, AttentionKind::Composed, 1);
        assert!(mixed.activations < one.activations && mixed.bf16_weights == 2 * p);
        assert!(plan(&c, 8, 1, Precision::F32, AttentionKind::Fused, 1).attention < one.attention);
    }
}
