//! `flowlens report`: the results of the experiment commands (`ablation/results.json`,
//! `exp1/results.json`, `exp2/results.json`, `grid/*.json` under each experiment directory)
//! rendered as a paper's material: every figure as PNG and SVG (the analysis crate's figure
//! code), every table as CSV and LaTeX, `index.md` and `index.html`, and `manifest.json`
//! (git revisions, config hashes, seeds, versions, devices, compute time). Nothing in the output
//! depends on when or where the report is made, so the same inputs give the same files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::figures::{BarChart, Heatmap, Line, LinePlot, save};
use flowlens_analysis::stats::Summary;
use flowlens_analysis::tables::{Better, Column, SummaryTable, write_csv, write_text};
use ndarray::Array2;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{ablation, exp1, exp2, grid};

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid result", path.display()))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    flowlens_core::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A piece of the report, rendered to both markdown and HTML.
#[derive(Debug, Clone)]
pub enum Block {
    Heading(u8, String),
    Para(String),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Figure {
        stem: String,
        caption: String,
    },
    /// A PNG without an SVG twin (sample grids), path relative to the report.
    Image {
        path: String,
        caption: String,
    },
    /// Links to files (tables as CSV/LaTeX).
    Files(Vec<String>),
}

/// Where a section writes its files.
pub struct Out {
    pub figures: PathBuf,
    pub tables: PathBuf,
    /// Prefix of every file name (distinguishes several experiment directories).
    pub prefix: String,
}

impl Out {
    pub fn new(root: &Path, prefix: &str) -> Self {
        Self {
            figures: root.join("figures"),
            tables: root.join("tables"),
            prefix: prefix.to_string(),
        }
    }

