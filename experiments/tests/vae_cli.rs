//! `flowlens vae encode | decode` through the binary, on the tiny fixture VAE
//! (core/tests/fixtures/vae/d4, from tools/fixtures/make_vae_fixtures.py) against diffusers'
//! outputs.

mod common;
use std::path::{Path, PathBuf};

use common::run;
use flowlens_core::npy::NpyArray;
use flowlens_core::weights::SafetensorsFile;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/vae/d4")
}

fn reference(name: &str) -> (Vec<f32>, Vec<usize>) {
    let file = SafetensorsFile::open(model().join("reference.safetensors")).unwrap();
    let shape = file.shape(name).unwrap().to_vec();
    (file.read_f32(name, &shape).unwrap(), shape)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn read(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a = NpyArray::read(path).unwrap();
    (a.as_f32(), a.shape.clone())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn vae_encode_and_decode_through_the_binary_match_diffusers() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name);
    let m = model();
    let (image, shape) = reference("image");
    flowlens_core::npy::write_f32(t("image.npy"), &shape, &image).unwrap();

    // Posterior mean, raw and scaled.
    let (ok, _, err) = run(&[
        "vae",
        "encode",
        "--model",
        s(&m),
        s(&t("image.npy")),
        "--out",
        s(&t("z.npy")),
    ]);
    assert!(ok, "{err}");
    let (mean, _) = reference("mean");
    let (z, z_shape) = read(&t("z.npy"));
    assert_eq!(z_shape, [1, 4, 4, 4]);
    assert!(max_diff(&z, &mean) <= 1e-4);
    let (ok, _, err) = run(&[
        "vae",
        "encode",
        "--model",
        s(&m),
        s(&t("image.npy")),
        "--out",
        s(&t("zs.npy")),
        "--mean",
        "--scaled",
    ]);
    assert!(ok, "{err}");
    let scaled: Vec<f32> = mean.iter().map(|v| v * 0.13025).collect();
    assert!(max_diff(&read(&t("zs.npy")).0, &scaled) <= 1e-5);

    // Samples: reproducible per seed, different from the mean.
    let sample = |seed: &str, out: &str| {
        let (ok, _, err) = run(&[
            "vae",
            "encode",
            "--model",
            s(&m),
            s(&t("image.npy")),
            "--out",
            s(&t(out)),
            "--sample",
            "--seed",
            seed,
        ]);
        assert!(ok, "{err}");
        read(&t(out)).0
    };
    let (a, b, c) = (
        sample("3", "a.npy"),
        sample("3", "b.npy"),
        sample("4", "c.npy"),
    );
    assert_eq!(a, b);
    assert!(max_diff(&a, &c) > 1e-3 && max_diff(&a, &mean) > 1e-3);

    // Decode to float32 .npy (raw), and from scaled latents.
    let (latent, l_shape) = reference("latent");
    let (decoded, _) = reference("decoded");
    flowlens_core::npy::write_f32(t("latent.npy"), &l_shape, &latent).unwrap();
    let (ok, _, err) = run(&[
        "vae",
        "decode",
        "--model",
        s(&m),
        s(&t("latent.npy")),
        "--out",
        s(&t("x.npy")),
    ]);
    assert!(ok, "{err}");
    let (x, x_shape) = read(&t("x.npy"));
    assert_eq!(x_shape, [1, 3, 32, 32]);
    assert!(max_diff(&x, &decoded) <= 1e-4);
    let scaled_latent: Vec<f32> = latent.iter().map(|v| v * 0.13025).collect();
    flowlens_core::npy::write_f32(t("latent_s.npy"), &l_shape[1..], &scaled_latent).unwrap();
    let (ok, _, err) = run(&[
        "vae",
        "decode",
        "--model",
        s(&m),
        s(&t("latent_s.npy")),
        "--out",
        s(&t("xs.npy")),
        "--scaled",
    ]);
    assert!(ok, "{err}");
    assert!(max_diff(&read(&t("xs.npy")).0, &decoded) <= 1e-4);

    // Decode to PNG: clipped and quantised.
    let (ok, _, err) = run(&[
        "vae",
        "decode",
        "--model",
        s(&m),
        s(&t("latent.npy")),
        "--out",
        s(&t("x.png")),
    ]);
    assert!(ok, "{err}");
    let png = image::open(t("x.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (32, 32));
    for (xx, yy, px) in png.enumerate_pixels() {
        for ch in 0..3 {
            let v = decoded[(ch * 32 + yy as usize) * 32 + xx as usize];
            let q = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round();
            assert!((px[ch] as f32 - q).abs() <= 1.0, "{v} -> {}", px[ch]);
        }
    }

    // A PNG input is the same as its [-1, 1] array.
    let (ok, _, err) = run(&[
        "vae",
        "encode",
        "--model",
        s(&m),
        s(&t("x.png")),
        "--out",
        s(&t("zp.npy")),
    ]);
    assert!(ok, "{err}");
    let as_array: Vec<f32> = {
        let mut v = vec![0f32; 3 * 32 * 32];
        for (xx, yy, px) in png.enumerate_pixels() {
            for ch in 0..3 {
                v[(ch * 32 + yy as usize) * 32 + xx as usize] = px[ch] as f32 / 127.5 - 1.0;
            }
        }
        v
    };
    flowlens_core::npy::write_f32(t("xq.npy"), &[3, 32, 32], &as_array).unwrap();
    let (ok, _, err) = run(&[
        "vae",
        "encode",
        "--model",
        s(&m),
        s(&t("xq.npy")),
        "--out",
        s(&t("zq.npy")),
    ]);
    assert!(ok, "{err}");
    assert_eq!(read(&t("zp.npy")).0, read(&t("zq.npy")).0);
}

#[test]
fn vae_commands_reject_bad_inputs_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name);
    let m = model();
    std::fs::write(t("broken.png"), b"not a png").unwrap();
    flowlens_core::npy::write_f32(t("odd.npy"), &[1, 3, 30, 30], &vec![0.0; 2700]).unwrap();
    flowlens_core::npy::write_f32(t("wide.npy"), &[1, 8, 4, 4], &vec![0.0; 128]).unwrap();
    flowlens_core::npy::write_f32(t("z.npy"), &[1, 4, 4, 4], &vec![0.0; 64]).unwrap();
    // (command, model folder, input, output, what the error must mention)
    let cases: [(&str, PathBuf, &str, &str, &[&str]); 5] = [
        ("encode", m.clone(), "broken.png", "z.npy", &["broken.png"]),
        (
            "encode",
            m.clone(),
            "odd.npy",
            "z.npy",
            &["odd.npy", "multiple"],
        ),
        (
            "decode",
            m.clone(),
            "wide.npy",
            "x.png",
            &["wide.npy", "[B, 4, h, w]"],
        ),
        ("decode", m.clone(), "z.npy", "x.bmp", &[".png", ".npy"]),
        ("decode", t("nowhere"), "z.npy", "x.npy", &["nowhere"]),
    ];
    for (command, model, input, output, needles) in cases {
        let (ok, _, err) = run(&[
            "vae",
            command,
            "--model",
            s(&model),
            s(&t(input)),
            "--out",
            s(&t(output)),
        ]);
        assert!(!ok, "vae {command} {input} -> {output} should fail");
        for needle in needles {
            assert!(
                err.contains(needle),
                "vae {command} {input}: `{needle}` not in {err}"
            );
        }
    }
}
