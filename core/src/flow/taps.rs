//! Taps: named intermediate tensors returned by a forward pass on request (burn has no forward
//! hooks). Names: `enc.text` (the text stream as fed to the LLM), `enc.noise` (the image tokens as
//! fed to the LLM), `llm.hNN.text` / `llm.hNN.image` (hidden state NN in Hugging Face indexing at
//! text / image positions), `dec.input` (the decoder's image tokens after its input projection).
//! A pattern is a name, a prefix ending at a dot (`llm.h02` = both positions) or a glob with `*`
//! (`llm.h*.image`). With an empty request nothing is cloned or kept.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::nn::blocks::layer_norm;

/// Which taps a forward pass should return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapRequest {
    pub patterns: Vec<String>,
    /// Pool each tap the moment it is made (into the forward's `pooled`) instead of returning
    /// it whole.
    pub pool: Option<PoolAtOnce>,
}

/// How a forward pass pools its taps as they are made: the first `rows` rows (the conditional
/// branch of a CFG batch), with `pooling`. A tap kept whole until the forward returns holds a
/// second reference to an activation, so the next op cannot reuse that buffer in place and
/// every step pays for fresh pages (measured: `clear_page` went from 0.5 % to 10.6 % of the
/// sampler's profile with all taps); pooled at once, only `[rows, width]` outlives the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolAtOnce {
    pub pooling: TapPooling,
    pub rows: usize,
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && name.len() >= head.len()
                && (0..=name.len() - head.len())
                    .filter(|&i| name.is_char_boundary(head.len() + i))
                    .any(|i| glob(tail, &name[head.len() + i..]))
        }
    }
}

impl TapRequest {
    pub fn none() -> Self {
        Self::default()
    }

    /// From comma-separated patterns (`enc.*,llm.h02`).
    pub fn parse(text: &str) -> Self {
        Self {
            patterns: text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            pool: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The same taps, pooled as they are made (see [`PoolAtOnce`]).
    pub fn pooled_at_once(&self, pooling: TapPooling, rows: usize) -> Self {
        Self {
            patterns: self.patterns.clone(),
            pool: Some(PoolAtOnce { pooling, rows }),
        }
    }

    /// The patterns that match none of `available` (a misspelt tap would silently give
    /// nothing).
    pub fn unmatched(&self, available: &[String]) -> Vec<String> {
        self.patterns
            .iter()
            .filter(|p| {
                let one = TapRequest {
                    patterns: vec![(*p).clone()],
                    pool: None,
                };
                !available.iter().any(|t| one.wants(t))
            })
            .cloned()
            .collect()
    }

    /// Whether `name` is requested.
    pub fn wants(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| {
            glob(p, name) || (name.starts_with(p.as_str()) && name[p.len()..].starts_with('.'))
        })
    }
}

/// A tapped tensor `[b, tokens, width]` with its mask `[b, tokens]` (1 = valid token).
#[derive(Debug, Clone)]
pub struct Tap<B: Backend> {
    pub value: Tensor<B, 3>,
    /// `[b, s]`, 1 where a token counts; `None`: every token does (image tokens, the decoder
    /// input), pooled without the masked product.
    pub mask: Option<Tensor<B, 2, Int>>,
}

/// How a tap is reduced to one vector per sample (named as in a store's manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapPooling {
    /// Mean over valid tokens.
    Mean,
    /// Layer norm over the width first (no affine), then the mean over valid tokens.
    LayerNormMean,
    /// `Mean`, leaving the BOS token (text position 0) out of text taps: under causal attention
    /// its state is the same for every prompt, so with it the mean carries a direction that
    /// depends only on the prompt's length.
    MeanWithoutBos,
    /// `LayerNormMean` without the BOS token.
    LayerNormMeanWithoutBos,
}

impl TapPooling {
    /// `mean`, `layer_norm_mean`, `mean_without_bos` or `layer_norm_mean_without_bos`.
    pub fn name(self) -> &'static str {
        match self {
            TapPooling::Mean => "mean",
            TapPooling::LayerNormMean => "layer_norm_mean",
            TapPooling::MeanWithoutBos => "mean_without_bos",
            TapPooling::LayerNormMeanWithoutBos => "layer_norm_mean_without_bos",
        }
    }

    /// Whether tokens are layer-normalised before the mean.
    pub fn layer_norm(self) -> bool {
        matches!(
            self,
            TapPooling::LayerNormMean | TapPooling::LayerNormMeanWithoutBos
        )
    }

    /// Whether text position 0 (BOS) is left out of masked (text) taps.
    pub fn excludes_bos(self) -> bool {
        matches!(
            self,
            TapPooling::MeanWithoutBos | TapPooling::LayerNormMeanWithoutBos
        )
    }

    /// The same pooling without BOS (`exclude_bos`) or as it is.
    pub fn without_bos(self, exclude_bos: bool) -> Self {
        match (self, exclude_bos) {
            (TapPooling::Mean, true) => TapPooling::MeanWithoutBos,
            (TapPooling::LayerNormMean, true) => TapPooling::LayerNormMeanWithoutBos,
            (p, _) => p,
        }
    }
}