    fn stem(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn figure(&self, fig: &impl flowlens_analysis::figures::Figure, name: &str) -> Result<String> {
        let stem = self.stem(name);
        save(fig, &self.figures, &stem)?;
        Ok(stem)
    }

    /// Writes a summary table as CSV and LaTeX; returns the file names.
    fn table(&self, t: &SummaryTable, name: &str, caption: &str) -> Result<Vec<String>> {
        std::fs::create_dir_all(&self.tables)?;
        let stem = self.stem(name);
        write_csv(&t.to_dataframe()?, &self.tables.join(format!("{stem}.csv")))?;
        write_text(
            &t.to_latex(Some(caption), Some(&format!("tab:{stem}")))?,
            &self.tables.join(format!("{stem}.tex")),
        )?;
        Ok(vec![
            format!("tables/{stem}.csv"),
            format!("tables/{stem}.tex"),
        ])
    }

    /// Writes a long-form CSV of numbers (`header`, rows of already formatted cells).
    fn csv(&self, name: &str, header: &[&str], rows: &[Vec<String>]) -> Result<String> {
        std::fs::create_dir_all(&self.tables)?;
        let stem = self.stem(name);
        let mut text = header.join(",");
        text.push('\n');
        for r in rows {
            text.push_str(&r.join(","));
            text.push('\n');
        }
        write_text(&text, &self.tables.join(format!("{stem}.csv")))?;
        Ok(format!("tables/{stem}.csv"))
    }
}

/// `mean ± sd` (and the SE when asked), 3 decimals; just the mean for one value.
pub fn pm(s: &Summary, se: bool) -> String {
    if s.n > 1 {
        if se {
            format!("{:.3} ± {:.3} (SE {:.3})", s.mean, s.sd, s.se)
        } else {
            format!("{:.3} ± {:.3}", s.mean, s.sd)
        }
    } else {
        format!("{:.3}", s.mean)
    }
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

/// Mean over seeds (and SE) of values at matching positions; `None` where no seed has one.
fn mean_se(columns: &[Vec<f64>]) -> (Vec<f64>, Option<Vec<f64>>) {
    let len = columns.iter().map(Vec::len).min().unwrap_or(0);
    let summaries: Vec<Summary> = (0..len)
        .map(|i| {
            let v: Vec<f64> = columns.iter().map(|c| c[i]).collect();
            Summary::of(&v).unwrap_or(Summary {
                n: v.len(),
                mean: f64::NAN,
                sd: 0.0,
                se: 0.0,
            })
        })
        .collect();
    let band = (columns.len() > 1).then(|| summaries.iter().map(|s| s.se).collect());
    (summaries.iter().map(|s| s.mean).collect(), band)
}

// ---------------------------------------------------------------------------------------------
// Ablation

pub fn ablation_section(r: &ablation::Results, out: &Out) -> Result<Vec<Block>> {
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
    type Pick = fn(&ablation::RunResult) -> Option<f64>;
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
        let runs: Vec<&ablation::RunResult> = r.runs.iter().filter(|x| &x.variant == v).collect();
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
        &table,
        "ablation",
        "Ablation: final shapes-oracle adherence and loss, mean +- sd over training seeds.",
    )?;
    blocks.push(Block::Table {
        header: std::iter::once("Model".to_string())
            .chain(metrics.iter().map(|m| m.1.to_string()))
            .collect(),
        rows: md_rows,
    });
    blocks.push(Block::Files(files));
    let finals: Vec<&ablation::EvalPoint> = r.runs.iter().filter_map(|x| x.final_eval()).collect();
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
        std::fs::create_dir_all(&out.figures)?;
        let name = format!("{}samples_{v}.png", out.prefix);
        write_bytes(&out.figures.join(&name), &upscaled_png(&grid, 4)?)?;
        let prompts = std::fs::read_to_string(grid.with_extension("txt")).unwrap_or_default();
        blocks.push(Block::Image {
            path: format!("figures/{name}"),
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
        let runs: Vec<&ablation::RunResult> = r.runs.iter().filter(|x| &x.variant == v).collect();
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
            &LinePlot {
                title: "Prompt adherence during training (shapes oracle)".into(),
                x_label: "training step".into(),
                y_label: "adherence".into(),
                lines: adherence,
                reference: chance_mean.map(|c| (c, "chance (mean)".into())),
                y_range: Some((0.0, (top * 1.15).min(1.0))),
            },
            "ablation_adherence",
        )?;
        blocks.push(Block::Figure {
            stem,
            caption: "Oracle prompt adherence vs training step, one line per variant (mean over \
                      seeds, band +-1 SE when there are several)."
                .into(),
        });
    }
    let stem = out.figure(
        &LinePlot {
            title: "Training loss".into(),
            x_label: "training step".into(),
            y_label: "velocity MSE".into(),
            lines: loss,
            reference: None,
            y_range: None,
        },
        "ablation_loss",
    )?;
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
                (|m: &ablation::MjhqPoint| m.fid) as fn(&ablation::MjhqPoint) -> f64,
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
                let runs: Vec<&ablation::RunResult> =
                    r.runs.iter().filter(|x| &x.variant == v).collect();
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
                    });
                }
            }
            let stem = out.figure(
                &LinePlot {
                    title: title.into(),
                    x_label: "training step".into(),
                    y_label: y_label.into(),
                    lines,
                    reference: None,
                    y_range: None,
                },
                name,
            )?;
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
    )?;
    blocks.push(Block::Files(vec![csv]));
    Ok(blocks)
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

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    flowlens_core::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Experiment 1

fn layer_label(l: usize) -> String {
    format!("ℓ = {l}")
}

