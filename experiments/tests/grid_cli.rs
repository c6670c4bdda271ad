//! `flowlens grid` through the binary on a small feature store: several row taps in one call.

use std::path::Path;

use flowlens_experiments::grid::synthetic::{SyntheticStore, write_run};
mod common;
use common::run;

/// A run with the store `probes-t`: two encoder streams and two LLM layers, 8 prompts x 6
/// features, 2 steps, seed 0.
fn write_test_run(dir: &Path) {
    let taps = ["enc.noise", "enc.text", "llm.h01.image", "llm.h02.image"];
    let s = SyntheticStore {
        store: "probes-t".into(),
        taps: taps.iter().map(|t| t.to_string()).collect(),
        steps: 2,
        seeds: vec![0],
        prompts: 8,
        width: 6,
    };
    write_run(dir, &s).unwrap();
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
    write_test_run(&dir);
    let layers = vec!["llm.h01.image".to_string(), "llm.h02.image".to_string()];
    let expected = vec![
        ("enc.noise".to_string(), layers.clone()),
        ("enc.text".to_string(), layers),
    ];
    let grid = |a: &str, out: &Path| {
        run(&[
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
        ])
    };
    for (i, a) in ["enc.noise,enc.text", "enc.*"].into_iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let (ok, _, err) = grid(a, &out);
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
    let (ok, _, err) = grid("enc.noise,enc.nosie", &out);
    assert!(!ok);
    assert!(
        err.contains("enc.nosie") && err.contains("enc.text"),
        "{err}"
    );
    assert!(!out.join("grid").exists(), "nothing written");
}
