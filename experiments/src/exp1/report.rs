//! Experiment 1's section of the report: ΔCKA per stream, layer and step with its interval over
//! prompts and the swap test's verdict, each model's CKA against its pairing null, heatmaps
//! (cells not distinguishable from the null crossed out), CKA curves with their intervals, and
//! the long-form CSV.

use anyhow::{Context, Result};
use flowlens_analysis::cka::{Estimator, PerEstimator};
use flowlens_analysis::figures::{Heatmap, LinePlot};
use flowlens_analysis::inference::Inferred;
use flowlens_analysis::tables::{Better, Column, SummaryTable};
use ndarray::Array2;

use crate::exp1::analyse::{Cell, CellInference, Results, STREAMS};
use crate::report::blocks::{
    Block, Section, inferred, inferred_line, layer_label, num, resolution,
};

/// What each interval and test covers, for the captions.
fn coverage(r: &Results) -> String {
    if r.bootstrap == 0 && r.permutations == 0 {
        return "No intervals over prompts or nulls were computed (bootstrap = permutations = 0)."
            .into();
    }
    format!(
        "Brackets: the {:.0} % bootstrap interval over prompts ({} resamples of the {} prompts, \
         the same resample for both models and every seed, so the ΔCKA interval is paired; it \
         covers the choice of prompts, with the trained models and the sampling seeds held \
         fixed). Verdicts at the 5 % level: ΔCKA by the swap test (each prompt's features of the \
         two models exchanged, {} permutations, two-sided); each model's CKA by its pairing null \
         (the two feature sets of different prompts paired, the same permutations). The swap \
         null mixes the two models' feature spaces, so it is wide and the test conservative: a \
         ΔCKA whose interval excludes 0 can still be not distinguishable from it.",
        r.level * 100.0,
        r.bootstrap,
        r.n_prompts,
        r.permutations
    )
}

/// A cell's text: layer 0 is an identity.
fn cell_text(c: &Cell, i: &Inferred, signed: bool) -> String {
    if c.by_construction {
        if signed {
            "0 by construction".into()
        } else {
            "1 by construction".into()
        }
    } else {
        inferred(i, signed)
    }
}

