//! The CKA heatmap, painted by hand: rows = taps, columns = solver steps, the report's colour
//! ramp, hover read-outs, click to select a cell.

use eframe::egui::{self, Color32, Rect, Sense, Stroke, pos2, vec2};

/// The report's heatmap colour of `t` in [0, 1] (analysis::figures).
pub fn ramp(diverging: bool, t: f64) -> Color32 {
    let (r, g, b) = flowlens_analysis::figures::heatmap_colour(diverging, t);
    Color32::from_rgb(r, g, b)
}

pub use flowlens_analysis::figures::heatmap_range as value_range;

/// Heatmap layout: the row-label column, the colour-bar column and the step-label row.
const LABEL_W: f32 = 110.0;
const BAR_W: f32 = 60.0;
const AXIS_H: f32 = 18.0;

/// What the heatmap reports.
pub struct HeatmapResponse {
    pub clicked: Option<(usize, usize)>,
    pub response: egui::Response,
}

/// A heatmap of `values[row][col]`; `tooltip(row, col)` gives the hover text. Cells that are
/// not computed yet (NaN) are grey. The selected cell is outlined.
pub fn heatmap_ui(
    ui: &mut egui::Ui,
    values: &ndarray::Array2<f64>,
    row_labels: &[String],
    col_labels: &[String],
    diverging: bool,
    selected: Option<(usize, usize)>,
    tooltip: impl Fn(usize, usize) -> String,
) -> HeatmapResponse {
    let (rows, cols) = values.dim();
    let (label_w, bar_w) = (LABEL_W, BAR_W);
    let avail = ui.available_width().max(200.0);
    let cell_w = ((avail - label_w - bar_w) / cols.max(1) as f32).clamp(6.0, 48.0);
    let cell_h = (cell_w * 0.6).clamp(10.0, 22.0);
    let size = vec2(
        label_w + cell_w * cols as f32 + bar_w,
        cell_h * rows as f32 + AXIS_H,
    );
    let (rect, response) = ui.allocate_exact_size(size, Sense::click());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "CKA heatmap"));
    let painter = ui.painter_at(rect);
    let (lo, hi) = value_range(values, diverging);
    let origin = rect.min + vec2(label_w, 0.0);
    let cell_rect = |r: usize, c: usize| {
        Rect::from_min_size(
            origin + vec2(c as f32 * cell_w, r as f32 * cell_h),
            vec2(cell_w - 1.0, cell_h - 1.0),
        )
    };
    let text_colour = ui.visuals().text_color();
    let font = egui::FontId::proportional(11.0);
    for r in 0..rows {
        let y = origin.y + r as f32 * cell_h + cell_h / 2.0;
        if let Some(label) = row_labels.get(r) {
            painter.text(
                pos2(rect.min.x + label_w - 4.0, y),
                egui::Align2::RIGHT_CENTER,
                label,
                font.clone(),
                text_colour,
            );
        }
        for c in 0..cols {
            let v = values[[r, c]];
            let colour = if v.is_finite() {
                ramp(diverging, (v - lo) / (hi - lo))
            } else {
                Color32::from_gray(90)
            };
            painter.rect_filled(cell_rect(r, c), 0.0, colour);
        }
    }
    let every = ((28.0 / cell_w).ceil() as usize).max(1);
    for c in (0..cols).step_by(every) {
        if let Some(label) = col_labels.get(c) {
            painter.text(
                pos2(
                    origin.x + c as f32 * cell_w + cell_w / 2.0,
                    origin.y + rows as f32 * cell_h + 2.0,
                ),
                egui::Align2::CENTER_TOP,
                label,
                font.clone(),
                text_colour,
            );
        }
    }
    // Colour bar.
    let bar = Rect::from_min_size(
        pos2(origin.x + cols as f32 * cell_w + 10.0, origin.y),
        vec2(12.0, cell_h * rows as f32),
    );
    let steps = 32;
    for i in 0..steps {
        let t = 1.0 - i as f64 / (steps - 1) as f64;
        let h = bar.height() / steps as f32;
        painter.rect_filled(
            Rect::from_min_size(
                bar.min + vec2(0.0, i as f32 * h),
                vec2(bar.width(), h + 0.5),
            ),
            0.0,
            ramp(diverging, t),
        );
    }
    painter.text(
        bar.right_top() + vec2(3.0, 0.0),
        egui::Align2::LEFT_TOP,
        format!("{hi:.2}"),
        font.clone(),
        text_colour,
    );
    painter.text(
        bar.right_bottom() + vec2(3.0, 0.0),
        egui::Align2::LEFT_BOTTOM,
        format!("{lo:.2}"),
        font,
        text_colour,
    );
    if let Some((r, c)) = selected
        && r < rows
        && c < cols
    {
        painter.rect_stroke(
            cell_rect(r, c).expand(1.0),
            0.0,
            Stroke::new(2.0, Color32::WHITE),
            egui::StrokeKind::Outside,
        );
    }
    let cell_at = |p: egui::Pos2| {
        let d = p - origin;
        let (c, r) = ((d.x / cell_w).floor(), (d.y / cell_h).floor());
        (c >= 0.0 && r >= 0.0 && (r as usize) < rows && (c as usize) < cols)
            .then_some((r as usize, c as usize))
    };
    let mut response = response;
    if let Some((r, c)) = response.hover_pos().and_then(cell_at) {
        response = response.on_hover_text_at_pointer(tooltip(r, c));
    }
    let clicked = if response.clicked() {
        response.interact_pointer_pos().and_then(cell_at)
    } else {
        None
    };
    HeatmapResponse { clicked, response }
}

/// Where the centre of cell (row, col) of a heatmap drawn in `rect` lies (for tests that click).
pub fn heatmap_cell_centre(
    rect: Rect,
    rows: usize,
    cols: usize,
    row: usize,
    col: usize,
) -> egui::Pos2 {
    let cell_w = (rect.width() - LABEL_W - BAR_W) / cols as f32;
    let cell_h = (rect.height() - AXIS_H) / rows as f32;
    pos2(
        rect.min.x + LABEL_W + (col as f32 + 0.5) * cell_w,
        rect.min.y + (row as f32 + 0.5) * cell_h,
    )
}
