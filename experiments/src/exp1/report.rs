//! Experiment 1's section of the report: ΔCKA tables and heatmaps per stream (both estimators),
//! absolute CKA curves of both models with the permutation-null floor, the long-form CSV.

use anyhow::{Context, Result};
use flowlens_analysis::cka::{Estimator, PerEstimator};
use flowlens_analysis::figures::{Heatmap, Line, LinePlot};
use flowlens_analysis::tables::{Better, Column, SummaryTable};
use ndarray::Array2;

use crate::exp1::analyse::{Cell, Results, STREAMS, Values};
use crate::report::blocks::{Block, Section, layer_label, num, opt, pm};

pub fn section(r: &Results, prefix: &str) -> Result<Section> {
    let mut out = Section::new(prefix);
    let headline: Estimator = r.estimator.parse().map_err(anyhow::Error::msg)?;
    let mut blocks = vec![
        Block::Heading(2, "Experiment 1: encoder streams vs LLM layers".into()),
        Block::Para(format!(
            "ΔCKA = CKA(ours) − CKA(baseline) with ours = `{}` (step {}) and baseline = `{}` \
             (step {}); {} prompts, sampling seeds {:?}, Euler {} steps, CFG {}, pooling `{}`, \
             conditional branch. Text stream vs the LLM's hidden state at text positions; noise \
             stream vs the hidden state at image positions (the baseline's text stream is the \
             LLM's input embeddings). Cells: mean ± sd over seeds (SE in brackets), debiased \
             and biased estimators side by side. The permutation-null floor is the 95 % quantile \
             of the {} CKA under {} row permutations (first seed).",
            r.ours,
            r.ours_checkpoint_step,
            r.baseline,
            r.baseline_checkpoint_step,
            r.n_prompts,
            r.seeds,
            r.solver_steps,
            r.cfg,
            r.pooling,
            r.estimator,
            r.permutations
        )),
    ];
    let t_label = |step: usize| format!("t = {:.2}", step as f64 / r.solver_steps as f64);
    for (stream, _, _) in STREAMS {
        blocks.push(Block::Heading(
            3,
            format!("{} stream vs LLM layer: ΔCKA", capitalise(stream)),
        ));
        let mut header = vec!["Layer".to_string()];
        for &s in &r.steps {
            header.push(format!("{} debiased", t_label(s)));
            header.push(format!("{} biased", t_label(s)));
        }
        let mut rows = Vec::new();
        for &l in &r.layers {
            let mut row = vec![layer_label(l)];
            for &s in &r.steps {
                let c = r.cell(stream, l, s).context("exp1 results miss a cell")?;
                row.push(pm(&c.delta.debiased.summary(), true));
                row.push(pm(&c.delta.biased.summary(), true));
            }
            rows.push(row);
        }
        blocks.push(Block::Table { header, rows });
        let mut files = Vec::new();
        for e in [Estimator::Debiased, Estimator::Biased] {
            let table = SummaryTable {
                row_header: "Layer".into(),
                rows: r.layers.iter().map(|&l| format!("l = {l}")).collect(),
                columns: r
                    .steps
                    .iter()
                    .map(|&s| Column {
                        name: format!("t{:.2}", s as f64 / r.solver_steps as f64),
                        latex_header: format!("$t={:.1}$", s as f64 / r.solver_steps as f64),
                        better: Better::Neither,
                        decimals: 3,
                    })
                    .collect(),
                cells: r
                    .layers
                    .iter()
                    .map(|&l| {
                        r.steps
                            .iter()
                            .map(|&s| r.cell(stream, l, s).map(|c| c.delta.get(e).summary()))
                            .collect()
                    })
                    .collect(),
            };
            files.extend(out.table(
                table,
                &format!("exp1_delta_{stream}_{}", e.name()),
                &format!(
                    "Delta CKA (ours - baseline), {stream} stream vs LLM layer, {} estimator, mean +- sd over {} seeds.",
                    e.name(),
                    r.seeds.len()
                ),
            ));
            let values = Array2::from_shape_fn((r.layers.len(), r.steps.len()), |(i, j)| {
                r.cell(stream, r.layers[i], r.steps[j])
                    .map_or(f64::NAN, |c| c.delta.get(e).mean)
            });
            let stem = out.figure(
                Heatmap {
                    title: format!("ΔCKA, {stream} stream vs LLM ({})", e.name()),
                    x_label: "solver time t".into(),
                    y_label: "LLM layer".into(),
                    x_ticks: r.steps.iter().map(|&s| t_label(s)).collect(),
                    y_ticks: r.layers.iter().map(|&l| layer_label(l)).collect(),
                    values,
                    diverging: true,
                    annotate: true,
                    colorbar_label: "ΔCKA (ours − baseline)".into(),
                    range: None,
                },
                &format!("exp1_delta_{stream}_{}", e.name()),
            );
            blocks.push(Block::Figure {
                stem,
                caption: format!(
                    "ΔCKA of the {stream} stream, {} estimator (mean over seeds).",
                    e.name()
                ),
            });
        }
        blocks.push(Block::Files(files));
        // Absolute CKA of both models over the probed steps, per layer, with the null floor.
        let mut lines = Vec::new();
        let mut floor: Option<f64> = None;
        for &l in &r.layers {
            for (who, pick) in [
                ("ours", (|c| &c.ours) as fn(&Cell) -> &PerEstimator<Values>),
                ("baseline", |c| &c.baseline),
            ] {
                let cells: Vec<&Cell> = r
                    .steps
                    .iter()
                    .filter_map(|&s| r.cell(stream, l, s))
                    .collect();
                lines.push(Line {
                    name: format!("{who}, ℓ = {l}"),
                    xs: cells.iter().map(|c| c.t).collect(),
                    ys: cells.iter().map(|c| pick(c).get(headline).mean).collect(),
                    band: (r.seeds.len() > 1)
                        .then(|| cells.iter().map(|c| pick(c).get(headline).se).collect()),
                });
                for c in &cells {
                    for v in [c.null95_ours, c.null95_baseline].into_iter().flatten() {
                        floor = Some(floor.map_or(v, |f: f64| f.max(v)));
                    }
                }
            }
        }
        let stem = out.figure(
            LinePlot {
                title: format!("CKA, {stream} stream vs LLM layers ({})", r.estimator),
                x_label: "solver time t".into(),
                y_label: "linear CKA".into(),
                lines,
                reference: floor.map(|f| (f, "permutation null, 95 % (max over cells)".into())),
                y_range: None,
            },
            &format!("exp1_cka_{stream}"),
        );
        blocks.push(Block::Figure {
            stem,
            caption: format!(
                "CKA of the {stream} stream with each LLM layer, ours and baseline, mean ± 1 SE \
                 over seeds; the dashed line is the highest permutation-null floor."
            ),
        });
    }
    let mut long = Vec::new();
    for c in &r.cells {
        long.push(vec![
            c.stream.clone(),
            c.layer.to_string(),
            c.step.to_string(),
            num(c.t),
            num(c.ours.debiased.mean),
            num(c.baseline.debiased.mean),
            num(c.delta.debiased.mean),
            num(c.delta.debiased.sd),
            num(c.delta.debiased.se),
            num(c.ours.biased.mean),
            num(c.baseline.biased.mean),
            num(c.delta.biased.mean),
            num(c.delta.biased.sd),
            num(c.delta.biased.se),
            opt(c.null95_ours),
            opt(c.null95_baseline),
            c.delta.debiased.per_seed.len().to_string(),
        ]);
    }
    let csv = out.csv(
        "exp1_cells",
        &[
            "stream",
            "layer",
            "step",
            "t",
            "ours_debiased",
            "baseline_debiased",
            "delta_debiased_mean",
            "delta_debiased_sd",
            "delta_debiased_se",
            "ours_biased",
            "baseline_biased",
            "delta_biased_mean",
            "delta_biased_sd",
            "delta_biased_se",
            "null95_ours",
            "null95_baseline",
            "n_seeds",
        ],
        &long,
    );
    blocks.push(Block::Files(vec![csv]));
    Ok(out.with(blocks))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
