//! Sampling a trained run with taps at every solver step (the paper's 7.4 protocol): Euler + CFG
//! from one checkpoint (EMA weights by default), batched prompts, noise per prompt and seed,
//! images as PNG (optionally the decoded `x_t` of every step, for the trajectory viewer), and
//! every requested tap pooled per prompt on the conditional branch into a feature store
//! ([`crate::store`]); a [`ProbeObserver`] sees every batch's rows as they are computed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::checkpoint::{CheckpointChoice, LoadedRun, Weights, load_run_model};
use crate::codec::LatentCodec;
use crate::flow::rectified::{SamplerConfig, StepSink, sample_euler};
use crate::flow::taps::describe_taps;
use crate::flow::{FlowConfig, TapRequest};
use crate::run::RunLock;
use crate::sample::error::{SampleError, io};
use crate::sample::generate::{batch_noise, prompt_batches, text_batch, to_host};
use crate::sample::image::write_png;
use crate::store::{
    ProbeDtype, ProbeObserver, SeedRows, StoreHeader, StoreMode, StoreName, StorePaths, StoreWriter,
};
use crate::tokenizer::PaddingSide;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub prompts: Vec<String>,
    pub seeds: Vec<u64>,
    pub sampler: SamplerConfig,
    pub taps: TapRequest,
    pub batch_size: usize,
    pub weights: Weights,
    pub checkpoint: CheckpointChoice,
    pub probe_dtype: ProbeDtype,
    /// Also write the decoded `x_t` of every solver step.
    pub previews: bool,
    /// The feature store (`probes`; experiments use their own, e.g. `probes-exp1`, whose
    /// images go to `<store>/samples/`).
    pub store: StoreName,
    /// Only these solver steps are written (all when `None`).
    pub tap_steps: Option<Vec<usize>>,
}

/// One seed's pooled taps as they arrive, handed to the observer and kept for the store.
pub(crate) struct Collector<'a, B: Backend> {
    pub(crate) rows: SeedRows,
    pub(crate) offset: usize,
    /// The steps kept (all when `None`).
    keep: Option<Vec<usize>>,
    pub(crate) observer: &'a mut dyn ProbeObserver,
    /// Decoded previews: the codec, the store's paths and the image size.
    previews: Option<(&'a dyn LatentCodec<B>, &'a StorePaths, usize)>,
    error: Option<SampleError>,
}

impl<'a, B: Backend> Collector<'a, B> {
    pub(crate) fn new(
        seed: u64,
        n: usize,
        keep: Option<Vec<usize>>,
        observer: &'a mut dyn ProbeObserver,
    ) -> Self {
        Self {
            rows: SeedRows::new(seed, n),
            offset: 0,
            keep,
            observer,
            previews: None,
            error: None,
        }
    }

    pub(crate) fn add(&mut self, step: usize, name: &str, pooled: Tensor<B, 2>) {
        if self.keep.as_ref().is_some_and(|k| !k.contains(&step)) {
            return;
        }
        let [_, w] = pooled.dims();
        let rows = to_host(pooled);
        let seed = self.rows.seed;
        self.observer
            .on_rows(seed, step, name, self.offset, &rows, w);
        self.rows.add(name, step, self.offset, &rows, w);
    }
}

impl<B: Backend> StepSink<B> for Collector<'_, B> {
    fn on_step(&mut self, step: usize, _t: f32, taps: BTreeMap<String, Tensor<B, 2>>) {
        for (name, pooled) in taps {
            self.add(step, &name, pooled);
        }
    }

    fn on_state(&mut self, step: usize, _t: f32, z: &Tensor<B, 4>) {
        let Some((codec, paths, size)) = &self.previews else {
            return;
        };
        let pixels = to_host(codec.decode(z.clone()));
        let per = 3 * size * size;
        for (k, img) in pixels.chunks(per).enumerate() {
            let path = paths.preview_png(self.rows.seed, self.offset + k, step);
            if let Err(e) = write_png(&path, img, *size)
                && self.error.is_none()
            {
                self.error = Some(e);
            }
        }
    }
}

/// An error unless every tap pattern names a tap of the model.
pub(crate) fn check_taps(taps: &TapRequest, flow: &FlowConfig) -> Result<(), SampleError> {
    let have = flow.tap_names();
    let unmatched = taps.unmatched(&have);
    if unmatched.is_empty() {
        return Ok(());
    }
    Err(SampleError::UnknownTap {
        patterns: unmatched.join("`, `"),
        have: describe_taps(&have),
    })
}

/// Samples `request` from the run in `run_dir`; returns the folder of the feature store.
pub fn sample_run<B: Backend>(
    run_dir: &Path,
    request: &SampleRequest,
    observer: &mut dyn ProbeObserver,
    device: &B::Device,
) -> Result<PathBuf, SampleError> {
    let LoadedRun {
        run,
        flow,
        model,
        step,
        tokenizer,
        ..
    } = load_run_model::<B>(run_dir, request.weights, request.checkpoint, device)?;
    // One writer at a time: a training run or another sampler on this run is refused.
    let _lock = RunLock::acquire(run.root())?;
    check_taps(&request.taps, &flow)?;
    let codec = flow.codec.build::<B>()?;
    let n = request.prompts.len();
    let tokens =
        tokenizer.encode_batch(&request.prompts, Some(flow.text_len), PaddingSide::Right)?;
    let shape = [flow.latent_channels, flow.latent_size, flow.latent_size];
    let config = &request.sampler;
    config.check()?;
    if config.pooling.excludes_bos() && !tokenizer.add_bos {
        return Err(SampleError::NoBos(config.pooling.name().into()));
    }
    let paths = StorePaths::new(run.root(), request.store.clone());
    let mut store = StoreWriter::create(
        paths.clone(),
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts: request.prompts.clone(),
            times: (0..config.steps)
                .map(|k| k as f32 / config.steps as f32)
                .collect(),
            cfg: config.cfg,
            pooling: config.pooling,
            dtype: request.probe_dtype,
            checkpoint_step: step,
            weights: request.weights,
            tap_steps: request.tap_steps.clone(),
        },
    )?;
    for &seed in &request.seeds {
        let samples = paths.samples(seed);
        std::fs::create_dir_all(&samples).map_err(io(&samples))?;
        let mut collector = Collector::new(seed, n, request.tap_steps.clone(), &mut *observer);
        if request.previews {
            let dir = paths.previews(seed);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            collector.previews = Some((codec.as_ref(), &paths, flow.image_size));
        }
        for range in prompt_batches(n, request.batch_size) {
            let text = text_batch::<B>(&tokens, range.clone(), tokenizer.pad_id, device);
            let z0 = batch_noise::<B>(seed, range.clone(), 0, shape, device);
            collector.offset = range.start;
            let x = sample_euler(&model, z0, text, config, &request.taps, &mut collector)?;
            if let Some(e) = collector.error.take() {
                return Err(e);
            }
            let pixels = to_host(codec.decode(x));
            let per = 3 * flow.image_size * flow.image_size;
            for (k, i) in range.enumerate() {
                write_png(
                    &paths.sample_png(seed, i),
                    &pixels[k * per..(k + 1) * per],
                    flow.image_size,
                )?;
            }
        }
        let Collector { rows, observer, .. } = collector;
        store.write_seed(rows)?;
        observer.on_seed_done(seed);
    }
    Ok(paths.dir())
}
