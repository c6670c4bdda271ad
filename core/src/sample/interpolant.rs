//! The interpolant mode: taps the model on `z_t = t x + (1 - t) z0` of held-out data at given
//! times (conditional branch, no guidance) instead of on the sampler's trajectory, into the
//! feature store `probes-interpolant/` (same layout, `mode = interpolant`, step KK = the KK-th
//! time).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint::{CheckpointChoice, LoadedRun, Weights, load_run_model};
use crate::data::{DataSource, ShapesDataset};
use crate::flow::rectified::interpolate;
use crate::flow::{TapPooling, TapRequest};
use crate::run::RunLock;
use crate::sample::error::SampleError;
use crate::sample::generate::{batch_noise, prompt_batches, text_batch};
use crate::sample::trajectory::{Collector, check_taps};
use crate::store::{
    ProbeDtype, ProbeObserver, StoreHeader, StoreMode, StoreName, StorePaths, StoreWriter,
};
use crate::tokenizer::PaddingSide;

/// The interpolant mode: what to probe.
#[derive(Debug, Clone)]
pub struct InterpolantRequest {
    /// Times `t` of `z_t = t x + (1 - t) z0`.
    pub times: Vec<f32>,
    /// Held-out examples to use.
    pub n: usize,
    pub seeds: Vec<u64>,
    pub taps: TapRequest,
    pub pooling: TapPooling,
    pub batch_size: usize,
    pub weights: Weights,
    pub checkpoint: CheckpointChoice,
    pub probe_dtype: ProbeDtype,
    /// Held-out data; `None`: held-out scenes of the run's shapes set.
    pub data: Option<DataSource>,
}

/// Pixels `[n, 3, s, s]` and captions of up to `n` held-out examples.
fn held_out(
    request: &InterpolantRequest,
    training_data: &DataSource,
    size: usize,
) -> Result<(Vec<f32>, Vec<String>), SampleError> {
    let (mut pixels, mut captions) = (Vec::new(), Vec::new());
    match &request.data {
        Some(source) => {
            let ds = source.open()?;
            for i in 0..ds.len() {
                if captions.len() == request.n {
                    break;
                }
                if let Ok(ex) = ds.get(i, size) {
                    pixels.extend(ex.pixels);
                    captions.push(ex.caption);
                }
            }
        }
        None => {
            let DataSource::Shapes { seed, .. } = training_data else {
                return Err(SampleError::NoHeldOutShapes);
            };
            let held_out = ShapesDataset::held_out(*seed, request.n);
            for i in 0..request.n {
                let (p, c) = held_out.item(i, size);
                pixels.extend(p);
                captions.push(c);
            }
        }
    }
    Ok((pixels, captions))
}

/// Taps the model on interpolants of held-out data; writes `probes-interpolant/` in the layout
/// of [`crate::sample::trajectory::sample_run`], with the times in the manifest.
pub fn probe_interpolant<B: Backend>(
    run_dir: &Path,
    request: &InterpolantRequest,
    observer: &mut dyn ProbeObserver,
    device: &B::Device,
) -> Result<PathBuf, SampleError> {
    let LoadedRun {
        run,
        config,
        flow,
        model,
        step,
        tokenizer,
    } = load_run_model::<B>(run_dir, request.weights, request.checkpoint, device)?;
    // One writer at a time: a training run or another sampler on this run is refused.
    let _lock = RunLock::acquire(run.root())?;
    check_taps(&request.taps, &flow)?;
    if request.times.iter().any(|t| !(0.0..=1.0).contains(t)) {
        return Err(SampleError::Times);
    }
    let codec = flow.codec.build::<B>()?;
    let size = flow.image_size;
    let (pixels, captions) = held_out(request, &config.data, size)?;
    let n = captions.len();
    if n == 0 {
        return Err(SampleError::NoHeldOut);
    }
    let tokens = tokenizer.encode_batch(&captions, Some(flow.text_len), PaddingSide::Right)?;
    let shape = [flow.latent_channels, flow.latent_size, flow.latent_size];
    let paths = StorePaths::new(run.root(), StoreName::interpolant());
    let mut store = StoreWriter::create(
        paths.clone(),
        StoreHeader {
            mode: StoreMode::Interpolant,
            prompts: captions,
            times: request.times.clone(),
            cfg: 1.0,
            pooling: request.pooling,
            dtype: request.probe_dtype,
            checkpoint_step: step,
            weights: request.weights,
            tap_steps: None,
        },
    )?;
    let per = 3 * size * size;
    for &seed in &request.seeds {
        let mut collector = Collector::<B>::new(seed, n, None, &mut *observer);
        for range in prompt_batches(n, request.batch_size) {
            let b = range.len();
            let x = codec.encode(Tensor::from_data(
                TensorData::new(
                    pixels[range.start * per..range.end * per].to_vec(),
                    [b, 3, size, size],
                ),
                device,
            ));
            let z0 = batch_noise::<B>(seed, range.clone(), 0, shape, device);
            collector.offset = range.start;
            let taps = request.taps.pooled_at_once(request.pooling, b);
            for (k, &t) in request.times.iter().enumerate() {
                let tt = Tensor::<B, 1>::from_data(TensorData::new(vec![t; b], [b]), device);
                let zt = interpolate(&x, &z0, &tt);
                let text = text_batch::<B>(&tokens, range.clone(), tokenizer.pad_id, device);
                let out = model.forward(zt, tt, text.ids, text.mask, &taps)?;
                for (name, pooled) in out.pooled {
                    collector.add(k, &name, pooled);
                }
            }
        }
        let Collector { rows, observer, .. } = collector;
        store.write_seed(rows)?;
        observer.on_seed_done(seed);
    }
    Ok(paths.dir())
}
