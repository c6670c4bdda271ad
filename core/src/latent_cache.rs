//! The latent cache: a data set encoded once by the latent codec and kept on disk, reused by
//! every run that asks for the same data, codec and preprocessing, and rebuilt when any of them
//! changes (the key hashes the data set's fingerprint, the codec's id, the image size and the
//! preprocessing's name).
//!
//! Layout (`<cache root>/latents/<key>/`): `latents.f32` (little-endian f32, `[n, c, h, w]`),
//! `captions.json` (`n` strings), `meta.json` (written last: a folder without it is incomplete
//! and is rebuilt). It is built in a `.partial` folder and renamed into place, so a killed build
//! never leaves a cache that looks complete. Unusable items are skipped while building; their
//! count and the first reasons are in `meta.json` and in the training metrics.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::codec::{CodecConfig, LatentCodec};
use crate::data::{DataError, Dataset};
use crate::fsutil::fnv1a64;

/// How images are brought to the preset's resolution (part of the cache key).
pub const PREPROCESSING: &str = "center-crop,resize-triangle,rgb8,[-1,1]";

const FORMAT: &str = "flowlens.latents.v1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CacheMeta {
    pub format: String,
    pub key: String,
    pub dataset: String,
    pub codec: String,
    pub image_size: usize,
    pub preprocessing: String,
    /// `[c, h, w]` of one latent.
    pub shape: [usize; 3],
    /// Items in the cache.
    pub len: usize,
    /// Items of the data set that were skipped (corrupt, missing, undecodable).
    pub skipped: usize,
    /// The first few reasons, for the user.
    pub skipped_examples: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("latent cache {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Build(#[from] crate::codec::CodecError),
    #[error("{0}")]
    Codec(String),
}

/// An opened cache: latents memory-mapped, captions in memory.
pub struct LatentCache {
    pub dir: PathBuf,
    pub meta: CacheMeta,
    captions: Vec<String>,
    latents: Mmap,
}

