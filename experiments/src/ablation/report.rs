//! The ablation's section of the report: Table 1 (mean ± sd over training seeds, CSV and
//! LaTeX), the last sample grid of each variant, and the training curves.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flowlens_analysis::figures::{Line, LinePlot};
use flowlens_analysis::stats::Summary;
use flowlens_analysis::tables::{Better, Column, SummaryTable};

use crate::ablation::analyse::{EvalPoint, MjhqPoint, Results, RunResult};
use crate::report::blocks::{Block, Section, mean_se, num, opt, pm};

pub fn section(r: &Results, prefix: &str) -> Result<Section> {
    let mut out = Section::new(prefix);
    let mut blocks = vec![
        Block::Heading(2, "Ablation (Table 1)".into()),
        Block::Para(format!(
            "Preset `{}`, {} steps per run, evaluation every {} steps, training seeds {:?}. \
             The shapes oracle scores prompt adherence (colour, shape, size, relation) of the \
             EMA weights' samples on held-out scenes; *chance* is the same images scored against \
             other scenes' prompts. FID and CLIP score (MJHQ-30k) appear when the runs were \
             evaluated on it (`[ablation.mjhq]`); without them the oracle stands in.",
            r.preset, r.steps, r.eval_every, r.seeds
        )),
    ];
    type Pick = fn(&RunResult) -> Option<f64>;
    let mut metrics: Vec<(&str, &str, &str, Better, Pick)> = vec![
        (
            "adherence",
            "Adherence",
            "Adherence $\\uparrow$",
            Better::Higher,
            |r| r.final_eval().map(|e| e.adherence),
        ),
        ("colour", "Colour", "Colour", Better::Higher, |r| {
            r.final_eval().map(|e| e.colour)
        }),
        ("shape", "Shape", "Shape", Better::Higher, |r| {
            r.final_eval().map(|e| e.shape)
        }),
        ("size", "Size", "Size", Better::Higher, |r| {
            r.final_eval().map(|e| e.size)
        }),
        ("relation", "Relation", "Relation", Better::Higher, |r| {
            r.final_eval().and_then(|e| e.relation)
        }),
        ("chance", "Chance", "Chance", Better::Neither, |r| {
            r.final_eval().map(|e| e.chance)
        }),
        (
            "final_loss",
            "Final loss",
            "Loss $\\downarrow$",
            Better::Lower,
            |r| Some(r.final_loss),
        ),
        (
            "train_minutes",
            "Train min",
            "Train min",
            Better::Neither,
            |r| Some(r.train_seconds / 60.0),
        ),
    ];
    let has_mjhq = r.runs.iter().any(|x| !x.mjhq.is_empty());
    if has_mjhq {
        // The paper's Table 1 columns, from the runs' last MJHQ-30k evaluation.
        metrics.splice(
            0..0,
            [
                (
                    "fid",
                    "FID",
                    "FID $\\downarrow$",
                    Better::Lower,
                    (|r| r.mjhq.last().map(|m| m.fid)) as Pick,
                ),
                (
                    "clip_score",
                    "CLIP x100",
                    "CLIP$\\times$100 $\\uparrow$",
                    Better::Higher,
                    |r| r.mjhq.last().map(|m| m.clip_score),
                ),
            ],
        );
        blocks.push(Block::Para(
            "FID and CLIP score (x100, per-pair clamp then mean) are the last MJHQ-30k evaluation \
             of each run (`[ablation.mjhq]`, as `flowlens train --mjhq`)."
                .into(),
        ));
    }
    let mut cells = Vec::new();
    let mut md_rows = Vec::new();
    for v in &r.variants {
        let runs: Vec<&RunResult> = r.runs.iter().filter(|x| &x.variant == v).collect();
        let mut row = Vec::new();
        let mut md = vec![v.clone()];
        for (_, _, _, _, pick) in &metrics {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|x| pick(x))
                .filter(|x| x.is_finite())
                .collect();
            let s = Summary::of(&values).ok();
            md.push(s.as_ref().map_or("–".into(), |s| pm(s, false)));
            row.push(s);
        }
        cells.push(row);
        md_rows.push(md);
    }
    let table = SummaryTable {
        row_header: "Model".into(),
        rows: r.variants.clone(),
        columns: metrics
            .iter()
            .map(|(name, _, latex, better, _)| Column {
                name: name.to_string(),
                latex_header: latex.to_string(),
                better: *better,
                decimals: 3,
            })
            .collect(),
        cells,
    };
    let files = out.table(
        table,
        "ablation",
        "Ablation: final shapes-oracle adherence and loss, mean +- sd over training seeds.",
    );
    blocks.push(Block::Table {
        header: std::iter::once("Model".to_string())
            .chain(metrics.iter().map(|m| m.1.to_string()))
            .collect(),
        rows: md_rows,
    });
    blocks.push(Block::Files(files));
    blocks.extend(above_chance(r));
    let finals: Vec<&EvalPoint> = r.runs.iter().filter_map(|x| x.final_eval()).collect();
    if !finals.is_empty() && finals.iter().all(|e| e.adherence <= e.chance) {
        blocks.push(Block::Para(
            "At this budget no variant's adherence is above its chance level: the samples are \
             not yet clean enough shapes for the oracle (see the sample grids below). Train \
             longer (`steps` in `[ablation]`) before comparing the variants."
                .into(),
        ));
    }
    // Qualitative results: the last sample grid of each variant's first seed.
    for v in &r.variants {
        let Some(run) = r.runs.iter().find(|x| &x.variant == v) else {
            continue;
        };
        let Some(grid) = last_sample_grid(Path::new(&run.run)) else {
            continue;
        };
        let path = out.png(&format!("samples_{v}.png"), upscaled_png(&grid, 4)?);
        let prompts = std::fs::read_to_string(grid.with_extension("txt")).unwrap_or_default();
        blocks.push(Block::Image {
            path,
            caption: format!(
                "{v}, seed {}: EMA samples at the last grid ({}); prompts: {}",
                run.seed,
                grid.file_stem()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default(),
                prompts.lines().collect::<Vec<_>>().join("; ")
            ),
        });
    }
    // Curves: the evaluations and the loss over training steps, one line per variant.
    let mut adherence = Vec::new();
    let mut loss = Vec::new();
    let mut chance = Vec::new();
    let mut long = Vec::new();
    for v in &r.variants {
        let runs: Vec<&RunResult> = r.runs.iter().filter(|x| &x.variant == v).collect();
        if runs.is_empty() {
            continue;
        }
        let steps: Vec<f64> = runs[0].evals.iter().map(|e| e.step as f64).collect();
        let per_seed: Vec<Vec<f64>> = runs
            .iter()
            .map(|x| x.evals.iter().map(|e| e.adherence).collect())
            .collect();
        let (ys, band) = mean_se(&per_seed);
        if !ys.is_empty() {
            adherence.push(Line {
                name: v.clone(),
                xs: steps[..ys.len()].to_vec(),
                ys,
                band,
                points: None,
            });
        }
        chance.extend(runs.iter().flat_map(|x| x.evals.iter().map(|e| e.chance)));
        let lx: Vec<f64> = runs[0].loss_curve.iter().map(|p| p.0 as f64).collect();
        let per_seed: Vec<Vec<f64>> = runs
            .iter()
            .map(|x| x.loss_curve.iter().map(|p| p.1).collect())
            .collect();
        let (ys, band) = mean_se(&per_seed);
        loss.push(Line {
            name: v.clone(),
            xs: lx[..ys.len()].to_vec(),
            ys,
            band,
            points: None,
        });
        for x in &runs {
            for e in &x.evals {
                long.push(vec![
                    v.clone(),
                    x.seed.to_string(),
                    e.step.to_string(),
                    num(e.adherence),
                    num(e.colour),
                    num(e.shape),
                    num(e.size),
                    opt(e.relation),
                    num(e.chance),
                ]);
            }
        }
    }
    let chance_mean =
        (!chance.is_empty()).then(|| chance.iter().sum::<f64>() / chance.len() as f64);
    if !adherence.is_empty() {
        // Adherence is a fraction: the axis starts at 0 and shows at least 0..0.05, so a flat
        // zero line reads as "nothing learned yet", not as noise around 0.
        let top = adherence
            .iter()
            .flat_map(|l| l.ys.iter())
            .chain(chance_mean.iter())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.05f64, f64::max);
        let stem = out.figure(
            LinePlot {
                title: "Prompt adherence during training (shapes oracle)".into(),
                x_label: "training step".into(),
                y_label: "adherence".into(),
                lines: adherence,
                reference: chance_mean.map(|c| (c, "chance (mean)".into())),
                y_range: Some((0.0, (top * 1.15).min(1.0))),
            },
            "ablation_adherence",
        );
        blocks.push(Block::Figure {
            stem,
            caption: "Oracle prompt adherence vs training step, one line per variant (mean over \
                      seeds, band +-1 SE when there are several)."
                .into(),
        });
    }
    let stem = out.figure(
        LinePlot {
            title: "Training loss".into(),
            x_label: "training step".into(),
            y_label: "velocity MSE".into(),
            lines: loss,
            reference: None,
            y_range: None,
        },
        "ablation_loss",
    );
    blocks.push(Block::Figure {
        stem,
        caption: "Velocity loss vs training step (mean over bins of steps and over seeds).".into(),
    });
    if has_mjhq {
        for (name, title, y_label, pick) in [
            (
                "ablation_fid",
                "MJHQ-30k FID during training",
                "FID",
                (|m: &MjhqPoint| m.fid) as fn(&MjhqPoint) -> f64,
            ),
            (
                "ablation_clip",
                "MJHQ-30k CLIP score during training",
                "CLIP score x100",
                |m| m.clip_score,
            ),
        ] {
            let mut lines = Vec::new();
            for v in &r.variants {
                let runs: Vec<&RunResult> = r.runs.iter().filter(|x| &x.variant == v).collect();
                let Some(first) = runs.first() else { continue };
                let steps: Vec<f64> = first.mjhq.iter().map(|m| m.step as f64).collect();
                let per_seed: Vec<Vec<f64>> = runs
                    .iter()
                    .map(|x| x.mjhq.iter().map(pick).collect())
                    .collect();
                let (ys, band) = mean_se(&per_seed);
                if !ys.is_empty() {
                    lines.push(Line {
                        name: v.clone(),
                        xs: steps[..ys.len()].to_vec(),
                        ys,
                        band,
                        points: None,
                    });
                }
            }
            let stem = out.figure(
                LinePlot {
                    title: title.into(),
                    x_label: "training step".into(),
                    y_label: y_label.into(),
                    lines,
                    reference: None,
                    y_range: None,
                },
                name,
            );
            blocks.push(Block::Figure {
                stem,
                caption: format!(
                    "{title}, one line per variant (mean over seeds, band +-1 SE when there are several)."
                ),
            });
        }
    }
    let csv = out.csv(
        "ablation_evals",
        &[
            "variant",
            "seed",
            "step",
            "adherence",
            "colour",
            "shape",
            "size",
            "relation",
            "chance",
        ],
        &long,
    );
    blocks.push(Block::Files(vec![csv]));
    Ok(out.with(blocks))
}