pub fn exp1_section(r: &exp1::Results, out: &Out) -> Result<Vec<Block>> {
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
    for (stream, _, _) in exp1::STREAMS {
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
                row.push(pm(&c.delta_debiased.summary(), true));
                row.push(pm(&c.delta_biased.summary(), true));
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
                            .map(|&s| r.cell(stream, l, s).map(|c| c.delta(e).summary()))
                            .collect()
                    })
                    .collect(),
            };
            files.extend(out.table(
                &table,
                &format!("exp1_delta_{stream}_{}", e.name()),
                &format!(
                    "Delta CKA (ours - baseline), {stream} stream vs LLM layer, {} estimator, mean +- sd over {} seeds.",
                    e.name(),
                    r.seeds.len()
                ),
            )?);
            let values = Array2::from_shape_fn((r.layers.len(), r.steps.len()), |(i, j)| {
                r.cell(stream, r.layers[i], r.steps[j])
                    .map_or(f64::NAN, |c| c.delta(e).mean)
            });
            let stem = out.figure(
                &Heatmap {
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
            )?;
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
                (
                    "ours",
                    exp1::Cell::ours as fn(&exp1::Cell, Estimator) -> &exp1::Values,
                ),
                ("baseline", exp1::Cell::baseline),
            ] {
                let cells: Vec<&exp1::Cell> = r
                    .steps
                    .iter()
                    .filter_map(|&s| r.cell(stream, l, s))
                    .collect();
                lines.push(Line {
                    name: format!("{who}, ℓ = {l}"),
                    xs: cells.iter().map(|c| c.t).collect(),
                    ys: cells.iter().map(|c| pick(c, headline).mean).collect(),
                    band: (r.seeds.len() > 1)
                        .then(|| cells.iter().map(|c| pick(c, headline).se).collect()),
                });
                for c in &cells {
                    for v in [c.null95_ours, c.null95_baseline].into_iter().flatten() {
                        floor = Some(floor.map_or(v, |f: f64| f.max(v)));
                    }
                }
            }
        }
        let stem = out.figure(
            &LinePlot {
                title: format!("CKA, {stream} stream vs LLM layers ({})", r.estimator),
                x_label: "solver time t".into(),
                y_label: "linear CKA".into(),
                lines,
                reference: floor.map(|f| (f, "permutation null, 95 % (max over cells)".into())),
                y_range: None,
            },
            &format!("exp1_cka_{stream}"),
        )?;
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
            num(c.ours_debiased.mean),
            num(c.baseline_debiased.mean),
            num(c.delta_debiased.mean),
            num(c.delta_debiased.sd),
            num(c.delta_debiased.se),
            num(c.ours_biased.mean),
            num(c.baseline_biased.mean),
            num(c.delta_biased.mean),
            num(c.delta_biased.sd),
            num(c.delta_biased.se),
            opt(c.null95_ours),
            opt(c.null95_baseline),
            c.delta_debiased.per_seed.len().to_string(),
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
    )?;
    blocks.push(Block::Files(vec![csv]));
    Ok(blocks)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Experiment 2

