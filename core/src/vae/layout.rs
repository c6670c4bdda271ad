//! The three checkpoint layouts of an `AutoencoderKL`, mapped onto the diffusers names that the
//! modules are built with (the mapping diffusers applies on load: `modeling_utils.py`'s
//! deprecated-attention conversion, and `loaders/single_file_utils.py`
//! `convert_ldm_vae_checkpoint` for the original CompVis/Stability single-file layout):
//!
//! - **diffusers** (`diffusion_pytorch_model.safetensors`): read as is.
//! - **diffusers, legacy attention names** (files saved before diffusers 0.14):
//!   `mid_block.attentions.0.{query,key,value,proj_attn}` for `to_q`, `to_k`, `to_v`, `to_out.0`.
//! - **LDM single file** (`sdxl_vae.safetensors`): `{encoder,decoder}.{down,up}.{i}.block.{j}`,
//!   `nin_shortcut`, `downsample`/`upsample`, `mid.{block_1,attn_1,block_2}` whose attention
//!   `norm, q, k, v, proj_out` are 1x1 convolutions `[c, c, 1, 1]` (squeezed to linear weights),
//!   `norm_out`; and the decoder's up blocks in reverse order: diffusers `up_blocks.k` is LDM
//!   `up.(n - 1 - k)`.

use crate::weights::Alias;

/// Which layout a checkpoint uses, from its tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeLayout {
    Diffusers,
    DiffusersLegacyAttention,
    Ldm,
}

impl VaeLayout {
    /// Detects the layout from the tensor names; a `first_stage_model.` or `vae.` prefix (a VAE
    /// inside a full pipeline checkpoint) is not handled here.
    pub fn detect(names: &[String]) -> Self {
        if names.iter().any(|n| n.starts_with("encoder.down.")) {
            VaeLayout::Ldm
        } else if names
            .iter()
            .any(|n| n.contains(".attentions.0.query.") || n.contains(".attentions.0.proj_attn."))
        {
            VaeLayout::DiffusersLegacyAttention
        } else {
            VaeLayout::Diffusers
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            VaeLayout::Diffusers => "diffusers",
            VaeLayout::DiffusersLegacyAttention => "diffusers (legacy attention names)",
            VaeLayout::Ldm => "LDM single file",
        }
    }

    /// `(diffusers name, alias)` for every stored name that differs from its diffusers name;
    /// `blocks` is the number of down (= up) blocks.
    pub fn aliases(&self, names: &[String], blocks: usize) -> Vec<(String, Alias)> {
        names
            .iter()
            .filter_map(|stored| {
                let (canonical, squeeze_1x1) = match self {
                    VaeLayout::Diffusers => return None,
                    VaeLayout::DiffusersLegacyAttention => (legacy_to_diffusers(stored)?, false),
                    VaeLayout::Ldm => ldm_to_diffusers(stored, blocks)?,
                };
                (canonical != *stored).then(|| {
                    (
                        canonical,
                        Alias {
                            stored: stored.clone(),
                            squeeze_1x1,
                        },
                    )
                })
            })
            .collect()
    }
}

fn resnet_part(p: &str) -> &str {
    if p == "nin_shortcut" {
        "conv_shortcut"
    } else {
        p
    }
}

fn legacy_to_diffusers(name: &str) -> Option<String> {
    for (old, new) in [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ] {
        if name.contains(".attentions.") && name.contains(old) {
            return Some(name.replacen(old, new, 1));
        }
    }
    Some(name.to_string())
}

