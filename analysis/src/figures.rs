//! Publication figures with plotters, as PNG (rendered at 3x for print) and SVG, with the
//! DejaVu Sans font bundled in assets/fonts (no system font needed, identical on every machine):
//!
//! - [`Heatmap`]: layer x timestep grids with cell annotations and a colour bar (sequential, or
//!   diverging around 0 for Delta CKA);
//! - [`LinePlot`]: curves over solver steps with +-SE bands (several runs), training curves
//!   (metric vs step, one line per variant), an optional horizontal reference line (threshold,
//!   permutation-null floor);
//! - [`BarChart`]: grouped bars with error bars (AUC, time-to-threshold).
//!
//! Files are rendered under a temporary name and renamed into place.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{AnalysisError, Result};

static FONT_REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static FONT_BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");
const FONT: &str = "sans-serif";

fn init_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled files are valid TrueType fonts; a failure here is a packaging bug.
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_REGULAR)
            .unwrap_or_else(|_| panic!("bundled DejaVuSans.ttf is not a valid font"));
        plotters::style::register_font(FONT, FontStyle::Bold, FONT_BOLD)
            .unwrap_or_else(|_| panic!("bundled DejaVuSans-Bold.ttf is not a valid font"));
    });
}

/// The colour cycle for series (Okabe-Ito, readable by colour-blind readers).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];

fn plot_err<E: std::fmt::Debug>(e: E) -> AnalysisError {
    AnalysisError::Invalid {
        what: "figure".into(),
        reason: format!("{e:?}"),
    }
}

/// Something that draws itself on a drawing area; `s` scales every length (1 for SVG, 3 for PNG).
pub trait Figure {
    /// Logical size in pixels (SVG size; the PNG is 3x).
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()>;
}

