//! `flowlens model-info` through the binary.

mod common;
use common::run;

#[test]
fn model_info_json_counts_the_paper_preset_without_allocating_it() {
    for variant in ["baseline", "decoder-only", "encoder-only", "both", "uvit"] {
        let (ok, out, err) = run(&[
            "model-info",
            "--preset",
            "paper",
            "--variant",
            variant,
            "--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let total = v["total"].as_u64().unwrap();
        let sum: u64 = ["llm", "time_embed", "encoder", "decoder", "uvit"]
            .iter()
            .map(|k| v[k].as_u64().unwrap())
            .sum();
        assert_eq!(total, sum, "{variant}");
        assert!(
            (1.0e9..1.4e9).contains(&(total as f64)),
            "{variant}: {total}"
        );
        assert_eq!(
            v["llm"].as_u64().unwrap() + v["llm_lm_head"].as_u64().unwrap(),
            1_100_048_384
        );
    }
    let (ok, out, _) = run(&["model-info", "--preset", "tiny", "--variant", "both"]);
    assert!(ok && out.contains("total (built)") && out.contains("encoder"));
    let (ok, _, err) = run(&["model-info", "--preset", "huge"]);
    assert!(!ok && err.contains("unknown preset"), "{err}");
}

#[test]
fn the_memory_plan_splits_the_batch_and_names_its_parts() {
    let plan = |devices: &str| {
        let (ok, out, err) = run(&[
            "model-info",
            "--preset",
            "paper",
            "--variant",
            "both",
            "--memory",
            "--batch-size",
            "16",
            "--devices",
            devices,
            "--precision",
            "mixed",
            "--json",
        ]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["memory"].clone()
    };
    let (one, eight) = (plan("1"), plan("8"));
    assert_eq!(
        (
            one["rows_per_device"].as_u64(),
            eight["rows_per_device"].as_u64()
        ),
        (Some(16), Some(2))
    );
    assert_eq!(one["weights"], eight["weights"]);
    assert!(eight["attention"].as_u64() < one["attention"].as_u64());
    assert_eq!(one["gradient_buffer"].as_u64(), Some(0));
    assert!(eight["gradient_buffer"].as_u64() > Some(0));
    let parts: u64 = [
        "weights",
        "ema",
        "gradients",
        "optimizer",
        "gradient_buffer",
        "activations",
        "attention",
        "bf16_weights",
    ]
    .iter()
    .map(|k| eight[k].as_u64().unwrap())
    .sum();
    assert_eq!(eight["total"].as_u64(), Some(parts));
    let (ok, out, _) = run(&["model-info", "--preset", "tiny", "--memory", "--on", "cpu"]);
    assert!(
        ok && out.contains("attention matrices kept for backward"),
        "{out}"
    );
    let (ok, _, err) = run(&["model-info", "--memory", "--on", "tpu"]);
    assert!(!ok && err.contains("--on tpu"), "{err}");
}

#[test]
fn the_bench_times_training_and_sampling_of_random_weights() {
    let (ok, out, err) = run(&[
        "bench",
        "train",
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["samples_per_s"].as_f64().unwrap() > 0.0);
    let (ok, out, err) = run(&[
        "bench",
        "sample",
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--solver-steps",
        "2",
    ]);
    assert!(
        ok && out.contains("images/s") && out.contains("with every tap"),
        "{err}"
    );
}