/// The cache key of a data set under a codec and image size.
pub fn cache_key(dataset: &dyn Dataset, codec: &CodecConfig, image_size: usize) -> String {
    let text = format!(
        "{FORMAT}|{}|{}|{image_size}|{PREPROCESSING}",
        dataset.fingerprint(),
        codec.id()
    );
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

impl LatentCache {
    /// Opens the cache of `dataset` under `root`, building it first if it is missing or
    /// incomplete. `progress(done, total)` is called while building.
    pub fn open_or_build<B: Backend>(
        root: &Path,
        dataset: &dyn Dataset,
        codec: &CodecConfig,
        image_size: usize,
        device: &B::Device,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, CacheError> {
        let dir = root
            .join("latents")
            .join(cache_key(dataset, codec, image_size));
        if dir.join("meta.json").is_file() {
            return Self::open(&dir);
        }
        let codec_impl = codec.build_on::<B>(device)?;
        Self::open_or_build_with(
            root,
            dataset,
            codec,
            codec_impl.as_ref(),
            image_size,
            device,
            progress,
        )
    }

    /// [`LatentCache::open_or_build`] with an already built codec (e.g. a VAE loaded from an
    /// explicit folder); `codec_impl.id()` must be `codec.id()`.
    pub fn open_or_build_with<B: Backend>(
        root: &Path,
        dataset: &dyn Dataset,
        codec: &CodecConfig,
        codec_impl: &dyn LatentCodec<B>,
        image_size: usize,
        device: &B::Device,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self, CacheError> {
        if codec_impl.id() != codec.id() {
            return Err(CacheError::Codec(format!(
                "the codec `{}` is not the configured `{}`",
                codec_impl.id(),
                codec.id()
            )));
        }
        let key = cache_key(dataset, codec, image_size);
        let dir = root.join("latents").join(&key);
        if dir.join("meta.json").is_file() {
            return Self::open(&dir);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| CacheError::Io {
                path: path.clone(),
                reason: e.to_string(),
            }
        };
        let tmp = crate::fsutil::partial_dir(&root.join("latents").join(&key));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let latents_path = tmp.join("latents.f32");
        let mut out =
            BufWriter::new(std::fs::File::create(&latents_path).map_err(io(&latents_path))?);
        let shape = codec.latent_shape(image_size);
        let total = dataset.len();
        let (mut skipped, mut examples) = dataset.skipped_at_open();
        examples.truncate(20);
        let mut captions = Vec::new();
        let chunk = codec_impl.preferred_batch().max(1);
        for start in (0..total).step_by(chunk) {
            let end = (start + chunk).min(total);
            let mut pixels = Vec::new();
            let mut n = 0;
            for i in start..end {
                match dataset.get(i, image_size) {
                    Ok(ex) => {
                        pixels.extend(ex.pixels);
                        captions.push(ex.caption);
                        n += 1;
                    }
                    Err(DataError::Item { item, reason }) => {
                        skipped += 1;
                        if examples.len() < 20 {
                            examples.push(format!("{item}: {reason}"));
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if n > 0 {
                let x = Tensor::<B, 4>::from_data(
                    TensorData::new(pixels, [n, 3, image_size, image_size]),
                    device,
                );
                let z = codec_impl.encode(x);
                let [_, zc, zh, zw] = z.dims();
                if [zc, zh, zw] != shape {
                    let _ = std::fs::remove_dir_all(&tmp);
                    return Err(CacheError::Codec(format!(
                        "the codec gives latents [{zc}, {zh}, {zw}], the configuration expects {shape:?}"
                    )));
                }
                let z: Vec<f32> = z
                    .into_data()
                    .to_vec()
                    .map_err(|e| CacheError::Codec(format!("{e:?}")))?;
                let bytes: Vec<u8> = z.iter().flat_map(|v| v.to_le_bytes()).collect();
                out.write_all(&bytes).map_err(io(&latents_path))?;
            }
            progress(end, total);
        }
        out.flush().map_err(io(&latents_path))?;
        drop(out);
        if captions.is_empty() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(DataError::Empty {
                source_desc: dataset.fingerprint(),
                detail: match examples.first() {
                    Some(first) => {
                        format!(": all {skipped} items were skipped; the first because {first}")
                    }
                    None => String::new(),
                },
            }
            .into());
        }
        let meta = CacheMeta {
            format: FORMAT.into(),
            key,
            dataset: dataset.fingerprint(),
            codec: codec.id(),
            image_size,
            preprocessing: PREPROCESSING.into(),
            shape,
            len: captions.len(),
            skipped,
            skipped_examples: examples,
        };
        let write_json = |name: &str, value: &dyn erased_json::Json| {
            let path = tmp.join(name);
            std::fs::write(&path, value.to_json()).map_err(io(&path))
        };
        write_json("captions.json", &captions)?;
        write_json("meta.json", &meta)?;
        crate::fsutil::sync_dir(&tmp).map_err(io(&tmp))?;
        crate::fsutil::publish_dir(&tmp, &dir, "meta.json").map_err(io(&dir))?;
        Self::open(&dir)
    }

    /// Opens a complete cache folder.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let err = |path: &Path, reason: String| CacheError::Io {
            path: path.to_path_buf(),
            reason,
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| err(&path, e.to_string()))
        };
        let meta: CacheMeta = serde_json::from_slice(&read("meta.json")?)
            .map_err(|e| err(&dir.join("meta.json"), e.to_string()))?;
        let captions: Vec<String> = serde_json::from_slice(&read("captions.json")?)
            .map_err(|e| err(&dir.join("captions.json"), e.to_string()))?;
        let path = dir.join("latents.f32");
        let file = std::fs::File::open(&path).map_err(|e| err(&path, e.to_string()))?;
        // Safety: the cache is written once, renamed into place and never modified after.
        let latents = unsafe { Mmap::map(&file) }.map_err(|e| err(&path, e.to_string()))?;
        let per = meta.shape.iter().product::<usize>() * 4;
        if captions.len() != meta.len || latents.len() != meta.len * per {
            return Err(err(
                dir,
                format!(
                    "inconsistent cache ({} captions, {} bytes of latents for {} items of {:?}); delete the folder to rebuild it",
                    captions.len(),
                    latents.len(),
                    meta.len,
                    meta.shape
                ),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            captions,
            latents,
        })
    }

    pub fn len(&self) -> usize {
        self.meta.len
    }

    pub fn is_empty(&self) -> bool {
        self.meta.len == 0
    }

    /// Latents of items `indices` (concatenated `[k, c, h, w]`) and their captions.
    pub fn batch(&self, indices: &[usize]) -> (Vec<f32>, Vec<String>) {
        let per: usize = self.meta.shape.iter().product();
        let mut out = Vec::with_capacity(indices.len() * per);
        let mut captions = Vec::with_capacity(indices.len());
        for &i in indices {
            let bytes = &self.latents[i * per * 4..(i + 1) * per * 4];
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            captions.push(self.captions[i].clone());
        }
        (out, captions)
    }

    pub fn captions(&self) -> &[String] {
        &self.captions
    }
}

/// Serialising the two JSON files through one closure.
mod erased_json {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("plain data serialises")
        }
    }
}
