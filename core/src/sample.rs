//! Sampling a trained run with taps at every solver step (the paper's 7.4 protocol): Euler +
//! CFG from the run's latest checkpoint (EMA weights), batched prompts, noise drawn per prompt
//! and seed (so results do not depend on the batch size), images written as PNG, and every
//! requested tap pooled per prompt on the conditional branch into the run's feature store:
//!
//! `probes/<tap>/seed<S>_step<KK>.npy`, f32 `[n_prompts, width]`, plus `probes/manifest.json`
//! (written last, atomically, after each seed: a reader sees only complete seeds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::flow::rectified::{SamplerConfig, StepSink, normal_noise, sample_euler};
use crate::flow::{FlowConfig, FlowModel, TapPooling, TapRequest};
use crate::run::RunDir;
use crate::tokenizer::{LlamaTokenizer, PaddingSide};
use crate::train::{TrainConfig, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> SampleError {
    SampleError::Other(e.to_string())
}

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub prompts: Vec<String>,
    pub seeds: Vec<u64>,
    pub sampler: SamplerConfig,
    pub taps: TapRequest,
    pub batch_size: usize,
    /// Use the EMA weights (JanusFlow evaluates the EMA model).
    pub ema: bool,
}

#[derive(Debug, Serialize)]
struct ProbeManifest<'a> {
    format: &'static str,
    prompts: &'a [String],
    seeds: Vec<u64>,
    steps: usize,
    times: Vec<f32>,
    cfg: f32,
    pooling: &'static str,
    branch: &'static str,
    taps: BTreeMap<String, usize>,
    checkpoint_step: usize,
    weights: &'static str,
}

/// Collects one seed's pooled taps: `values[tap][step]` = rows of all prompt batches.
struct Collector {
    offset: usize,
    n: usize,
    values: BTreeMap<String, Vec<Vec<f32>>>,
    widths: BTreeMap<String, usize>,
    steps: usize,
}

impl<B: Backend> StepSink<B> for Collector {
    fn on_step(&mut self, step: usize, _t: f32, taps: BTreeMap<String, Tensor<B, 2>>) {
        for (name, pooled) in taps {
            let [b, w] = pooled.dims();
            self.widths.insert(name.clone(), w);
            let slots = self
                .values
                .entry(name)
                .or_insert_with(|| vec![vec![0f32; self.n * w]; self.steps]);
            let rows: Vec<f32> = pooled.into_data().to_vec().expect("f32 taps");
            slots[step][self.offset * w..(self.offset + b) * w].copy_from_slice(&rows);
        }
    }
}

