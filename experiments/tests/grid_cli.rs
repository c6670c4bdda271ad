//! `flowlens grid` through the binary on a small feature store: several row taps in one call.

use std::path::Path;

use flowlens_core::checkpoint::Weights;
use flowlens_core::flow::TapPooling;
use flowlens_core::run::{Manifest, RunDir};
use flowlens_core::store::{
    ProbeDtype, SeedRows, StoreHeader, StoreMode, StoreName, StorePaths, StoreWriter,
};
mod common;
use common::run;

/// A run with the store `probes-t`: two encoder streams and two LLM layers, 8 prompts x 6
/// features, 2 steps, seed 0.
fn write_run(dir: &Path) {
    let run = RunDir::create(dir).unwrap();
    run.write_manifest(&Manifest::new(&serde_json::json!({}), vec![0], "cpu"))
        .unwrap();
    let mut w = StoreWriter::new(
        StorePaths::new(dir, StoreName::new("probes-t").unwrap()),
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts: (0..8).map(|i| format!("p{i}")).collect(),
            times: vec![0.0, 0.5],
            cfg: 1.0,
            pooling: TapPooling::Mean,
            dtype: ProbeDtype::F32,
            checkpoint_step: 0,
            weights: Weights::Ema,
            tap_steps: None,
        },
    );
    let mut rows = SeedRows::new(0, 8);
    let mut state = 7u32;
    for step in 0..2 {
        for tap in ["enc.noise", "enc.text", "llm.h01.image", "llm.h02.image"] {
            let v: Vec<f32> = (0..48)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            rows.add(tap, step, 0, &v, 6);
        }
    }
    w.write_seed(rows).unwrap();
}

/// The grid results under `out/grid/`, as `(a, taps)`, sorted by `a`.
fn grids(out: &Path) -> Vec<(String, Vec<String>)> {
    let mut found: Vec<(String, Vec<String>)> = std::fs::read_dir(out.join("grid"))
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["format"], "flowlens.grid.v1");
            let taps = v["taps"].as_array().unwrap();
            let taps = taps.iter().map(|t| t.as_str().unwrap().to_string());
            (v["a"].as_str().unwrap().to_string(), taps.collect())
        })
        .collect();
    found.sort();
    found
}

#[test]
fn one_grid_call_takes_a_list_or_a_pattern_of_row_taps_and_names_an_unknown_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    write_run(&dir);
    let layers = vec!["llm.h01.image".to_string(), "llm.h02.image".to_string()];
    let expected = vec![
        ("enc.noise".to_string(), layers.clone()),
        ("enc.text".to_string(), layers),
    ];
    for (i, a) in ["enc.noise,enc.text", "enc.*"].into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let (ok, _, err) = run(&[
            "grid",
            "--run",
            dir.to_str().unwrap(),
            "--store",
            "probes-t",
            "--a",
            a,
            "--b",
            "llm.h*.image",
            "--seeds",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(ok, "--a {a}: {err}");
        assert_eq!(
            grids(&out),
            expected,
            "--a {a}: one result file per row tap"
        );
        // The report reads both.
        let (ok, _, err) = run(&["report", out.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let out = tmp.path().join("bad");
    let (ok, _, err) = run(&[
        "grid",
        "--run",
        dir.to_str().unwrap(),
        "--store",
        "probes-t",
        "--a",
        "enc.noise,enc.nosie",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!ok);
    assert!(
        err.contains("enc.nosie") && err.contains("enc.text"),
        "{err}"
    );
    assert!(!out.join("grid").exists(), "nothing written");
}
