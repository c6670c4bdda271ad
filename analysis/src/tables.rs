//! Result tables for papers: a [`SummaryTable`] (rows such as model variants, columns such as
//! metrics, cells mean +- sd over seeds) becomes a polars DataFrame, written as Parquet and CSV,
//! and a LaTeX `booktabs` table with the best value of each column in bold.
//!
//! Every file is written to a temporary name and renamed into place, so a reader (the app, a
//! report) never sees half a table.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::error::{AnalysisError, Result};
use crate::stats::Summary;

/// Which direction is better for a column (decides the bold cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// No best value is marked.
    Neither,
}

/// One metric column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Machine name (used in the DataFrame: `{name}_mean`, `{name}_sd`, ...).
    pub name: String,
    /// Header in LaTeX (already LaTeX; e.g. `FID $\downarrow$`).
    pub latex_header: String,
    pub better: Better,
    /// Decimal places in LaTeX.
    pub decimals: usize,
}

/// A table of summaries: `cells[row][column]`, `None` for a missing value.
#[derive(Debug, Clone)]
pub struct SummaryTable {
    pub row_header: String,
    pub rows: Vec<String>,
    pub columns: Vec<Column>,
    pub cells: Vec<Vec<Option<Summary>>>,
}

fn polars_err(what: &str) -> impl Fn(PolarsError) -> AnalysisError + '_ {
    move |e| AnalysisError::Invalid {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

impl SummaryTable {
    fn check(&self) -> Result<()> {
        if self.cells.len() != self.rows.len()
            || self.cells.iter().any(|r| r.len() != self.columns.len())
        {
            return Err(AnalysisError::Shape {
                what: "summary table".into(),
                reason: format!(
                    "{} row labels and {} columns, but the cells are {}x{:?}",
                    self.rows.len(),
                    self.columns.len(),
                    self.cells.len(),
                    self.cells.iter().map(Vec::len).collect::<Vec<_>>()
                ),
            });
        }
        Ok(())
    }

    /// The table as a DataFrame: the row label column, then `{metric}_mean`, `_sd`, `_se`, `_n`
    /// per metric (nulls where a cell is missing).
    pub fn to_dataframe(&self) -> Result<DataFrame> {
        self.check()?;
        let mut cols: Vec<Column_> =
            vec![Series::new(self.row_header.as_str().into(), &self.rows).into()];
        for (j, c) in self.columns.iter().enumerate() {
            let pick = |f: fn(&Summary) -> f64| -> Vec<Option<f64>> {
                self.cells.iter().map(|r| r[j].as_ref().map(f)).collect()
            };
            cols.push(Series::new(format!("{}_mean", c.name).into(), pick(|s| s.mean)).into());
            cols.push(Series::new(format!("{}_sd", c.name).into(), pick(|s| s.sd)).into());
            cols.push(Series::new(format!("{}_se", c.name).into(), pick(|s| s.se)).into());
            let n: Vec<Option<u32>> = self
                .cells
                .iter()
                .map(|r| r[j].map(|s| s.n as u32))
                .collect();
            cols.push(Series::new(format!("{}_n", c.name).into(), n).into());
        }
        DataFrame::new(self.rows.len(), cols).map_err(polars_err("summary table"))
    }

    /// The index of the best row per column (ties: the first).
    fn best_rows(&self) -> Vec<Option<usize>> {
        (0..self.columns.len())
            .map(|j| {
                let better = self.columns[j].better;
                let mut best: Option<(usize, f64)> = None;
                for (i, row) in self.cells.iter().enumerate() {
                    let Some(s) = row[j] else { continue };
                    let wins = match (best, better) {
                        (_, Better::Neither) => false,
                        (None, _) => true,
                        (Some((_, b)), Better::Higher) => s.mean > b,
                        (Some((_, b)), Better::Lower) => s.mean < b,
                    };
                    if wins {
                        best = Some((i, s.mean));
                    }
                }
                best.map(|(i, _)| i)
            })
            .collect()
    }

    /// A booktabs table: `mean $\pm$ sd` per cell, the best of each column in bold, `--` for a
    /// missing cell. `caption`/`label` are emitted when given.
    pub fn to_latex(&self, caption: Option<&str>, label: Option<&str>) -> Result<String> {
        self.check()?;
        let best = self.best_rows();
        let mut out = String::new();
        out.push_str("\\begin{table}[t]\n\\centering\n");
        if let Some(c) = caption {
            out.push_str(&format!("\\caption{{{}}}\n", escape_latex(c)));
        }
        if let Some(l) = label {
            out.push_str(&format!("\\label{{{l}}}\n"));
        }
        out.push_str(&format!(
            "\\begin{{tabular}}{{l{}}}\n\\toprule\n",
            "c".repeat(self.columns.len())
        ));
        let header: Vec<String> = std::iter::once(escape_latex(&self.row_header))
            .chain(self.columns.iter().map(|c| c.latex_header.clone()))
            .collect();
        out.push_str(&format!("{} \\\\\n\\midrule\n", header.join(" & ")));
        for (i, (label, row)) in self.rows.iter().zip(&self.cells).enumerate() {
            let mut cells = vec![escape_latex(label)];
            for (j, cell) in row.iter().enumerate() {
                let d = self.columns[j].decimals;
                let text = match cell {
                    None => "--".to_string(),
                    Some(s) if s.n > 1 => format!("{:.d$} $\\pm$ {:.d$}", s.mean, s.sd),
                    Some(s) => format!("{:.d$}", s.mean),
                };
                cells.push(if best[j] == Some(i) && cell.is_some() {
                    format!("\\textbf{{{text}}}")
                } else {
                    text
                });
            }
            out.push_str(&format!("{} \\\\\n", cells.join(" & ")));
        }
        out.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
        Ok(out)
    }
}

// polars' `Column` clashes with ours; alias it.
type Column_ = polars::prelude::Column;

/// Escapes LaTeX's special characters in plain text.
pub fn escape_latex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            _ => out.push(c),
        }
    }
    out
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AnalysisError + '_ {
    move |e| AnalysisError::Invalid {
        what: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Writes through a temporary file renamed into place.
fn write_then_rename(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(path))?;
        write(&mut f)?;
        f.sync_all().map_err(io_err(path))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a DataFrame as CSV (header row, full f64 precision).
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut df = df.clone();
    write_then_rename(path, |f| {
        CsvWriter::new(f)
            .include_header(true)
            .finish(&mut df)
            .map_err(polars_err(&path.display().to_string()))
    })
}

/// Writes a DataFrame as Parquet.
pub fn write_parquet(df: &DataFrame, path: &Path) -> Result<()> {
    let mut df = df.clone();
    write_then_rename(path, |f| {
        ParquetWriter::new(f)
            .finish(&mut df)
            .map(|_| ())
            .map_err(polars_err(&path.display().to_string()))
    })
}

/// Writes LaTeX text.
pub fn write_text(text: &str, path: &Path) -> Result<()> {
    write_then_rename(path, |f| {
        use std::io::Write;
        f.write_all(text.as_bytes()).map_err(io_err(path))
    })
}

/// Reads a CSV written by [`write_csv`] back (for checks and the report).
pub fn read_csv(path: &Path) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(polars_err(&path.display().to_string()))
}

/// Reads a Parquet file.
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).map_err(io_err(path))?;
    ParquetReader::new(f)
        .finish()
        .map_err(polars_err(&path.display().to_string()))
}