pub fn exp2_section(r: &exp2::Results, out: &Out) -> Result<Vec<Block>> {
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
             mean over sampling seeds {:?} (band ±1 SE); AUC over normalised time and the first \
             time the interpolated curve reaches {} (mean ± SE over seeds; seeds that never \
             reach it are counted, not averaged). CFG {}, pooling `{}`.",
            r.encoder_tensors_identical, r.n_prompts, r.seeds, r.threshold, r.cfg, r.pooling
        )),
    ];
    for e in [headline, other(headline)] {
        let lines = r
            .conditions
            .iter()
            .map(|c| {
                let (ys, band) = mean_se(c.curves(e));
                Line {
                    name: c.name.clone(),
                    xs: r.ts.clone(),
                    ys,
                    band,
                }
            })
            .collect();
        let stem = out.figure(
            &LinePlot {
                title: format!("Encoder text–noise CKA over solver time ({})", e.name()),
                x_label: "solver time t".into(),
                y_label: "CKA(E_text, E_noise)".into(),
                lines,
                reference: Some((r.threshold, format!("threshold {}", r.threshold))),
                y_range: None,
            },
            &format!("exp2_curves_{}", e.name()),
        )?;
        blocks.push(Block::Figure {
            stem,
            caption: format!(
                "Text–noise alignment of the shared encoder vs solver time under each decoder, \
                 {} estimator.",
                e.name()
            ),
        });
    }
    let names: Vec<String> = r.conditions.iter().map(|c| c.name.clone()).collect();
    let series = [headline, other(headline)];
    let stem = out.figure(
        &BarChart {
            title: "AUC of the CKA–time curve (higher is better)".into(),
            y_label: "AUC".into(),
            groups: names.clone(),
            series: series.iter().map(|e| e.name().to_string()).collect(),
            values: series
                .iter()
                .map(|&e| r.conditions.iter().map(|c| c.summary(e).auc.mean).collect())
                .collect(),
            errors: Some(
                series
                    .iter()
                    .map(|&e| r.conditions.iter().map(|c| c.summary(e).auc.se).collect())
                    .collect(),
            ),
        },
        "exp2_auc",
    )?;
    blocks.push(Block::Figure {
        stem,
        caption: "AUC per decoder, mean ± 1 SE over seeds.".into(),
    });
    let reached: Vec<&exp2::Condition> = r
        .conditions
        .iter()
        .filter(|c| c.summary(headline).crossing.n_reached > 0)
        .collect();
    if reached.is_empty() {
        blocks.push(Block::Para(format!(
            "No seed's {} curve reached CKA ≥ {} under either decoder, so the time-to-threshold \
             is not drawn (it is \"not reached\" in the table).",
            headline.name(),
            r.threshold
        )));
    } else {
        let label = |c: &exp2::Condition| {
            let x = &c.summary(headline).crossing;
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
            &BarChart {
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
                        .map(|c| c.summary(headline).crossing.reached.map_or(0.0, |s| s.mean))
                        .collect(),
                ],
                errors: Some(vec![
                    r.conditions
                        .iter()
                        .map(|c| c.summary(headline).crossing.reached.map_or(0.0, |s| s.se))
                        .collect(),
                ]),
            },
            "exp2_time_to_threshold",
        )?;
        blocks.push(Block::Figure {
            stem,
            caption: "Time-to-threshold per decoder, mean ± 1 SE over the seeds that reached it \
                      (a decoder whose seeds never reached it has no bar)."
                .into(),
        });
    }
    let mut header = vec!["Decoder".to_string()];
    for e in series {
        header.push(format!("AUC ({})", e.name()));
        header.push(format!("time to ≥ {} ({})", r.threshold, e.name()));
    }
    let mut rows = Vec::new();
    let mut cells = Vec::new();
    for c in &r.conditions {
        let mut row = vec![c.name.clone()];
        let mut crow = Vec::new();
        for e in series {
            let s = c.summary(e);
            row.push(pm(&s.auc, true));
            let reached = s
                .crossing
                .reached
                .as_ref()
                .map_or("not reached".into(), |x| pm(x, true));
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
        &SummaryTable {
            row_header: "Decoder".into(),
            rows: names,
            columns,
            cells,
        },
        "exp2_summary",
        "Experiment 2: AUC and time-to-threshold of the encoder's text-noise CKA, mean +- sd over seeds.",
    )?;
    let mut long = Vec::new();
    for c in &r.conditions {
        for (i, seed) in r.seeds.iter().enumerate() {
            for (k, t) in r.ts.iter().enumerate() {
                long.push(vec![
                    c.name.clone(),
                    seed.to_string(),
                    k.to_string(),
                    num(*t),
                    num(c.curves_debiased[i][k]),
                    num(c.curves_biased[i][k]),
                ]);
            }
        }
    }
    files.push(out.csv(
        "exp2_curves",
        &["decoder", "seed", "step", "t", "cka_debiased", "cka_biased"],
        &long,
    )?);
    blocks.push(Block::Files(files));
    Ok(blocks)
}

