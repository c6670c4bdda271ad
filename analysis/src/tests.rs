//! Property tests of ANALYSIS.md section 1 and the behaviour of the summaries. Golden values
//! against the reference implementations (Kornblith's CKA, pytorch-fid) live in
//! tests/tests/analysis_reference.rs, which reads the committed .npy fixtures.

use std::path::Path;

use ndarray::{Array2, ArrayView2, Axis, s};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cka::{self, Estimator, Form, linear_cka, minibatch_cka, terms_with};
use crate::curves::{self, Crossing};
use crate::error::AnalysisError;
use crate::grid::{self, PreparedTap};
use crate::stats::{self, GramPair, Summary};
use crate::streaming::StreamingCka;
use crate::{clip, fid, knn};

fn normal(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Array2<f64> {
    // Box-Muller.
    Array2::from_shape_simple_fn((n, d), || {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    })
}

/// Y = X A + noise: related features of another width.
fn related(rng: &mut ChaCha8Rng, n: usize, d1: usize, d2: usize) -> (Array2<f64>, Array2<f64>) {
    let x = normal(rng, n, d1);
    let a = normal(rng, d1, d2);
    let y = x.dot(&a) * 0.3 + normal(rng, n, d2);
    (x, y)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn feature_form_equals_gram_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (n, d1, d2) in [(30, 50, 70), (200, 10, 15)] {
        let (x, y) = related(&mut rng, n, d1, d2);
        let f = terms_with(x.view(), y.view(), Form::Feature).unwrap();
        let g = terms_with(x.view(), y.view(), Form::Gram).unwrap();
        for est in [Estimator::Biased, Estimator::Debiased] {
            let (a, b) = (
                f.value(est, "X", "Y").unwrap(),
                g.value(est, "X", "Y").unwrap(),
            );
            assert!(close(a, b, 1e-12), "n={n} {est:?}: {a} vs {b}");
        }
    }
}

#[test]
fn cka_of_a_matrix_with_itself_is_one_symmetric_and_bounded() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (x, y) = related(&mut rng, 50, 20, 30);
    for est in [Estimator::Biased, Estimator::Debiased] {
        assert!(close(
            linear_cka(x.view(), x.view(), est).unwrap(),
            1.0,
            1e-12
        ));
        let xy = linear_cka(x.view(), y.view(), est).unwrap();
        let yx = linear_cka(y.view(), x.view(), est).unwrap();
        assert!(close(xy, yx, 1e-12));
    }
    let b = linear_cka(x.view(), y.view(), Estimator::Biased).unwrap();
    assert!((0.0..=1.0).contains(&b));
}

/// A random orthogonal matrix from Givens rotations.
fn orthogonal(rng: &mut ChaCha8Rng, d: usize) -> Array2<f64> {
    let mut q = Array2::<f64>::eye(d);
    for _ in 0..4 * d * d {
        let (i, j) = (rng.random_range(0..d), rng.random_range(0..d));
        if i == j {
            continue;
        }
        let th: f64 = rng.random::<f64>() * std::f64::consts::TAU;
        let (c, s) = (th.cos(), th.sin());
        let (ci, cj) = (q.column(i).to_owned(), q.column(j).to_owned());
        q.column_mut(i).assign(&(&ci * c - &cj * s));
        q.column_mut(j).assign(&(&ci * s + &cj * c));
    }
    q
}

