//! `flowlens eval`: the paper's evaluation protocol on MJHQ-30k (MODEL.md section 7.4): generate
//! one image per benchmark prompt and seed with the run's sampler, then
//!
//! - FID (pytorch-fid's definition, `flowlens_analysis::fid`) between the generated images'
//!   pool3 features and the benchmark's reference images' features, the latter cached as a
//!   statistics folder (`mu.npy`, `sigma.npy` in f64, `meta.json`) under
//!   `$FLOWLENS_CACHE/fid-stats/<key>/`; optionally per category (the MJHQ convention: each
//!   category's generated images against that category's reference images);
//! - CLIP score x100 (`flowlens_analysis::clip`: cosine of each image with its own prompt,
//!   clamped at 0 per pair, then averaged), with the CLIP folder given by `--clip`.
//!
//! Generated images are quantised to 8 bits first (what saving them as PNG and running
//! pytorch-fid / CLIP on the files would see). Results go to `<run>/eval/mjhq-step<N>.json`
//! and one line per evaluation is appended to `<run>/eval/history.jsonl`.
//!
//! The benchmark folder is MJHQ-30k as Hugging Face ships it: `meta_data.json`
//! (`{"<id>": {"category": "...", "prompt": "..."}, ...}`) and the images in one folder per
//! category, `<category>/<id>.jpg` (or under `mjhq30k_imgs/`, as the zip extracts).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flowlens_analysis::fid::{FidStats, frechet_distance};
use flowlens_core::checkpoint::{CheckpointChoice, LoadedRun, Weights, load_run_model};
use flowlens_core::clip::Clip;
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::inception::{FEATURES, FidInception};
use flowlens_core::sample::Generator;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

/// One benchmark prompt with its reference image.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkItem {
    pub id: String,
    pub prompt: String,
    pub category: String,
    pub image: PathBuf,
}

#[derive(Debug, Deserialize)]
struct MetaEntry {
    prompt: String,
    category: String,
}

/// Reads an MJHQ-format benchmark folder: every entry of `meta_data.json` in id order, with
/// the path of its reference image (checked to exist).
pub fn read_benchmark(dir: &Path) -> Result<Vec<BenchmarkItem>> {
    let meta_path = dir.join("meta_data.json");
    let text = std::fs::read_to_string(&meta_path)
        .with_context(|| format!("cannot read the benchmark index {}", meta_path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let meta: BTreeMap<String, MetaEntry> = serde_path_to_error::deserialize(de).map_err(|e| {
        anyhow!(
            "{}: entry `{}`: {} (expected {{\"<id>\": {{\"prompt\": ..., \"category\": ...}}}})",
            meta_path.display(),
            e.path(),
            e.inner()
        )
    })?;
    if meta.is_empty() {
        bail!("{}: no entries", meta_path.display());
    }
    let roots = [dir.to_path_buf(), dir.join("mjhq30k_imgs")];
    meta.into_iter()
        .map(|(id, entry)| {
            if entry.category.contains(['/', '\\']) || entry.category.starts_with('.') {
                bail!("{}: entry `{id}` has a bad category `{}`", meta_path.display(), entry.category);
            }
            let image = roots
                .iter()
                .flat_map(|root| {
                    ["jpg", "jpeg", "png"]
                        .map(|ext| root.join(&entry.category).join(format!("{id}.{ext}")))
                })
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    anyhow!(
                        "{}: no reference image for entry `{id}` (looked for {}/{}.jpg, .jpeg, .png)",
                        dir.display(),
                        dir.join(&entry.category).display(),
                        id
                    )
                })?;
            Ok(BenchmarkItem {
                id,
                prompt: entry.prompt,
                category: entry.category,
                image,
            })
        })
        .collect()
}

/// Where the Inception weights come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InceptionSource {
    /// The safetensors from tools/convert_fid_inception.py (file or folder).
    File(PathBuf),
    /// Deterministic stand-in weights (`flowlens_core::inception::formula_weights`): the
    /// pipeline runs, but the numbers are not comparable with published FIDs. For tests.
    Formula,
}

impl InceptionSource {
    pub fn parse(s: &str) -> Self {
        if s == "formula" {
            Self::Formula
        } else {
            Self::File(PathBuf::from(s))
        }
    }

    /// A key of the weights' content (a reconverted file of the same length is another key).
    fn id(&self) -> Result<String> {
        Ok(match self {
            Self::Formula => "formula".into(),
            Self::File(p) => format!("{}:{}", p.display(), content_hash(p)?),
        })
    }

