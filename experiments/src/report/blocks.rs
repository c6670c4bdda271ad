//! What a report section is made of: [`Block`]s (rendered to markdown and HTML) and the
//! [`Artifact`]s (figures, tables, CSV, images) that the report writer writes, so that a section
//! computes and renders without touching the disk; plus the number formats every section shares.

use flowlens_analysis::figures::{AnyFigure, Band, Line};
use flowlens_analysis::inference::Inferred;
use flowlens_analysis::stats::Summary;
use flowlens_analysis::tables::SummaryTable;

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

/// A file a section asks the report writer to write.
#[derive(Debug, Clone)]
pub enum Artifact {
    /// `figures/<stem>.png` and `.svg`.
    Figure { stem: String, figure: AnyFigure },
    /// `tables/<stem>.csv` and `.tex`.
    Table {
        stem: String,
        table: SummaryTable,
        caption: String,
    },
    /// A text file at a path relative to the report (long-form CSV).
    Text { path: String, text: String },
    /// A binary file at a path relative to the report (images).
    Bytes { path: String, bytes: Vec<u8> },
}

/// A section of the report: its blocks and the files they link to.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Prefix of every file name (distinguishes several experiment directories).
    prefix: String,
    pub blocks: Vec<Block>,
    pub artifacts: Vec<Artifact>,
}

impl Section {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            ..Default::default()
        }
    }

    /// The section with its blocks.
    pub fn with(mut self, blocks: Vec<Block>) -> Self {
        self.blocks = blocks;
        self
    }

    fn stem(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A figure, as PNG and SVG; returns its stem.
    pub fn figure(&mut self, figure: impl Into<AnyFigure>, name: &str) -> String {
        let stem = self.stem(name);
        self.artifacts.push(Artifact::Figure {
            stem: stem.clone(),
            figure: figure.into(),
        });
        stem
    }

    /// A summary table as CSV and LaTeX; returns the file names.
    pub fn table(&mut self, table: SummaryTable, name: &str, caption: &str) -> Vec<String> {
        let stem = self.stem(name);
        let files = vec![format!("tables/{stem}.csv"), format!("tables/{stem}.tex")];
        self.artifacts.push(Artifact::Table {
            stem,
            table,
            caption: caption.to_string(),
        });
        files
    }

    /// A long-form CSV of numbers (`header`, rows of already formatted cells); returns its path.
    pub fn csv(&mut self, name: &str, header: &[&str], rows: &[Vec<String>]) -> String {
        let path = format!("tables/{}.csv", self.stem(name));
        let mut text = header.join(",");
        text.push('\n');
        for r in rows {
            text.push_str(&r.join(","));
            text.push('\n');
        }
        self.artifacts.push(Artifact::Text {
            path: path.clone(),
            text,
        });
        path
    }

    /// A PNG image under `figures/`; returns its path.
    pub fn png(&mut self, name: &str, bytes: Vec<u8>) -> String {
        let path = format!("figures/{}", self.stem(name));
        self.artifacts.push(Artifact::Bytes {
            path: path.clone(),
            bytes,
        });
        path
    }
}

/// `ℓ = 12`.
pub fn layer_label(l: usize) -> String {
    format!("ℓ = {l}")
}

/// `mean ± sd`, or with `se` `mean ± SE (sd ...)`: the ± always says which spread it is.
pub fn pm(s: &Summary, se: bool) -> String {
    if s.n > 1 {
        if se {
            format!("{:.3} ± {:.3} SE (sd {:.3})", s.mean, s.se, s.sd)
        } else {
            format!("{:.3} ± {:.3}", s.mean, s.sd)
        }
    } else {
        format!("{:.3}", s.mean)
    }
}

pub fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

pub fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

/// Mean over seeds (and SE) of values at matching positions; `None` where no seed has one.
pub fn mean_se(columns: &[Vec<f64>]) -> (Vec<f64>, Option<Band>) {
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
    let band =
        (columns.len() > 1).then(|| Band::PlusMinus(summaries.iter().map(|s| s.se).collect()));
    (summaries.iter().map(|s| s.mean).collect(), band)
}

/// The smallest and largest ΔCKA the paper reports (section 7): the effects at stake.
pub const PAPER_EFFECTS: (f64, f64) = (0.012, 0.081);

/// `+0.041 [+0.020, +0.063]`: an estimate with its interval over prompts.
pub fn with_ci(i: &Inferred, signed: bool) -> String {
    let f = |v: f64| {
        if signed {
            format!("{v:+.3}")
        } else {
            format!("{v:.3}")
        }
    };
    match &i.ci {
        Some(ci) => format!("{} [{}, {}]", f(i.estimate), f(ci.lower), f(ci.upper)),
        None => f(i.estimate),
    }
}

/// `+0.041 [+0.020, +0.063], above the null (p ≤ 0.001)`.
pub fn inferred(i: &Inferred, signed: bool) -> String {
    match &i.null {
        Some(n) => format!("{}, {}", with_ci(i, signed), n.verdict()),
        None => with_ci(i, signed),
    }
}

/// What the null's spread says about the effects at stake at `n` prompts: a note, or a warning
/// when the smallest effect this n resolves (the null's 95 % quantile; `null95` over cells) is
/// larger than the paper's smallest effect.
pub fn resolution(n: usize, null95: &[f64], what: &str) -> Option<Block> {
    let lo = null95.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = null95.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return None;
    }
    let (small, large) = PAPER_EFFECTS;
    let range = if hi - lo < 5e-4 {
        format!("{hi:.3}")
    } else {
        format!("{lo:.3}–{hi:.3} over cells")
    };
    Some(Block::Para(if hi > small {
        format!(
            "**Warning: too few prompts for the effects at stake.** At n = {n} prompts the \
             null's 95 % quantile of {what} is {range}, {} the paper's effects \
             ({small}–{large}): a smaller effect cannot be told from noise here. The null's \
             spread shrinks about as 1/n; sample more prompts (`prompts = {{ held_out = N }}`).",
            if lo > large {
                "larger than all of"
            } else {
                "not below"
            }
        )
    } else {
        format!(
            "Resolution: at n = {n} prompts the null's 95 % quantile of {what} is {range}, below \
             the paper's smallest effect ({small}): effects of the paper's size can be resolved."
        )
    }))
}

/// A line of estimates whose band is their intervals over prompts (none unless every point has
/// one) and whose points are filled where `above` says the null was rejected, hollow elsewhere
/// (no points without nulls).
pub fn inferred_line(
    name: String,
    xs: Vec<f64>,
    values: &[&Inferred],
    above: Option<Vec<bool>>,
) -> Line {
    let limits: Option<Vec<(f64, f64)>> = values
        .iter()
        .map(|i| i.ci.map(|c| (c.lower, c.upper)))
        .collect();
    Line {
        name,
        xs,
        ys: values.iter().map(|i| i.estimate).collect(),
        band: limits.map(|l| {
            Band::Between(
                l.iter().map(|b| b.0).collect(),
                l.iter().map(|b| b.1).collect(),
            )
        }),
        points: above,
    }
}