#[test]
fn cka_is_invariant_to_rotation_scaling_translation_but_not_to_general_linear_maps() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, y) = related(&mut rng, 60, 12, 9);
    let q = orthogonal(&mut rng, 12);
    assert!(close(q.t().dot(&q)[[3, 3]], 1.0, 1e-12) && q.t().dot(&q)[[3, 4]].abs() < 1e-12);
    for est in [Estimator::Biased, Estimator::Debiased] {
        let base = linear_cka(x.view(), y.view(), est).unwrap();
        let rotated = linear_cka(x.dot(&q).view(), y.view(), est).unwrap();
        let scaled = linear_cka((&x * 7.5).view(), y.view(), est).unwrap();
        let shifted = linear_cka((&x + 3.0).view(), (&y - 100.0).view(), est).unwrap();
        assert!(
            close(base, rotated, 1e-10),
            "{est:?} rotation {base} {rotated}"
        );
        assert!(close(base, scaled, 1e-10), "{est:?} scaling");
        assert!(close(base, shifted, 1e-10), "{est:?} translation");
        let a = normal(&mut rng, 12, 12) + Array2::<f64>::eye(12) * 0.1;
        let mapped = linear_cka(x.dot(&a).view(), y.view(), est).unwrap();
        assert!(
            (base - mapped).abs() > 1e-3,
            "{est:?}: a general linear map must change CKA"
        );
    }
}

#[test]
fn debiased_cka_of_independent_data_averages_to_zero_and_biased_tracks_width() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // ANALYSIS.md table: n = 64, d = 64 -> biased 0.495 on average; n = 64, d = 512 -> 0.889.
    // The debiased estimate has SD ~0.024 per draw at n = 64 (Kornblith's reference, 400 draws).
    for (n, d, expected_biased) in [(64, 64, 0.495), (64, 512, 0.889)] {
        let (mut biased, mut debiased) = (Vec::new(), Vec::new());
        for _ in 0..40 {
            let (x, y) = (normal(&mut rng, n, d), normal(&mut rng, n, d));
            let t = cka::terms(x.view(), y.view()).unwrap();
            biased.push(t.value(Estimator::Biased, "X", "Y").unwrap());
            debiased.push(t.value(Estimator::Debiased, "X", "Y").unwrap());
        }
        let (b, u) = (
            Summary::of(&biased).unwrap(),
            Summary::of(&debiased).unwrap(),
        );
        assert!(
            (b.mean - expected_biased).abs() < 0.03,
            "n={n} d={d}: biased {}",
            b.mean
        );
        assert!(
            u.mean.abs() < 3.0 * u.se.max(1e-4),
            "n={n} d={d}: debiased {} +- {}",
            u.mean,
            u.se
        );
    }
}

#[test]
fn streaming_equals_batch_for_chunks_in_any_order_with_large_offsets() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for offset in [0.0, 1e3, 1e5] {
        let (x, y) = related(&mut rng, 240, 16, 24);
        let (x, y) = (&x + offset, &y - offset);
        let batch = cka::terms(x.view(), y.view()).unwrap();
        // Random chunk boundaries, chunks fed in a random order to two accumulators, merged.
        let mut cuts: Vec<usize> = (0..6).map(|_| rng.random_range(1..240)).collect();
        cuts.extend([0, 240]);
        cuts.sort();
        cuts.dedup();
        let mut chunks: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1])).collect();
        for i in (1..chunks.len()).rev() {
            chunks.swap(i, rng.random_range(0..=i));
        }
        for store_rows in [false, true] {
            let make = || {
                if store_rows {
                    StreamingCka::rows(16, 24)
                } else {
                    StreamingCka::moments(16, 24)
                }
            };
            let (mut a, mut b) = (make(), make());
            for (k, &(lo, hi)) in chunks.iter().enumerate() {
                let acc = if k % 2 == 0 { &mut a } else { &mut b };
                acc.update(x.slice(s![lo..hi, ..]), y.slice(s![lo..hi, ..]))
                    .unwrap();
            }
            a.merge(b).unwrap();
            assert_eq!(a.n(), 240);
            for est in [Estimator::Biased, Estimator::Debiased] {
                let (want, got) = (batch.value(est, "X", "Y").unwrap(), a.value(est).unwrap());
                assert!(
                    (want - got).abs() < 1e-10,
                    "offset {offset}, rows {store_rows}, {est:?}: {want} vs {got}"
                );
            }
        }
    }
}