/// The newest `samples/grid-step*.png` of a run.
fn last_sample_grid(run: &Path) -> Option<PathBuf> {
    let mut grids: Vec<PathBuf> = std::fs::read_dir(run.join("samples"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "png")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("grid-step"))
        })
        .collect();
    grids.sort();
    grids.pop()
}

/// A small image enlarged `factor` times with nearest-neighbour sampling (sample grids of 32 px
/// images stay readable in the report), as PNG bytes.
fn upscaled_png(path: &Path, factor: u32) -> Result<Vec<u8>> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?;
    let big = img.resize(
        img.width() * factor,
        img.height() * factor,
        image::imageops::FilterType::Nearest,
    );
    let mut bytes = Vec::new();
    big.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageOutputFormat::Png,
    )
    .with_context(|| format!("encoding {}", path.display()))?;
    Ok(bytes)
}

/// Adherence above chance per variant, paired per image: the mean margin over the variant's
/// runs, its SE over the evaluated images (runs pooled as independent image sets) and a verdict
/// at 3 SE.
fn above_chance(r: &Results) -> Vec<Block> {
    let mut rows = Vec::new();
    for v in &r.variants {
        let margins: Vec<_> = r
            .runs
            .iter()
            .filter(|x| &x.variant == v)
            .filter_map(|x| x.final_eval().and_then(|e| e.margin))
            .collect();
        if margins.is_empty() {
            continue;
        }
        let k = margins.len() as f64;
        let mean = margins.iter().map(|m| m.mean).sum::<f64>() / k;
        let se = margins.iter().map(|m| m.se * m.se).sum::<f64>().sqrt() / k;
        let images: usize = margins.iter().map(|m| m.n).sum();
        let z = if se > 0.0 { mean / se } else { f64::INFINITY };
        let verdict = if z >= 3.0 {
            format!("above chance ({z:.1} SE)")
        } else {
            format!("not distinguishable from chance ({z:.1} SE)")
        };
        rows.push(vec![
            v.clone(),
            format!("{mean:.3} ± {se:.3} SE"),
            format!("[{:.3}, {:.3}]", mean - 1.96 * se, mean + 1.96 * se),
            images.to_string(),
            verdict,
        ]);
    }
    if rows.is_empty() {
        return Vec::new();
    }
    vec![
        Block::Para(
            "Adherence above chance, paired per image (each image scored against its own prompt \
             minus against another scene's), at the last evaluation: mean over the variant's \
             runs, ± SE and the normal 95 % interval over the evaluated images (they cover the \
             choice of evaluation prompts and noise, not the training seed); a variant is above \
             chance when the margin is at least 3 SE."
                .into(),
        ),
        Block::Table {
            header: vec![
                "Model".into(),
                "Adherence − chance".into(),
                "95 % interval".into(),
                "Images".into(),
                "Verdict".into(),
            ],
            rows,
        },
    ]
}
