//! CLIP score end to end: the tiny CLIP's embeddings (flowlens-core) through the analysis
//! crate's per-pair-clamp CLIP score, against transformers' embeddings and the score computed
//! from them (tools/fixtures/make_clip_fixtures.py). The fixture's two pairs have cosines of
//! both signs, so the per-pair clamp and torchmetrics' clamp-after-mean give different scores.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use flowlens_analysis::clip::clip_score;
use flowlens_core::clip::Clip;
use flowlens_core::device::CpuBackend as B;
use flowlens_core::weights::SafetensorsFile;
use ndarray::Array2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/clip")
}

fn to_array(t: Tensor<B, 2>) -> Array2<f64> {
    let [n, d] = t.dims();
    let v: Vec<f32> = t.into_data().to_vec().unwrap();
    Array2::from_shape_vec((n, d), v.into_iter().map(f64::from).collect()).unwrap()
}

#[test]
fn clip_score_of_tiny_clip_embeddings_matches_the_per_pair_reference() {
    let device = Default::default();
    let clip = Clip::<B>::load(fixtures().join("tiny-clip"), &device).unwrap();
    let r = SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap();
    let prompts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("prompts.json")).unwrap())
            .unwrap();
    let text = to_array(clip.embed_texts(&prompts[..2]).unwrap());
    let shape = r.shape("pixel_values").unwrap().to_vec();
    let pixels = r.read_f32("pixel_values", &shape).unwrap();
    let image = to_array(clip.model.image_features(Tensor::<B, 4>::from_data(
        TensorData::new(pixels, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    )));
    let score = clip_score(image.view(), text.view()).unwrap();
    let expected = r.read_f32("clip_score", &[1]).unwrap()[0] as f64;
    assert!((score - expected).abs() < 1e-3, "{score} vs {expected}");
    let cosines = r.read_f32("pair_cosines", &[2]).unwrap();
    assert!(cosines[0] > 0.0 && cosines[1] < 0.0, "{cosines:?}");
    // Clamping after the mean (torchmetrics) would give another number.
    let mean_then_clamp = 100.0 * ((cosines[0] + cosines[1]) as f64 / 2.0).max(0.0);
    assert!(
        (score - mean_then_clamp).abs() > 1.0,
        "{score} {mean_then_clamp}"
    );
}