#[test]
fn streaming_picks_the_smaller_store() {
    assert!(StreamingCka::new(16, 16, Some(10_000)).is_moments());
    assert!(!StreamingCka::new(2048, 2048, Some(2000)).is_moments());
    assert!(StreamingCka::new(2048, 2048, None).is_moments());
}

#[test]
fn f32_inputs_with_offsets_match_the_f64_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for offset in [0.0f32, 1e2, 1e3, 1e5] {
        let (x, y) = related(&mut rng, 300, 20, 20);
        let xf = x.mapv(|v| v as f32 + offset);
        let yf = y.mapv(|v| v as f32 - offset);
        // The reference: the same f32 values, exactly upcast, in f64 with a two-pass mean.
        let reference = linear_cka(
            xf.mapv(f64::from).view(),
            yf.mapv(f64::from).view(),
            Estimator::Debiased,
        )
        .unwrap();
        let ours = linear_cka(
            cka::to_f64(xf.view()).view(),
            cka::to_f64(yf.view()).view(),
            Estimator::Debiased,
        )
        .unwrap();
        assert!(
            ((ours - reference) / reference).abs() < 1e-4,
            "offset {offset}: {ours} vs {reference}"
        );
        // And the streaming path in chunks of f32.
        let mut acc = StreamingCka::moments(20, 20);
        for lo in (0..300).step_by(70) {
            let hi = (lo + 70).min(300);
            acc.update(
                cka::to_f64(xf.slice(s![lo..hi, ..])).view(),
                cka::to_f64(yf.slice(s![lo..hi, ..])).view(),
            )
            .unwrap();
        }
        let streamed = acc.value(Estimator::Debiased).unwrap();
        assert!(
            ((streamed - reference) / reference).abs() < 1e-4,
            "offset {offset} streamed"
        );
    }
}

#[test]
fn bad_inputs_are_errors_never_nan() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let x = normal(&mut rng, 3, 5);
    assert!(matches!(
        linear_cka(x.view(), x.view(), Estimator::Debiased),
        Err(AnalysisError::TooFewSamples { needed: 4, .. })
    ));
    assert!(linear_cka(x.view(), x.view(), Estimator::Biased).is_ok());
    let constant = Array2::<f64>::from_elem((10, 4), 2.5);
    let y = normal(&mut rng, 10, 4);
    assert!(matches!(
        linear_cka(constant.view(), y.view(), Estimator::Biased),
        Err(AnalysisError::ZeroVariance { .. })
    ));
    let mut bad = normal(&mut rng, 10, 4);
    bad[[3, 2]] = f64::NAN;
    match linear_cka(bad.view(), y.view(), Estimator::Biased) {
        Err(AnalysisError::NonFinite { row: 3, col: 2, .. }) => {}
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
    bad[[3, 2]] = f64::INFINITY;
    assert!(linear_cka(y.view(), bad.view(), Estimator::Debiased).is_err());
    let short = normal(&mut rng, 9, 4);
    assert!(matches!(
        linear_cka(short.view(), y.view(), Estimator::Biased),
        Err(AnalysisError::Shape { .. })
    ));
    // Nearly constant features at n = 4: the debiased normaliser can be non-positive; an error.
    let tiny = Array2::from_shape_vec((4, 1), vec![0.0, 0.0, 0.0, 1e-300]).unwrap();
    let r = linear_cka(tiny.view(), tiny.view(), Estimator::Debiased);
    assert!(r.is_err() || r.unwrap().is_finite());
}

