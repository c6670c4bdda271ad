//! The reduced demo through the binary: every promised file exists and parses, the numbers in
//! the tables are what the analysis crate computes from the stored features, the exp2 encoder is
//! bit-identical in both systems, and a rerun reuses everything and rewrites the same report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flowlens_analysis::cka::{Estimator, linear_cka};
use flowlens_analysis::curves::auc;
use flowlens_core::store::{FeatureStore, Seeds};
use flowlens_experiments::io::matrix;
use serde_json::Value;

fn demo(out: &Path, cache: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(["demo", "--quick", "--out"])
        .arg(out)
        .env("FLOWLENS_CACHE", cache)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Rows of a CSV file as maps from the header.
fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(
                cells.len(),
                header.len(),
                "{}: ragged row {l}",
                path.display()
            );
            header
                .iter()
                .cloned()
                .zip(cells.iter().map(|c| c.to_string()))
                .collect()
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn quick_demo_writes_every_promised_file_with_the_analysis_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let cache = tmp.path().join("cache");
    let (ok, stderr) = demo(&out, &cache);
    assert!(ok, "demo failed:\n{stderr}");

    // The report: index files, manifest, every figure as PNG and SVG, every table as CSV+LaTeX.
    let report = out.join("report");
    let index = std::fs::read_to_string(report.join("index.md")).unwrap();
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    let manifest = json(&report.join("manifest.json"));
    assert_eq!(manifest["format"], "flowlens.report.v1");
    assert_eq!(
        manifest["runs"].as_array().unwrap().len(),
        6,
        "5 variants + exp2 system"
    );
    for run in manifest["runs"].as_array().unwrap() {
        assert!(run["config_hash"].as_str().unwrap().len() == 16);
    }
    let figures = [
        "ablation_adherence",
        "ablation_loss",
        "exp1_delta_text_debiased",
        "exp1_delta_text_biased",
        "exp1_delta_noise_debiased",
        "exp1_delta_noise_biased",
        "exp1_cka_text",
        "exp1_cka_noise",
        "exp2_curves_debiased",
        "exp2_curves_biased",
        "exp2_auc",
    ];
    for stem in figures {
        let png = report.join(format!("figures/{stem}.png"));
        let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(img.width() > 500 && img.height() > 300, "{stem}");
        let svg = std::fs::read_to_string(report.join(format!("figures/{stem}.svg"))).unwrap();
        assert!(svg.contains("<svg"), "{stem}.svg");
        assert!(
            index.contains(&format!("figures/{stem}.png")),
            "index.md links {stem}"
        );
        assert!(
            html.contains(&format!("figures/{stem}.png")),
            "index.html links {stem}"
        );
    }
    // Drawn when a seed reached the threshold, otherwise said in words.
    assert!(
        report.join("figures/exp2_time_to_threshold.png").exists()
            || index.contains("time-to-threshold is not drawn")
    );
    let grid_figs: Vec<_> = std::fs::read_dir(report.join("figures"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            n.starts_with("grid_").then_some(n)
        })
        .collect();
    assert_eq!(
        grid_figs.len(),
        2,
        "grid heatmap as PNG and SVG: {grid_figs:?}"
    );
    for table in [
        "ablation",
        "exp1_delta_text_debiased",
        "exp1_delta_text_biased",
        "exp1_delta_noise_debiased",
        "exp1_delta_noise_biased",
        "exp2_summary",
    ] {
        assert!(
            !csv(&report.join(format!("tables/{table}.csv"))).is_empty(),
            "{table}"
        );
        let tex = std::fs::read_to_string(report.join(format!("tables/{table}.tex"))).unwrap();
        assert!(
            tex.contains("\\begin{tabular}") && tex.contains("\\bottomrule"),
            "{table}"
        );
    }

    // Experiment 1: every cell's CKA recomputed from the stored features.
    let r1 = json(&out.join("exp1/results.json"));
    let ours = PathBuf::from(r1["ours"].as_str().unwrap());
    let base = PathBuf::from(r1["baseline"].as_str().unwrap());
    let seeds: Vec<u64> = r1["seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let cells_csv = csv(&report.join("tables/exp1_cells.csv"));
    let cells = r1["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2 * 2 * 2, "2 streams x 2 layers x 2 steps");
    assert_eq!(cells_csv.len(), cells.len());
    for (cell, row) in cells.iter().zip(&cells_csv) {
        let stream = cell["stream"].as_str().unwrap();
        let (enc, part) = if stream == "text" {
            ("enc.text", "text")
        } else {
            ("enc.noise", "image")
        };
        let layer = cell["layer"].as_u64().unwrap();
        let step = cell["step"].as_u64().unwrap();
        let llm = format!("llm.h{layer:02}.{part}");
        let mut deltas = Vec::new();
        for &seed in &seeds {
            let cka = |store: &Path| {
                let store = FeatureStore::open_dir(store).unwrap();
                let f = |tap: &str| {
                    matrix(
                        store
                            .read(tap, seed, step as usize, Seeds::Complete)
                            .unwrap(),
                    )
                };
                let (x, y) = (f(enc), f(&llm));
                linear_cka(x.view(), y.view(), Estimator::Debiased).unwrap()
            };
            deltas.push(cka(&ours) - cka(&base));
        }
        let mean = deltas.iter().sum::<f64>() / deltas.len() as f64;
        let stored = cell["delta_debiased"]["mean"].as_f64().unwrap();
        assert!(
            close(mean, stored),
            "{stream} l{layer} s{step}: {mean} vs {stored}"
        );
        let in_csv: f64 = row["delta_debiased_mean"].parse().unwrap();
        assert!(
            close(mean, in_csv),
            "csv {stream} l{layer} s{step}: {mean} vs {in_csv}"
        );
        assert_eq!(row["stream"], stream);
    }

    // Every cell carries its interval over prompts and its nulls; n = 8 is flagged as too few.
    for cell in cells {
        for who in ["ours", "baseline", "delta"] {
            let i = &cell["inference"]["debiased"][who];
            let (lo, hi) = (
                i["ci"]["lower"].as_f64().unwrap(),
                i["ci"]["upper"].as_f64().unwrap(),
            );
            assert!(lo <= hi, "{who}: {i}");
            let p = i["null"]["p"].as_f64().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{who}: {i}");
        }
    }
    assert!(
        index.contains("Warning: too few prompts"),
        "n = 8 is flagged"
    );
    assert!(
        index.contains("not distinguishable from the null") || index.contains("above the null"),
        "verdicts in the report"
    );
    // The frozen-prior reading: both runs start from the same stage-0 prior.
    assert!(r1["prior"].is_string(), "{}", r1["prior"]);
    for cell in cells {
        let d = &cell["prior"]["debiased"]["delta"];
        assert!(
            d["ci"].is_object() && d["null"]["tail"] == "two_sided",
            "{d}"
        );
    }
    assert!(
        index.contains("Against the frozen prior"),
        "prior table in the report"
    );

    // Experiment 2: the encoder is the same tensors, and the AUCs come from the stored curves.
    let r2 = json(&out.join("exp2/results.json"));
    assert!(r2["encoder_tensors_identical"].as_u64().unwrap() > 10);
    let ts: Vec<f64> = r2["ts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let summary = csv(&report.join("tables/exp2_summary.csv"));
    let delta_auc = &r2["comparisons"][0]["debiased"]["delta_auc"];
    assert!(
        delta_auc["null"]["tail"] == "two_sided" && delta_auc["ci"].is_object(),
        "{delta_auc}"
    );
    for (c, row) in r2["conditions"].as_array().unwrap().iter().zip(&summary) {
        let store = FeatureStore::open_dir(Path::new(c["run"].as_str().unwrap())).unwrap();
        let mut aucs = Vec::new();
        for &seed in &seeds {
            let curve: Vec<f64> = (0..ts.len())
                .map(|k| {
                    let f = |tap: &str| matrix(store.read(tap, seed, k, Seeds::Complete).unwrap());
                    let (x, y) = (f("enc.text"), f("enc.noise"));
                    linear_cka(x.view(), y.view(), Estimator::Debiased).unwrap()
                })
                .collect();
            aucs.push(auc(&ts, &curve).unwrap());
        }
        let mean = aucs.iter().sum::<f64>() / aucs.len() as f64;
        let in_csv: f64 = row["auc_debiased_mean"].parse().unwrap();
        assert!(close(mean, in_csv), "{}: AUC {mean} vs {in_csv}", c["name"]);
    }

    // The ablation table's adherence is the last evaluation in each run's metrics.
    let table = csv(&report.join("tables/ablation.csv"));
    assert_eq!(table.len(), 5);
    for row in &table {
        let variant = &row["Model"];
        let metrics =
            std::fs::read_to_string(out.join(format!("ablation/{variant}/seed0/metrics.jsonl")))
                .unwrap();
        let last = metrics
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .rfind(|v| v["event"] == "eval")
            .unwrap_or_else(|| panic!("{variant} was never evaluated"));
        let expect = last["adherence"]["overall"].as_f64().unwrap();
        let got: f64 = row["adherence_mean"].parse().unwrap();
        assert!(close(expect, got), "{variant}: {expect} vs {got}");
    }

    // A rerun reuses every stage and writes the same report, byte for byte.
    let before = snapshot(&report);
    let (ok, stderr) = demo(&out, &cache);
    assert!(ok, "rerun failed:\n{stderr}");
    assert!(
        !stderr.contains("training"),
        "the rerun trained again:\n{stderr}"
    );
    assert!(
        !stderr.contains("sampling"),
        "the rerun sampled again:\n{stderr}"
    );
    assert_eq!(
        snapshot(&report),
        before,
        "the report changed between identical runs"
    );

    // Experiment 2 samples `ours` at the transfer step, whose encoder it checked, even when
    // `ours` has a newer checkpoint since (here: step 2's weights filed as step 6).
    let ckpts = out.join("ablation/both/seed0/checkpoints");
    let (from, to) = (ckpts.join("step-00000002"), ckpts.join("step-00000006"));
    std::fs::create_dir(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    let quick = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/experiments/quick.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(["exp2", "--config"])
        .arg(&quick)
        .arg("--out")
        .arg(&out)
        .env("FLOWLENS_CACHE", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "exp2 after a newer checkpoint:\n{stderr}"
    );
    let r2 = json(&out.join("exp2/results.json"));
    let single = &r2["conditions"][0];
    assert_eq!(single["name"], "single-stream decoder");
    assert_eq!(
        single["checkpoint_step"], 4,
        "`ours` sampled at the transfer step, not at its newer checkpoint"
    );
}

#[test]
fn experiment_files_with_mistakes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[exp1]\nlayers = [1]\nsolver_step = 30\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(["exp1", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("bad.toml") && stderr.contains("exp1.solver_step"),
        "{stderr}"
    );
    // exp1 on runs that do not exist says to train them first.
    std::fs::write(
        &bad,
        format!("out = \"{}\"\n", tmp.path().join("x").display()),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(["exp1", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("train it first"), "{stderr}");
}
