//! `flowlens study new`: the study directory from a `study.toml`. Every system's images of
//! every (prompt, seed) (run systems sampled here from the same initial noise; image-folder
//! systems read), re-encoded as plain PNGs (no text chunks, no metadata, one size), named by
//! opaque ids (HMAC-SHA256 of role, prompt, seed, system and content under a secret kept in
//! key.json), degraded copies for gold items, the blind manifest with every rater's
//! assignment, and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use flowlens_core::checkpoint::{CheckpointChoice, Weights, load_run_model, resolve};
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::sample::Generator;
use hmac::{Hmac, Mac};
use image::ImageEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::assign::{self, Images};
use super::design::{Prompt, StudyToml, read_prompts, select_prompts};
use super::files::{
    Key, KeyEntry, MANIFEST_FORMAT, Manifest, StudyDir, SystemRecord, hex, sha256_hex, utc_now,
    write_json, write_whole,
};

/// One system's images: `[prompt][seed index]` PNG bytes, and its record.
struct SystemImages {
    record: SystemRecord,
    png: Vec<Vec<Vec<u8>>>,
}

/// How the HMAC secret of the image ids is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// From the operating system's generator (the default: nobody can recompute the ids).
    Random,
    /// From the study seed and design (byte-identical studies from the same study.toml; ids
    /// can be recomputed by whoever holds study.toml and the images).
    FromSeed,
}

/// Creates the study directory `dir` from `spec` (study.toml written first), sampling run
/// systems on `device`. `dir` must not exist or be empty.
pub fn create(
    dir: &Path,
    spec: &StudyToml,
    base: &Path,
    device: DeviceSpec,
    secret: Secret,
    progress: bool,
) -> Result<Manifest> {
    spec.check()?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: a study is created in a new directory (nothing was changed)",
            dir.display()
        );
    }
    let resolve_path = |p: &str| -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    let prompts = select_prompts(
        read_prompts(&resolve_path(&spec.prompts.file))?,
        &spec.prompts,
        spec.seed,
    )?;
    let seeds: Vec<u64> = (0..spec.prompts.seeds_per_prompt as u64)
        .map(|j| spec.prompts.first_seed + j)
        .collect();
    let study = StudyDir::new(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Two `study new` into one directory: the second finds this file and stops. A crash leaves
    // it behind, and the directory is then refused as not empty.
    let claim = dir.join(".study-new");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&claim)
        .with_context(|| {
            format!(
                "{} is being created by another `flowlens study new` (or one crashed there: remove the directory)",
                dir.display()
            )
        })?;
    write_whole(&study.toml(), spec.to_toml()?.as_bytes())?;
    let mut systems = Vec::new();
    for s in &spec.systems {
        if progress {
            eprintln!("study: images of `{}`", s.name);
        }
        let images = match (&s.run, &s.images) {
            (Some(run), _) => generate_run(&resolve_path(run), s, spec, &prompts, &seeds, device)?,
            (None, Some(folder)) => read_folder(&resolve_path(folder), &s.name, &prompts, &seeds)?,
            (None, None) => unreachable!("checked"),
        };
        systems.push(images);
    }
    let size = image_size(&systems[0].png[0][0])?;
    for s in &systems {
        for (p, per_seed) in s.png.iter().enumerate() {
            for (j, png) in per_seed.iter().enumerate() {
                let got = image_size(png)?;
                ensure!(
                    got == size,
                    "system `{}`: the image of prompt {} seed {} is {}x{}, the others {}x{}: every image of a study has one size (resize the folder's images first)",
                    s.record.name,
                    prompts[p].id,
                    seeds[j],
                    got[0],
                    got[1],
                    size[0],
                    size[1]
                );
            }
        }
    }
    let reproducible = secret == Secret::FromSeed;
    let secret: [u8; 32] = match secret {
        Secret::Random => rand::rng().random(),
        Secret::FromSeed => Sha256::new()
            .chain_update(b"flowlens study secret\0")
            .chain_update(spec.seed.to_le_bytes())
            .chain_update(spec.design_json().as_bytes())
            .finalize()
            .into(),
    };
    let mut key = Key {
        study_id: spec.name.clone(),
        secret: hex(&secret),
        images: BTreeMap::new(),
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ids: Vec<Vec<Vec<String>>> = Vec::new();
    for (si, s) in systems.iter().enumerate() {
        let mut per_prompt = Vec::new();
        for (p, per_seed) in s.png.iter().enumerate() {
            let mut row = Vec::new();
            for (j, png) in per_seed.iter().enumerate() {
                let id = image_id(&secret, "main", &prompts[p].id, seeds[j], si, png);
                key.images.insert(
                    id.clone(),
                    KeyEntry {
                        system: s.record.name.clone(),
                        prompt: prompts[p].id.clone(),
                        seed: seeds[j],
                        role: "main".into(),
                    },
                );
                files.insert(id.clone(), png.clone());
                row.push(id);
            }
            per_prompt.push(row);
        }
        ids.push(per_prompt);
    }
    let mut degraded_ids: BTreeMap<usize, String> = BTreeMap::new();
    for (si, p) in assign::degraded_sources(spec, prompts.len()) {
        let png = degrade(&systems[si].png[p][0], spec.seed ^ p as u64)?;
        let id = image_id(&secret, "degraded", &prompts[p].id, seeds[0], si, &png);
        key.images.insert(
            id.clone(),
            KeyEntry {
                system: systems[si].record.name.clone(),
                prompt: prompts[p].id.clone(),
                seed: seeds[0],
                role: "degraded".into(),
            },
        );
        files.insert(id.clone(), png);
        degraded_ids.insert(p, id);
    }
    let main = |s: usize, p: usize, j: usize| ids[s][p][j].clone();
    let degraded = |p: usize| degraded_ids.get(&p).cloned();
    let images = Images {
        main: &main,
        degraded: &degraded,
    };
    let items = assign::main_items(spec, &prompts, &seeds, &images);
    let gold = assign::gold_items(spec, &prompts, &images);
    let raters = assign::assign(spec, &items, &gold);
    for (id, png) in &files {
        write_whole(&study.image(id), png)?;
    }
    let shapes: Vec<Option<[usize; 3]>> = systems.iter().map(|s| s.record.latent_shape).collect();
    let same_noise = shapes.iter().all(|s| s.is_some() && *s == shapes[0]);
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        study_id: spec.name.clone(),
        study_seed: spec.seed,
        flowlens_version: env!("CARGO_PKG_VERSION").into(),
        design_sha256: sha256_hex(spec.design_json().as_bytes()),
        systems: systems.into_iter().map(|s| s.record).collect(),
        same_noise,
        sampler: spec.sampler.clone(),
        prompts,
        seeds,
        images: files
            .iter()
            .map(|(id, png)| (id.clone(), sha256_hex(png)))
            .collect(),
        image_size: size,
        items: items.into_iter().map(|(i, _)| i).collect(),
        gold,
        raters,
        // A reproducible study records no creation time, so that it is byte-identical when
        // remade.
        created: if reproducible {
            "fixed".into()
        } else {
            utc_now()
        },
    };
    write_json(&study.key(), &key)?;
    write_json(&study.manifest(), &manifest)?;
    std::fs::remove_file(&claim)?;
    study.audit_line(&format!(
        "new: {} systems, {} prompts x {} seeds, {} raters, {} images",
        manifest.systems.len(),
        manifest.prompts.len(),
        manifest.seeds.len(),
        manifest.raters.len(),
        manifest.images.len()
    ))?;
    Ok(manifest)
}