#[test]
fn grid_equals_pairwise_for_both_representations() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 40;
    // Widths on both sides of n: Gram and feature representations, and mixed pairs.
    let taps: Vec<(String, Array2<f64>)> = [8usize, 60, 25, 90]
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            (
                format!("t{i}"),
                normal(&mut rng, n, d) + &normal(&mut rng, n, 1),
            )
        })
        .collect();
    let views: Vec<(String, ArrayView2<f64>)> =
        taps.iter().map(|(n, x)| (n.clone(), x.view())).collect();
    let prepared: Vec<PreparedTap> = grid::prepare_taps(&views).unwrap();
    for est in [Estimator::Biased, Estimator::Debiased] {
        let g = grid::cka_grid(&prepared[..2], &prepared, est).unwrap();
        for i in 0..2 {
            for j in 0..taps.len() {
                let direct = linear_cka(taps[i].1.view(), taps[j].1.view(), est).unwrap();
                assert!(
                    close(g[[i, j]], direct, 1e-10),
                    "{est:?} ({i},{j}): {} vs {direct}",
                    g[[i, j]]
                );
            }
        }
    }
    let mismatched = normal(&mut rng, n + 1, 5);
    let other = PreparedTap::new("odd", mismatched.view()).unwrap();
    assert!(grid::cka_grid(&prepared[..1], &[other], Estimator::Biased).is_err());
}

/// An in-memory feature store: `[tap][(seed, step)]`, with the reads counted.
struct Probes {
    arrays:
        std::collections::BTreeMap<String, std::collections::BTreeMap<(u64, usize), Array2<f64>>>,
    reads: std::sync::atomic::AtomicUsize,
}

impl Probes {
    fn present(&self, tap: &str) -> std::collections::BTreeSet<(u64, usize)> {
        self.arrays[tap].keys().copied().collect()
    }

    fn read(&self, tap: &str, seed: u64, step: usize) -> Result<Array2<f64>, AnalysisError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.arrays[tap][&(seed, step)].clone())
    }
}

#[test]
fn a_multi_row_grid_equals_the_single_row_grids_bit_for_bit_and_reads_each_tap_once() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let n = 24;
    // Gram (d >= n) and feature (d < n) representations on both sides, and mixed pairs.
    let widths = [
        ("enc.text", 30),
        ("enc.noise", 9),
        ("l0", 40),
        ("l1", 7),
        ("l2", 25),
    ];
    let mut arrays = std::collections::BTreeMap::new();
    for (tap, d) in widths {
        let mut per = std::collections::BTreeMap::new();
        for seed in [0u64, 1] {
            for step in 0..3usize {
                // l1 at step 1 of seed 1 is not on disk yet: its cell has one seed.
                if tap == "l1" && (seed, step) == (1, 1) {
                    continue;
                }
                let x = normal(&mut rng, n, d) + &normal(&mut rng, n, 1) * 3.0;
                per.insert((seed, step), x);
            }
        }
        arrays.insert(tap.to_string(), per);
    }
    let probes = Probes {
        arrays,
        reads: 0.into(),
    };
    let spec = |a: &str| grid::GridSpec {
        a: a.into(),
        b: "l*".into(),
        rows: vec!["l0".into(), "l1".into(), "l2".into()],
        steps: vec![0, 1, 2],
        ts: vec![0.0, 0.5, 1.0],
        seeds: vec![0, 1],
        estimator: Estimator::Debiased,
    };
    let many = grid::SeedGrid::compute_many(
        vec![spec("enc.text"), spec("enc.noise")],
        |t| probes.present(t),
        |t, seed, step| probes.read(t, seed, step),
        &[],
    )
    .unwrap();
    // 6 (step, seed) units x 5 taps, less the one array not on disk.
    assert_eq!(
        probes.reads.load(std::sync::atomic::Ordering::Relaxed),
        6 * 5 - 1
    );
    for (a, multi) in ["enc.text", "enc.noise"].into_iter().zip(&many) {
        let single = grid::SeedGrid::compute(
            spec(a),
            |t| probes.present(t),
            |t, seed, step| probes.read(t, seed, step),
            None,
        )
        .unwrap();
        assert_eq!(
            multi, &single,
            "{a}: the multi-row grid differs from the single-row one"
        );
        assert_eq!(single.complete_cells, 8);
        assert_eq!(single.values[1][1].len(), 1);
        for (r, row) in single.rows().iter().enumerate() {
            for (c, &step) in single.steps().iter().enumerate() {
                for (&seed, &v) in &single.values[r][c] {
                    let x = &probes.arrays[a][&(seed, step)];
                    let y = &probes.arrays[row][&(seed, step)];
                    let direct = linear_cka(x.view(), y.view(), Estimator::Debiased).unwrap();
                    assert!(close(v, direct, 1e-10), "{a} vs {row}: {v} vs {direct}");
                }
            }
        }
    }
    // A previous grid of the same spec is reused cell by cell: nothing is read again.
    let before = probes.reads.load(std::sync::atomic::Ordering::Relaxed);
    let again = grid::SeedGrid::compute_many(
        vec![spec("enc.text"), spec("enc.noise")],
        |t| probes.present(t),
        |t, seed, step| probes.read(t, seed, step),
        &[Some(&many[0]), Some(&many[1])],
    )
    .unwrap();
    assert_eq!(again, many);
    assert_eq!(
        probes.reads.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

#[test]
fn minibatch_estimator_is_the_mean_of_batch_hsics() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (x, y) = related(&mut rng, 100, 10, 10);
    let full = linear_cka(x.view(), y.view(), Estimator::Debiased).unwrap();
    assert!(close(
        minibatch_cka(x.view(), y.view(), 100).unwrap(),
        full,
        1e-12
    ));
    let mb = minibatch_cka(x.view(), y.view(), 25).unwrap();
    assert!(mb.is_finite() && (mb - full).abs() < 0.2);
    assert!(minibatch_cka(x.view(), y.view(), 3).is_err());
}

