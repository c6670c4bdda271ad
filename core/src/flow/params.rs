//! Parameter counts computed from a [`FlowConfig`] without allocating the model (the paper preset
//! has 1.1B parameters). Each function mirrors one constructor; a test checks that they equal
//! `num_params()` of the built modules for every variant.

use serde::Serialize;

use super::config::{FlowConfig, Variant};

fn linear(i: usize, o: usize) -> usize {
    i * o + o
}

fn conv(c_in: usize, c_out: usize, k: usize, groups: usize) -> usize {
    c_out * (c_in / groups) * k * k + c_out
}

fn convnext_block(c: usize, cond: usize) -> usize {
    conv(c, c, 7, c) + c + linear(c, 4 * c) + 2 * 4 * c + linear(4 * c, c) + linear(cond, 2 * c)
}

fn qkv(d: usize, heads: usize) -> usize {
    3 * linear(d, d) + 2 * (d / heads)
}

fn mlp(d: usize, hidden: usize) -> usize {
    linear(d, hidden) + linear(hidden, d)
}

fn joint_block(d: usize, heads: usize, ratio: usize) -> usize {
    2 * (linear(d, 6 * d) + qkv(d, heads) + linear(d, d) + mlp(d, ratio * d))
}

fn parallel_block(d: usize, heads: usize, ratio: usize) -> usize {
    linear(d, 3 * d) + qkv(d, heads) + linear(d, ratio * d) + linear((1 + ratio) * d, d)
}

fn uvit_block(d: usize, heads: usize, ratio: usize, skip: bool) -> usize {
    let skip = if skip { linear(2 * d, d) } else { 0 };
    skip + 2 * (2 * d) + qkv(d, heads) + linear(d, d) + mlp(d, ratio * d)
}

/// Parameter counts by component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    pub variant: Variant,
    /// The LLM as built (embeddings, layers, final norm).
    pub llm: usize,
    /// `lm_head` of the checkpoint: unused for image generation, never built.
    pub llm_lm_head: usize,
    pub time_embed: usize,
    /// Encoder with its projection to the LLM width (0 for the U-ViT).
    pub encoder: usize,
    /// Decoder with its projection from the LLM width (0 for the U-ViT).
    pub decoder: usize,
    pub uvit: usize,
    /// Everything built: `llm + time_embed + encoder + decoder + uvit`.
    pub total: usize,
    /// `total + llm_lm_head`, the figure MODEL.md quotes (a causal-LM checkpoint's size).
    pub total_with_lm_head: usize,
}

impl ParamCounts {
    pub fn of(c: &FlowConfig) -> Self {
        let d_llm = c.llm.hidden_size;
        let (w, p, ch) = (c.width, c.patch, c.latent_channels);
        let lm_head = if c.llm.tie_word_embeddings {
            0
        } else {
            c.llm.vocab_size * d_llm
        };
        let llm = c.llm.num_parameters() - lm_head;
        let time_embed = linear(c.time_channels, d_llm) + linear(d_llm, d_llm);
        let v = c.variant;
        let (encoder, decoder, uvit) = if v == Variant::Uvit {
            let u = &c.uvit;
            let uvit = 2 * linear(d_llm, u.width)
                + conv(ch, u.width, p, 1)
                + (u.depth + 1) * uvit_block(u.width, u.heads, c.mlp_ratio, false)
                + u.depth * uvit_block(u.width, u.heads, c.mlp_ratio, true)
                + 2 * u.width
                + linear(u.width, p * p * ch);
            (0, 0, uvit)
        } else {
            let encoder = if v.dual_stream_encoder() {
                conv(ch, w, p, 1)
                    + 2 * linear(d_llm, w)
                    + c.joint_blocks * joint_block(w, c.heads, c.mlp_ratio)
                    + 2 * (2 * w + linear(w, d_llm))
            } else {
                conv(ch, w, p, 1) + c.convnext_blocks * convnext_block(w, d_llm) + linear(w, d_llm)
            };
            let skip = w;
            let decoder = if v.single_stream_decoder() {
                d_llm
                    + linear(d_llm, w)
                    + linear(skip, w)
                    + linear(d_llm, w)
                    + c.single_blocks * parallel_block(w, c.heads, c.mlp_ratio)
                    + linear(w, 2 * w)
                    + linear(w, p * p * ch)
            } else {
                let cat = w + skip;
                d_llm
                    + linear(d_llm, w)
                    + w
                    + c.convnext_blocks * convnext_block(cat, d_llm)
                    + cat
                    + conv(cat, ch * p * p, 1, 1)
            };
            (encoder, decoder, 0)
        };
        let total = llm + time_embed + encoder + decoder + uvit;
        Self {
            variant: v,
            llm,
            llm_lm_head: lm_head,
            time_embed,
            encoder,
            decoder,
            uvit,
            total,
            total_with_lm_head: total + lm_head,
        }
    }

    /// A table like torchinfo's summary.
    pub fn table(&self) -> String {
        let rows = [
            ("LLM (built)", self.llm),
            ("LLM lm_head (unused, not built)", self.llm_lm_head),
            ("time embedding", self.time_embed),
            ("encoder", self.encoder),
            ("decoder", self.decoder),
            ("U-ViT", self.uvit),
        ];
        let mut out = format!(
            "{:<34}{:>16}\n{}\n",
            "component",
            "parameters",
            "=".repeat(50)
        );
        for (name, n) in rows {
            if n > 0 || name.starts_with("LLM") {
                out.push_str(&format!("{name:<34}{:>16}\n", group(n)));
            }
        }
        out.push_str(&format!("{}\n", "=".repeat(50)));
        out.push_str(&format!(
            "{:<34}{:>16}\n",
            "total (built)",
            group(self.total)
        ));
        out.push_str(&format!(
            "{:<34}{:>16}\n",
            "total with lm_head",
            group(self.total_with_lm_head)
        ));
        out
    }
}

fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
