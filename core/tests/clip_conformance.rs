//! CLIP against transformers on a tiny random CLIPModel: tokenizer ids, text and image
//! embeddings, logits; the image preprocessing against CLIPImageProcessor at the real 224 size.
//! Fixtures come from tools/fixtures/make_clip_fixtures.py.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use flowlens_core::clip::{Clip, ClipPreprocess};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip")
}

fn reference() -> SafetensorsFile {
    SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap()
}

fn read(file: &SafetensorsFile, name: &str) -> (Vec<f32>, Vec<usize>) {
    let shape = file.shape(name).unwrap().to_vec();
    (file.read_f32(name, &shape).unwrap(), shape)
}

fn prompts() -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("prompts.json")).unwrap())
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn load() -> Clip<B> {
    Clip::load(fixtures().join("tiny-clip"), &Default::default()).unwrap()
}

#[test]
fn clip_tokenizer_matches_transformers_with_padding_and_truncation() {
    let clip = load();
    let r = reference();
    let (ids, shape) = r.read_i64("input_ids").unwrap();
    let (mask, _) = r.read_i64("attention_mask").unwrap();
    let batch = clip.tokenizer.batch(&prompts()).unwrap();
    assert_eq!([batch.n, batch.len], [shape[0], shape[1]]);
    assert_eq!(batch.ids, ids);
    assert_eq!(batch.mask, mask);
    // The long prompt was truncated to the 16 positions with EOS kept last.
    assert_eq!(batch.ids[2 * 16 + 15], clip.tokenizer.eos_id as i64);
}

#[test]
fn clip_text_and_image_embeddings_match_transformers() {
    let clip = load();
    let r = reference();
    let device = Default::default();
    let batch = clip.tokenizer.batch(&prompts()).unwrap();
    let text: Vec<f32> = clip
        .model
        .text_features(&batch.ids, &batch.mask, [batch.n, batch.len])
        .into_data()
        .to_vec()
        .unwrap();
    let (expected, _) = read(&r, "text_embeds");
    let err = max_diff(&text, &expected);
    assert!(err <= 1e-4, "text embeddings differ by {err}");

    let (pixels, shape) = read(&r, "pixel_values");
    let pixels = Tensor::<B, 4>::from_data(
        TensorData::new(pixels, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let image = clip.model.image_features(pixels);
    let (expected, _) = read(&r, "image_embeds");
    let got: Vec<f32> = image.clone().into_data().to_vec().unwrap();
    let err = max_diff(&got, &expected);
    assert!(err <= 1e-4, "image embeddings differ by {err}");
    assert!(expected.iter().map(|v| v.abs()).fold(0.0, f32::max) > 0.1);

    let (scale, _) = read(&r, "logit_scale");
    assert!((clip.model.logit_scale - scale[0]).abs() < 1e-7);
    let text = clip
        .model
        .text_features(&batch.ids, &batch.mask, [batch.n, batch.len]);
    let logits: Vec<f32> = clip
        .model
        .logits_per_image(image, text)
        .into_data()
        .to_vec()
        .unwrap();
    let (expected, _) = read(&r, "logits_per_image");
    let err = max_diff(&logits, &expected);
    assert!(err <= 1e-4, "logits differ by {err}");
}

/// The synthetic image of the fixture script's `formula_image`.
fn formula_image(w: u32, h: u32, k: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb(
            [0u32, 1, 2]
                .map(|c| ((x * x * 3 + y * 5 + c * 70 + ((x * y) % 17) * 9 + k * 31) % 256) as u8),
        )
    })
}

#[test]
fn clip_preprocessing_matches_clip_image_processor_at_224() {
    let r = reference();
    let p = ClipPreprocess::new(224);
    // One quantisation step of the 8-bit resize, in normalised units.
    let step = 1.0 / 255.0 / 0.26;
    for (k, (w, h)) in [(320u32, 240u32), (150, 100)].into_iter().enumerate() {
        let out = p.apply(&formula_image(w, h, k as u32));
        assert_eq!(out.len(), 3 * 224 * 224);
        let (index, _) = r.read_i64(&format!("prep{k}.index")).unwrap();
        let (values, _) = read(&r, &format!("prep{k}.value"));
        let mut exact = 0;
        for (&i, &v) in index.iter().zip(&values) {
            let d = (out[i as usize] - v).abs();
            assert!(
                d <= step + 1e-5,
                "image {k} value {i}: {} vs {v}",
                out[i as usize]
            );
            if d <= 1e-5 {
                exact += 1;
            }
        }
        // Rounding ties aside (fixed-point vs f32 weights), the 8-bit values are torch's.
        assert!(
            exact as f64 >= 0.99 * index.len() as f64,
            "image {k}: only {exact} of {} values exact",
            index.len()
        );
        let (sum, _) = read(&r, &format!("prep{k}.sum"));
        let ours: f64 = out.iter().map(|&v| v as f64).sum();
        assert!(
            (ours - sum[0] as f64).abs() < 5e-3 * out.len() as f64 * step as f64,
            "{ours} vs {}",
            sum[0]
        );
    }
}

#[test]
fn bad_clip_folders_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny-clip")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"quick_gelu\"", "\"swiglu\"")).unwrap();
    let e = Clip::<B>::load(dir.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hidden_act") && e.contains("config.json"), "{e}");
    std::fs::write(
        &config,
        text.replace("\"projection_dim\": 12", "\"projection_dim\": 10"),
    )
    .unwrap();
    let e = Clip::<B>::load(dir.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("text_projection.weight") && e.contains("shape"),
        "{e}"
    );
    std::fs::write(&config, &text).unwrap();
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = Clip::<B>::load(dir.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