#[test]
fn mutual_knn_is_one_for_identical_and_low_for_independent_representations() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let x = normal(&mut rng, 80, 16);
    let same = knn::mutual_knn(x.view(), (&x * 2.0).view(), 5).unwrap();
    assert_eq!(same.mean, 1.0);
    assert!(
        same.neighbours_a
            .iter()
            .enumerate()
            .all(|(i, nb)| nb.len() == 5 && !nb.contains(&i))
    );
    let y = normal(&mut rng, 80, 16);
    let indep = knn::mutual_knn(x.view(), y.view(), 5).unwrap();
    assert!(indep.mean < 0.3, "{}", indep.mean);
    assert!(knn::mutual_knn(x.view(), y.view(), 80).is_err());
}

#[test]
fn bootstrap_and_permutation_null_behave() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (x, y) = related(&mut rng, 60, 8, 8);
    let pair = GramPair::new(x.view(), y.view()).unwrap();
    let direct = linear_cka(x.view(), y.view(), Estimator::Debiased).unwrap();
    assert!(close(
        pair.terms().value(Estimator::Debiased, "X", "Y").unwrap(),
        direct,
        1e-12
    ));
    let ci = stats::bootstrap_ci(&pair, Estimator::Debiased, 200, 0.95, 1).unwrap();
    assert!(ci.lower <= ci.estimate && ci.estimate <= ci.upper && ci.lower < ci.upper);
    assert_eq!(
        ci,
        stats::bootstrap_ci(&pair, Estimator::Debiased, 200, 0.95, 1).unwrap(),
        "seeded"
    );
    let null = stats::permutation_null(&pair, Estimator::Debiased, 200, 0.95, 2).unwrap();
    assert!(null.p_value < 0.01 && null.null_mean.abs() < 0.05 && null.null_upper < direct);
    let z = normal(&mut rng, 60, 8);
    let indep = GramPair::new(x.view(), z.view()).unwrap();
    let null = stats::permutation_null(&indep, Estimator::Debiased, 200, 0.95, 3).unwrap();
    assert!(
        null.p_value > 0.01,
        "independent data: p = {}",
        null.p_value
    );
}