fn other(e: Estimator) -> Estimator {
    match e {
        Estimator::Biased => Estimator::Debiased,
        Estimator::Debiased => Estimator::Biased,
    }
}

// ---------------------------------------------------------------------------------------------
// Grid

pub fn grid_section(r: &grid::Results, out: &Out, name: &str) -> Result<Vec<Block>> {
    let mut blocks = vec![
        Block::Heading(2, format!("Grid: {} vs {} ({})", r.a, r.b, r.run)),
        Block::Para(format!(
            "CKA ({}) of `{}` with every tap matching `{}`, at every written solver step, mean \
             over sampling seeds {:?} ({} prompts).",
            r.estimator, r.a, r.b, r.seeds, r.n_prompts
        )),
    ];
    let values = Array2::from_shape_fn((r.taps.len(), r.steps.len()), |(i, j)| r.mean[i][j]);
    // LLM taps are labelled by layer (short labels keep the axis title clear of them).
    let layers: Option<Vec<usize>> = r.taps.iter().map(|t| crate::probes::llm_layer(t)).collect();
    let (y_label, y_ticks) = match layers {
        Some(l) => (
            "LLM layer".to_string(),
            l.iter().map(|&l| layer_label(l)).collect(),
        ),
        None => ("tap".to_string(), r.taps.clone()),
    };
    let stem = out.figure(
        &Heatmap {
            title: format!("CKA: {} vs {}", r.a, r.b),
            x_label: "solver step".into(),
            y_label,
            x_ticks: r.steps.iter().map(|s| s.to_string()).collect(),
            y_ticks,
            values,
            diverging: false,
            annotate: r.steps.len() <= 12,
            colorbar_label: format!("linear CKA ({})", r.estimator),
            range: None,
        },
        &format!("grid_{name}"),
    )?;
    blocks.push(Block::Figure {
        stem,
        caption: "Layer × solver-step CKA grid.".into(),
    });
    let mut long = Vec::new();
    for (i, tap) in r.taps.iter().enumerate() {
        for (j, step) in r.steps.iter().enumerate() {
            long.push(vec![
                tap.clone(),
                step.to_string(),
                num(r.ts[j]),
                num(r.mean[i][j]),
                num(r.se[i][j]),
            ]);
        }
    }
    let csv = out.csv(
        &format!("grid_{name}"),
        &["tap", "step", "t", "cka_mean", "cka_se"],
        &long,
    )?;
    blocks.push(Block::Files(vec![csv]));
    Ok(blocks)
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn md_escape_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Inline `code` spans become <code> in HTML.
fn html_inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in html_escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

pub fn markdown(title: &str, blocks: &[Block]) -> String {
    let mut s = format!("# {title}\n\n");
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(s, "{} {text}\n", "#".repeat(*level as usize));
            }
            Block::Para(text) => {
                let _ = writeln!(s, "{text}\n");
            }
            Block::Table { header, rows } => {
                let _ = writeln!(
                    s,
                    "| {} |",
                    header
                        .iter()
                        .map(|h| md_escape_cell(h))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
                for r in rows {
                    let _ = writeln!(
                        s,
                        "| {} |",
                        r.iter()
                            .map(|c| md_escape_cell(c))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    );
                }
                s.push('\n');
            }
            Block::Figure { stem, caption } => {
                let _ = writeln!(
                    s,
                    "![{caption}](figures/{stem}.png)\n\n*{caption}* ([SVG](figures/{stem}.svg))\n"
                );
            }
            Block::Image { path, caption } => {
                let _ = writeln!(s, "![{caption}]({path})\n\n*{caption}*\n");
            }
            Block::Files(files) => {
                let links: Vec<String> = files.iter().map(|f| format!("[{f}]({f})")).collect();
                let _ = writeln!(s, "Files: {}\n", links.join(", "));
            }
        }
    }
    s
}

