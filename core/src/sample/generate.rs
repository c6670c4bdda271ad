//! Generating images from a flow model: prompts in batches, each prompt's noise drawn from
//! (seed, prompt index) so that results do not depend on the batch size, Euler + CFG, decoded by
//! the codec.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::codec::LatentCodec;
use crate::flow::rectified::{NoSink, SamplerConfig, TextBatch, sample_euler};
use crate::flow::{FlowConfig, FlowModel, TapRequest};
use crate::noise::normal_noise;
use crate::sample::error::SampleError;
use crate::tokenizer::{LlamaTokenizer, TokenBatch};

/// Noise of prompt `index` under `seed`, `[1, c, h, w]`: the same whatever the batching.
pub fn prompt_noise<B: Backend>(
    seed: u64,
    index: usize,
    shape: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ index as u64);
    normal_noise::<B, 4>(&mut rng, [1, shape[0], shape[1], shape[2]], device)
}

/// The noise of prompts `range` (offset by `first` in a longer list), `[len, c, h, w]`.
pub fn batch_noise<B: Backend>(
    seed: u64,
    range: Range<usize>,
    first: usize,
    shape: [usize; 3],
    device: &B::Device,
) -> Tensor<B, 4> {
    Tensor::cat(
        range
            .map(|i| prompt_noise::<B>(seed, first + i, shape, device))
            .collect(),
        0,
    )
}

/// The prompt ranges `0..b`, `b..2b`, ... covering `n` prompts in batches of `batch_size`
/// (at least 1).
pub fn prompt_batches(n: usize, batch_size: usize) -> impl Iterator<Item = Range<usize>> {
    let b = batch_size.max(1);
    (0..n)
        .step_by(b)
        .map(move |start| start..(start + b).min(n))
}

/// Rows `range` of tokenized prompts as tensors, with the tokenizer's pad id.
pub fn text_batch<B: Backend>(
    tokens: &TokenBatch,
    range: Range<usize>,
    pad_id: u32,
    device: &B::Device,
) -> TextBatch<B> {
    let rows = tokens.rows(range.start, range.end);
    let (b, tl) = (rows.n, rows.len);
    TextBatch {
        ids: Tensor::from_data(TensorData::new(rows.ids, [b, tl]), device),
        mask: Tensor::from_data(TensorData::new(rows.mask, [b, tl]), device),
        pad_id,
    }
}

/// A tensor's values on the host as f32.
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

/// The model, its configuration, codec and tokenizer: what generating needs.
pub struct Generator<'a, B: Backend> {
    pub model: &'a FlowModel<B>,
    pub flow: &'a FlowConfig,
    pub codec: &'a dyn LatentCodec<B>,
    pub tokenizer: &'a LlamaTokenizer,
}

impl<B: Backend> Generator<'_, B> {
    /// The latent shape `[c, h, w]`.
    pub fn latent_shape(&self) -> [usize; 3] {
        [
            self.flow.latent_channels,
            self.flow.latent_size,
            self.flow.latent_size,
        ]
    }

    /// Images for `prompts` with one seed, batch by batch; pixels `[n, 3, S, S]` in [-1, 1].
    pub fn generate(
        &self,
        prompts: &[String],
        seed: u64,
        sampler: &SamplerConfig,
        batch_size: usize,
        device: &B::Device,
    ) -> Result<Vec<f32>, SampleError> {
        self.generate_indexed(prompts, 0, seed, sampler, batch_size, device)
    }

    /// [`Generator::generate`] for prompts `first..first + prompts.len()` of a larger list:
    /// prompt `i` gets the noise of index `first + i`, so a long list can be generated in
    /// chunks with the same images as in one call.
    pub fn generate_indexed(
        &self,
        prompts: &[String],
        first: usize,
        seed: u64,
        sampler: &SamplerConfig,
        batch_size: usize,
        device: &B::Device,
    ) -> Result<Vec<f32>, SampleError> {
        sampler.check()?;
        let tokens = self.tokenizer.encode_batch(
            prompts,
            Some(self.flow.text_len),
            crate::tokenizer::PaddingSide::Right,
        )?;
        let mut out = Vec::new();
        for range in prompt_batches(prompts.len(), batch_size) {
            let text = text_batch::<B>(&tokens, range.clone(), self.tokenizer.pad_id, device);
            let z0 = batch_noise::<B>(seed, range, first, self.latent_shape(), device);
            let x = sample_euler(
                self.model,
                z0,
                text,
                sampler,
                &TapRequest::none(),
                &mut NoSink,
            )?;
            out.extend(to_host(self.codec.decode(x)));
        }
        Ok(out)
    }
}
