//! Export from the app through the analysis crate's figure and table code, so an exported plot
//! looks exactly like the report's: heatmaps and curves as PNG (3x) + SVG, grids as CSV + LaTeX.

use std::path::{Path, PathBuf};

use anyhow::Result;
use flowlens_analysis::figures::{self, Heatmap, Line, LinePlot};
use flowlens_analysis::tables::{Better, Column, SummaryTable, write_csv, write_text};

use crate::grid::Grid;

/// A file-name-safe version of a label.
pub fn stem(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            c
        } else {
            '_'
        };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_matches('_').to_string()
}

fn title(grid: &Grid, delta: bool) -> String {
    let run = grid
        .query
        .run
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| grid.query.run.display().to_string());
    format!(
        "{}CKA({}, {}) {} · {} · {} seed(s)",
        if delta { "Δ " } else { "" },
        grid.query.a,
        grid.query.b,
        grid.query.estimator.name(),
        run,
        grid.seeds().len()
    )
}

/// The grid as a heatmap figure: `dir/stem.png` and `.svg`.
pub fn heatmap(grid: &Grid, delta: bool, dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let fig = Heatmap {
        title: title(grid, delta),
        x_label: "solver step".into(),
        y_label: "tap".into(),
        x_ticks: grid.steps().iter().map(|s| s.to_string()).collect(),
        y_ticks: grid.rows().to_vec(),
        values: grid.mean(),
        diverging: delta,
        annotate: grid.total_cells() <= 120,
        colorbar_label: if delta { "Δ CKA".into() } else { "CKA".into() },
        range: None,
        crossed: None,
    };
    let (png, svg) = figures::save(&fig, dir, name)?;
    Ok(vec![png, svg])
}

/// One row of the grid over solver time with its +-SE band, the permutation-null floor and the
/// threshold as reference lines.
pub fn curve(
    grid: &Grid,
    row: usize,
    reference: Option<(f64, String)>,
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut band = Vec::new();
    for c in 0..grid.steps().len() {
        if let Some(s) = grid.summary(row, c) {
            xs.push(grid.ts()[c]);
            ys.push(s.mean);
            band.push(s.se);
        }
    }
    let fig = LinePlot {
        title: title(grid, false),
        x_label: "t".into(),
        y_label: format!("CKA({}, {})", grid.query.a, grid.rows()[row]),
        lines: vec![Line {
            name: grid.rows()[row].clone(),
            xs,
            ys,
            band: Some(flowlens_analysis::figures::Band::PlusMinus(band)),
            points: None,
        }],
        reference,
        y_range: None,
    };
    let (png, svg) = figures::save(&fig, dir, name)?;
    Ok(vec![png, svg])
}

/// The grid as a table (rows = taps, one column per solver step, mean +- sd over seeds): CSV
/// (mean, sd, se, n per step) and booktabs LaTeX.
pub fn table(grid: &Grid, dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let table = SummaryTable {
        row_header: "tap".into(),
        rows: grid.rows().to_vec(),
        columns: grid
            .steps()
            .iter()
            .map(|s| Column {
                name: format!("step{s:02}"),
                latex_header: format!("{s}"),
                better: Better::Neither,
                decimals: 3,
            })
            .collect(),
        cells: (0..grid.rows().len())
            .map(|r| {
                (0..grid.steps().len())
                    .map(|c| grid.summary(r, c))
                    .collect()
            })
            .collect(),
    };
    let csv = dir.join(format!("{name}.csv"));
    let tex = dir.join(format!("{name}.tex"));
    write_csv(&table.to_dataframe()?, &csv)?;
    write_text(
        &table.to_latex(Some(&title(grid, false)), Some(&format!("tab:{name}")))?,
        &tex,
    )?;
    Ok(vec![csv, tex])
}

/// A run's training curves as figures: the loss (raw and smoothed), and the evaluation field
/// `eval_key` over steps when the run has it (what the dashboard shows).
pub fn training_curves(
    tail: &crate::metrics::MetricsTail,
    run_label: &str,
    smoothing: f64,
    eval_key: &str,
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>> {
    let loss = tail.series(|r| r.loss);
    if loss.is_empty() {
        anyhow::bail!("{run_label}: no training steps logged yet");
    }
    let line = |name: &str, pts: &[[f64; 2]]| Line {
        name: name.to_string(),
        xs: pts.iter().map(|p| p[0]).collect(),
        ys: pts.iter().map(|p| p[1]).collect(),
        band: None,
        points: None,
    };
    let mut lines = vec![line("loss", &loss)];
    if smoothing > 0.0 {
        lines.push(line(
            &format!("loss (EMA {smoothing:.2})"),
            &crate::metrics::smooth(&loss, smoothing),
        ));
    }
    let fig = LinePlot {
        title: format!("Training loss · {run_label}"),
        x_label: "step".into(),
        y_label: "velocity MSE".into(),
        lines,
        reference: None,
        y_range: None,
    };
    let (png, svg) = figures::save(&fig, dir, &format!("{name}_loss"))?;
    let mut out = vec![png, svg];
    let eval = tail.eval_series(eval_key);
    if !eval.is_empty() {
        let fig = LinePlot {
            title: format!("Evaluation · {run_label}"),
            x_label: "step".into(),
            y_label: eval_key.to_string(),
            lines: vec![line(eval_key, &eval)],
            reference: None,
            y_range: None,
        };
        let (png, svg) = figures::save(&fig, dir, &format!("{name}_eval"))?;
        out.extend([png, svg]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_stems_are_safe_and_readable() {
        assert_eq!(
            super::stem("demo/ablation / both/seed0"),
            "demo_ablation_both_seed0"
        );
        assert_eq!(super::stem("llm.h*.text"), "llm.h_.text");
    }
}