/// The first 16 hex digits of HMAC-SHA256(secret, role | prompt | seed | system | sha256(png)).
fn image_id(
    secret: &[u8],
    role: &str,
    prompt: &str,
    seed: u64,
    system: usize,
    png: &[u8],
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(role.as_bytes());
    mac.update(b"\0");
    mac.update(prompt.as_bytes());
    mac.update(b"\0");
    mac.update(&seed.to_le_bytes());
    mac.update(&(system as u64).to_le_bytes());
    mac.update(&Sha256::digest(png));
    hex(&mac.finalize().into_bytes()[..8])
}

fn image_size(png: &[u8]) -> Result<[u32; 2]> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .context("an image of the study does not decode as PNG")?;
    Ok([img.width(), img.height()])
}

/// RGB8 pixels as PNG bytes: no text chunks, no gamma or time chunks, nothing but the pixels.
pub fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ColorType::Rgb8,
        )
        .context("PNG encoding failed")?;
    Ok(out)
}

/// A gold item's degraded copy: Gaussian blur (σ = 1.5 % of the width), JPEG at quality 10,
/// then ±12 levels of seeded noise; deterministic.
pub fn degrade(png: &[u8], seed: u64) -> Result<Vec<u8>> {
    let img = image::load_from_memory(png)?.to_rgb8();
    let sigma = (img.width() as f32 * 0.015).max(1.0);
    let blurred = image::imageops::blur(&img, sigma);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 10)
        .encode_image(&blurred)
        .context("JPEG encoding failed")?;
    let mut crushed = image::load_from_memory(&jpeg)?.to_rgb8();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for px in crushed.pixels_mut() {
        for c in px.0.iter_mut() {
            *c = (*c as i32 + rng.random_range(-12..=12)).clamp(0, 255) as u8;
        }
    }
    encode_png(&crushed)
}