pub fn html(title: &str, blocks: &[Block]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}\
         figcaption{{font-style:italic;color:#444}}code{{background:#f3f3f3;padding:0 3px}}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        html_escape(title),
        html_escape(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let _ = writeln!(s, "<h{level}>{}</h{level}>", html_inline(text));
            }
            Block::Para(text) => {
                let _ = writeln!(s, "<p>{}</p>", html_inline(text));
            }
            Block::Table { header, rows } => {
                s.push_str("<table>\n<tr>");
                for h in header {
                    let _ = write!(s, "<th>{}</th>", html_inline(h));
                }
                s.push_str("</tr>\n");
                for r in rows {
                    s.push_str("<tr>");
                    for c in r {
                        let _ = write!(s, "<td>{}</td>", html_inline(c));
                    }
                    s.push_str("</tr>\n");
                }
                s.push_str("</table>\n");
            }
            Block::Figure { stem, caption } => {
                let _ = writeln!(
                    s,
                    "<figure><a href=\"figures/{stem}.svg\"><img src=\"figures/{stem}.png\" alt=\"{}\"></a><figcaption>{}</figcaption></figure>",
                    html_escape(caption),
                    html_inline(caption)
                );
            }
            Block::Image { path, caption } => {
                let _ = writeln!(
                    s,
                    "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
                    html_escape(path),
                    html_escape(caption),
                    html_inline(caption)
                );
            }
            Block::Files(files) => {
                let links: Vec<String> = files
                    .iter()
                    .map(|f| format!("<a href=\"{0}\">{0}</a>", html_escape(f)))
                    .collect();
                let _ = writeln!(s, "<p>Files: {}</p>", links.join(", "));
            }
        }
    }
    s.push_str("</body>\n</html>\n");
    s
}

// ---------------------------------------------------------------------------------------------
// The report

/// One run's provenance in the report manifest.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct RunProvenance {
    run: String,
    config_hash: String,
    git_revision: Option<String>,
    seeds: Vec<u64>,
    crate_versions: std::collections::BTreeMap<String, String>,
    device: String,
    train_seconds: Option<f64>,
    eval_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct ReportManifest {
    format: &'static str,
    flowlens_version: &'static str,
    inputs: Vec<InputFile>,
    runs: Vec<RunProvenance>,
    /// Compute time of the training runs (optimiser steps + evaluations), from their metrics.
    total_train_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
struct InputFile {
    path: String,
    /// FNV-1a 64 of the file's bytes.
    fnv1a64: String,
}

fn input_file(path: &Path) -> Result<InputFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(InputFile {
        path: path.display().to_string(),
        fnv1a64: format!("{:016x}", flowlens_core::fsutil::fnv1a64(&bytes)),
    })
}

fn provenance(run: &str, times: Option<(f64, f64)>) -> Option<RunProvenance> {
    let m = flowlens_core::run::RunDir::open(run)
        .ok()?
        .manifest()
        .ok()?;
    Some(RunProvenance {
        run: run.to_string(),
        config_hash: m.config_hash,
        git_revision: m.git_revision,
        seeds: m.seeds,
        crate_versions: m.crate_versions,
        device: m.device,
        train_seconds: times.map(|t| t.0),
        eval_seconds: times.map(|t| t.1),
    })
}

