//! The VAE against diffusers' AutoencoderKL on tiny random models: posterior mean, logvar and
//! sample, decoder output, in the three checkpoint layouts (diffusers, legacy attention names,
//! LDM single file) and with BF16 weights; plus the latent codec and bad checkpoints. Fixtures
//! come from tools/fixtures/make_vae_fixtures.py.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use flowlens_core::codec::vae::VaeCodec;
use flowlens_core::codec::{CodecConfig, LatentCodec};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::vae::{Vae, VaeLayout};
use flowlens_core::weights::SafetensorsFile;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae")
}

fn reference(dir: &str, name: &str) -> Tensor<B, 4> {
    let file = SafetensorsFile::open(fixtures().join(dir).join("reference.safetensors")).unwrap();
    let shape: [usize; 4] = file.shape(name).unwrap().try_into().unwrap();
    let values = file.read_f32(name, &shape).unwrap();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn max_abs_diff(a: Tensor<B, 4>, b: Tensor<B, 4>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar()
}

/// Encodes and decodes the reference inputs of `reference_dir` with the VAE in `model_dir`.
fn check_against_diffusers(model_dir: &str, reference_dir: &str, layout: VaeLayout) {
    let vae = Vae::<B>::load(fixtures().join(model_dir), &Default::default()).unwrap();
    assert_eq!(vae.layout, Some(layout));
    let post = vae.encode(reference(reference_dir, "image"));
    let errors = [
        (
            "mean",
            max_abs_diff(post.mean.clone(), reference(reference_dir, "mean")),
        ),
        (
            "logvar",
            max_abs_diff(post.logvar.clone(), reference(reference_dir, "logvar")),
        ),
        (
            "sample",
            max_abs_diff(
                post.sample_with(reference(reference_dir, "eps")),
                reference(reference_dir, "sample"),
            ),
        ),
        (
            "decoded",
            max_abs_diff(
                vae.decode(reference(reference_dir, "latent")),
                reference(reference_dir, "decoded"),
            ),
        ),
    ];
    for (what, err) in errors {
        eprintln!("{model_dir} {what}: max abs err {err:.2e}");
        assert!(
            err <= TOLERANCE,
            "{model_dir}: {what} differs from diffusers by {err}"
        );
    }
    // The references are not trivially small: a wrong network could not pass by accident.
    let decoded_scale: f32 = reference(reference_dir, "decoded")
        .abs()
        .max()
        .into_scalar();
    assert!(decoded_scale > 0.05, "{decoded_scale}");
}

#[test]
fn four_block_vae_matches_diffusers() {
    check_against_diffusers("d4", "d4", VaeLayout::Diffusers);
}

#[test]
fn ldm_single_file_layout_matches_diffusers() {
    check_against_diffusers("d4-ldm", "d4", VaeLayout::Ldm);
}

#[test]
fn two_block_vae_with_legacy_attention_names_matches_diffusers() {
    check_against_diffusers(
        "d2-legacy",
        "d2-legacy",
        VaeLayout::DiffusersLegacyAttention,
    );
}

#[test]
fn bf16_weights_compute_in_f32_and_match_diffusers() {
    let file =
        SafetensorsFile::open(fixtures().join("d4-bf16/diffusion_pytorch_model.safetensors"))
            .unwrap();
    assert_eq!(
        file.dtype("encoder.conv_in.weight"),
        Some(safetensors::Dtype::BF16)
    );
    check_against_diffusers("d4-bf16", "d4-bf16", VaeLayout::Diffusers);
}

#[test]
fn vae_codec_scales_the_posterior_mean_and_inverts_the_scale_on_decode() {
    let device = Default::default();
    let vae = Vae::<B>::load(fixtures().join("d4"), &device).unwrap();
    assert_eq!(vae.scaling_factor(), 0.13025);
    let codec = VaeCodec::new(vae);
    assert_eq!(LatentCodec::<B>::id(&codec), CodecConfig::SdxlVae.id());
    let z = codec.encode(reference("d4", "image"));
    let expected = reference("d4", "mean") * 0.13025;
    assert!(max_abs_diff(z, expected) <= TOLERANCE);
    let decoded = codec.decode(reference("d4", "latent") * 0.13025);
    assert!(max_abs_diff(decoded, reference("d4", "decoded")) <= TOLERANCE);
    assert_eq!(
        CodecConfig::SdxlVae.latent_shape(32),
        [4, 4, 4],
        "the fixture has the SDXL-VAE's 8x down-sampling and 4 channels"
    );
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    match Vae::<B>::load(dir, &Default::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_vae_folders_give_errors_naming_file_tensor_or_field() {
    // Truncated weights.
    let dir = copy_fixture("d4");
    let weights = dir.path().join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("diffusion_pytorch_model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // A config that does not match the weights: the tensor and its shapes are named.
    let dir = copy_fixture("d4");
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"latent_channels\": 4", "\"latent_channels\": 8");
    std::fs::write(&config, text).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("encoder.conv_out.weight") && e.contains("shape"),
        "{e}"
    );

    // A bad config field.
    std::fs::write(&config, r#"{"layers_per_block": "two"}"#).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("layers_per_block") && e.contains("config.json"),
        "{e}"
    );

    // No config at all.
    std::fs::remove_file(&config).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("config.json"), "{e}");

    // A missing tensor in the LDM layout is named, with the layout.
    let dir = copy_fixture("d4-ldm");
    let path = dir.path().join("sdxl_vae.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "decoder.mid.attn_1.q.weight")
        .collect();
    let out = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&path, out).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("decoder.mid_block.attentions.0.to_q.weight")
            && e.contains("missing")
            && e.contains("LDM")
            && e.contains("sdxl_vae.safetensors"),
        "{e}"
    );

    // An empty folder.
    let dir = tempfile::tempdir().unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("no VAE weights"), "{e}");
}

#[test]
fn latent_scaling_follows_diffusers_with_and_without_shift() {
    let device = Default::default();
    let mut vae = Vae::<B>::load(fixtures().join("d4"), &device).unwrap();
    let z = reference("d4", "latent");
    let scaled = vae.scale_latents(z.clone());
    assert!(max_abs_diff(scaled.clone(), z.clone() * 0.13025) < 1e-7);
    assert!(max_abs_diff(vae.unscale_latents(scaled), z.clone()) < 1e-6);
    // A VAE with a shift (SD3 / Flux configs): (z - shift) * scale, and back.
    vae.config.shift_factor = Some(0.5);
    let scaled = vae.scale_latents(z.clone());
    assert!(max_abs_diff(scaled.clone(), (z.clone() - 0.5) * 0.13025) < 1e-7);
    assert!(max_abs_diff(vae.unscale_latents(scaled), z) < 1e-6);
}
