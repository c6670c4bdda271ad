//! Experiment 2's section of the report: the text-noise CKA curves of the shared encoder under
//! each decoder with their intervals over prompts and pairing nulls, AUC and time-to-threshold
//! bars and tables, the AUC difference against the swap null, the long-form CSV.

use anyhow::Result;
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::figures::{BarChart, LinePlot};
use flowlens_analysis::inference::Inferred;
use flowlens_analysis::tables::{Better, Column, SummaryTable};

use crate::exp2::analyse::{Condition, Results};
use crate::report::blocks::{
    Block, Section, inferred, inferred_line, num, pm, resolution, with_ci,
};

pub fn section(r: &Results, prefix: &str) -> Result<Section> {
    let mut out = Section::new(prefix);
    let headline: Estimator = r.estimator.parse().map_err(anyhow::Error::msg)?;
    let mut blocks = vec![
        Block::Heading(
            2,
            "Experiment 2: decoder-induced text–noise dynamics".into(),
        ),
        Block::Para(format!(
            "The same trained dual-stream encoder under two decoders ({} encoder tensors checked \
             bit-identical between the systems). At every solver step, CKA between the \
             layer-normalised pooled text and noise streams across {} prompts; curves are the \
             mean over sampling seeds {:?} (bands: intervals over prompts); AUC over normalised time and the first \
             time the interpolated curve reaches {} (mean ± SE over seeds; seeds that never \
             reach it are counted, not averaged). CFG {}, pooling `{}`. {}",
            r.encoder_tensors_identical,
            r.n_prompts,
            r.seeds,
            r.threshold,
            r.cfg,
            r.pooling,
            coverage(r)
        )),
    ];
    for e in [headline, headline.other()] {
        let lines = r
            .conditions
            .iter()
            .map(|c| {
                let curve: Vec<&Inferred> = c.inference.get(e).curve.iter().collect();
                let above = (r.permutations > 0).then(|| {
                    curve
                        .iter()
                        .map(|i| i.null.is_some_and(|n| n.significant()))
                        .collect()
                });
                inferred_line(c.name.clone(), r.ts.clone(), &curve, above)
            })
            .collect();
        let stem = out.figure(
            LinePlot {
                title: format!("Encoder text–noise CKA over solver time ({})", e.name()),
                x_label: "solver time t".into(),
                y_label: "CKA(E_text, E_noise)".into(),
                lines,
                reference: Some((r.threshold, format!("threshold {}", r.threshold))),
                y_range: None,
            },
            &format!("exp2_curves_{}", e.name()),
        );
        blocks.push(Block::Figure {
            stem,
            caption: format!(
                "Text–noise alignment of the shared encoder vs solver time under each decoder, \
                 {} estimator, mean over seeds; bands: {:.0} % bootstrap intervals over prompts; \
                 filled points are above the pairing null at the 5 % level, hollow points are \
                 not distinguishable from it.",
                e.name(),
                r.level * 100.0
            ),
        });
    }
    let names: Vec<String> = r.conditions.iter().map(|c| c.name.clone()).collect();
    let series = [headline, headline.other()];
    let stem = out.figure(
        BarChart {
            title: "AUC of the CKA–time curve (higher is better)".into(),
            y_label: "AUC".into(),
            groups: names.clone(),
            series: series.iter().map(|e| e.name().to_string()).collect(),
            values: series
                .iter()
                .map(|&e| {
                    r.conditions
                        .iter()
                        .map(|c| c.summary.get(e).auc.mean)
                        .collect()
                })
                .collect(),
            errors: Some(
                series
                    .iter()
                    .map(|&e| {
                        r.conditions
                            .iter()
                            .map(|c| c.summary.get(e).auc.se)
                            .collect()
                    })
                    .collect(),
            ),
        },
        "exp2_auc",
    );
    blocks.push(Block::Figure {
        stem,
        caption: "AUC per decoder, mean ± 1 SE over seeds.".into(),
    });
    let reached: Vec<&Condition> = r
        .conditions
        .iter()
        .filter(|c| c.summary.get(headline).crossing.n_reached > 0)
        .collect();
    if reached.is_empty() {
        blocks.push(Block::Para(format!(
            "No seed's {} curve reached CKA ≥ {} under either decoder, so the time-to-threshold \
             is not drawn (it is \"not reached\" in the table).",
            headline.name(),
            r.threshold
        )));
    } else {
        let label = |c: &Condition| {
            let x = &c.summary.get(headline).crossing;
            let n = x.n_reached + x.n_not_reached;
            if x.n_reached == 0 {
                format!("{} (never reached)", c.name)
            } else if x.n_not_reached > 0 {
                format!("{} ({} of {n} seeds)", c.name, x.n_reached)
            } else {
                c.name.clone()
            }
        };
        let stem = out.figure(
            BarChart {
                title: format!(
                    "Time to CKA ≥ {} ({}; lower is better)",
                    r.threshold,
                    headline.name()
                ),
                y_label: "normalised time".into(),
                groups: r.conditions.iter().map(label).collect(),
                series: vec![headline.name().to_string()],
                values: vec![
                    r.conditions
                        .iter()
                        .map(|c| {
                            c.summary
                                .get(headline)
                                .crossing
                                .reached
                                .map_or(0.0, |s| s.mean)
                        })
                        .collect(),
                ],
                errors: Some(vec![
                    r.conditions
                        .iter()
                        .map(|c| {
                            c.summary
                                .get(headline)
                                .crossing
                                .reached
                                .map_or(0.0, |s| s.se)
                        })
                        .collect(),
                ]),
            },
            "exp2_time_to_threshold",
        );
        blocks.push(Block::Figure {
            stem,
            caption: "Time-to-threshold per decoder, mean ± 1 SE over the seeds that reached it \
                      (a decoder whose seeds never reached it has no bar)."
                .into(),
        });
    }
    let mut header = vec!["Decoder".to_string()];
    for e in series {
        header.push(format!("AUC ({}), over prompts", e.name()));
        header.push(format!("AUC ({}), over seeds", e.name()));
        header.push(format!("time to ≥ {} ({})", r.threshold, e.name()));
    }
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for c in &r.conditions {
        let mut row = vec![c.name.clone()];
        let mut crow = Vec::new();
        for e in series {
            let s = c.summary.get(e);
            let inf = c.inference.get(e);
            row.push(inferred(&inf.auc, false));
            row.push(pm(&s.auc, true));
            let reached = s
                .crossing
                .reached
                .as_ref()
                .map_or("not reached".into(), |x| {
                    let prompts = inf.time_to_threshold.as_ref().map(|t| with_ci(t, false));
                    format!(
                        "{}{}",
                        pm(x, true),
                        prompts
                            .map(|p| format!("; over prompts {p}"))
                            .unwrap_or_default()
                    )
                });
            row.push(if s.crossing.n_not_reached > 0 {
                format!(
                    "{reached} ({} of {} seeds not reached)",
                    s.crossing.n_not_reached,
                    s.crossing.n_reached + s.crossing.n_not_reached
                )
            } else {
                reached
            });
            crow.push(Some(s.auc));
            crow.push(s.crossing.reached);
        }
        rows.push(row);
        cells.push(crow);
    }
    blocks.push(Block::Table { header, rows });
    blocks.extend(comparisons(r, headline));
    let mut columns = Vec::new();
    for e in series {
        columns.push(Column {
            name: format!("auc_{}", e.name()),
            latex_header: format!("AUC {} $\\uparrow$", e.name()),
            better: Better::Higher,
            decimals: 3,
        });
        columns.push(Column {
            name: format!("time_to_threshold_{}", e.name()),
            latex_header: format!("$t_{{\\geq {}}}$ {} $\\downarrow$", r.threshold, e.name()),
            better: Better::Lower,
            decimals: 3,
        });
    }
    let mut files = out.table(
        SummaryTable {
            row_header: "Decoder".into(),
            rows: names,
            columns,
            cells,
        },
        "exp2_summary",
        "Experiment 2: AUC and time-to-threshold of the encoder's text-noise CKA, mean +- sd over seeds.",
    );
    let mut long = Vec::new();
    for c in &r.conditions {
        for (i, seed) in r.seeds.iter().enumerate() {
            for (k, t) in r.ts.iter().enumerate() {
                long.push(vec![
                    c.name.clone(),
                    seed.to_string(),
                    k.to_string(),
                    num(*t),
                    num(c.curves.debiased[i][k]),
                    num(c.curves.biased[i][k]),
                ]);
            }
        }
    }
    files.push(out.csv(
        "exp2_curves",
        &["decoder", "seed", "step", "t", "cka_debiased", "cka_biased"],
        &long,
    ));
    blocks.push(Block::Files(files));
    Ok(out.with(blocks))
}