/// Renders `figure` as `dir/stem.png` and `dir/stem.svg`; returns both paths.
pub fn save<F: Figure>(figure: &F, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
    init_fonts();
    std::fs::create_dir_all(dir).map_err(|e| AnalysisError::Invalid {
        what: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let (w, h) = figure.size();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let png_tmp = dir.join(format!("{stem}.partial.png"));
    let svg_tmp = dir.join(format!("{stem}.partial.svg"));
    {
        let root = BitMapBackend::new(&png_tmp, (w * 3, h * 3)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        figure.draw(&root, 3.0)?;
        root.present().map_err(plot_err)?;
    }
    {
        let root = SVGBackend::new(&svg_tmp, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        figure.draw(&root, 1.0)?;
        root.present().map_err(plot_err)?;
    }
    for (tmp, path) in [(&png_tmp, &png), (&svg_tmp, &svg)] {
        std::fs::rename(tmp, path).map_err(|e| AnalysisError::Invalid {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok((png, svg))
}

/// Renders `figure` in memory at `scale` times its logical size (the lab shows the report's
/// figures this way): `(width, height, RGB bytes)`, the same drawing as [`save`]'s PNG.
pub fn render_rgb<F: Figure>(figure: &F, scale: f64) -> Result<(u32, u32, Vec<u8>)> {
    init_fonts();
    let (w, h) = figure.size();
    let (w, h) = (
        (w as f64 * scale).round() as u32,
        (h as f64 * scale).round() as u32,
    );
    let mut buffer = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        figure.draw(&root, scale)?;
        root.present().map_err(plot_err)?;
    }
    Ok((w, h, buffer))
}

fn font(size: f64, s: f64) -> TextStyle<'static> {
    (FONT, size * s).into_font().into()
}

fn bold(size: f64, s: f64) -> TextStyle<'static> {
    FontDesc::new(FontFamily::Name(FONT), size * s, FontStyle::Bold).into()
}

/// The legend box, same look on every figure.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    s: f64,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(font(12.0, s))
        .legend_area_size((30.0 * s) as u32)
        .margin((8.0 * s) as u32)
        .draw()
        .map_err(plot_err)
}

fn lerp(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let f = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    RGBColor(f(a.0, b.0), f(a.1, b.1), f(a.2, b.2))
}

/// Colour of `t` in [0, 1] along piecewise-linear anchors.
fn ramp(anchors: &[RGBColor], t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0) * (anchors.len() - 1) as f64;
    let i = (t.floor() as usize).min(anchors.len() - 2);
    lerp(anchors[i], anchors[i + 1], t - i as f64)
}

/// Viridis, sampled.
const SEQUENTIAL: [RGBColor; 5] = [
    RGBColor(68, 1, 84),
    RGBColor(59, 82, 139),
    RGBColor(33, 145, 140),
    RGBColor(94, 201, 98),
    RGBColor(253, 231, 37),
];
/// Blue - white - red (RdBu reversed), for signed values centred on 0.
const DIVERGING: [RGBColor; 5] = [
    RGBColor(33, 102, 172),
    RGBColor(146, 197, 222),
    RGBColor(247, 247, 247),
    RGBColor(244, 165, 130),
    RGBColor(178, 24, 43),
];

/// A heatmap of `values[row][col]` with labelled rows and columns.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_ticks: Vec<String>,
    pub y_ticks: Vec<String>,
    pub values: Array2<f64>,
    /// Diverging colour map symmetric around 0 (Delta CKA); otherwise sequential.
    pub diverging: bool,
    /// Write each value in its cell (skipped automatically when cells are too small).
    pub annotate: bool,
    pub colorbar_label: String,
    /// Fixed colour range; default: the data range (symmetric for diverging).
    pub range: Option<(f64, f64)>,
    /// Cells crossed out (`true`): e.g. not distinguishable from the null.
    pub crossed: Option<Array2<bool>>,
}

/// The colour range of heatmap values: the finite data range (symmetric around 0 when
/// `diverging`); `(0, 1)` when nothing is finite. The app's live heatmaps use it too, so both
/// colour a grid alike.
pub fn heatmap_range(values: &Array2<f64>, diverging: bool) -> (f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if diverging {
        let m = lo.abs().max(hi.abs()).max(1e-12);
        (-m, m)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

/// The heatmap colour of `t` in [0, 1]: viridis, or blue - white - red when `diverging`.
pub fn heatmap_colour(diverging: bool, t: f64) -> (u8, u8, u8) {
    let c = ramp(if diverging { &DIVERGING } else { &SEQUENTIAL }, t);
    (c.0, c.1, c.2)
}

impl Heatmap {
    fn value_range(&self) -> (f64, f64) {
        self.range
            .unwrap_or_else(|| heatmap_range(&self.values, self.diverging))
    }

    fn colour(&self, v: f64, (lo, hi): (f64, f64)) -> RGBColor {
        if !v.is_finite() {
            return RGBColor(200, 200, 200);
        }
        let (r, g, b) = heatmap_colour(self.diverging, (v - lo) / (hi - lo));
        RGBColor(r, g, b)
    }
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        let (r, c) = self.values.dim();
        let w = (260 + 48 * c).clamp(520, 1400) as u32;
        let h = (170 + 34 * r).clamp(360, 1000) as u32;
        (w, h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()> {
        let (rows, cols) = self.values.dim();
        if rows == 0 || cols == 0 || self.x_ticks.len() != cols || self.y_ticks.len() != rows {
            return Err(AnalysisError::Shape {
                what: format!("heatmap `{}`", self.title),
                reason: format!(
                    "values {rows}x{cols}, {} x ticks, {} y ticks",
                    self.x_ticks.len(),
                    self.y_ticks.len()
                ),
            });
        }
        let range = self.value_range();
        let (w, _) = root.dim_in_pixel();
        let bar_w = (110.0 * s) as u32;
        let (main, bar) = root.split_horizontally(w - bar_w);
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, bold(18.0, s))
            .margin((10.0 * s) as u32)
            .x_label_area_size((50.0 * s) as u32)
            .y_label_area_size((70.0 * s) as u32)
            // plotters treats an integer range as inclusive when discrete: 0..cols-1 is cols cells.
            .build_cartesian_2d(
                (0..cols - 1).into_segmented(),
                (0..rows - 1).into_segmented(),
            )
            .map_err(plot_err)?;
        let tick = |labels: &[String], v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(cols + 1)
            .y_labels(rows + 1)
            .x_label_formatter(&|v| tick(&self.x_ticks, v))
            .y_label_formatter(&|v| tick(&self.y_ticks, v))
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(font(12.0, s))
            .axis_desc_style(font(14.0, s))
            .draw()
            .map_err(plot_err)?;
        let cells = || (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c)));
        chart
            .draw_series(cells().map(|(r, c)| {
                Rectangle::new(
                    [
                        (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                        (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                    ],
                    self.colour(self.values[[r, c]], range).filled(),
                )
            }))
            .map_err(plot_err)?;
        if let Some(crossed) = &self.crossed {
            if crossed.dim() != (rows, cols) {
                return Err(AnalysisError::Shape {
                    what: format!("crossed cells of heatmap `{}`", self.title),
                    reason: format!("{:?} marks for {rows}x{cols} cells", crossed.dim()),
                });
            }
            let style = RGBColor(110, 110, 110).stroke_width((1.5 * s).max(1.0) as u32);
            chart
                .draw_series(cells().filter(|&(r, c)| crossed[[r, c]]).map(|(r, c)| {
                    PathElement::new(
                        vec![
                            (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                            (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                        ],
                        style,
                    )
                }))
                .map_err(plot_err)?;
        }
        if self.annotate {
            let area = chart.plotting_area().dim_in_pixel();
            let cell_w = area.0 as f64 / cols as f64;
            let cell_h = area.1 as f64 / rows as f64;
            let size = (cell_h * 0.4).min(cell_w * 0.28).min(13.0 * s);
            if size >= 7.0 * s {
                let style = font(size / s, s).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ));
                chart
                    .draw_series(cells().map(|(r, c)| {
                        let v = self.values[[r, c]];
                        let col = self.colour(v, range);
                        let lum =
                            0.299 * col.0 as f64 + 0.587 * col.1 as f64 + 0.114 * col.2 as f64;
                        let ink = if lum > 140.0 { &BLACK } else { &WHITE };
                        let text = if v.is_finite() {
                            format!("{:.2}", v + 0.0)
                        } else {
                            "n/a".into()
                        };
                        Text::new(
                            text,
                            (SegmentValue::CenterOf(c), SegmentValue::CenterOf(r)),
                            style.clone().color(ink),
                        )
                    }))
                    .map_err(plot_err)?;
            }
        }
        // Colour bar.
        let (lo, hi) = range;
        let mut cb = ChartBuilder::on(&bar)
            .margin_top((48.0 * s) as u32)
            .margin_bottom((60.0 * s) as u32)
            .margin_right((8.0 * s) as u32)
            .y_label_area_size((58.0 * s) as u32)
            .build_cartesian_2d(0f64..1f64, lo..hi)
            .map_err(plot_err)?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .y_label_formatter(&|v| format!("{:.2}", if v.abs() < 1e-12 { 0.0 } else { *v }))
            .label_style(font(11.0, s))
            .y_desc(&self.colorbar_label)
            .axis_desc_style(font(12.0, s))
            .draw()
            .map_err(plot_err)?;
        let steps = 100;
        cb.draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                self.colour((a + b) / 2.0, range).filled(),
            )
        }))
        .map_err(plot_err)?;
        Ok(())
    }
}

