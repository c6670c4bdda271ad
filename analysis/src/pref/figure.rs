//! Figure 4 of the paper, with its uncertainty: one horizontal 100 % bar per criterion (A's
//! share | ties | B's share of all judgments, percentages written in), and above each bar A's
//! win rate among decisive votes as a dot with its clustered interval as a whisker, against a
//! dashed line at ½; significance marks from the primary test.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::Result;
use crate::figures::{Figure, PALETTE};

/// One bar of the figure.
#[derive(Debug, Clone)]
pub struct PreferenceBar {
    /// The criterion's label.
    pub label: String,
    /// Shares of all judgments: A, tie, B (summing to 1).
    pub shares: (f64, f64, f64),
    /// A's win rate among decisive votes and its (clustered) interval.
    pub win_rate: f64,
    pub interval: (f64, f64),
    /// `***`, `**`, `*` or `n.s.` from the primary (Holm-adjusted) p-value.
    pub mark: String,
}

/// The preference figure.
#[derive(Debug, Clone)]
pub struct PreferenceFigure {
    pub title: String,
    pub a: String,
    pub b: String,
    pub bars: Vec<PreferenceBar>,
    /// A line under the chart: raters x prompts, what the whiskers are.
    pub note: String,
}

fn plot_err<E: std::fmt::Debug>(e: E) -> crate::error::AnalysisError {
    crate::error::AnalysisError::Invalid {
        what: "preference figure".into(),
        reason: format!("{e:?}"),
    }
}

