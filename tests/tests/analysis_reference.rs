//! The analysis crate against the reference implementations, on committed fixtures made by
//! tools/fixtures/make_analysis_fixtures.py: Kornblith et al.'s CKA (including the golden
//! values 0.55761 / 0.51346 of their notebook) and pytorch-fid's FID.

use std::path::PathBuf;

use flowlens_analysis::cka::{self, Estimator, Form};
use flowlens_analysis::fid;
use flowlens_experiments::io::read_matrix;
use flowlens_tests::repo_root;
use ndarray::Array2;

fn fixtures() -> PathBuf {
    repo_root().join("analysis/tests/fixtures")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap())
        .unwrap()
}

fn load(name: &str) -> Array2<f64> {
    read_matrix(&fixtures().join(format!("{name}.npy"))).unwrap()
}

#[test]
fn kornblith_golden_values() {
    let (x, y) = (load("kornblith_x"), load("kornblith_y"));
    let biased = cka::linear_cka(x.view(), y.view(), Estimator::Biased).unwrap();
    let debiased = cka::linear_cka(x.view(), y.view(), Estimator::Debiased).unwrap();
    assert_eq!(format!("{biased:.5}"), "0.55761");
    assert_eq!(format!("{debiased:.5}"), "0.51346");
}

#[test]
fn cka_matches_the_reference_implementation_in_every_form() {
    let expected = expected();
    for case in ["kornblith", "wide", "offset"] {
        let (x, y) = (load(&format!("{case}_x")), load(&format!("{case}_y")));
        for form in [Form::Feature, Form::Gram] {
            let t = cka::terms_with(x.view(), y.view(), form).unwrap();
            for est in [Estimator::Biased, Estimator::Debiased] {
                let want = expected["cka"][case][est.name()].as_f64().unwrap();
                let got = t.value(est, "X", "Y").unwrap();
                assert!(
                    (got - want).abs() < 1e-10,
                    "{case} {form:?} {est:?}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn fid_matches_pytorch_fid() {
    let expected = expected();
    for (case, tol) in [("full", 1e-9), ("singular", 1e-6)] {
        let (a, b) = (
            load(&format!("fid_{case}_a")),
            load(&format!("fid_{case}_b")),
        );
        let got = fid::fid_from_features(a.view(), b.view()).unwrap();
        let want = expected["fid"][case].as_f64().unwrap();
        assert!(
            ((got - want) / want).abs() < tol,
            "{case}: {got} vs pytorch-fid {want}"
        );
    }
}