/// One line, with an optional error band and optional point markers.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub band: Option<Band>,
    /// A marker at every point: filled where `true` (e.g. above the null), hollow where `false`
    /// (not distinguishable from it).
    pub points: Option<Vec<bool>>,
}

/// The error band of a [`Line`].
#[derive(Debug, Clone)]
pub enum Band {
    /// `ys ± half-width` (e.g. the SE over seeds).
    PlusMinus(Vec<f64>),
    /// Lower and upper limits (e.g. a bootstrap interval).
    Between(Vec<f64>, Vec<f64>),
}

impl Band {
    fn len_ok(&self, n: usize) -> bool {
        match self {
            Band::PlusMinus(e) => e.len() == n,
            Band::Between(lo, hi) => lo.len() == n && hi.len() == n,
        }
    }

    /// The band's limits at point `i` of a line whose value there is `y`.
    fn limits(&self, i: usize, y: f64) -> (f64, f64) {
        match self {
            Band::PlusMinus(e) => (y - e[i], y + e[i]),
            Band::Between(lo, hi) => (lo[i], hi[i]),
        }
    }
}

/// Curves over a shared x axis.
#[derive(Debug, Clone)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// A labelled horizontal reference (threshold, permutation-null floor).
    pub reference: Option<(f64, String)>,
    /// Fixed y range; default: the data (bands and reference included) with a margin.
    pub y_range: Option<(f64, f64)>,
}