#[test]
fn summaries_over_seeds() {
    let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!(close(s.mean, 2.5, 1e-15) && close(s.sd, (5.0f64 / 3.0).sqrt(), 1e-15));
    assert!(close(s.se, s.sd / 2.0, 1e-15));
    assert!(Summary::of(&[]).is_err() && Summary::of(&[1.0, f64::NAN]).is_err());
    assert!(close(
        stats::quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95),
        4.8,
        1e-12
    ));
}

#[test]
fn curve_summaries_auc_and_time_to_threshold() {
    let ts: Vec<f64> = (0..30).map(|k| k as f64 / 30.0).collect();
    let flat = vec![0.7; 30];
    assert!(close(curves::auc(&ts, &flat).unwrap(), 0.7, 1e-12));
    let ramp: Vec<f64> = ts.clone();
    // The mean of t over [0, 29/30] is 29/60.
    assert!(close(curves::auc(&ts, &ramp).unwrap(), 29.0 / 60.0, 1e-12));
    match curves::time_to_threshold(&ts, &ramp, 0.5).unwrap() {
        Crossing::Reached(t) => assert!(close(t, 0.5, 1e-12)),
        other => panic!("{other:?}"),
    }
    let steps = [0.1, 0.3, 0.6];
    assert_eq!(
        curves::time_to_threshold(&[0.0, 0.5, 1.0], &steps, 0.45).unwrap(),
        Crossing::Reached(0.75)
    );
    assert_eq!(
        curves::time_to_threshold(&ts, &flat, 0.8).unwrap(),
        Crossing::NotReached
    );
    let summary = curves::summarise_curves(&ts, &[ramp.clone(), flat.clone()], 0.6).unwrap();
    assert_eq!(
        (summary.crossing.n_reached, summary.crossing.n_not_reached),
        (2, 0)
    );
    assert!(curves::auc(&[0.0, 0.0], &[1.0, 1.0]).is_err());
}

#[test]
fn fid_of_a_set_with_itself_is_zero_and_grows_with_a_mean_shift() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let a = normal(&mut rng, 200, 10);
    assert!(fid::fid_from_features(a.view(), a.view()).unwrap().abs() < 1e-9);
    let shifted = &a + 1.0;
    // Same covariance: FID is exactly |shift|^2 = 10.
    assert!(close(
        fid::fid_from_features(a.view(), shifted.view()).unwrap(),
        10.0,
        1e-9
    ));
    let b = normal(&mut rng, 1, 10);
    assert!(fid::fid_from_features(a.view(), b.view()).is_err());
}

#[test]
fn clip_score_clamps_each_pair_before_averaging() {
    let img = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, 1.0, 0.0]).unwrap();
    let txt = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, -1.0, 0.0]).unwrap();
    // Per pair: max(1, 0) and max(-1, 0) -> mean 0.5 -> 50 (averaging first would give 0).
    assert!(close(
        clip::clip_score(img.view(), txt.view()).unwrap(),
        50.0,
        1e-12
    ));
    assert!(clip::clip_score(img.view(), txt.slice(s![..1, ..])).is_err());
    let _ = img.sum_axis(Axis(0));
}