/// Maps `[-1, 1]` pixels `[3, s, s]` to an RGB PNG.
pub fn write_png(path: &Path, pixels: &[f32], size: usize) -> Result<(), SampleError> {
    let mut img = image::RgbImage::new(size as u32, size as u32);
    for y in 0..size {
        for x in 0..size {
            let px = [0, 1, 2].map(|c| {
                (((pixels[(c * size + y) * size + x] + 1.0) * 127.5).round()).clamp(0.0, 255.0)
                    as u8
            });
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    let tmp = path.with_extension("partial.png");
    img.save(&tmp)
        .map_err(|e| other(format!("{}: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| other(format!("{}: {e}", path.display())))
}

/// A run loaded for sampling.
pub struct LoadedRun<B: Backend> {
    pub run: RunDir,
    pub config: TrainConfig,
    pub flow: FlowConfig,
    pub model: FlowModel<B>,
    /// The step of the checkpoint the weights come from.
    pub step: usize,
    pub tokenizer: LlamaTokenizer,
}

/// The run's configs, its latest checkpoint's EMA (or raw) weights and its tokenizer.
pub fn load_run_model<B: Backend>(
    run_dir: &Path,
    ema: bool,
    device: &B::Device,
) -> Result<LoadedRun<B>, SampleError> {
    let run = RunDir::open(run_dir)?;
    let config: TrainConfig = run.config()?;
    let flow = FlowConfig::preset(&config.preset, config.variant).map_err(SampleError::Other)?;
    let Some((step, ckpt)) = Trainer::<burn::backend::Autodiff<B>>::checkpoints(&run).pop() else {
        return Err(SampleError::Other(format!(
            "{} has no checkpoint yet; train it first",
            run_dir.display()
        )));
    };
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let file = ckpt.join(if ema { "ema" } else { "model" });
    let record = recorder
        .load(file.clone(), device)
        .map_err(|e| other(format!("{}: {e}", file.display())))?;
    let model = FlowModel::<B>::init(&flow, device).load_record(record);
    let tokenizer = LlamaTokenizer::from_path(run.path("tokenizer.json")).map_err(other)?;
    Ok(LoadedRun {
        run,
        config,
        flow,
        model,
        step,
        tokenizer,
    })
}

/// Samples `request` from the run in `run_dir`; returns the folder of the feature store.
pub fn sample_run<B: Backend>(
    run_dir: &Path,
    request: &SampleRequest,
    device: &B::Device,
) -> Result<PathBuf, SampleError> {
    let LoadedRun {
        run,
        flow,
        model,
        step,
        tokenizer,
        ..
    } = load_run_model::<B>(run_dir, request.ema, device)?;
    let n = request.prompts.len();
    let tl = flow.text_len;
    let tokens = tokenizer
        .encode_batch(&request.prompts, Some(tl), PaddingSide::Right)
        .map_err(other)?;
    let (c, s) = (flow.latent_channels, flow.latent_size);
    let probes = run.path("probes");
    let mut config = request.sampler.clone();
    config.pad_id = tokenizer.pad_id;
    let mut done_seeds = Vec::new();
    let mut widths = BTreeMap::new();
    for &seed in &request.seeds {
        let mut collector = Collector {
            offset: 0,
            n,
            values: BTreeMap::new(),
            widths: BTreeMap::new(),
            steps: config.steps,
        };
        let samples = run.path("samples").join(format!("seed{seed}"));
        std::fs::create_dir_all(&samples).map_err(other)?;
        for start in (0..n).step_by(request.batch_size.max(1)) {
            let end = (start + request.batch_size.max(1)).min(n);
            let b = end - start;
            let rows = tokens.rows(start, end);
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.ids, [b, tl]), device);
            let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(rows.mask, [b, tl]), device);
            let z0 = Tensor::cat(
                (start..end)
                    .map(|i| {
                        let mut rng =
                            ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ i as u64);
                        normal_noise::<B, 4>(&mut rng, [1, c, s, s], device)
                    })
                    .collect(),
                0,
            );
            collector.offset = start;
            let x = sample_euler(
                &model,
                z0,
                ids,
                mask,
                &config,
                &request.taps,
                &mut collector,
            )
            .map_err(other)?;
            let pixels: Vec<f32> = x
                .into_data()
                .to_vec()
                .map_err(|e| other(format!("{e:?}")))?;
            for (k, i) in (start..end).enumerate() {
                write_png(
                    &samples.join(format!("{i:04}.png")),
                    &pixels[k * c * s * s..(k + 1) * c * s * s],
                    s,
                )?;
            }
        }
        for (tap, per_step) in &collector.values {
            let dir = probes.join(tap);
            std::fs::create_dir_all(&dir).map_err(other)?;
            let w = collector.widths[tap];
            for (k, values) in per_step.iter().enumerate() {
                crate::npy::write_f32(
                    dir.join(format!("seed{seed}_step{k:02}.npy")),
                    &[n, w],
                    values,
                )
                .map_err(other)?;
            }
        }
        widths.extend(collector.widths);
        done_seeds.push(seed);
        let manifest = ProbeManifest {
            format: "flowlens.probes.v1",
            prompts: &request.prompts,
            seeds: done_seeds.clone(),
            steps: config.steps,
            times: (0..config.steps)
                .map(|k| k as f32 / config.steps as f32)
                .collect(),
            cfg: config.cfg,
            pooling: match config.pooling {
                TapPooling::Mean => "mean",
                TapPooling::LayerNormMean => "layer_norm_mean",
            },
            branch: "conditional",
            taps: widths.clone(),
            checkpoint_step: step,
            weights: if request.ema { "ema" } else { "model" },
        };
        std::fs::create_dir_all(&probes).map_err(other)?;
        crate::fsutil::write_atomic(
            &probes.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)
                .map_err(other)?
                .as_bytes(),
        )
        .map_err(other)?;
    }
    Ok(probes)
}

/// Oracle prompt adherence of a run on held-out shapes scenes: samples `n` scenes of a data seed
/// the training never used and scores each image against its scene.
pub fn evaluate_shapes<B: Backend>(
    run_dir: &Path,
    n: usize,
    sampler: &SamplerConfig,
    seed: u64,
    ema: bool,
    device: &B::Device,
) -> Result<crate::data::Adherence, SampleError> {
    use crate::data::shapes::{mean_adherence, score};
    let LoadedRun {
        config,
        flow,
        model,
        tokenizer,
        ..
    } = load_run_model::<B>(run_dir, ema, device)?;
    // A data seed disjoint from training's.
    let held_out = crate::data::ShapesDataset::new(config.data_seed ^ 0xE7A1_5EED, n);
    let scenes: Vec<_> = (0..n).map(|i| held_out.scene(i)).collect();
    let captions: Vec<String> = scenes.iter().map(|s| s.caption()).collect();
    let (c, s, tl) = (flow.latent_channels, flow.latent_size, flow.text_len);
    let mut sampler = sampler.clone();
    sampler.pad_id = tokenizer.pad_id;
    let mut scores = Vec::with_capacity(n);
    for start in (0..n).step_by(16) {
        let end = (start + 16).min(n);
        let b = end - start;
        let tokens = tokenizer
            .encode_batch(&captions[start..end], Some(tl), PaddingSide::Right)
            .map_err(other)?;
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.ids, [b, tl]), device);
        let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.mask, [b, tl]), device);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ start as u64);
        let z0 = normal_noise::<B, 4>(&mut rng, [b, c, s, s], device);
        let x = sample_euler(
            &model,
            z0,
            ids,
            mask,
            &sampler,
            &TapRequest::none(),
            &mut crate::flow::rectified::NoSink,
        )
        .map_err(other)?;
        let pixels: Vec<f32> = x
            .into_data()
            .to_vec()
            .map_err(|e| other(format!("{e:?}")))?;
        for (k, scene) in scenes[start..end].iter().enumerate() {
            scores.push(score(scene, &pixels[k * c * s * s..(k + 1) * c * s * s], s));
        }
    }
    Ok(mean_adherence(&scores))
}