/// What each interval and test covers, for the captions.
fn coverage(r: &Results) -> String {
    if r.bootstrap == 0 && r.permutations == 0 {
        return "No intervals over prompts or nulls were computed (bootstrap = permutations = 0)."
            .into();
    }
    format!(
        "Intervals over prompts: {:.0} % bootstrap ({} resamples of the {} prompts, one resample \
         for every step, seed and decoder; they cover the choice of prompts, with the trained \
         systems and sampling seeds held fixed). Nulls at the 5 % level, {} permutations: each \
         curve point and AUC against the pairing null (text and noise streams of different \
         prompts paired), the AUC difference against the swap null (each prompt's features of \
         the two systems exchanged at every step and seed, two-sided; conservative, since it mixes \
         the systems' feature spaces). Times to threshold carry intervals only.",
        r.level * 100.0,
        r.bootstrap,
        r.n_prompts,
        r.permutations
    )
}

/// The first system against each other one: ΔAUC and Δ time with intervals and the swap test.
fn comparisons(r: &Results, headline: Estimator) -> Vec<Block> {
    if r.comparisons.is_empty() {
        return Vec::new();
    }
    let mut blocks = Vec::new();
    let null95: Vec<f64> = r
        .comparisons
        .iter()
        .filter_map(|c| c.get(headline).delta_auc.null.map(|n| n.null95))
        .collect();
    blocks.extend(resolution(r.n_prompts, &null95, "|ΔAUC| (swap test)"));
    let mut rows = Vec::new();
    for c in &r.comparisons {
        for e in [headline, headline.other()] {
            let x = c.get(e);
            rows.push(vec![
                format!("{} − {}", x.first, x.other),
                e.name().to_string(),
                inferred(&x.delta_auc, true),
                x.delta_time.as_ref().map_or(
                    "undefined (a curve does not reach the threshold)".into(),
                    |t| inferred(t, true),
                ),
            ]);
        }
    }
    blocks.push(Block::Table {
        header: vec![
            "Difference".into(),
            "Estimator".into(),
            "ΔAUC".into(),
            format!("Δ time to ≥ {}", r.threshold),
        ],
        rows,
    });
    blocks
}