/// Whether a cell is evidence of anything: not layer 0, and its null rejected.
fn above_null(c: &Cell, i: &Inferred) -> bool {
    !c.by_construction && i.null.is_some_and(|n| n.significant())
}

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
             LLM's input embeddings). Each value is the mean over the sampling seeds; tables \
             show the {} estimator (both estimators are in the heatmaps and the CSV, with the \
             ± SE and sd over seeds). {}",
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
            coverage(r)
        )),
        Block::Para(
            "What is measured, plainly: the encoder's text and noise streams are the LLM's \
             layer-0 input, so CKA(enc.*, ℓ = 0) = 1 and ΔCKA = 0 at layer 0 by construction \
             (shown as such, not as evidence). The baseline's text stream is the LLM's input \
             embeddings and, under causal attention, its hidden states at text positions do not \
             see the image tokens: the baseline's text-stream CKA is the same at every t and \
             seed. Each model is compared with its own LLM (docs/EXPERIMENTS.md)."
                .into(),
        ),
    ];
    let t_label = |step: usize| format!("t = {:.2}", step as f64 / r.solver_steps as f64);
    for (stream, _, _) in STREAMS {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.stream == stream).collect();
        let inf = |c: &Cell| c.inference.get(headline).clone();
        blocks.push(Block::Heading(
            3,
            format!("{} stream vs LLM layer: ΔCKA", capitalise(stream)),
        ));
        let null95: Vec<f64> = cells
            .iter()
            .filter(|c| !c.by_construction)
            .filter_map(|c| inf(c).delta.null.map(|n| n.null95))
            .collect();
        blocks.extend(resolution(r.n_prompts, &null95, "|ΔCKA| (swap test)"));
        let mut header = vec!["Layer".to_string()];
        header.extend(r.steps.iter().map(|&s| t_label(s)));
        let mut rows = Vec::new();
        let mut absolute = Vec::new();
        for &l in &r.layers {
            let mut row = vec![layer_label(l)];
            let mut ours_row = vec![format!("{}, ours", layer_label(l))];
            let mut base_row = vec![format!("{}, baseline", layer_label(l))];
            for &s in &r.steps {
                let c = r.cell(stream, l, s).context("exp1 results miss a cell")?;
                let i: CellInference = inf(c);
                row.push(cell_text(c, &i.delta, true));
                ours_row.push(cell_text(c, &i.ours, false));
                base_row.push(cell_text(c, &i.baseline, false));
            }
            rows.push(row);
            absolute.push(ours_row);
            absolute.push(base_row);
        }
        blocks.push(Block::Table {
            header: header.clone(),
            rows,
        });
        blocks.push(Block::Para(format!(
            "CKA of each model ({}), against its pairing null:",
            r.estimator
        )));
        blocks.push(Block::Table {
            header,
            rows: absolute,
        });
        blocks.extend(prior_table(r, stream, headline, &t_label)?);
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
                    "Delta CKA (ours - baseline), {stream} stream vs LLM layer, {} estimator, \
                     mean +- sd over {} sampling seeds (intervals over prompts and null tests: \
                     exp1_cells.csv).",
                    e.name(),
                    r.seeds.len()
                ),
            ));
            let grid = |f: &dyn Fn(&Cell) -> f64| {
                Array2::from_shape_fn((r.layers.len(), r.steps.len()), |(i, j)| {
                    r.cell(stream, r.layers[i], r.steps[j]).map_or(f64::NAN, f)
                })
            };
            let values = grid(&|c| c.delta.get(e).mean);
            let crossed = Array2::from_shape_fn((r.layers.len(), r.steps.len()), |(i, j)| {
                r.cell(stream, r.layers[i], r.steps[j])
                    .is_none_or(|c| !above_null(c, &c.inference.get(e).delta))
            });
            let tested = r.permutations > 0;
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
                    crossed: tested.then_some(crossed),
                },
                &format!("exp1_delta_{stream}_{}", e.name()),
            );
            blocks.push(Block::Figure {
                stem,
                caption: format!(
                    "ΔCKA of the {stream} stream, {} estimator (mean over seeds){}.",
                    e.name(),
                    if tested {
                        "; crossed-out cells are not distinguishable from the swap null at the \
                         5 % level (or are layer 0, an identity)"
                    } else {
                        "; no null computed"
                    }
                ),
            });
        }
        blocks.push(Block::Files(files));
        // Absolute CKA of both models over the probed steps, per layer, with intervals.
        let mut lines = Vec::new();
        for &l in &r.layers {
            for (who, pick) in [
                ("ours", (|c| &c.ours) as fn(&CellInference) -> &Inferred),
                ("baseline", |c| &c.baseline),
            ] {
                let cells: Vec<&Cell> = r
                    .steps
                    .iter()
                    .filter_map(|&s| r.cell(stream, l, s))
                    .collect();
                let inf: Vec<CellInference> = cells.iter().map(|c| inf(c)).collect();
                let values: Vec<&Inferred> = inf.iter().map(pick).collect();
                lines.push(inferred_line(
                    format!("{who}, ℓ = {l}"),
                    cells.iter().map(|c| c.t).collect(),
                    &values,
                    (r.permutations > 0).then(|| {
                        cells
                            .iter()
                            .zip(&values)
                            .map(|(c, i)| above_null(c, i))
                            .collect()
                    }),
                ));
            }
        }
        let stem = out.figure(
            LinePlot {
                title: format!("CKA, {stream} stream vs LLM layers ({})", r.estimator),
                x_label: "solver time t".into(),
                y_label: "linear CKA".into(),
                lines,
                reference: None,
                y_range: None,
            },
            &format!("exp1_cka_{stream}"),
        );
        blocks.push(Block::Figure {
            stem,
            caption: format!(
                "CKA of the {stream} stream with each LLM layer, ours and baseline (mean over \
                 seeds); bands: {:.0} % bootstrap intervals over prompts; filled points are above \
                 the pairing null at the 5 % level, hollow points are not distinguishable from it.",
                r.level * 100.0
            ),
        });
    }
    let mut long = Vec::new();
    let mut header: Vec<String> = ["stream", "layer", "step", "t", "by_construction", "n_seeds"]
        .map(String::from)
        .to_vec();
    for e in Estimator::BOTH {
        for who in ["ours", "baseline", "delta"] {
            for col in ["mean", "sd", "se", "ci_lower", "ci_upper", "null95", "p"] {
                header.push(format!("{who}_{}_{col}", e.name()));
            }
        }
    }
    for c in &r.cells {
        let mut row = vec![
            c.stream.clone(),
            c.layer.to_string(),
            c.step.to_string(),
            num(c.t),
            c.by_construction.to_string(),
            c.delta.debiased.per_seed.len().to_string(),
        ];
        for e in Estimator::BOTH {
            let i = c.inference.get(e);
            let seeds: [&PerEstimator<crate::exp1::analyse::Values>; 3] =
                [&c.ours, &c.baseline, &c.delta];
            for (v, inf) in seeds.iter().zip([&i.ours, &i.baseline, &i.delta]) {
                let v = v.get(e);
                row.extend([num(v.mean), num(v.sd), num(v.se)]);
                row.push(inf.ci.map(|c| num(c.lower)).unwrap_or_default());
                row.push(inf.ci.map(|c| num(c.upper)).unwrap_or_default());
                row.push(inf.null.map(|n| num(n.null95)).unwrap_or_default());
                row.push(inf.null.map(|n| num(n.p)).unwrap_or_default());
            }
        }
        long.push(row);
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let csv = out.csv("exp1_cells", &header, &long);
    blocks.push(Block::Files(vec![csv]));
    Ok(out.with(blocks))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The frozen-prior reading of one stream: ΔCKA and each model's CKA against the prior's hidden
/// state on the caption alone, beside the own-LLM tables.
fn prior_table(
    r: &Results,
    stream: &str,
    headline: Estimator,
    t_label: &dyn Fn(usize) -> String,
) -> Result<Vec<Block>> {
    let Some(prior) = &r.prior else {
        return Ok(Vec::new());
    };
    let mut header = vec!["Layer".to_string()];
    header.extend(r.steps.iter().map(|&s| t_label(s)));
    let mut rows = Vec::new();
    for &l in &r.layers {
        for (who, pick) in [
            ("ΔCKA", (|c| &c.delta) as fn(&CellInference) -> &Inferred),
            ("ours", |c| &c.ours),
            ("baseline", |c| &c.baseline),
        ] {
            let mut row = vec![format!("{}, {who}", layer_label(l))];
            for &s in &r.steps {
                let c = r.cell(stream, l, s).context("exp1 results miss a cell")?;
                row.push(match &c.prior {
                    Some(p) => inferred(pick(p.get(headline)), who == "ΔCKA"),
                    None => "–".into(),
                });
            }
            rows.push(row);
        }
    }
    Ok(vec![
        Block::Para(format!(
            "Against the frozen prior ({}): the {stream} stream of each model vs the hidden \
             state of the pre-trained LLM both started from, run on the caption alone (no image \
             tokens) and pooled over its text tokens as the stores pool theirs; one common target \
             for both models ({} estimator; intervals and verdicts as above).",
            prior, r.estimator
        )),
        Block::Table { header, rows },
    ])
}