    fn load<B: Backend>(&self, device: &B::Device) -> Result<FidInception<B>> {
        Ok(match self {
            Self::Formula => FidInception::new(&flowlens_core::weights::VarBuilder::generated(
                std::rc::Rc::new(flowlens_core::inception::formula_weights),
                device,
            ))?,
            Self::File(p) => FidInception::load(p, device)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct EvalArgs {
    pub run: PathBuf,
    pub benchmark: PathBuf,
    pub n: usize,
    pub seeds: Vec<u64>,
    pub per_category: bool,
    pub clip: PathBuf,
    pub inception: InceptionSource,
    pub sampler: SamplerConfig,
    pub batch_size: usize,
    pub weights: Weights,
    pub checkpoint: CheckpointChoice,
    pub device: DeviceSpec,
    pub progress: bool,
}

/// Mean and sample standard deviation over seeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OverSeeds {
    pub per_seed: Vec<f64>,
    pub mean: f64,
    pub std: f64,
}

impl OverSeeds {
    fn of(values: Vec<f64>) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Self {
            per_seed: values,
            mean,
            std,
        }
    }
}

/// What `flowlens eval` writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalResult {
    pub format: String,
    pub benchmark: String,
    pub step: usize,
    pub n: usize,
    pub seeds: Vec<u64>,
    pub steps: usize,
    pub cfg: f32,
    pub fid: OverSeeds,
    /// CLIP score x100, per-pair clamp then mean.
    pub clip_score: OverSeeds,
    /// Per-category FID (mean over seeds), with `--per-category`.
    pub fid_per_category: BTreeMap<String, OverSeeds>,
    pub inception: String,
    pub clip: String,
    pub reference_stats: String,
}

/// Pixels `[3, s, s]` in [-1, 1] -> the RGB8 image a PNG of them holds.
fn quantise(pixels: &[f32], s: usize) -> image::RgbImage {
    image::RgbImage::from_fn(s as u32, s as u32, |x, y| {
        image::Rgb([0, 1, 2].map(|c| {
            let v = pixels[(c * s + y as usize) * s + x as usize];
            ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
        }))
    })
}

/// pool3 features `[n, 2048]` of RGB8 images (batched when sizes agree).
fn inception_features<B: Backend>(
    net: &FidInception<B>,
    images: &[image::RgbImage],
    device: &B::Device,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(images.len() * FEATURES);
    let mut start = 0;
    while start < images.len() {
        let (w, h) = images[start].dimensions();
        let mut end = start + 1;
        while end < images.len() && end - start < 8 && images[end].dimensions() == (w, h) {
            end += 1;
        }
        let (w, h) = (w as usize, h as usize);
        let mut values = Vec::with_capacity((end - start) * 3 * h * w);
        for img in &images[start..end] {
            let raw = img.as_raw();
            for c in 0..3 {
                values.extend((0..h * w).map(|i| raw[i * 3 + c] as f32 / 255.0));
            }
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [end - start, 3, h, w]), device);
        let f: Vec<f32> = net.forward(x).into_data().to_vec().expect("f32 features");
        out.extend(f.into_iter().map(f64::from));
        start = end;
    }
    out
}

fn stats_of(features: &[f64], rows: &[usize], what: &str) -> Result<FidStats> {
    let mut x = Array2::<f64>::zeros((rows.len(), FEATURES));
    for (r, &i) in rows.iter().enumerate() {
        x.row_mut(r).assign(&ndarray::ArrayView1::from(
            &features[i * FEATURES..(i + 1) * FEATURES],
        ));
    }
    Ok(FidStats::from_features(x.view(), what)?)
}

fn save_stats(dir: &Path, stats: &FidStats) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let d = stats.mu.len();
    flowlens_core::npy::write_f64(
        dir.join("mu.npy"),
        &[d],
        stats.mu.as_slice().expect("contiguous"),
    )?;
    let sigma: Vec<f64> = stats.sigma.iter().copied().collect();
    flowlens_core::npy::write_f64(dir.join("sigma.npy"), &[d, d], &sigma)?;
    Ok(())
}

