//! The latent cache: built once, reused, rebuilt when the codec, the image size or the data
//! change; unusable items skipped and counted; a data set that yields nothing is an error; the
//! cached latents decode back to the preprocessed images.

use std::io::Cursor;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use flowlens_core::codec::CodecConfig;
use flowlens_core::data::{DataError, DataSource, Dataset, ShapesDataset};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::latent_cache::{CacheError, LatentCache};
use image::{DynamicImage, ImageOutputFormat, Rgb, RgbImage};

fn png(rgb: [u8; 3], w: u32, h: u32) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(rgb)))
        .write_to(&mut buf, ImageOutputFormat::Png)
        .unwrap();
    buf.into_inner()
}

fn folder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("a.png"), png([255, 0, 0], 12, 8)).unwrap();
    std::fs::write(dir.join("a.txt"), "a red thing").unwrap();
    std::fs::write(dir.join("b.png"), png([0, 0, 255], 8, 8)).unwrap();
    std::fs::write(dir.join("b.txt"), "a blue thing").unwrap();
    std::fs::write(dir.join("c.png"), b"not a png at all").unwrap();
    std::fs::write(dir.join("c.txt"), "broken").unwrap();
}

fn build(root: &Path, ds: &dyn Dataset, codec: CodecConfig, size: usize) -> LatentCache {
    LatentCache::open_or_build::<B>(root, ds, &codec, size, &Default::default(), |_, _| {}).unwrap()
}

#[test]
fn builds_once_skips_bad_items_and_decodes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    folder(&data);
    let root = tmp.path().join("cache");
    let ds = DataSource::Folder { path: data.clone() }.open().unwrap();
    let codec = CodecConfig::Pixels { factor: 2 };
    let cache = build(&root, ds.as_ref(), codec, 4);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.meta.skipped, 1);
    assert!(cache.meta.skipped_examples[0].contains("c.png"));
    assert_eq!(cache.meta.shape, [12, 2, 2]);
    assert_eq!(cache.captions(), ["a red thing", "a blue thing"]);
    // The latents decode to the preprocessed images exactly (the pixel codec is lossless).
    let (latents, _) = cache.batch(&[0, 1]);
    let codec_impl = codec.build::<B>().unwrap();
    let pixels: Vec<f32> = codec_impl
        .decode(Tensor::<B, 4>::from_data(
            TensorData::new(latents, [2, 12, 2, 2]),
            &Default::default(),
        ))
        .into_data()
        .to_vec()
        .unwrap();
    let expected: Vec<f32> = [ds.get(0, 4).unwrap(), ds.get(1, 4).unwrap()]
        .into_iter()
        .flat_map(|e| e.pixels)
        .collect();
    assert_eq!(pixels, expected);
    assert!((pixels[0] - 1.0).abs() < 1e-6 && (pixels[16] + 1.0).abs() < 1e-6); // red: R=1, G=-1

    // Reused: the same folder, not rebuilt.
    let modified = |c: &LatentCache| {
        std::fs::metadata(c.dir.join("latents.f32"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = modified(&cache);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = build(&root, ds.as_ref(), codec, 4);
    assert_eq!(again.dir, cache.dir);
    assert_eq!(modified(&again), before);
    // Another codec, image size or changed data: another cache.
    let other_codec = build(&root, ds.as_ref(), CodecConfig::Pixels { factor: 1 }, 4);
    assert_ne!(other_codec.dir, cache.dir);
    assert_eq!(other_codec.meta.shape, [3, 4, 4]);
    let other_size = build(&root, ds.as_ref(), codec, 8);
    assert_ne!(other_size.dir, cache.dir);
    std::fs::write(data.join("c.png"), png([0, 255, 0], 8, 8)).unwrap();
    let ds2 = DataSource::Folder { path: data }.open().unwrap();
    let changed = build(&root, ds2.as_ref(), codec, 4);
    assert_ne!(changed.dir, cache.dir);
    assert_eq!((changed.len(), changed.meta.skipped), (3, 0));
    // Nothing half-built is left.
    for e in std::fs::read_dir(root.join("latents")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("partial"), "{name}");
    }
}

#[test]
fn a_data_set_of_only_bad_items_is_a_clear_error_and_an_incomplete_cache_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x.png"), b"garbage").unwrap();
    std::fs::write(data.join("x.txt"), "caption").unwrap();
    let ds = DataSource::Folder { path: data }.open().unwrap();
    let err = LatentCache::open_or_build::<B>(
        tmp.path(),
        ds.as_ref(),
        &CodecConfig::Pixels { factor: 2 },
        4,
        &Default::default(),
        |_, _| {},
    )
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(
        matches!(err, CacheError::Data(DataError::Empty { .. })) && text.contains("x.png"),
        "{text}"
    );

    // A cache folder without meta.json (a killed build renamed by hand, say) is rebuilt.
    let shapes = ShapesDataset::new(1, 5);
    let codec = CodecConfig::Pixels { factor: 2 };
    let cache = build(tmp.path(), &shapes, codec, 8);
    std::fs::remove_file(cache.dir.join("meta.json")).unwrap();
    let rebuilt = build(tmp.path(), &shapes, codec, 8);
    assert_eq!(rebuilt.len(), 5);
    // A corrupted cache is an error that says how to fix it.
    std::fs::write(rebuilt.dir.join("latents.f32"), b"short").unwrap();
    let err = LatentCache::open(&rebuilt.dir).err().unwrap().to_string();
    assert!(err.contains("delete the folder"), "{err}");
}

#[test]
fn sdxl_vae_codec_fills_the_cache_with_scaled_posterior_means() {
    use flowlens_core::codec::LatentCodec;
    use flowlens_core::codec::vae::VaeCodec;
    use flowlens_core::vae::Vae;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    folder(&data);
    let ds = DataSource::Folder { path: data }.open().unwrap();
    let device = Default::default();
    // The tiny fixture VAE has the SDXL-VAE's structure: 4 latent channels, 8x down-sampling.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae/d4");
    let codec = VaeCodec::new(Vae::<B>::load(&fixture, &device).unwrap());
    let config = CodecConfig::SdxlVae;
    let cache = LatentCache::open_or_build_with::<B>(
        &tmp.path().join("cache"),
        ds.as_ref(),
        &config,
        &codec,
        16,
        &device,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.meta.shape, [4, 2, 2]);
    assert_eq!(cache.meta.codec, "sdxl-vae-scaled-0.13025");
    let (latents, _) = cache.batch(&[1]);
    let pixels = Tensor::<B, 4>::from_data(
        TensorData::new(ds.get(1, 16).unwrap().pixels, [1, 3, 16, 16]),
        &device,
    );
    let mean: Vec<f32> = codec.vae.encode(pixels).mean.into_data().to_vec().unwrap();
    for (cached, m) in latents.iter().zip(&mean) {
        assert!((cached - m * 0.13025).abs() < 1e-6, "{cached} vs {m}");
    }
    assert_eq!(LatentCodec::<B>::preferred_batch(&codec), 4);
    // Without FLOWLENS_SDXL_VAE the configured codec explains what is missing.
    if std::env::var_os("FLOWLENS_SDXL_VAE").is_none() {
        let err = config.build::<B>().err().unwrap().to_string();
        assert!(err.contains("FLOWLENS_SDXL_VAE"), "{err}");
    }
}
