//! `flowlens cka` and `flowlens fid` through the binary, on the committed reference fixtures.

use std::path::{Path, PathBuf};
mod common;
use common::run;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../analysis/tests/fixtures")
}

fn fx(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

#[test]
fn cka_json_has_both_estimates_and_the_null() {
    let (ok, out, err) = run(&[
        "cka",
        &fx("kornblith_x.npy"),
        &fx("kornblith_y.npy"),
        "--json",
        "--permutations",
        "50",
        "--bootstrap",
        "50",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["n"].as_u64(), v["dx"].as_u64(), v["dy"].as_u64()),
        (Some(100), Some(10), Some(10))
    );
    assert!((v["biased"].as_f64().unwrap() - 0.55761).abs() < 1e-5);
    assert!((v["debiased"].as_f64().unwrap() - 0.51346).abs() < 1e-5);
    assert!(v["debiased_null"]["p_value"].as_f64().unwrap() < 0.05);
    assert!(v["biased_ci"]["lower"].as_f64().unwrap() < v["biased_ci"]["upper"].as_f64().unwrap());
    let (ok, out, _) = run(&[
        "cka",
        &fx("kornblith_x.npy"),
        &fx("kornblith_y.npy"),
        "--json",
        "--estimator",
        "debiased",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && v.get("biased").is_none() && v["debiased"].is_f64());
}

#[test]
fn fid_json_matches_pytorch_fid() {
    let (ok, out, err) = run(&[
        "fid",
        &fx("fid_full_a.npy"),
        &fx("fid_full_b.npy"),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!((v["fid"].as_f64().unwrap() - 28.48166440156767).abs() < 1e-8);
}

#[test]
fn mismatched_or_bad_inputs_are_clear_errors() {
    let (ok, _, err) = run(&["cka", &fx("kornblith_x.npy"), &fx("wide_y.npy")]);
    assert!(
        !ok && err.contains("rows must pair the same samples"),
        "{err}"
    );
    let (ok, _, err) = run(&["fid", &fx("fid_full_a.npy"), &fx("kornblith_x.npy")]);
    assert!(!ok && err.contains("dimensions"), "{err}");
    let (ok, _, err) = run(&["cka", &fx("expected.json"), &fx("kornblith_y.npy")]);
    assert!(!ok && err.contains("expected.json"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.npy");
    flowlens_core::npy::write_f32(&tiny, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 7.0]).unwrap();
    let t = tiny.display().to_string();
    let (ok, _, err) = run(&["cka", &t, &t, "--estimator", "debiased"]);
    assert!(!ok && err.contains("at least 4"), "{err}");
}
