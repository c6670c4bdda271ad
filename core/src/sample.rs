//! Sampling a trained run with taps at every solver step (the paper's 7.4 protocol): Euler +
//! CFG from one of the run's checkpoints (EMA weights by default), batched prompts, noise drawn
//! per prompt and seed (so results do not depend on the batch size), images written as PNG
//! (optionally the decoded `x_t` of every step, for the trajectory viewer), and every requested
//! tap pooled per prompt on the conditional branch into the run's feature store:
//!
//! `probes/<tap>/seed<S>_step<KK>.npy`, f32 or f16 `[n_prompts, width]`, plus
//! `probes/manifest.json` (written last, atomically, after each seed: a reader sees only complete
//! seeds). A [`ProbeObserver`] sees every batch's rows as they are computed (the experiments
//! crate keeps streaming CKA accumulators there, so partial results can be shown live).
//!
//! The interpolant mode ([`probe_interpolant`]) taps the model on `z_t = t x + (1 - t) z0` of
//! held-out data at given times instead of on the sampler's trajectory; it writes the same
//! layout under `probes-interpolant/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::codec::LatentCodec;
use crate::data::DataSource;
use crate::flow::rectified::{SamplerConfig, StepSink, interpolate, normal_noise, sample_euler};
use crate::flow::{FlowConfig, FlowModel, TapPooling, TapRequest};
use crate::run::RunDir;
use crate::tokenizer::{LlamaTokenizer, PaddingSide, TokenBatch};
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

/// Which checkpoint of a run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointChoice {
    #[default]
    Latest,
    /// The one `checkpoints/best.json` names.
    Best,
    Step(usize),
}

impl std::str::FromStr for CheckpointChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(Self::Latest),
            "best" => Ok(Self::Best),
            n => n
                .parse()
                .map(Self::Step)
                .map_err(|_| format!("`{s}` is not `latest`, `best` or a step number")),
        }
    }
}

/// Which weights of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// The EMA (JanusFlow evaluates the EMA model).
    #[default]
    Ema,
    /// The second EMA (`ema_decay_2`).
    Ema2,
    /// The raw weights.
    Model,
}

impl Weights {
    fn file(self) -> &'static str {
        match self {
            Weights::Ema => "ema",
            Weights::Ema2 => "ema2",
            Weights::Model => "model",
        }
    }
}

/// Number format of the feature store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeDtype {
    #[default]
    F32,
    F16,
}

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
    /// The feature store's folder in the run (`probes`; experiments use their own, e.g.
    /// `probes-exp1`, whose images go to `<store>/samples/`).
    pub store: String,
    /// Only these solver steps are written (all when `None`).
    pub tap_steps: Option<Vec<usize>>,
}

/// Sees the pooled rows of every tap as batches land: `rows` are prompts
/// `offset..offset + rows.len() / width` of `seed` at solver step (or interpolant time index)
/// `step`.
pub trait ProbeObserver {
    fn on_rows(
        &mut self,
        seed: u64,
        step: usize,
        tap: &str,
        offset: usize,
        rows: &[f32],
        width: usize,
    );
    /// All of `seed`'s probes are on disk.
    fn on_seed_done(&mut self, _seed: u64) {}
}

/// An observer that does nothing.
pub struct NoObserver;

impl ProbeObserver for NoObserver {
    fn on_rows(&mut self, _: u64, _: usize, _: &str, _: usize, _: &[f32], _: usize) {}
}

#[derive(Debug, Serialize)]
struct ProbeManifest<'a> {
    format: &'static str,
    mode: &'static str,
    prompts: &'a [String],
    seeds: Vec<u64>,
    steps: usize,
    times: Vec<f32>,
    cfg: f32,
    pooling: &'static str,
    branch: &'static str,
    dtype: &'static str,
    taps: BTreeMap<String, usize>,
    checkpoint_step: usize,
    weights: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tap_steps: Option<Vec<usize>>,
}

/// One seed's pooled taps: `values[tap][step]` = rows of all prompt batches.
struct Collector<'a, B: Backend> {
    seed: u64,
    offset: usize,
    n: usize,
    values: BTreeMap<String, BTreeMap<usize, Vec<f32>>>,
    widths: BTreeMap<String, usize>,
    /// The steps kept (all when `None`).
    keep: Option<Vec<usize>>,
    observer: &'a mut dyn ProbeObserver,
    /// Decoded previews: the codec and the folder.
    previews: Option<(&'a dyn LatentCodec<B>, PathBuf, usize)>,
    error: Option<SampleError>,
}