impl Figure for LinePlot {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()> {
        for l in &self.lines {
            if l.xs.len() != l.ys.len()
                || l.band.as_ref().is_some_and(|b| !b.len_ok(l.ys.len()))
                || l.points.as_ref().is_some_and(|p| p.len() != l.ys.len())
                || l.xs.is_empty()
            {
                return Err(AnalysisError::Shape {
                    what: format!("line `{}` of `{}`", l.name, self.title),
                    reason: format!("{} x values, {} y values", l.xs.len(), l.ys.len()),
                });
            }
        }
        let xs = self.lines.iter().flat_map(|l| l.xs.iter().copied());
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (y0, y1) = self.y_range.unwrap_or_else(|| {
            let mut lo = f64::INFINITY;
            let mut hi = f64::NEG_INFINITY;
            for l in &self.lines {
                for (i, &y) in l.ys.iter().enumerate() {
                    let (a, b) = l.band.as_ref().map_or((y, y), |b| b.limits(i, y));
                    lo = lo.min(a.min(y));
                    hi = hi.max(b.max(y));
                }
            }
            if let Some((r, _)) = &self.reference {
                lo = lo.min(*r);
                hi = hi.max(*r);
            }
            let pad = ((hi - lo) * 0.08).max(1e-3);
            (lo - pad, hi + pad)
        });
        let (x0, x1) = if x1 > x0 {
            (x0, x1)
        } else {
            (x0 - 0.5, x0 + 0.5)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, bold(18.0, s))
            .margin((14.0 * s) as u32)
            .x_label_area_size((50.0 * s) as u32)
            .y_label_area_size((70.0 * s) as u32)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(font(12.0, s))
            .axis_desc_style(font(14.0, s))
            .draw()
            .map_err(plot_err)?;
        for (i, l) in self.lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            if let Some(band) = &l.band {
                let limits: Vec<(f64, f64)> =
                    (0..l.ys.len()).map(|i| band.limits(i, l.ys[i])).collect();
                let upper = l.xs.iter().zip(&limits).map(|(x, b)| (*x, b.1));
                let lower = l.xs.iter().zip(&limits).map(|(x, b)| (*x, b.0)).rev();
                let poly: Vec<(f64, f64)> = upper.chain(lower).collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        colour.mix(0.2).filled(),
                    )))
                    .map_err(plot_err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    l.xs.iter().copied().zip(l.ys.iter().copied()),
                    colour.stroke_width((2.0 * s) as u32),
                ))
                .map_err(plot_err)?
                .label(l.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + (20.0 * s) as i32, y)],
                        colour.stroke_width((3.0 * s) as u32),
                    )
                });
            if let Some(points) = &l.points {
                let r = (4.0 * s) as i32;
                chart
                    .draw_series(l.xs.iter().zip(&l.ys).zip(points).map(|((x, y), &filled)| {
                        let style = if filled {
                            colour.filled()
                        } else {
                            WHITE.filled()
                        };
                        Circle::new((*x, *y), r, style)
                    }))
                    .map_err(plot_err)?;
                chart
                    .draw_series(l.xs.iter().zip(&l.ys).map(|(x, y)| {
                        Circle::new((*x, *y), r, colour.stroke_width((1.5 * s).max(1.0) as u32))
                    }))
                    .map_err(plot_err)?;
            }
        }
        if let Some((r, label)) = &self.reference {
            let style = RGBColor(90, 90, 90).stroke_width((1.5 * s).max(1.0) as u32);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x0, *r), (x1, *r)],
                    (6.0 * s) as u32,
                    (4.0 * s) as u32,
                    style,
                ))
                .map_err(plot_err)?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + (20.0 * s) as i32, y)], style)
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, s)?;
        Ok(())
    }
}

/// Grouped bars with symmetric error bars: `values[series][group]`.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub groups: Vec<String>,
    pub series: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub errors: Option<Vec<Vec<f64>>>,
}

