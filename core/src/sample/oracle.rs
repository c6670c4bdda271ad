//! The shapes oracle on generated images: each image's adherence to its own prompt, and the
//! chance level of the same images scored against another scene's prompt.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::checkpoint::{CheckpointChoice, LoadedRun, Weights, load_run_model};
use crate::data::shapes::{mean_adherence, score};
use crate::data::{Adherence, DataSource, Margin, Scene, ShapesDataset};
use crate::flow::rectified::SamplerConfig;
use crate::sample::error::SampleError;
use crate::sample::generate::Generator;

/// An oracle evaluation: the adherence of each image to its own prompt, and the chance level of
/// the same images, each scored against another image's prompt (scene `i + 1`): what a model
/// that drew equally clean shapes while ignoring its prompt would score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapesEval {
    pub adherence: Adherence,
    pub chance: Adherence,
    /// Adherence above chance, paired per image: its mean, SE and number of images.
    pub margin: Margin,
}

/// Oracle prompt adherence of a generator on shapes `scenes` (one seed, batches of
/// `batch_size`).
pub fn shapes_adherence<B: Backend>(
    generator: &Generator<'_, B>,
    scenes: &[Scene],
    sampler: &SamplerConfig,
    seed: u64,
    batch_size: usize,
    device: &B::Device,
) -> Result<ShapesEval, SampleError> {
    let captions: Vec<String> = scenes.iter().map(|s| s.caption()).collect();
    let pixels = generator.generate(&captions, seed, sampler, batch_size, device)?;
    let size = generator.flow.image_size;
    let images: Vec<&[f32]> = pixels.chunks(3 * size * size).collect();
    let scores: Vec<_> = scenes
        .iter()
        .zip(&images)
        .map(|(scene, img)| score(scene, img, size))
        .collect();
    let n = scenes.len();
    let chance: Vec<_> = (0..n)
        .map(|i| score(&scenes[(i + 1) % n], images[i], size))
        .collect();
    let diffs: Vec<f64> = scores
        .iter()
        .zip(&chance)
        .map(|(own, other)| own.overall - other.overall)
        .collect();
    Ok(ShapesEval {
        adherence: mean_adherence(&scores),
        chance: mean_adherence(&chance),
        margin: Margin::of(&diffs),
    })
}

/// Oracle prompt adherence of a run on held-out shapes scenes: samples `n` scenes of a data seed
/// the training never used and scores each image against its scene.
pub fn evaluate_shapes<B: Backend>(
    run_dir: &Path,
    n: usize,
    sampler: &SamplerConfig,
    seed: u64,
    weights: Weights,
    checkpoint: CheckpointChoice,
    device: &B::Device,
) -> Result<ShapesEval, SampleError> {
    let LoadedRun {
        config,
        flow,
        model,
        tokenizer,
        ..
    } = load_run_model::<B>(run_dir, weights, checkpoint, device)?;
    let DataSource::Shapes {
        seed: data_seed, ..
    } = config.data
    else {
        return Err(SampleError::NotShapes);
    };
    let held_out = ShapesDataset::held_out(data_seed, n);
    let scenes: Vec<_> = (0..n).map(|i| held_out.scene(i)).collect();
    let codec = flow.codec.build::<B>()?;
    let generator = Generator {
        model: &model,
        flow: &flow,
        codec: codec.as_ref(),
        tokenizer: &tokenizer,
    };
    shapes_adherence(&generator, &scenes, sampler, seed, 16, device)
}