impl Figure for PreferenceFigure {
    fn size(&self) -> (u32, u32) {
        (900, 170 + 110 * self.bars.len() as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()> {
        let font = |size: f64| ("sans-serif", size * s).into_font();
        let n = self.bars.len();
        let (w, h) = root.dim_in_pixel();
        let (w, h) = (w as f64, h as f64);
        let px = |v: f64| (v * s) as i32;
        root.draw(&Text::new(
            self.title.clone(),
            (px(20.0), px(14.0)),
            font(18.0).style(FontStyle::Bold),
        ))
        .map_err(plot_err)?;
        let left = 200.0 * s;
        let right = w - 40.0 * s;
        let x_of = |v: f64| (left + v.clamp(0.0, 1.0) * (right - left)) as i32;
        let top = 60.0 * s;
        let row = 110.0 * s;
        let colours = [PALETTE[0], RGBColor(190, 190, 190), PALETTE[1]];
        for (i, bar) in self.bars.iter().enumerate() {
            let y0 = top + row * i as f64;
            let (bar_top, bar_bottom) = ((y0 + 44.0 * s) as i32, (y0 + 84.0 * s) as i32);
            root.draw(&Text::new(
                bar.label.clone(),
                (px(20.0), ((y0 + 56.0 * s) as i32)),
                font(14.0).style(FontStyle::Bold),
            ))
            .map_err(plot_err)?;
            let mut from = 0.0;
            let parts = [bar.shares.0, bar.shares.1, bar.shares.2];
            for (k, share) in parts.iter().enumerate() {
                let to = from + share;
                root.draw(&Rectangle::new(
                    [(x_of(from), bar_top), (x_of(to), bar_bottom)],
                    colours[k].filled(),
                ))
                .map_err(plot_err)?;
                if *share >= 0.06 {
                    let text = format!("{:.0} %", 100.0 * share);
                    let colour = if k == 1 { &BLACK } else { &WHITE };
                    root.draw(&Text::new(
                        text,
                        (x_of(from + share / 2.0) - px(14.0), bar_top + px(12.0)),
                        font(13.0).color(colour),
                    ))
                    .map_err(plot_err)?;
                }
                from = to;
            }
            // Win rate among decisive votes with its interval, above the bar.
            let wy = (y0 + 26.0 * s) as i32;
            let style = BLACK.stroke_width((1.6 * s).max(1.0) as u32);
            root.draw(&PathElement::new(
                vec![(x_of(bar.interval.0), wy), (x_of(bar.interval.1), wy)],
                style,
            ))
            .map_err(plot_err)?;
            for end in [bar.interval.0, bar.interval.1] {
                root.draw(&PathElement::new(
                    vec![(x_of(end), wy - px(6.0)), (x_of(end), wy + px(6.0))],
                    style,
                ))
                .map_err(plot_err)?;
            }
            root.draw(&Circle::new(
                (x_of(bar.win_rate), wy),
                px(5.0),
                BLACK.filled(),
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(
                format!(
                    "{:.1} % [{:.1}, {:.1}] {}",
                    100.0 * bar.win_rate,
                    100.0 * bar.interval.0,
                    100.0 * bar.interval.1,
                    bar.mark
                ),
                (x_of(bar.interval.1) + px(10.0), wy - px(8.0)),
                font(12.0),
            ))
            .map_err(plot_err)?;
        }
        // The line at 1/2 through every row.
        let bottom = top + row * n as f64;
        let mut y = top;
        while y < bottom {
            root.draw(&PathElement::new(
                vec![(x_of(0.5), y as i32), (x_of(0.5), (y + 6.0 * s) as i32)],
                RGBColor(80, 80, 80).stroke_width((1.0 * s).max(1.0) as u32),
            ))
            .map_err(plot_err)?;
            y += 12.0 * s;
        }
        // Legend and note.
        let ly = (bottom + 12.0 * s) as i32;
        let mut lx = left as i32;
        for (k, name) in [self.a.as_str(), "tie", self.b.as_str()].iter().enumerate() {
            root.draw(&Rectangle::new(
                [(lx, ly), (lx + px(14.0), ly + px(14.0))],
                colours[k].filled(),
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(
                name.to_string(),
                (lx + px(20.0), ly),
                font(13.0),
            ))
            .map_err(plot_err)?;
            lx += px(40.0 + 8.0 * name.chars().count() as f64);
        }
        root.draw(&Text::new(
            self.note.clone(),
            (px(20.0), (h - 34.0 * s) as i32),
            font(11.5).color(&RGBColor(60, 60, 60)),
        ))
        .map_err(plot_err)?;
        Ok(())
    }
}

/// One row of the forest plot.
#[derive(Debug, Clone)]
pub struct ForestRow {
    pub label: String,
    pub win_rate: f64,
    pub interval: (f64, f64),
    /// Decisive votes, when the row has a count.
    pub n: Option<u64>,
}

/// Per-prompt win rates with their intervals (a forest plot), the overall win rate as a
/// vertical line and ½ dashed: which prompts drive a preference, and how much they differ.
#[derive(Debug, Clone)]
pub struct ForestFigure {
    pub title: String,
    pub rows: Vec<ForestRow>,
    pub overall: f64,
    pub note: String,
}

impl Figure for ForestFigure {
    fn size(&self) -> (u32, u32) {
        (900, 110 + 22 * self.rows.len().max(1) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, s: f64) -> Result<()> {
        let font = |size: f64| ("sans-serif", size * s).into_font();
        let (w, h) = root.dim_in_pixel();
        let (w, h) = (w as f64, h as f64);
        let px = |v: f64| (v * s) as i32;
        root.draw(&Text::new(
            self.title.clone(),
            (px(20.0), px(12.0)),
            font(16.0).style(FontStyle::Bold),
        ))
        .map_err(plot_err)?;
        let left = 380.0 * s;
        let right = w - 120.0 * s;
        let x_of = |v: f64| (left + v.clamp(0.0, 1.0) * (right - left)) as i32;
        let top = 48.0 * s;
        let row = 22.0 * s;
        let bottom = top + row * self.rows.len() as f64;
        let grey = RGBColor(120, 120, 120);
        for (v, style) in [(0.5, grey), (self.overall, PALETTE[0])] {
            let mut y = top;
            while y < bottom {
                root.draw(&PathElement::new(
                    vec![(x_of(v), y as i32), (x_of(v), (y + 5.0 * s) as i32)],
                    style.stroke_width((1.0 * s).max(1.0) as u32),
                ))
                .map_err(plot_err)?;
                y += 9.0 * s;
            }
        }
        for (i, r) in self.rows.iter().enumerate() {
            let y = (top + row * (i as f64 + 0.5)) as i32;
            let mut label: String = r.label.chars().take(47).collect();
            if r.label.chars().count() > 47 {
                label.push('…');
            }
            root.draw(&Text::new(label, (px(20.0), y - px(7.0)), font(11.5)))
                .map_err(plot_err)?;
            let style = BLACK.stroke_width((1.4 * s).max(1.0) as u32);
            root.draw(&PathElement::new(
                vec![(x_of(r.interval.0), y), (x_of(r.interval.1), y)],
                style,
            ))
            .map_err(plot_err)?;
            root.draw(&Circle::new((x_of(r.win_rate), y), px(4.0), BLACK.filled()))
                .map_err(plot_err)?;
            root.draw(&Text::new(
                match r.n {
                    Some(n) => format!("{:.0} % (n {n})", 100.0 * r.win_rate),
                    None => format!("{:.0} %", 100.0 * r.win_rate),
                },
                ((right + 8.0 * s) as i32, y - px(7.0)),
                font(11.0),
            ))
            .map_err(plot_err)?;
        }
        for v in [0.0, 0.25, 0.5, 0.75, 1.0] {
            root.draw(&Text::new(
                format!("{:.0} %", 100.0 * v),
                (x_of(v) - px(12.0), (bottom + 6.0 * s) as i32),
                font(11.0),
            ))
            .map_err(plot_err)?;
        }
        root.draw(&Text::new(
            self.note.clone(),
            (px(20.0), (h - 26.0 * s) as i32),
            font(11.0).color(&RGBColor(60, 60, 60)),
        ))
        .map_err(plot_err)?;
        Ok(())
    }
}