impl Figure for BarChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()> {
        let (ng, ns) = (self.groups.len(), self.series.len());
        let bad = self.values.len() != ns
            || self.values.iter().any(|v| v.len() != ng)
            || self
                .errors
                .as_ref()
                .is_some_and(|e| e.len() != ns || e.iter().any(|v| v.len() != ng));
        if bad || ng == 0 || ns == 0 {
            return Err(AnalysisError::Shape {
                what: format!("bar chart `{}`", self.title),
                reason: format!("{ns} series x {ng} groups expected in values and errors"),
            });
        }
        let err = |i: usize, g: usize| self.errors.as_ref().map_or(0.0, |e| e[i][g]);
        let hi = (0..ns)
            .flat_map(|i| (0..ng).map(move |g| (i, g)))
            .map(|(i, g)| self.values[i][g] + err(i, g))
            .fold(0f64, f64::max);
        let lo = (0..ns)
            .flat_map(|i| (0..ng).map(move |g| (i, g)))
            .map(|(i, g)| self.values[i][g] - err(i, g))
            .fold(0f64, f64::min);
        let pad = ((hi - lo) * 0.12).max(1e-3);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, bold(18.0, s))
            .margin((14.0 * s) as u32)
            .x_label_area_size((50.0 * s) as u32)
            .y_label_area_size((70.0 * s) as u32)
            .build_cartesian_2d(
                0f64..ng as f64,
                (lo.min(0.0) - if lo < 0.0 { pad } else { 0.0 })..(hi + pad),
            )
            .map_err(plot_err)?;
        let groups = self.groups.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            // 2ng+1 labels put key points every 0.5: the group centres are among them.
            .x_labels(2 * ng + 1)
            .x_label_formatter(&|v| {
                let i = (v - 0.5).round();
                if (v - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < groups.len() {
                    groups[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(&self.y_label)
            .label_style(font(12.0, s))
            .axis_desc_style(font(14.0, s))
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / ns as f64;
        for i in 0..ns {
            let colour = PALETTE[i % PALETTE.len()];
            let left = |g: usize| g as f64 + 0.1 + width * i as f64;
            chart
                .draw_series((0..ng).map(|g| {
                    Rectangle::new(
                        [(left(g), 0.0), (left(g) + width * 0.92, self.values[i][g])],
                        colour.filled(),
                    )
                }))
                .map_err(plot_err)?
                .label(self.series[i].clone())
                .legend(move |(x, y)| {
                    Rectangle::new(
                        [
                            (x, y - (5.0 * s) as i32),
                            (x + (14.0 * s) as i32, y + (5.0 * s) as i32),
                        ],
                        colour.filled(),
                    )
                });
            if self.errors.is_some() {
                chart
                    .draw_series((0..ng).map(|g| {
                        let x = left(g) + width * 0.46;
                        let v = self.values[i][g];
                        ErrorBar::new_vertical(
                            x,
                            v - err(i, g),
                            v,
                            v + err(i, g),
                            BLACK.stroke_width((1.5 * s).max(1.0) as u32),
                            (8.0 * s) as u32,
                        )
                    }))
                    .map_err(plot_err)?;
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, s)?;
        Ok(())
    }
}

/// Any of the figures, for code that collects figures before saving them (the report's
/// sections).
#[derive(Debug, Clone)]
pub enum AnyFigure {
    Heatmap(Heatmap),
    Lines(LinePlot),
    Bars(BarChart),
}

impl From<Heatmap> for AnyFigure {
    fn from(f: Heatmap) -> Self {
        AnyFigure::Heatmap(f)
    }
}

impl From<LinePlot> for AnyFigure {
    fn from(f: LinePlot) -> Self {
        AnyFigure::Lines(f)
    }
}

impl From<BarChart> for AnyFigure {
    fn from(f: BarChart) -> Self {
        AnyFigure::Bars(f)
    }
}

impl Figure for AnyFigure {
    fn size(&self) -> (u32, u32) {
        match self {
            AnyFigure::Heatmap(f) => f.size(),
            AnyFigure::Lines(f) => f.size(),
            AnyFigure::Bars(f) => f.size(),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()> {
        match self {
            AnyFigure::Heatmap(f) => f.draw(root, s),
            AnyFigure::Lines(f) => f.draw(root, s),
            AnyFigure::Bars(f) => f.draw(root, s),
        }
    }
}