impl<'a, B: Backend> Collector<'a, B> {
    fn new(
        seed: u64,
        n: usize,
        keep: Option<Vec<usize>>,
        observer: &'a mut dyn ProbeObserver,
    ) -> Self {
        Self {
            seed,
            offset: 0,
            n,
            values: BTreeMap::new(),
            widths: BTreeMap::new(),
            keep,
            observer,
            previews: None,
            error: None,
        }
    }

    fn add(&mut self, step: usize, name: String, pooled: Tensor<B, 2>) {
        if self.keep.as_ref().is_some_and(|k| !k.contains(&step)) {
            return;
        }
        let [b, w] = pooled.dims();
        self.widths.insert(name.clone(), w);
        let rows: Vec<f32> = pooled
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 taps");
        self.observer
            .on_rows(self.seed, step, &name, self.offset, &rows, w);
        let n = self.n;
        let slot = self
            .values
            .entry(name)
            .or_default()
            .entry(step)
            .or_insert_with(|| vec![0f32; n * w]);
        slot[self.offset * w..(self.offset + b) * w].copy_from_slice(&rows);
    }
}

impl<B: Backend> StepSink<B> for Collector<'_, B> {
    fn on_step(&mut self, step: usize, _t: f32, taps: BTreeMap<String, Tensor<B, 2>>) {
        for (name, pooled) in taps {
            self.add(step, name, pooled);
        }
    }

    fn on_state(&mut self, step: usize, _t: f32, z: &Tensor<B, 4>) {
        let Some((codec, dir, size)) = &self.previews else {
            return;
        };
        let pixels = to_host(codec.decode(z.clone()));
        let per = 3 * size * size;
        for (k, img) in pixels.chunks(per).enumerate() {
            let path = dir.join(format!("{:04}_step{step:02}.png", self.offset + k));
            if let Err(e) = write_png(&path, img, *size)
                && self.error.is_none()
            {
                self.error = Some(e);
            }
        }
    }
}

fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

fn rgb_bytes(pixels: &[f32]) -> impl Iterator<Item = u8> + '_ {
    pixels
        .iter()
        .map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
}

/// Maps `[-1, 1]` pixels `[3, s, s]` to an RGB PNG (written to a temporary name and renamed).
pub fn write_png(path: &Path, pixels: &[f32], size: usize) -> Result<(), SampleError> {
    write_grid_png(path, pixels, size, 1)
}