fn load_stats(dir: &Path) -> Result<FidStats> {
    let mu = flowlens_core::npy::NpyArray::read(dir.join("mu.npy"))?;
    let sigma = flowlens_core::npy::NpyArray::read(dir.join("sigma.npy"))?;
    let d = mu.len();
    if sigma.shape != [d, d] {
        bail!(
            "{}: sigma has shape {:?}, mu has {d} entries",
            dir.display(),
            sigma.shape
        );
    }
    Ok(FidStats::new(
        Array1::from(mu.as_f64()),
        Array2::from_shape_vec((d, d), sigma.as_f64())?,
    )?)
}

/// FNV-1a 64 of a file's bytes, or of a folder's files (sorted by name), streamed.
fn content_hash(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut files = vec![path.to_path_buf()];
    if path.is_dir() {
        files = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
    }
    let mut hash = flowlens_core::fsutil::Fnv64::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        hash.str(&f.display().to_string());
        let mut file =
            std::fs::File::open(&f).with_context(|| format!("cannot read {}", f.display()))?;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", f.display()))?;
            if n == 0 {
                break;
            }
            hash.bytes(&buf[..n]);
        }
    }
    Ok(hash.hex())
}

/// The reference statistics (all selected items, and per category), from the cache or
/// computed and cached. Returns the cache folder too. The cache is keyed on the Inception
/// weights' content and on each reference image's path, length and modification time, so a
/// replaced image or weights file (even of the same size) computes them again.
fn reference_stats<B: Backend>(
    items: &[BenchmarkItem],
    inception: &InceptionSource,
    net: &FidInception<B>,
    device: &B::Device,
    progress: bool,
) -> Result<(FidStats, BTreeMap<String, FidStats>, PathBuf)> {
    let mut key = flowlens_core::fsutil::Fnv64::new();
    let inception_id = inception.id()?;
    key.str("flowlens.fid-stats.v2").str(&inception_id);
    for item in items {
        let meta = std::fs::metadata(&item.image).ok();
        let mtime = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        key.str(&item.id)
            .str(&item.image.display().to_string())
            .u64(meta.map_or(0, |m| m.len()))
            .u64(mtime);
    }
    let dir = flowlens_core::fsutil::cache_root()
        .join("fid-stats")
        .join(format!("{:016x}", key.value()));
    let categories: BTreeMap<String, Vec<usize>> =
        items
            .iter()
            .enumerate()
            .fold(BTreeMap::new(), |mut m, (i, it)| {
                m.entry(it.category.clone()).or_default().push(i);
                m
            });
    if dir.join("meta.json").is_file() {
        let all = load_stats(&dir.join("all"))?;
        let mut per = BTreeMap::new();
        for c in categories.keys() {
            if dir.join("category").join(c).join("mu.npy").is_file() {
                per.insert(c.clone(), load_stats(&dir.join("category").join(c))?);
            }
        }
        return Ok((all, per, dir));
    }
    let mut features = Vec::with_capacity(items.len() * FEATURES);
    for (i, item) in items.iter().enumerate() {
        let img = image::open(&item.image)
            .with_context(|| format!("cannot decode reference image {}", item.image.display()))?
            .to_rgb8();
        features.extend(inception_features(net, &[img], device));
        if progress && (i + 1) % 100 == 0 {
            eprintln!("reference features: {}/{}", i + 1, items.len());
        }
    }
    let all_rows: Vec<usize> = (0..items.len()).collect();
    let all = stats_of(&features, &all_rows, "reference features")?;
    let tmp = flowlens_core::fsutil::partial_dir(&dir);
    let _ = std::fs::remove_dir_all(&tmp);
    save_stats(&tmp.join("all"), &all)?;
    let mut per = BTreeMap::new();
    for (c, rows) in &categories {
        if rows.len() >= 2 {
            let s = stats_of(&features, rows, &format!("reference features of `{c}`"))?;
            save_stats(&tmp.join("category").join(c), &s)?;
            per.insert(c.clone(), s);
        }
    }
    let meta = serde_json::json!({
        "format": "flowlens.fid-stats.v1",
        "inception": inception_id,
        "items": items.len(),
        "categories": categories.iter().map(|(c, r)| (c.clone(), r.len())).collect::<BTreeMap<_, _>>(),
        "files": "all/{mu,sigma}.npy and category/<name>/{mu,sigma}.npy, float64 (np.load them for pytorch-fid)",
    });
    flowlens_core::fsutil::write_atomic(
        &tmp.join("meta.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).with_context(|| format!("cannot publish {}", dir.display()))?;
    Ok((all, per, dir))
}

struct EvalTask(EvalArgs);

impl BackendTask for EvalTask {
    type Output = Result<(EvalResult, PathBuf)>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let a = self.0;
        if a.n == 0 || a.seeds.is_empty() || a.sampler.steps == 0 {
            bail!("--n, --seeds and --steps must be non-empty / at least 1");
        }
        let mut items = read_benchmark(&a.benchmark)?;
        items.truncate(a.n);
        if items.len() < 2 {
            bail!("FID needs at least 2 benchmark items (got {})", items.len());
        }
        let loaded = load_run_model::<B>(&a.run, a.weights, a.checkpoint, &device)?;
        let codec = loaded
            .flow
            .codec
            .build_on::<B>(&device)
            .map_err(anyhow::Error::msg)?;
        let clip = Clip::<B>::load(&a.clip, &device)?;
        let net = a.inception.load::<B>(&device)?;
        let (reference, reference_per_category, stats_dir) =
            reference_stats(&items, &a.inception, &net, &device, a.progress)?;
        let prompts: Vec<String> = items.iter().map(|i| i.prompt.clone()).collect();
        let text_embeds = {
            let mut rows = Vec::new();
            for chunk in prompts.chunks(64) {
                let t: Vec<f32> = clip.embed_texts(chunk)?.into_data().to_vec().expect("f32");
                rows.extend(t.into_iter().map(f64::from));
            }
            rows
        };
        let dim = clip.model.config.projection_dim;
        let s = loaded.flow.image_size;
        let (mut fids, mut clips) = (Vec::new(), Vec::new());
        let mut per_category: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for &seed in &a.seeds {
            let mut images = Vec::with_capacity(items.len());
            for start in (0..prompts.len()).step_by(64) {
                let end = (start + 64).min(prompts.len());
                // `generate` draws prompt i's noise from (seed, i): offsets keep it global.
                let pixels = generate_from(
                    &loaded,
                    codec.as_ref(),
                    &prompts,
                    start,
                    end,
                    seed,
                    &a,
                    &device,
                )?;
                images.extend(pixels.chunks(3 * s * s).map(|p| quantise(p, s)));
                if a.progress {
                    eprintln!("seed {seed}: generated {end}/{}", prompts.len());
                }
            }
            let features = inception_features(&net, &images, &device);
            let rows: Vec<usize> = (0..items.len()).collect();
            let generated = stats_of(&features, &rows, "generated features")?;
            fids.push(frechet_distance(&generated, &reference)?);
            let mut image_embeds = Vec::with_capacity(items.len() * dim);
            for chunk in images.chunks(16) {
                let e: Vec<f32> = clip.embed_images(chunk).into_data().to_vec().expect("f32");
                image_embeds.extend(e.into_iter().map(f64::from));
            }
            let image_embeds = Array2::from_shape_vec((items.len(), dim), image_embeds)?;
            let text = Array2::from_shape_vec((items.len(), dim), text_embeds.clone())?;
            clips.push(flowlens_analysis::clip::clip_score(
                image_embeds.view(),
                text.view(),
            )?);
            if a.per_category {
                for (category, reference) in &reference_per_category {
                    let rows: Vec<usize> = items
                        .iter()
                        .enumerate()
                        .filter(|(_, it)| &it.category == category)
                        .map(|(i, _)| i)
                        .collect();
                    let g = stats_of(
                        &features,
                        &rows,
                        &format!("generated features of `{category}`"),
                    )?;
                    per_category
                        .entry(category.clone())
                        .or_default()
                        .push(frechet_distance(&g, reference)?);
                }
            }
        }
        let result = EvalResult {
            format: "flowlens.eval.mjhq.v1".into(),
            benchmark: a.benchmark.display().to_string(),
            step: loaded.step,
            n: items.len(),
            seeds: a.seeds.clone(),
            steps: a.sampler.steps,
            cfg: a.sampler.cfg,
            fid: OverSeeds::of(fids),
            clip_score: OverSeeds::of(clips),
            fid_per_category: per_category
                .into_iter()
                .map(|(c, v)| (c, OverSeeds::of(v)))
                .collect(),
            inception: a.inception.id()?,
            clip: a.clip.display().to_string(),
            reference_stats: stats_dir.display().to_string(),
        };
        let dir = loaded.run.path("eval");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("mjhq-step{:08}.json", loaded.step));
        flowlens_core::fsutil::write_atomic(
            &path,
            serde_json::to_string_pretty(&result)?.as_bytes(),
        )?;
        let line = serde_json::json!({
            "step": result.step,
            "n": result.n,
            "seeds": result.seeds,
            "fid": result.fid.mean,
            "fid_std": result.fid.std,
            "clip_score": result.clip_score.mean,
            "clip_score_std": result.clip_score.std,
        });
        use std::io::Write;
        let mut history = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("history.jsonl"))?;
        writeln!(history, "{line}")?;
        Ok((result, path))
    }
}