/// Pixels `[n, 3, s, s]` in [-1, 1] to PNG bytes per image.
fn pixels_to_png(pixels: &[f32], size: usize) -> Result<Vec<Vec<u8>>> {
    let per = 3 * size * size;
    pixels
        .chunks(per)
        .map(|chunk| {
            let mut img = image::RgbImage::new(size as u32, size as u32);
            for y in 0..size {
                for x in 0..size {
                    let v = |c: usize| {
                        ((chunk[c * size * size + y * size + x] + 1.0) * 127.5)
                            .round()
                            .clamp(0.0, 255.0) as u8
                    };
                    img.put_pixel(x as u32, y as u32, image::Rgb([v(0), v(1), v(2)]));
                }
            }
            encode_png(&img)
        })
        .collect()
}

/// An image folder's `p<index:04>_<seed>.png` files, decoded and re-encoded (any metadata the
/// other model wrote is dropped).
fn read_folder(dir: &Path, name: &str, prompts: &[Prompt], seeds: &[u64]) -> Result<SystemImages> {
    ensure!(
        dir.is_dir(),
        "system `{name}`: the image folder {} does not exist",
        dir.display()
    );
    let mut png = Vec::new();
    for p in prompts {
        let mut row = Vec::new();
        for s in seeds {
            let path = dir.join(format!("{}_{s}.png", p.id));
            let img = image::open(&path)
                .with_context(|| {
                    format!(
                        "system `{name}`: cannot read {} (an image folder holds p<prompt index:04>_<seed>.png for every prompt and seed)",
                        path.display()
                    )
                })?
                .to_rgb8();
            row.push(encode_png(&img)?);
        }
        png.push(row);
    }
    Ok(SystemImages {
        record: SystemRecord {
            name: name.into(),
            source: dir.display().to_string(),
            checkpoint_step: None,
            checkpoint_sha256: None,
            weights: None,
            latent_shape: None,
        },
        png,
    })
}

/// sha256 over a checkpoint folder's files: name, NUL, bytes, in name order.
fn folder_sha256(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
        h.update(b"\0");
        h.update(std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?);
    }
    Ok(hex(&h.finalize()))
}

struct GenerateTask {
    run: PathBuf,
    weights: Weights,
    checkpoint: CheckpointChoice,
    prompts: Vec<String>,
    seeds: Vec<u64>,
    sampler: SamplerConfig,
    batch_size: usize,
}

impl BackendTask for GenerateTask {
    type Output = Result<(Vec<Vec<Vec<u8>>>, usize, [usize; 3])>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let loaded = load_run_model::<B>(&self.run, self.weights, self.checkpoint, &device)?;
        let codec = loaded.flow.codec.build::<B>()?;
        let generator = Generator {
            model: &loaded.model,
            flow: &loaded.flow,
            codec: codec.as_ref(),
            tokenizer: &loaded.tokenizer,
        };
        let size = loaded.flow.image_size;
        // [seed][prompt] -> [prompt][seed]
        let mut png: Vec<Vec<Vec<u8>>> = vec![Vec::new(); self.prompts.len()];
        for &seed in &self.seeds {
            let pixels =
                generator.generate(&self.prompts, seed, &self.sampler, self.batch_size, &device)?;
            for (p, img) in pixels_to_png(&pixels, size)?.into_iter().enumerate() {
                png[p].push(img);
            }
        }
        Ok((png, loaded.step, generator.latent_shape()))
    }
}

fn generate_run(
    run: &Path,
    s: &super::design::SystemSpec,
    spec: &StudyToml,
    prompts: &[Prompt],
    seeds: &[u64],
    device: DeviceSpec,
) -> Result<SystemImages> {
    let checkpoint: CheckpointChoice = s
        .checkpoint
        .parse()
        .map_err(|e| anyhow::anyhow!("system `{}`: checkpoint: {e}", s.name))?;
    let weights = match s.weights.as_str() {
        "ema2" => Weights::Ema2,
        "model" => Weights::Model,
        _ => Weights::Ema,
    };
    let (step, dir) = resolve(run, checkpoint).with_context(|| {
        format!(
            "system `{}`: {} has no checkpoint `{}`",
            s.name,
            run.display(),
            s.checkpoint
        )
    })?;
    let (png, loaded_step, shape) = device.run(GenerateTask {
        run: run.to_path_buf(),
        weights,
        checkpoint: CheckpointChoice::Step(step),
        prompts: prompts.iter().map(|p| p.text.clone()).collect(),
        seeds: seeds.to_vec(),
        sampler: SamplerConfig {
            steps: spec.sampler.steps,
            cfg: spec.sampler.cfg,
            ..Default::default()
        },
        batch_size: spec.sampler.batch_size,
    })??;
    Ok(SystemImages {
        record: SystemRecord {
            name: s.name.clone(),
            source: run.display().to_string(),
            checkpoint_step: Some(loaded_step),
            checkpoint_sha256: Some(folder_sha256(&dir)?),
            weights: Some(s.weights.clone()),
            latent_shape: Some(shape),
        },
        png,
    })
}