#[cfg(test)]
mod tests {
    use flowlens_analysis::cka::PerEstimator;
    use flowlens_analysis::curves::summarise_curves;
    use flowlens_analysis::inference::Inferred;

    use super::*;
    use crate::exp2::analyse::CurveInference;

    fn condition(name: &str, ts: &[f64], curves: Vec<Vec<f64>>) -> Condition {
        let summary = summarise_curves(ts, &curves, 0.5).unwrap();
        let plain = |estimate| Inferred {
            estimate,
            ci: None,
            null: None,
        };
        let inference = CurveInference {
            curve: ts.iter().map(|_| plain(0.5)).collect(),
            auc: plain(summary.auc.mean),
            time_to_threshold: None,
        };
        Condition {
            name: name.into(),
            run: format!("/runs/{name}"),
            checkpoint_step: 4,
            curves: PerEstimator::new(curves.clone(), curves),
            summary: PerEstimator::new(summary.clone(), summary),
            inference: PerEstimator::new(inference.clone(), inference),
        }
    }

    /// The paragraph says "mean ± SE over seeds": the table's ± is the SE, with the sd named.
    #[test]
    fn the_auc_over_seeds_is_printed_as_mean_plus_minus_se_with_the_sd_beside_it() {
        let ts = [0.0, 0.5];
        let curves = vec![vec![0.2, 0.4], vec![0.4, 0.6], vec![0.3, 0.8]];
        let c = condition("single-stream decoder", &ts, curves);
        let s = c.summary.debiased.auc;
        assert!(s.sd > s.se * 1.5, "three seeds: the sd and the SE differ");
        let r = Results {
            format: "flowlens.exp2.v2".into(),
            ts: ts.to_vec(),
            seeds: vec![0, 1, 2],
            n_prompts: 256,
            threshold: 0.5,
            estimator: "debiased".into(),
            pooling: "layer_norm_mean".into(),
            cfg: 2.0,
            encoder_tensors_identical: 12,
            conditions: vec![c],
            comparisons: Vec::new(),
            permutations: 0,
            bootstrap: 0,
            level: 0.95,
        };
        let section = section(&r, "").unwrap();
        let want = format!("{:.3} ± {:.3} SE (sd {:.3})", s.mean, s.se, s.sd);
        let table = section
            .blocks
            .iter()
            .find_map(|b| match b {
                Block::Table { header, rows } if header[0] == "Decoder" => Some((header, rows)),
                _ => None,
            })
            .unwrap();
        let col = table
            .0
            .iter()
            .position(|h| h == "AUC (debiased), over seeds")
            .unwrap();
        assert_eq!(table.1[0][col], want);
        let para = section.blocks.iter().find_map(|b| match b {
            Block::Para(p) if p.contains("mean ± SE over seeds") => Some(p),
            _ => None,
        });
        assert!(para.is_some(), "the paragraph says what the ± is");
    }
}
