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
