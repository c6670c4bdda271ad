//! `flowlens llm-features` through the binary, against the transformers reference hidden states.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowlens_core::npy::NpyArray;
use flowlens_core::weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/llama")
}

fn flowlens(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(args)
        .output()
        .expect("run flowlens");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Reference hidden states `[L+1, b, s, d]` of a case, with its mask.
fn reference(case: &str) -> (Vec<f32>, Vec<i64>, [usize; 4]) {
    let r = SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap();
    let (mask, ms) = r.read_i64(&format!("{case}.attention_mask")).unwrap();
    let key = format!("{case}.hidden_states");
    let shape: [usize; 4] = r.shape(&key).unwrap().try_into().unwrap();
    assert_eq!(&shape[1..3], &ms[..]);
    (r.read_f32(&key, &shape).unwrap(), mask, shape)
}

#[test]
fn mean_pooled_prompt_features_match_transformers() {
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompts: Vec<String> = serde_json::from_value(tokens["prompts"].clone()).unwrap();
    let prompts_file = dir.path().join("prompts.txt");
    std::fs::write(&prompts_file, prompts.join("\n") + "\n\n").unwrap();
    let out = dir.path().join("features");
    let model = fixtures().join("tiny-llama");
    let (ok, err) = flowlens(&[
        "llm-features",
        "--model",
        p(&model),
        "--prompts",
        p(&prompts_file),
        "--layers",
        "0,2,3",
        "--batch-size",
        "4",
        "--out",
        p(&out),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["n"], prompts.len());
    assert_eq!(meta["pooling"], "mean");

    // The right-padded reference batch is these prompts: mean over real tokens per row.
    let (hs, mask, [_, b, s, d]) = reference("right");
    for layer in [0usize, 2, 3] {
        let ours = NpyArray::read(out.join(format!("layer_{layer:02}.npy"))).unwrap();
        assert_eq!(ours.shape, vec![b, d]);
        let ours = ours.as_f32();
        for row in 0..b {
            let count = mask[row * s..(row + 1) * s].iter().sum::<i64>() as f32;
            for k in 0..d {
                let mean: f32 = (0..s)
                    .filter(|&t| mask[row * s + t] == 1)
                    .map(|t| hs[((layer * b + row) * s + t) * d + k])
                    .sum::<f32>()
                    / count;
                let got = ours[row * d + k];
                assert!(
                    (got - mean).abs() <= 1e-4,
                    "layer {layer} row {row}: {got} vs {mean}"
                );
            }
        }
    }
    assert!(!out.join("layer_01.npy").exists());
}

#[test]
fn unpooled_features_from_id_arrays_match_transformers_with_left_padding() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f");
    let model = fixtures().join("tiny-llama");
    let (ok, err) = flowlens(&[
        "llm-features",
        "--model",
        p(&model),
        "--input-ids",
        p(&fixtures().join("left.input_ids.npy")),
        "--attention-mask",
        p(&fixtures().join("left.attention_mask.npy")),
        "--pool",
        "none",
        "--out",
        p(&out),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let (hs, mask, [layers, b, s, d]) = reference("left");
    for layer in 0..layers {
        let ours = NpyArray::read(out.join(format!("layer_{layer:02}.npy"))).unwrap();
        assert_eq!(ours.shape, vec![b, s, d]);
        let ours = ours.as_f32();
        let reference = &hs[layer * b * s * d..(layer + 1) * b * s * d];
        for (i, (a, r)) in ours.iter().zip(reference).enumerate() {
            assert!(a.is_finite());
            if mask[i / d] == 1 {
                assert!(
                    (a - r).abs() <= 1e-4,
                    "layer {layer} element {i}: {a} vs {r}"
                );
            }
        }
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny-llama");
    let ids = fixtures().join("left.input_ids.npy");
    let out = dir.path().join("o");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--input-ids".into(),
                p(&ids).into(),
                "--attention-mask".into(),
                p(&model.join("config.json")).into(),
            ],
            "not a valid .npy",
        ),
        (
            vec![
                "--input-ids".into(),
                p(&ids).into(),
                "--layers".into(),
                "2,9".into(),
            ],
            "layer 9 does not exist",
        ),
        (
            vec![
                "--input-ids".into(),
                p(&ids).into(),
                "--device".into(),
                "cuda:0".into(),
            ],
            "cuda",
        ),
        (
            vec![
                "--input-ids".into(),
                p(&ids).into(),
                "--layers".into(),
                "two".into(),
            ],
            "not a layer index",
        ),
    ];
    for (extra, expected) in cases {
        let mut args = vec![
            "llm-features".to_string(),
            "--model".into(),
            p(&model).into(),
            "--out".into(),
            p(&out).into(),
        ];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = flowlens(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            err.to_lowercase().contains(&expected.to_lowercase()),
            "{args:?}: {err}"
        );
    }
    // Blank line in the middle of a prompts file; model folder without a tokenizer.
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\n\nblue square\n").unwrap();
    let (ok, err) = flowlens(&[
        "llm-features",
        "--model",
        p(&model),
        "--prompts",
        p(&prompts),
        "--out",
        p(&out),
    ]);
    assert!(!ok && err.contains("line 2 is blank"), "{err}");
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(model.join("config.json"), bare.join("config.json")).unwrap();
    std::fs::copy(
        model.join("model.safetensors"),
        bare.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(&prompts, "a red circle\n").unwrap();
    let (ok, err) = flowlens(&[
        "llm-features",
        "--model",
        p(&bare),
        "--prompts",
        p(&prompts),
        "--out",
        p(&out),
    ]);
    assert!(!ok && err.contains("tokenizer.json"), "{err}");
    // A mask whose shape differs from the ids.
    let mask = dir.path().join("mask.npy");
    flowlens_core::npy::write_f32(&mask, &[2, 3], &[1.0; 6]).unwrap();
    let (ok, err) = flowlens(&[
        "llm-features",
        "--model",
        p(&model),
        "--input-ids",
        p(&ids),
        "--attention-mask",
        p(&mask),
        "--out",
        p(&out),
    ]);
    assert!(
        !ok && err.contains("attention mask has shape [2, 3]"),
        "{err}"
    );
    assert!(
        !out.join("meta.json").exists(),
        "a failed run leaves no meta.json"
    );
}