/// The diffusers name of an LDM single-file tensor, and whether it is a 1x1-conv attention weight
/// to squeeze; `None` for names that are not VAE weights (they are then reported as unused).
fn ldm_to_diffusers(name: &str, blocks: usize) -> Option<(String, bool)> {
    let (top, rest) = name.split_once('.')?;
    if top == "quant_conv" || top == "post_quant_conv" {
        return Some((name.to_string(), false));
    }
    if top != "encoder" && top != "decoder" {
        return None;
    }
    let parts: Vec<&str> = rest.split('.').collect();
    let mapped = match parts.as_slice() {
        ["conv_in" | "conv_out", ..] => rest.to_string(),
        ["norm_out", tail @ ..] => format!("conv_norm_out.{}", tail.join(".")),
        ["down", i, "block", j, part, tail @ ..] if top == "encoder" => format!(
            "down_blocks.{i}.resnets.{j}.{}.{}",
            resnet_part(part),
            tail.join(".")
        ),
        ["down", i, "downsample", "conv", tail @ ..] if top == "encoder" => {
            format!("down_blocks.{i}.downsamplers.0.conv.{}", tail.join("."))
        }
        ["up", i, "block", j, part, tail @ ..] if top == "decoder" => {
            let k = blocks
                .checked_sub(1)?
                .checked_sub(i.parse::<usize>().ok()?)?;
            format!(
                "up_blocks.{k}.resnets.{j}.{}.{}",
                resnet_part(part),
                tail.join(".")
            )
        }
        ["up", i, "upsample", "conv", tail @ ..] if top == "decoder" => {
            let k = blocks
                .checked_sub(1)?
                .checked_sub(i.parse::<usize>().ok()?)?;
            format!("up_blocks.{k}.upsamplers.0.conv.{}", tail.join("."))
        }
        ["mid", block @ ("block_1" | "block_2"), part, tail @ ..] => {
            let r = if *block == "block_1" { 0 } else { 1 };
            format!(
                "mid_block.resnets.{r}.{}.{}",
                resnet_part(part),
                tail.join(".")
            )
        }
        ["mid", "attn_1", part, tail @ ..] => {
            let (new, squeeze) = match *part {
                "norm" => ("group_norm", false),
                "q" => ("to_q", true),
                "k" => ("to_k", true),
                "v" => ("to_v", true),
                "proj_out" => ("to_out.0", true),
                _ => return None,
            };
            let tail = tail.join(".");
            let squeeze = squeeze && tail == "weight";
            return Some((
                format!("{top}.mid_block.attentions.0.{new}.{tail}"),
                squeeze,
            ));
        }
        _ => return None,
    };
    Some((format!("{top}.{mapped}"), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_names_map_to_diffusers_with_reversed_decoder_blocks() {
        let cases = [
            (
                "encoder.norm_out.weight",
                "encoder.conv_norm_out.weight",
                false,
            ),
            (
                "encoder.down.1.block.0.nin_shortcut.bias",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.bias",
                false,
            ),
            (
                "encoder.down.2.downsample.conv.weight",
                "encoder.down_blocks.2.downsamplers.0.conv.weight",
                false,
            ),
            (
                "decoder.up.3.block.2.conv1.weight",
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                false,
            ),
            (
                "decoder.up.1.upsample.conv.bias",
                "decoder.up_blocks.2.upsamplers.0.conv.bias",
                false,
            ),
            (
                "decoder.mid.block_2.norm1.bias",
                "decoder.mid_block.resnets.1.norm1.bias",
                false,
            ),
            (
                "encoder.mid.attn_1.proj_out.weight",
                "encoder.mid_block.attentions.0.to_out.0.weight",
                true,
            ),
            (
                "encoder.mid.attn_1.q.bias",
                "encoder.mid_block.attentions.0.to_q.bias",
                false,
            ),
            (
                "decoder.mid.attn_1.norm.weight",
                "decoder.mid_block.attentions.0.group_norm.weight",
                false,
            ),
            ("quant_conv.weight", "quant_conv.weight", false),
        ];
        for (ldm, diffusers, squeeze) in cases {
            assert_eq!(
                ldm_to_diffusers(ldm, 4),
                Some((diffusers.to_string(), squeeze)),
                "{ldm}"
            );
        }
        assert_eq!(ldm_to_diffusers("model_ema.decay", 4), None);
        assert_eq!(
            ldm_to_diffusers("decoder.up.7.block.0.conv1.weight", 4),
            None
        );
    }

    #[test]
    fn layouts_are_detected_from_names() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            VaeLayout::detect(&names(&["encoder.down.0.block.0.conv1.weight"])),
            VaeLayout::Ldm
        );
        assert_eq!(
            VaeLayout::detect(&names(&["encoder.mid_block.attentions.0.query.weight"])),
            VaeLayout::DiffusersLegacyAttention
        );
        assert_eq!(
            VaeLayout::detect(&names(&["encoder.mid_block.attentions.0.to_q.weight"])),
            VaeLayout::Diffusers
        );
        let legacy = VaeLayout::DiffusersLegacyAttention.aliases(
            &names(&[
                "decoder.mid_block.attentions.0.proj_attn.weight",
                "decoder.mid_block.attentions.0.group_norm.weight",
            ]),
            2,
        );
        assert_eq!(legacy.len(), 1);
        assert_eq!(
            legacy[0].0,
            "decoder.mid_block.attentions.0.to_out.0.weight"
        );
    }
}