/// Renders the sections of one experiment directory into `out` (file names prefixed with
/// `prefix`); returns the blocks and the inputs read.
fn experiment_blocks(
    dir: &Path,
    out: &Out,
    runs: &mut Vec<RunProvenance>,
    inputs: &mut Vec<InputFile>,
) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut found = false;
    let path = dir.join("ablation/results.json");
    if path.exists() {
        found = true;
        inputs.push(input_file(&path)?);
        let r: ablation::Results = read_json(&path)?;
        for x in &r.runs {
            if let Some(p) = provenance(&x.run, Some((x.train_seconds, x.eval_seconds))) {
                runs.push(p);
            }
        }
        blocks.extend(ablation_section(&r, out)?);
    }
    let path = dir.join("exp1/results.json");
    if path.exists() {
        found = true;
        inputs.push(input_file(&path)?);
        blocks.extend(exp1_section(&read_json(&path)?, out)?);
    }
    let path = dir.join("exp2/results.json");
    if path.exists() {
        found = true;
        inputs.push(input_file(&path)?);
        let r: exp2::Results = read_json(&path)?;
        for c in &r.conditions {
            // The store is `<run>/probes-exp2`: the run is its parent.
            if let Some(run) = Path::new(&c.run).parent()
                && let Some(p) = provenance(&run.display().to_string(), None)
                && !runs.iter().any(|x| x.run == p.run)
            {
                runs.push(p);
            }
        }
        blocks.extend(exp2_section(&r, out)?);
    }
    let grid_dir = dir.join("grid");
    if grid_dir.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&grid_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            found = true;
            inputs.push(input_file(&path)?);
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            blocks.extend(grid_section(&read_json(&path)?, out, &name)?);
        }
    }
    // A bare results file (`flowlens report DIR/exp1/results.json` style) is not an experiment
    // directory: say what is expected.
    if !found {
        bail!(
            "{} holds no experiment results (ablation/results.json, exp1/results.json, \
             exp2/results.json or grid/*.json); run `flowlens ablation|exp1|exp2|grid` first",
            dir.display()
        );
    }
    Ok(blocks)
}

/// `flowlens report DIRS... --out OUT`: writes OUT/index.md, index.html, figures/, tables/,
/// manifest.json. Returns the index path.
pub fn write_report(dirs: &[PathBuf], out_dir: &Path) -> Result<PathBuf> {
    if dirs.is_empty() {
        bail!("give at least one experiment directory");
    }
    // Files of an earlier report are replaced, not mixed with the new ones.
    for sub in ["figures", "tables"] {
        let p = out_dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot clear {}", p.display()))?;
        }
    }
    let mut blocks = Vec::new();
    let mut runs = Vec::new();
    let mut inputs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let prefix = if dirs.len() > 1 {
            format!("e{i}_")
        } else {
            String::new()
        };
        if dirs.len() > 1 {
            blocks.push(Block::Heading(
                2,
                format!("Experiment directory `{}`", dir.display()),
            ));
        }
        let out = Out::new(out_dir, &prefix);
        blocks.extend(experiment_blocks(dir, &out, &mut runs, &mut inputs)?);
    }
    let total: f64 = runs
        .iter()
        .map(|r| r.train_seconds.unwrap_or(0.0) + r.eval_seconds.unwrap_or(0.0))
        .sum();
    let mut revisions: Vec<String> = runs.iter().filter_map(|r| r.git_revision.clone()).collect();
    revisions.sort();
    revisions.dedup();
    blocks.push(Block::Heading(2, "Reproducibility".into()));
    blocks.push(Block::Para(format!(
        "flowlens {}; git revisions of the runs: {}; {} runs, {:.1} min of training and \
         evaluation compute. Every run's config hash, seeds, versions and device are in \
         `manifest.json`; the inputs' checksums too.",
        env!("CARGO_PKG_VERSION"),
        if revisions.is_empty() {
            "unknown".into()
        } else {
            revisions.join(", ")
        },
        runs.len(),
        total / 60.0
    )));
    let title = "flowlens report";
    std::fs::create_dir_all(out_dir)?;
    write_text(&markdown(title, &blocks), &out_dir.join("index.md"))?;
    write_text(&html(title, &blocks), &out_dir.join("index.html"))?;
    write_json(
        &out_dir.join("manifest.json"),
        &ReportManifest {
            format: "flowlens.report.v1",
            flowlens_version: env!("CARGO_PKG_VERSION"),
            inputs,
            runs,
            total_train_seconds: total,
        },
    )?;
    Ok(out_dir.join("index.md"))
}