/// Pixels of prompts `start..end` (noise indexed globally, as one `generate` call would).
#[allow(clippy::too_many_arguments)]
fn generate_from<B: Backend>(
    loaded: &LoadedRun<B>,
    codec: &dyn flowlens_core::codec::LatentCodec<B>,
    prompts: &[String],
    start: usize,
    end: usize,
    seed: u64,
    a: &EvalArgs,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let generator = Generator {
        model: &loaded.model,
        flow: &loaded.flow,
        codec,
        tokenizer: &loaded.tokenizer,
    };
    Ok(generator.generate_indexed(
        &prompts[start..end],
        start,
        seed,
        &a.sampler,
        a.batch_size,
        device,
    )?)
}

impl EvalArgs {
    /// The evaluation that training runs at its checkpoints (EMA weights, 8 prompts a batch,
    /// the training's own device; `run` and `checkpoint` are filled in per call).
    pub fn for_training(
        benchmark: PathBuf,
        n: usize,
        seeds: Vec<u64>,
        clip: PathBuf,
        inception: &str,
        solver_steps: usize,
    ) -> Self {
        Self {
            run: PathBuf::new(),
            benchmark,
            n,
            seeds,
            per_category: false,
            clip,
            inception: InceptionSource::parse(inception),
            sampler: SamplerConfig {
                steps: solver_steps,
                ..Default::default()
            },
            batch_size: 8,
            weights: Weights::Ema,
            checkpoint: CheckpointChoice::Latest,
            device: DeviceSpec::Cpu,
            progress: false,
        }
    }
}