impl std::fmt::Display for TapPooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl<B: Backend> Tap<B> {
    /// `[b, width]`: the mean over valid tokens (optionally of layer-normalised tokens), so that
    /// only small vectors leave the device.
    pub fn pool(&self, pooling: TapPooling) -> Tensor<B, 2> {
        let x = if pooling.layer_norm() {
            layer_norm(self.value.clone(), 1e-5)
        } else {
            self.value.clone()
        };
        let [b, s, d] = x.dims();
        let Some(mask) = &self.mask else {
            // The same values as the masked form with an all-ones mask (x * 1 = x; the same
            // division by s), without the broadcast product.
            return x.sum_dim(1).reshape([b, d]) / s.max(1) as f32;
        };
        let mut mask = mask.clone();
        if pooling.excludes_bos() && s > 0 {
            // Right-padded rows: BOS is position 0 of every row.
            let zeros = Tensor::<B, 2, Int>::zeros([b, 1], &mask.device());
            mask = mask.slice_assign([0..b, 0..1], zeros);
        }
        let m = mask.float().reshape([b, s, 1]);
        let count = m.clone().sum_dim(1).reshape([b, 1]).clamp_min(1.0);
        (x * m).sum_dim(1).reshape([b, d]) / count
    }
}

/// The taps a forward pass returned, by name.
pub type Taps<B> = BTreeMap<String, Tap<B>>;

/// The requested taps of one forward pass as they are made: kept whole (`taps`) or, when the
/// request says how, pooled at once (`pooled`, `[rows, width]` per name).
pub struct TapSink<'a, B: Backend> {
    request: &'a TapRequest,
    pub taps: Taps<B>,
    pub pooled: BTreeMap<String, Tensor<B, 2>>,
}

impl<'a, B: Backend> TapSink<'a, B> {
    pub fn new(request: &'a TapRequest) -> Self {
        Self {
            request,
            taps: Taps::new(),
            pooled: BTreeMap::new(),
        }
    }

    pub fn wants(&self, name: &str) -> bool {
        self.request.wants(name)
    }

    /// Offers tap `name` (`value [b, tokens, width]`, `mask [b, tokens]`); `value` is called
    /// only when the tap is requested.
    pub fn offer(
        &mut self,
        name: &str,
        value: impl FnOnce() -> Tensor<B, 3>,
        mask: Option<&Tensor<B, 2, Int>>,
    ) {
        if !self.wants(name) {
            return;
        }
        let value = value();
        match self.request.pool {
            Some(PoolAtOnce { pooling, rows }) => {
                let tap = Tap {
                    value: value.narrow(0, 0, rows),
                    mask: mask.map(|m| m.clone().narrow(0, 0, rows)),
                };
                self.pooled.insert(name.to_string(), tap.pool(pooling));
            }
            None => {
                self.taps.insert(
                    name.to_string(),
                    Tap {
                        value,
                        mask: mask.cloned(),
                    },
                );
            }
        }
    }
}

/// `llm.hNN` with two digits.
pub fn llm_tap_name(layer: usize, part: &str) -> String {
    format!("llm.h{layer:02}.{part}")
}

/// A list of tap names for messages, the LLM's layers folded: `enc.text, enc.noise, llm.h00 to
/// llm.h22 (each .text and .image), dec.input`.
pub fn describe_taps(names: &[String]) -> String {
    let layers: Vec<usize> = names.iter().filter_map(|n| llm_layer(n)).collect();
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| llm_layer(n).is_none())
        .cloned()
        .collect();
    if let (Some(lo), Some(hi)) = (layers.iter().min(), layers.iter().max()) {
        let at = out.len().min(2);
        out.insert(
            at,
            format!("llm.h{lo:02} to llm.h{hi:02} (each .text and .image)"),
        );
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// Layer number of an LLM tap name (`llm.h12.text` -> 12).
pub fn llm_layer(tap: &str) -> Option<usize> {
    tap.strip_prefix("llm.h")?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;

    type B = burn::backend::Flex;

    #[test]
    fn pooling_without_bos_leaves_out_text_position_0_and_only_there() {
        let device = Default::default();
        // Two rows of three tokens, width 2; the second row has two valid tokens.
        let value = Tensor::<B, 3>::from_data(
            TensorData::new(
                vec![
                    10.0f32, 20.0, 1.0, 2.0, 3.0, 4.0, 50.0, 60.0, 5.0, 7.0, 9.0, 9.0,
                ],
                [2, 3, 2],
            ),
            &device,
        );
        let mask = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![1i64, 1, 1, 1, 1, 0], [2, 3]),
            &device,
        );
        let tap = Tap {
            value: value.clone(),
            mask: Some(mask),
        };
        let pooled = |p: TapPooling| tap.pool(p).into_data().to_vec::<f32>().unwrap();
        assert_eq!(
            pooled(TapPooling::Mean),
            vec![14.0 / 3.0, 26.0 / 3.0, 27.5, 33.5]
        );
        assert_eq!(pooled(TapPooling::MeanWithoutBos), vec![2.0, 3.0, 5.0, 7.0]);
        // Image taps (no mask) are pooled over every token either way.
        let image = Tap { value, mask: None };
        assert_eq!(
            image
                .pool(TapPooling::MeanWithoutBos)
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            image
                .pool(TapPooling::Mean)
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        );
        assert_eq!(
            TapPooling::LayerNormMean.without_bos(true).name(),
            "layer_norm_mean_without_bos"
        );
        assert!(TapPooling::LayerNormMeanWithoutBos.layer_norm());
    }
}
