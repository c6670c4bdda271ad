//! Inference over prompts (`inference`): every resampling shortcut equals the explicit
//! computation on resampled features, a planted effect is found and identical models give
//! uniform p-values. NumPy fixtures of the same quantities: tests/tests/analysis_reference.rs.

use ndarray::{Array2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cka::{self, Estimator};
use crate::inference::{
    NullTest, PairedGrams, PromptInterval, Resamples, Tail, mean_of, p_text, value,
};

fn normal(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Array2<f64> {
    Array2::from_shape_simple_fn((n, d), || {
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    })
}

fn rows(x: &Array2<f64>, idx: &[usize]) -> Array2<f64> {
    x.select(Axis(0), idx)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn assert_same(got: &cka::CkaTerms, want: &cka::CkaTerms, what: &str) {
    for e in Estimator::BOTH {
        let (g, w) = (value(got, e).unwrap(), value(want, e).unwrap());
        assert!(close(g, w), "{what} {e:?}: {g} vs {w}");
    }
    assert_eq!(got.n, want.n, "{what}");
}

fn assert_biased(got: &cka::CkaTerms, want: &cka::CkaTerms, what: &str) {
    let (g, w) = (
        value(got, Estimator::Biased).unwrap(),
        value(want, Estimator::Biased).unwrap(),
    );
    assert!(close(g, w), "{what}: {g} vs {w}");
    assert_eq!(got.n, want.n, "{what}");
}

/// The debiased CKA of the resample `idx` computed explicitly: the resampled rows re-centred,
/// their Grams with every pair of copies of one prompt zeroed like the diagonal, Song et al.'s
/// unbiased HSIC of those.
fn debiased_without_copies(x: &Array2<f64>, y: &Array2<f64>, idx: &[usize]) -> f64 {
    let gram = |m: &Array2<f64>| {
        let c = cka::centred(rows(m, idx).view());
        let mut g = c.dot(&c.t());
        for (p, &i) in idx.iter().enumerate() {
            for (q, &j) in idx.iter().enumerate() {
                if i == j {
                    g[[p, q]] = 0.0;
                }
            }
        }
        g
    };
    let hsic = |k: &Array2<f64>, l: &Array2<f64>| {
        let m = idx.len() as f64;
        let (rk, rl) = (k.sum_axis(Axis(1)), l.sum_axis(Axis(1)));
        ((k * l).sum() + k.sum() * l.sum() / ((m - 1.0) * (m - 2.0))
            - 2.0 * rk.dot(&rl) / (m - 2.0))
            / (m * (m - 3.0))
    };
    let (k, l) = (gram(x), gram(y));
    hsic(&k, &l) / (hsic(&k, &k) * hsic(&l, &l)).sqrt()
}

/// The debiased CKA's bootstrap replicates are centred on the estimate: with the copies of a
/// prompt counted as pairs of different prompts they were biased upward by far more than the
/// interval's width (two unrelated 32-d feature sets of 64 prompts: estimate near 0, naive
/// replicates about 0.3).
#[test]
fn the_debiased_bootstrap_leaves_copies_of_a_prompt_out_and_is_centred_on_the_estimate() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let n = 64;
    let (xa, ya) = (normal(&mut rng, n, 32), normal(&mut rng, n, 32));
    let (xb, yb) = (normal(&mut rng, n, 32), normal(&mut rng, n, 32));
    let grams = PairedGrams::new(xa.view(), ya.view(), xb.view(), yb.view()).unwrap();
    let draw = Resamples::draw(n, 200, 0, 3);
    let reps = grams.replicates(&draw);
    let estimate = value(&reps.full[0], Estimator::Debiased).unwrap();
    let mean = |e: Estimator| {
        let v: Vec<f64> = reps
            .bootstrap
            .iter()
            .filter_map(|t| value(&t.get(e)[0], e))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let debiased = mean(Estimator::Debiased);
    assert!(
        (debiased - estimate).abs() < 0.03,
        "replicates {debiased} vs estimate {estimate}"
    );
    // The same replicates with the copies counted in (the biased terms under the debiased
    // formula) are far off: what the interval was before.
    let naive: Vec<f64> = reps
        .bootstrap
        .iter()
        .filter_map(|t| value(&t.biased[0], Estimator::Debiased))
        .collect();
    let naive = naive.iter().sum::<f64>() / naive.len() as f64;
    assert!(naive - estimate > 0.15, "naive {naive} vs {estimate}");
    let ci = PromptInterval::of(
        &reps
            .bootstrap
            .iter()
            .map(|t| value(&t.debiased[0], Estimator::Debiased))
            .collect::<Vec<_>>(),
        0.95,
    )
    .unwrap();
    assert!(
        ci.lower <= estimate && estimate <= ci.upper,
        "{ci:?} vs {estimate}"
    );
}

/// Four feature sets: A's X and Y related, B's X and Y related, of unequal widths.
fn four(rng: &mut ChaCha8Rng, n: usize) -> [Array2<f64>; 4] {
    let xa = normal(rng, n, 7) + 3.0;
    let ya = xa.dot(&normal(rng, 7, 5)) * 0.5 + normal(rng, n, 5);
    let xb = normal(rng, n, 7) - 1.0;
    let yb = xb.dot(&normal(rng, 7, 5)) * 0.2 + normal(rng, n, 5);
    [xa, ya, xb, yb]
}

#[test]
fn each_resampling_shortcut_equals_the_explicit_resample() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 23;
    let [xa, ya, xb, yb] = four(&mut rng, n);
    let grams = PairedGrams::new(xa.view(), ya.view(), xb.view(), yb.view()).unwrap();
    assert!(grams.swappable());
    let full = grams.terms();
    assert_same(
        &full[0],
        &cka::terms(xa.view(), ya.view()).unwrap(),
        "full A",
    );
    assert_same(
        &full[1],
        &cka::terms(xb.view(), yb.view()).unwrap(),
        "full B",
    );
    for r in 0..6 {
        // Bootstrap: counts vs duplicated rows.
        let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
        let w = Resamples::counts_of(n, &idx);
        let got = grams.weighted(&w);
        let want_a = cka::terms(rows(&xa, &idx).view(), rows(&ya, &idx).view()).unwrap();
        let want_b = cka::terms(rows(&xb, &idx).view(), rows(&yb, &idx).view()).unwrap();
        assert_biased(&got.biased[0], &want_a, &format!("bootstrap {r} A"));
        assert_biased(&got.biased[1], &want_b, &format!("bootstrap {r} B"));
        for (m, (x, y)) in [(&xa, &ya), (&xb, &yb)].into_iter().enumerate() {
            let (g, want) = (
                value(&got.debiased[m], Estimator::Debiased).unwrap(),
                debiased_without_copies(x, y, &idx),
            );
            assert!(
                close(g, want),
                "bootstrap {r} model {m} debiased: {g} vs {want}"
            );
        }
        // Pairing permutation: Y's rows shuffled.
        let draw = Resamples::draw(n, 0, 1, r);
        let perm = &draw.permutations[0];
        let got = grams.permuted(perm);
        let want = cka::terms(xa.view(), rows(&ya, perm).view()).unwrap();
        assert_same(&got[0], &want, &format!("permutation {r}"));
        // Swap: each model's features centred with its own mean, then rows exchanged.
        let mask = &draw.swaps[0];
        let centre = |m: &Array2<f64>| cka::centred(m.view());
        let (xac, yac, xbc, ybc) = (centre(&xa), centre(&ya), centre(&xb), centre(&yb));
        let mix = |a: &Array2<f64>, b: &Array2<f64>, side: bool| {
            let mut out = a.clone();
            for (i, &m) in mask.iter().enumerate() {
                if m != side {
                    out.row_mut(i).assign(&b.row(i));
                }
            }
            out
        };
        let got = grams.swapped(mask).unwrap();
        for (side, flag) in [(0, false), (1, true)] {
            let (x, y) = if side == 0 {
                (mix(&xac, &xbc, flag), mix(&yac, &ybc, flag))
            } else {
                (mix(&xbc, &xac, !flag), mix(&ybc, &yac, !flag))
            };
            let want = cka::terms(x.view(), y.view()).unwrap();
            assert_same(&got[side], &want, &format!("swap {r} side {side}"));
        }
    }
}

#[test]
fn models_of_different_widths_have_intervals_and_pairing_nulls_but_no_swap_test() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 12;
    let (xa, ya) = (normal(&mut rng, n, 4), normal(&mut rng, n, 3));
    let (xb, yb) = (normal(&mut rng, n, 6), normal(&mut rng, n, 3));
    let grams = PairedGrams::new(xa.view(), ya.view(), xb.view(), yb.view()).unwrap();
    assert!(!grams.swappable());
    let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
    let got = grams.weighted(&Resamples::counts_of(n, &idx));
    let want = cka::terms(rows(&xb, &idx).view(), rows(&yb, &idx).view()).unwrap();
    assert_biased(&got.biased[1], &want, "bootstrap B");
    let draw = Resamples::draw(n, 3, 3, 1);
    let reps = grams.replicates(&draw);
    assert!(reps.swapped.is_none());
    assert_eq!((reps.bootstrap.len(), reps.permuted.len()), (3, 3));
    let err = PairedGrams::new(
        xa.view(),
        ya.slice(ndarray::s![..5, ..]),
        xb.view(),
        yb.view(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("12 prompts") && err.contains("5"), "{err}");
}

/// The swap test's Delta (A - B) and its p over `seeds` units sharing one draw.
fn delta_test(
    units: &[PairedGrams],
    draw: &Resamples,
    e: Estimator,
) -> (f64, NullTest, PromptInterval) {
    let reps: Vec<_> = units.iter().map(|u| u.replicates(draw)).collect();
    let delta = |t: &[[cka::CkaTerms; 2]]| {
        mean_of(t.iter().map(|p| Some(value(&p[0], e)? - value(&p[1], e)?)))
    };
    let observed = delta(&reps.iter().map(|r| r.full).collect::<Vec<_>>()).unwrap();
    let across =
        |len: usize, pick: &dyn Fn(&crate::inference::Replicates, usize) -> [cka::CkaTerms; 2]| {
            (0..len)
                .map(|i| delta(&reps.iter().map(|r| pick(r, i)).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
    let null = across(draw.swaps.len(), &|r, i| r.swapped.as_ref().unwrap()[i]);
    let boot = across(draw.counts.len(), &|r, i| *r.bootstrap[i].get(e));
    (
        observed,
        NullTest::of(observed, &null, Tail::TwoSided).unwrap(),
        PromptInterval::of(&boot, 0.95).unwrap(),
    )
}

#[test]
fn identical_models_give_uniform_p_values_and_a_planted_effect_is_found() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (n, trials) = (32, 60);
    let mut ps = Vec::new();
    let mut covered = 0;
    for trial in 0..trials {
        // Two models of one distribution (related X and Y, equally strong), two seeds.
        let units: Vec<PairedGrams> = (0..2)
            .map(|_| {
                let mut model = || {
                    let x = normal(&mut rng, n, 6);
                    let y = x.dot(&normal(&mut rng, 6, 4)) * 0.3 + normal(&mut rng, n, 4);
                    (x, y)
                };
                let ((xa, ya), (xb, yb)) = (model(), model());
                PairedGrams::new(xa.view(), ya.view(), xb.view(), yb.view()).unwrap()
            })
            .collect();
        let draw = Resamples::draw(n, 99, 99, trial);
        let (_, test, ci) = delta_test(&units, &draw, Estimator::Debiased);
        ps.push(test.p);
        covered += usize::from(ci.lower <= 0.0 && 0.0 <= ci.upper);
        assert!(
            test.null_mean.abs() < 0.05,
            "the swap null is centred: {test:?}"
        );
    }
    let mean = ps.iter().sum::<f64>() / trials as f64;
    let small = ps.iter().filter(|&&p| p <= 0.05).count();
    assert!((0.35..0.65).contains(&mean), "mean p {mean}: {ps:?}");
    assert!(small <= 8, "{small} of {trials} p-values <= 0.05: {ps:?}");
    assert!(
        covered >= 48,
        "the interval covers 0 in {covered} of {trials}"
    );

    // Planted: A's Y follows its X, B's Y is independent of its X.
    let x = normal(&mut rng, n, 6);
    let ya = x.dot(&normal(&mut rng, 6, 4)) + normal(&mut rng, n, 4) * 0.3;
    let xb = normal(&mut rng, n, 6);
    let yb = normal(&mut rng, n, 4);
    let unit = PairedGrams::new(x.view(), ya.view(), xb.view(), yb.view()).unwrap();
    let draw = Resamples::draw(n, 199, 199, 5);
    let (delta, test, ci) = delta_test(std::slice::from_ref(&unit), &draw, Estimator::Debiased);
    assert!(delta > 0.5, "{delta}");
    assert!(test.p <= 0.01 && test.significant(), "{test:?}");
    assert!(
        test.verdict().starts_with("above the null (p"),
        "{}",
        test.verdict()
    );
    assert!(
        ci.lower > 0.2 && ci.lower <= delta && delta <= ci.upper,
        "{ci:?}"
    );
    // Each model's own pairing null: A above it, B not.
    let reps = unit.replicates(&draw);
    for (m, above) in [(0, true), (1, false)] {
        let e = Estimator::Debiased;
        let null: Vec<Option<f64>> = reps.permuted.iter().map(|t| value(&t[m], e)).collect();
        let test = NullTest::of(value(&reps.full[m], e).unwrap(), &null, Tail::Upper).unwrap();
        assert_eq!(test.significant(), above, "model {m}: {test:?}");
        assert!(
            test.null_mean.abs() < 0.05 && test.null_sd > 0.0,
            "{test:?}"
        );
    }
}

#[test]
fn intervals_tests_and_their_wording() {
    let vals: Vec<Option<f64>> = (0..101).map(|i| Some(i as f64 / 100.0)).collect();
    let ci = PromptInterval::of(&vals, 0.9).unwrap();
    assert!(close(ci.lower, 0.05) && close(ci.upper, 0.95), "{ci:?}");
    assert_eq!((ci.replicates, ci.dropped), (101, 0));
    let with_holes = [Some(1.0), None, Some(2.0), None];
    let ci = PromptInterval::of(&with_holes, 0.95).unwrap();
    assert_eq!((ci.replicates, ci.dropped), (2, 2));
    let one = PromptInterval::of(&[None, Some(1.0)], 0.95).unwrap();
    assert_eq!(
        (one.lower, one.upper, one.se, one.dropped),
        (1.0, 1.0, 0.0, 1)
    );
    let err = PromptInterval::of(&[None, None], 0.95)
        .unwrap_err()
        .to_string();
    assert!(err.contains("defined on 0 of 2 resamples"), "{err}");

    let null: Vec<Option<f64>> = (0..99).map(|i| Some(i as f64 / 1000.0 - 0.049)).collect();
    let t = NullTest::of(0.5, &null, Tail::Upper).unwrap();
    assert!(close(t.p, 0.01));
    assert_eq!(t.verdict(), "above the null (p ≤ 0.010)");
    let t = NullTest::of(-0.5, &null, Tail::TwoSided).unwrap();
    assert_eq!(t.verdict(), "below the null (p ≤ 0.010)");
    let t = NullTest::of(0.01, &null, Tail::TwoSided).unwrap();
    assert!(
        t.verdict()
            .starts_with("not distinguishable from the null (p = 0.")
    );
    assert!(t.null95 > 0.04 && t.null95 <= 0.049, "{t:?}");
    assert_eq!(p_text(0.25, 99), "p = 0.250");
    assert!(NullTest::of(0.0, &[None], Tail::Upper).is_err());
}