/// MJHQ evaluation during training: `args` (its `run` and `checkpoint` are set per call) at
/// the checkpoints whose step is a multiple of `every`, and at the last step.
#[derive(Debug, Clone)]
pub struct TrainingEval {
    pub every: usize,
    pub args: EvalArgs,
}

impl TrainingEval {
    pub fn due(&self, step: usize, last: bool) -> bool {
        last || (self.every > 0 && step.is_multiple_of(self.every))
    }

    /// Evaluates checkpoint `step` of `run` (EMA weights as configured) and appends an
    /// `{"event": "eval_mjhq", "step", "fid", "fid_std", "clip_score", "clip_score_std", "n"}`
    /// record to the run's metrics.
    pub fn evaluate<B: Backend>(
        &self,
        run: &Path,
        step: usize,
        device: &B::Device,
    ) -> Result<EvalResult> {
        let mut args = self.args.clone();
        args.run = run.to_path_buf();
        args.checkpoint = CheckpointChoice::Step(step);
        args.progress = false;
        let (result, _) = EvalTask(args).run::<B>(device.clone())?;
        let run_dir = flowlens_core::run::RunDir::open(run)?;
        run_dir
            .metrics_writer()?
            .record(flowlens_core::run::Event::EvalMjhq {
                step,
                n: result.n,
                fid: result.fid.mean,
                fid_std: result.fid.std,
                clip_score: result.clip_score.mean,
                clip_score_std: result.clip_score.std,
            })?;
        Ok(result)
    }
}

/// `flowlens eval`: returns the results and the file they were written to. It holds the run's
/// writer lock (the evaluation during training runs under the trainer's).
pub fn run(a: EvalArgs) -> Result<(EvalResult, PathBuf)> {
    let _lock = flowlens_core::run::RunLock::acquire(&a.run)?;
    let device = a.device;
    device.run(EvalTask(a))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_the_same_length_but_other_bytes_are_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pt_inception.safetensors");
        std::fs::write(&path, b"weights one").unwrap();
        let a = InceptionSource::File(path.clone()).id().unwrap();
        std::fs::write(&path, b"weights two").unwrap();
        let b = InceptionSource::File(path.clone()).id().unwrap();
        assert_ne!(a, b, "a reconverted file of the same length");
        assert_eq!(b, InceptionSource::File(path).id().unwrap());
    }
}
