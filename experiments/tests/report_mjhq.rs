//! The ablation report shows the paper's Table 1 columns (FID, CLIP x100) and their curves when
//! the runs logged MJHQ-30k evaluations (`eval_mjhq`), and leaves them out otherwise.

use flowlens_experiments::ablation::analyse::{EvalPoint, MjhqPoint, Results, RunResult};

fn run(variant: &str, seed: u64, fid: f64, clip: f64, mjhq: bool) -> RunResult {
    RunResult {
        variant: variant.into(),
        seed,
        run: format!("/nonexistent/{variant}/seed{seed}"),
        steps: 400,
        train_seconds: 60.0,
        eval_seconds: 5.0,
        final_loss: 0.5,
        evals: vec![EvalPoint {
            step: 400,
            adherence: 0.4,
            colour: 0.5,
            shape: 0.4,
            size: 0.3,
            relation: None,
            chance: 0.1,
            margin: Some(flowlens_core::data::Margin {
                mean: if variant == "both" { 0.3 } else { 0.02 },
                se: if variant == "both" { 0.03 } else { 0.02 },
                n: 64,
            }),
        }],
        loss_curve: vec![(200, 0.7), (400, 0.5)],
        mjhq: if mjhq {
            vec![
                MjhqPoint {
                    step: 200,
                    fid: fid + 10.0,
                    clip_score: clip - 1.0,
                },
                MjhqPoint {
                    step: 400,
                    fid,
                    clip_score: clip,
                },
            ]
        } else {
            Vec::new()
        },
    }
}

fn report(mjhq: bool) -> (String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let results = Results {
        format: "flowlens.ablation.v1".into(),
        preset: flowlens_core::flow::Preset::Tiny,
        steps: 400,
        eval_every: 200,
        variants: vec!["baseline".into(), "both".into()],
        seeds: vec![0, 1],
        runs: vec![
            run("baseline", 0, 12.0, 21.0, mjhq),
            run("baseline", 1, 12.5, 21.4, mjhq),
            run("both", 0, 10.0, 24.5, mjhq),
            run("both", 1, 10.1, 24.7, mjhq),
        ],
    };
    std::fs::create_dir_all(tmp.path().join("ablation")).unwrap();
    std::fs::write(
        tmp.path().join("ablation/results.json"),
        serde_json::to_string(&results).unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("report");
    let index =
        flowlens_experiments::report::write_report(&[tmp.path().to_path_buf()], &out).unwrap();
    (std::fs::read_to_string(index).unwrap(), tmp)
}

#[test]
fn ablation_report_has_fid_and_clip_columns_only_with_mjhq_evaluations() {
    let (md, tmp) = report(true);
    assert!(md.contains("| FID |") || md.contains("FID |"), "{md}");
    assert!(md.contains("CLIP x100"), "{md}");
    // mean +- sd over the two seeds of `both`: FID 10.05.
    assert!(md.contains("10.050"), "{md}");
    let figures = tmp.path().join("report/figures");
    assert!(
        figures.join("ablation_fid.png").is_file() && figures.join("ablation_clip.svg").is_file()
    );

    let (md, tmp) = report(false);
    assert!(!md.contains("CLIP x100"), "{md}");
    assert!(!tmp.path().join("report/figures/ablation_fid.png").exists());
}

#[test]
fn adherence_above_chance_carries_its_se_over_images_and_a_verdict() {
    let (md, _tmp) = report(false);
    // both: margins 0.3 (SE 0.03) on two runs of 64 images: SE sqrt(2) * 0.03 / 2.
    assert!(
        md.contains("| both | 0.300 ± 0.021 SE | [0.258, 0.342] | 128 | above chance (14.1 SE) |"),
        "{md}"
    );
    assert!(md.contains("| baseline | 0.020 ± 0.014 SE | [-0.008, 0.048] | 128 | not distinguishable from chance (1.4 SE) |"), "{md}");
}
