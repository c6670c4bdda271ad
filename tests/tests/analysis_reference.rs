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

/// tools/fixtures/make_inference_fixtures.py: bootstrap, pairing-permutation and swap
/// replicates computed explicitly with Kornblith's CKA on resampled features (the debiased
/// bootstrap with copies of a prompt left out of its pairs), and the interval and p-values made
/// of them.
#[test]
fn inference_over_prompts_matches_the_explicit_numpy_computation() {
    use flowlens_analysis::inference::{NullTest, PairedGrams, PromptInterval, Resamples, Tail};
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("inference.json")).unwrap())
            .unwrap();
    let [xa, ya, xb, yb] = ["xa", "ya", "xb", "yb"].map(|m| load(&format!("inference_{m}")));
    let grams = PairedGrams::new(xa.view(), ya.view(), xb.view(), yb.view()).unwrap();
    let n = doc["n"].as_u64().unwrap() as usize;
    let list = |key: &str| -> Vec<Vec<serde_json::Value>> {
        doc[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_array().unwrap().clone())
            .collect()
    };
    let draw = Resamples {
        n,
        counts: list("bootstrap_indices")
            .iter()
            .map(|v| {
                let idx: Vec<usize> = v.iter().map(|i| i.as_u64().unwrap() as usize).collect();
                Resamples::counts_of(n, &idx)
            })
            .collect(),
        permutations: list("permutations")
            .iter()
            .map(|v| v.iter().map(|i| i.as_u64().unwrap() as usize).collect())
            .collect(),
        swaps: list("swap_masks")
            .iter()
            .map(|v| v.iter().map(|b| b.as_bool().unwrap()).collect())
            .collect(),
    };
    let reps = grams.replicates(&draw);
    type Terms = [flowlens_analysis::CkaTerms; 2];
    let check = |got: &dyn Fn(Estimator) -> Terms, want: &serde_json::Value, what: &str| {
        for (m, side) in [(0, "a"), (1, "b")] {
            for est in [Estimator::Biased, Estimator::Debiased] {
                let w = want[side][est.name()].as_f64().unwrap();
                let g = got(est)[m].value(est, "X", "Y").unwrap();
                assert!((g - w).abs() < 1e-10, "{what} {side} {est:?}: {g} vs {w}");
            }
        }
    };
    check(&|_| reps.full, &doc["full"], "full sample");
    for (r, g) in reps.bootstrap.iter().enumerate() {
        check(
            &|e| *g.get(e),
            &doc["bootstrap"][r],
            &format!("bootstrap {r}"),
        );
    }
    for (kind, got) in [
        ("permuted", &reps.permuted),
        ("swapped", reps.swapped.as_ref().unwrap()),
    ] {
        for (r, g) in got.iter().enumerate() {
            check(&|_| *g, &doc[kind][r], &format!("{kind} {r}"));
        }
    }
    for est in [Estimator::Biased, Estimator::Debiased] {
        let want = &doc["stats"][est.name()];
        let delta_of = |t: &[flowlens_analysis::CkaTerms; 2]| {
            Some(t[0].value(est, "X", "Y").ok()? - t[1].value(est, "X", "Y").ok()?)
        };
        let observed = delta_of(&reps.full).unwrap();
        let boot: Vec<_> = reps
            .bootstrap
            .iter()
            .map(|t| delta_of(t.get(est)))
            .collect();
        let ci = PromptInterval::of(&boot, 0.95).unwrap();
        let f = |k: &str, i: usize| want[k][i].as_f64().unwrap();
        assert!(
            (ci.lower - f("delta_ci95", 0)).abs() < 1e-10,
            "{est:?} {ci:?}"
        );
        assert!(
            (ci.upper - f("delta_ci95", 1)).abs() < 1e-10,
            "{est:?} {ci:?}"
        );
        let null: Vec<_> = reps
            .swapped
            .as_ref()
            .unwrap()
            .iter()
            .map(delta_of)
            .collect();
        let swap = NullTest::of(observed, &null, Tail::TwoSided).unwrap();
        assert_eq!(swap.p, want["delta_swap_p"].as_f64().unwrap(), "{est:?}");
        let pair_null: Vec<_> = reps
            .permuted
            .iter()
            .map(|t| t[0].value(est, "X", "Y").ok())
            .collect();
        let own = reps.full[0].value(est, "X", "Y").unwrap();
        let pairing = NullTest::of(own, &pair_null, Tail::Upper).unwrap();
        assert_eq!(pairing.p, want["a_pairing_p"].as_f64().unwrap(), "{est:?}");
    }
}