#[test]
fn summary_tables_write_parquet_csv_and_latex_with_the_best_value_bold() {
    use crate::tables::{Better, Column, SummaryTable};
    let s = |v: &[f64]| Some(Summary::of(v).unwrap());
    let table = SummaryTable {
        row_header: "Variant".into(),
        rows: vec!["baseline".into(), "dual_stream & single".into()],
        columns: vec![
            Column {
                name: "fid".into(),
                latex_header: "FID $\\downarrow$".into(),
                better: Better::Lower,
                decimals: 2,
            },
            Column {
                name: "clip".into(),
                latex_header: "CLIP $\\uparrow$".into(),
                better: Better::Higher,
                decimals: 2,
            },
        ],
        cells: vec![
            vec![s(&[12.0, 11.98]), s(&[21.1, 21.2])],
            vec![s(&[10.0, 10.08]), None],
        ],
    };
    let df = table.to_dataframe().unwrap();
    assert_eq!(df.shape(), (2, 9));
    let dir = tempfile::tempdir().unwrap();
    crate::tables::write_csv(&df, &dir.path().join("t.csv")).unwrap();
    crate::tables::write_parquet(&df, &dir.path().join("t.parquet")).unwrap();
    let back = crate::tables::read_parquet(&dir.path().join("t.parquet")).unwrap();
    assert!(back.equals_missing(&df));
    let csv = crate::tables::read_csv(&dir.path().join("t.csv")).unwrap();
    assert_eq!(csv.shape(), (2, 9));
    let tex = table
        .to_latex(Some("Ablation"), Some("tab:ablation"))
        .unwrap();
    assert!(tex.contains("\\toprule") && tex.contains("\\midrule") && tex.contains("\\bottomrule"));
    assert!(tex.contains("\\textbf{10.04 $\\pm$ 0.06}"), "{tex}");
    assert!(tex.contains("\\textbf{21.15 $\\pm$ 0.07}"), "{tex}");
    assert!(
        tex.contains("dual\\_stream \\& single") && tex.contains(" -- "),
        "{tex}"
    );
}

#[test]
fn figures_render_as_png_and_svg() {
    use crate::figures::{self, BarChart, Heatmap, Line, LinePlot};
    let dir = tempfile::tempdir().unwrap();
    let values = Array2::from_shape_fn((3, 4), |(r, c)| (r as f64 - 1.0) * 0.1 + c as f64 * 0.05);
    let heat = Heatmap {
        title: "ΔCKA (ours − baseline)".into(),
        x_label: "solver step".into(),
        y_label: "LLM layer".into(),
        x_ticks: vec!["9".into(), "18".into(), "27".into(), "29".into()],
        y_ticks: vec!["2".into(), "12".into(), "22".into()],
        values,
        diverging: true,
        annotate: true,
        colorbar_label: "ΔCKA".into(),
        range: None,
        crossed: None,
    };
    let (png, svg) = figures::save(&heat, dir.path(), "heat").unwrap();
    let ts: Vec<f64> = (0..30).map(|k| k as f64 / 30.0).collect();
    let line = |name: &str, f: f64| Line {
        name: name.into(),
        xs: ts.clone(),
        ys: ts.iter().map(|t| (t * f).min(1.0)).collect(),
        band: Some(crate::figures::Band::PlusMinus(vec![0.03; 30])),
        points: None,
    };
    let curves = LinePlot {
        title: "text-noise CKA over solver steps".into(),
        x_label: "t".into(),
        y_label: "CKA".into(),
        lines: vec![
            line("ConvNeXt decoder", 0.8),
            line("single-stream decoder", 1.4),
        ],
        reference: Some((0.5, "threshold 0.5".into())),
        y_range: None,
    };
    figures::save(&curves, dir.path(), "curves").unwrap();
    let bars = BarChart {
        title: "AUC".into(),
        y_label: "AUC".into(),
        groups: vec!["biased".into(), "debiased".into()],
        series: vec!["ConvNeXt".into(), "single-stream".into()],
        values: vec![vec![0.4, 0.3], vec![0.6, 0.5]],
        errors: Some(vec![vec![0.02, 0.03], vec![0.02, 0.04]]),
    };
    figures::save(&bars, dir.path(), "bars").unwrap();
    for stem in ["heat", "curves", "bars"] {
        let png_bytes = std::fs::read(dir.path().join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png_bytes[1..4], b"PNG");
        let svg_text = std::fs::read_to_string(dir.path().join(format!("{stem}.svg"))).unwrap();
        assert!(svg_text.contains("<svg") && svg_text.contains("</svg>"));
    }
    assert!(png.exists() && svg.exists());
    if let Ok(out) = std::env::var("FLOWLENS_FIGURE_DIR") {
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, Path::new(&out).join(f.file_name().unwrap())).unwrap();
        }
    }
}