/// Writes `n` images `[n, 3, s, s]` as one PNG grid of `cols` columns with a 2-pixel white gap.
pub fn write_grid_png(
    path: &Path,
    pixels: &[f32],
    size: usize,
    cols: usize,
) -> Result<(), SampleError> {
    let per = 3 * size * size;
    let n = pixels.len() / per;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = if n > 1 { 2 } else { 0 };
    let (w, h) = (
        cols * size + (cols - 1) * gap,
        rows * size + (rows - 1) * gap,
    );
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    for (i, chunk) in pixels.chunks(per).enumerate() {
        let bytes: Vec<u8> = rgb_bytes(chunk).collect();
        let (ox, oy) = ((i % cols) * (size + gap), (i / cols) * (size + gap));
        for y in 0..size {
            for x in 0..size {
                let px = [0, 1, 2].map(|c| bytes[(c * size + y) * size + x]);
                img.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
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

/// The run's configs, one checkpoint's weights and its tokenizer.
pub fn load_run_model<B: Backend>(
    run_dir: &Path,
    weights: Weights,
    checkpoint: CheckpointChoice,
    device: &B::Device,
) -> Result<LoadedRun<B>, SampleError> {
    type T<B> = Trainer<burn::backend::Autodiff<B>>;
    let run = RunDir::open(run_dir)?;
    let config: TrainConfig = run.config()?;
    let flow = FlowConfig::preset(&config.preset, config.variant).map_err(SampleError::Other)?;
    let all = T::<B>::checkpoints(&run);
    let found = match checkpoint {
        CheckpointChoice::Latest => all.last().cloned(),
        CheckpointChoice::Best => T::<B>::best_checkpoint(&run).map(|(b, dir)| (b.step, dir)),
        CheckpointChoice::Step(s) => all.iter().find(|(k, _)| *k == s).cloned(),
    };
    let Some((step, ckpt)) = found else {
        let have: Vec<String> = all.iter().map(|(s, _)| s.to_string()).collect();
        return Err(SampleError::Other(format!(
            "{} has no {} checkpoint (checkpoints: {}); train it first",
            run_dir.display(),
            match checkpoint {
                CheckpointChoice::Latest => "".to_string(),
                CheckpointChoice::Best => "best".to_string(),
                CheckpointChoice::Step(s) => format!("step-{s}"),
            },
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        )));
    };
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let file = ckpt.join(weights.file());
    let record = recorder.load(file.clone(), device).map_err(|e| {
        other(format!(
            "{}: {e}{}",
            file.display(),
            if weights == Weights::Ema2 {
                " (the run needs ema_decay_2 for a second EMA)"
            } else {
                ""
            }
        ))
    })?;
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

fn id_tensors<B: Backend>(
    rows: TokenBatch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let (b, tl) = (rows.n, rows.len);
    (
        Tensor::from_data(TensorData::new(rows.ids, [b, tl]), device),
        Tensor::from_data(TensorData::new(rows.mask, [b, tl]), device),
    )
}

/// Generates images for `prompts` (which are prompts `first..` of a larger list, for the noise)
/// with one seed, batch by batch; returns pixels `[n, 3, S, S]` in [-1, 1].
#[allow(clippy::too_many_arguments)]
pub fn generate<B: Backend>(
    model: &FlowModel<B>,
    flow: &FlowConfig,
    codec: &dyn LatentCodec<B>,
    tokenizer: &LlamaTokenizer,
    prompts: &[String],
    seed: u64,
    sampler: &SamplerConfig,
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<f32>, SampleError> {
    generate_indexed(
        model, flow, codec, tokenizer, prompts, 0, seed, sampler, batch_size, device,
    )
}

/// [`generate`] for prompts `first..first + prompts.len()` of a larger list: prompt `i` gets
/// the noise of index `first + i`, so a long list can be generated in chunks with the same
/// images as in one call.
#[allow(clippy::too_many_arguments)]
pub fn generate_indexed<B: Backend>(
    model: &FlowModel<B>,
    flow: &FlowConfig,
    codec: &dyn LatentCodec<B>,
    tokenizer: &LlamaTokenizer,
    prompts: &[String],
    first: usize,
    seed: u64,
    sampler: &SamplerConfig,
    batch_size: usize,
    device: &B::Device,
) -> Result<Vec<f32>, SampleError> {
    let shape = [flow.latent_channels, flow.latent_size, flow.latent_size];
    let tokens = tokenizer
        .encode_batch(prompts, Some(flow.text_len), PaddingSide::Right)
        .map_err(other)?;
    let mut sampler = sampler.clone();
    sampler.pad_id = tokenizer.pad_id;
    let mut out = Vec::new();
    for start in (0..prompts.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size.max(1)).min(prompts.len());
        let (ids, mask) = id_tensors::<B>(tokens.rows(start, end), device);
        let z0 = Tensor::cat(
            (start..end)
                .map(|i| prompt_noise::<B>(seed, first + i, shape, device))
                .collect(),
            0,
        );
        let x = sample_euler(
            model,
            z0,
            ids,
            mask,
            &sampler,
            &TapRequest::none(),
            &mut crate::flow::rectified::NoSink,
        )
        .map_err(other)?;
        out.extend(to_host(codec.decode(x)));
    }
    Ok(out)
}

/// Where a feature store is written and what its manifest says.
struct ProbeStore<'a> {
    dir: PathBuf,
    mode: &'static str,
    prompts: &'a [String],
    times: Vec<f32>,
    cfg: f32,
    pooling: TapPooling,
    dtype: ProbeDtype,
    checkpoint_step: usize,
    weights: Weights,
    done_seeds: Vec<u64>,
    widths: BTreeMap<String, usize>,
    tap_steps: Option<Vec<usize>>,
}

impl ProbeStore<'_> {
    /// Writes one seed's arrays, then the manifest that lists it.
    fn write_seed<B: Backend>(&mut self, collector: Collector<'_, B>) -> Result<(), SampleError> {
        let n = self.prompts.len();
        for (tap, per_step) in &collector.values {
            let dir = self.dir.join(tap);
            std::fs::create_dir_all(&dir).map_err(other)?;
            let w = collector.widths[tap];
            for (k, values) in per_step {
                let path = dir.join(format!("seed{}_step{k:02}.npy", collector.seed));
                match self.dtype {
                    ProbeDtype::F32 => crate::npy::write_f32(&path, &[n, w], values),
                    ProbeDtype::F16 => crate::npy::write_f16(&path, &[n, w], values),
                }
                .map_err(|e| other(format!("{}: {e}", path.display())))?;
            }
        }
        self.widths.extend(collector.widths);
        self.done_seeds.push(collector.seed);
        collector.observer.on_seed_done(collector.seed);
        let manifest = ProbeManifest {
            format: "flowlens.probes.v1",
            mode: self.mode,
            prompts: self.prompts,
            seeds: self.done_seeds.clone(),
            steps: self.times.len(),
            times: self.times.clone(),
            cfg: self.cfg,
            pooling: match self.pooling {
                TapPooling::Mean => "mean",
                TapPooling::LayerNormMean => "layer_norm_mean",
            },
            branch: "conditional",
            dtype: match self.dtype {
                ProbeDtype::F32 => "f32",
                ProbeDtype::F16 => "f16",
            },
            taps: self.widths.clone(),
            checkpoint_step: self.checkpoint_step,
            weights: self.weights.file(),
            tap_steps: self.tap_steps.clone(),
        };
        std::fs::create_dir_all(&self.dir).map_err(other)?;
        crate::fsutil::write_atomic(
            &self.dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)
                .map_err(other)?
                .as_bytes(),
        )
        .map_err(other)
    }
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
    let codec = flow.codec.build::<B>().map_err(other)?;
    let n = request.prompts.len();
    let tokens = tokenizer
        .encode_batch(&request.prompts, Some(flow.text_len), PaddingSide::Right)
        .map_err(other)?;
    let shape = [flow.latent_channels, flow.latent_size, flow.latent_size];
    let mut config = request.sampler.clone();
    config.pad_id = tokenizer.pad_id;
    if request.store.is_empty()
        || request.store.contains(['/', '\\'])
        || request.store.starts_with('.')
    {
        return Err(other(format!(
            "`{}` is not a store name (a plain folder name such as `probes`)",
            request.store
        )));
    }
    let mut store = ProbeStore {
        dir: run.path(&request.store),
        mode: "sampler",
        prompts: &request.prompts,
        times: (0..config.steps)
            .map(|k| k as f32 / config.steps as f32)
            .collect(),
        cfg: config.cfg,
        pooling: config.pooling,
        dtype: request.probe_dtype,
        checkpoint_step: step,
        weights: request.weights,
        done_seeds: Vec::new(),
        widths: BTreeMap::new(),
        tap_steps: request.tap_steps.clone(),
    };
    let samples_root = if request.store == "probes" {
        run.path("samples")
    } else {
        run.path(&request.store).join("samples")
    };
    for &seed in &request.seeds {
        let samples = samples_root.join(format!("seed{seed}"));
        std::fs::create_dir_all(&samples).map_err(other)?;
        let mut collector = Collector::new(seed, n, request.tap_steps.clone(), &mut *observer);
        if request.previews {
            let dir = samples.join("xt");
            std::fs::create_dir_all(&dir).map_err(other)?;
            collector.previews = Some((codec.as_ref(), dir, flow.image_size));
        }
        for start in (0..n).step_by(request.batch_size.max(1)) {
            let end = (start + request.batch_size.max(1)).min(n);
            let (ids, mask) = id_tensors::<B>(tokens.rows(start, end), device);
            let z0 = Tensor::cat(
                (start..end)
                    .map(|i| prompt_noise::<B>(seed, i, shape, device))
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
            if let Some(e) = collector.error.take() {
                return Err(e);
            }
            let pixels = to_host(codec.decode(x));
            let per = 3 * flow.image_size * flow.image_size;
            for (k, i) in (start..end).enumerate() {
                write_png(
                    &samples.join(format!("{i:04}.png")),
                    &pixels[k * per..(k + 1) * per],
                    flow.image_size,
                )?;
            }
        }
        store.write_seed(collector)?;
    }
    Ok(store.dir)
}

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

/// Taps the model on interpolants of held-out data (conditional branch, no guidance); writes
/// `probes-interpolant/` in the layout of [`sample_run`], with the times in the manifest.
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
    if request.times.iter().any(|t| !(0.0..=1.0).contains(t)) {
        return Err(other("interpolant times must lie in [0, 1]"));
    }
    let codec = flow.codec.build::<B>().map_err(other)?;
    let size = flow.image_size;
    // Held-out examples: pixels and captions.
    let (pixels, captions) = match &request.data {
        Some(source) => {
            let ds = source.open().map_err(other)?;
            let (mut pixels, mut captions) = (Vec::new(), Vec::new());
            for i in 0..ds.len() {
                if captions.len() == request.n {
                    break;
                }
                if let Ok(ex) = ds.get(i, size) {
                    pixels.extend(ex.pixels);
                    captions.push(ex.caption);
                }
            }
            (pixels, captions)
        }
        None => {
            let DataSource::Shapes { seed, .. } = config.data else {
                return Err(other(
                    "this run does not train on the shapes set: give held-out data (--data)",
                ));
            };
            let held_out = crate::data::ShapesDataset::held_out(seed, request.n);
            let mut pixels = Vec::new();
            let mut captions = Vec::new();
            for i in 0..request.n {
                let (p, c) = held_out.item(i, size);
                pixels.extend(p);
                captions.push(c);
            }
            (pixels, captions)
        }
    };
    let n = captions.len();
    if n == 0 {
        return Err(other("the held-out data yields no usable example"));
    }
    let tokens = tokenizer
        .encode_batch(&captions, Some(flow.text_len), PaddingSide::Right)
        .map_err(other)?;
    let shape = [flow.latent_channels, flow.latent_size, flow.latent_size];
    let mut store = ProbeStore {
        dir: run.path("probes-interpolant"),
        mode: "interpolant",
        prompts: &captions,
        times: request.times.clone(),
        cfg: 1.0,
        pooling: request.pooling,
        dtype: request.probe_dtype,
        checkpoint_step: step,
        weights: request.weights,
        done_seeds: Vec::new(),
        widths: BTreeMap::new(),
        tap_steps: None,
    };
    let per = 3 * size * size;
    for &seed in &request.seeds {
        let mut collector = Collector::<B>::new(seed, n, None, &mut *observer);
        for start in (0..n).step_by(request.batch_size.max(1)) {
            let end = (start + request.batch_size.max(1)).min(n);
            let b = end - start;
            let x = codec.encode(Tensor::from_data(
                TensorData::new(pixels[start * per..end * per].to_vec(), [b, 3, size, size]),
                device,
            ));
            let z0 = Tensor::cat(
                (start..end)
                    .map(|i| prompt_noise::<B>(seed, i, shape, device))
                    .collect(),
                0,
            );
            collector.offset = start;
            for (k, &t) in request.times.iter().enumerate() {
                let tt = Tensor::<B, 1>::from_data(TensorData::new(vec![t; b], [b]), device);
                let zt = interpolate(&x, &z0, &tt);
                let (ids, mask) = id_tensors::<B>(tokens.rows(start, end), device);
                let out = model
                    .forward(zt, tt, ids, mask, &request.taps)
                    .map_err(other)?;
                for (name, tap) in out.taps {
                    collector.add(k, name, tap.pool(request.pooling));
                }
            }
        }
        store.write_seed(collector)?;
    }
    Ok(store.dir)
}

/// An oracle evaluation: the adherence of each image to its own prompt, and the chance level of
/// the same images, each scored against another image's prompt (scene `i + 1`): what a model
/// that drew equally clean shapes while ignoring its prompt would score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapesEval {
    pub adherence: crate::data::Adherence,
    pub chance: crate::data::Adherence,
}

/// Oracle prompt adherence of `model` on shapes `scenes` (one seed, batches of `batch_size`).
#[allow(clippy::too_many_arguments)]
pub fn shapes_adherence<B: Backend>(
    model: &FlowModel<B>,
    flow: &FlowConfig,
    codec: &dyn LatentCodec<B>,
    tokenizer: &LlamaTokenizer,
    scenes: &[crate::data::Scene],
    sampler: &SamplerConfig,
    seed: u64,
    batch_size: usize,
    device: &B::Device,
) -> Result<ShapesEval, SampleError> {
    use crate::data::shapes::{mean_adherence, score};
    let captions: Vec<String> = scenes.iter().map(|s| s.caption()).collect();
    let pixels = generate(
        model, flow, codec, tokenizer, &captions, seed, sampler, batch_size, device,
    )?;
    let per = 3 * flow.image_size * flow.image_size;
    let images: Vec<&[f32]> = pixels.chunks(per).collect();
    let scores: Vec<_> = scenes
        .iter()
        .zip(&images)
        .map(|(scene, img)| score(scene, img, flow.image_size))
        .collect();
    let n = scenes.len();
    let chance: Vec<_> = (0..n)
        .map(|i| score(&scenes[(i + 1) % n], images[i], flow.image_size))
        .collect();
    Ok(ShapesEval {
        adherence: mean_adherence(&scores),
        chance: mean_adherence(&chance),
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
        return Err(other(
            "the oracle scores shapes scenes; this run trains on other data",
        ));
    };
    let held_out = crate::data::ShapesDataset::held_out(data_seed, n);
    let scenes: Vec<_> = (0..n).map(|i| held_out.scene(i)).collect();
    let codec = flow.codec.build::<B>().map_err(other)?;
    shapes_adherence(
        &model,
        &flow,
        codec.as_ref(),
        &tokenizer,
        &scenes,
        sampler,
        seed,
        16,
        device,
    )
}
