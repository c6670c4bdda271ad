//! The CKA explorer: the grid of one tap against a family of taps (or its Δ against a baseline
//! run), a row's curve over solver time with ±SE, AUC and time-to-threshold, the drill-down of a
//! clicked cell (permutation null, mutual k-NN neighbours with their images), and exports of the
//! heatmap, curve and table with the report's look.

use std::path::PathBuf;

use eframe::egui::{self, Color32, RichText};
use egui_plot::{HLine, Legend, Line, Plot, PlotPoints, Polygon, VLine};
use flowlens_analysis::curves::CurveSummary;

use crate::catalog::RunStatus;
use crate::command::{Command, Job};
use crate::export;
use crate::grid::{self, Grid, GridQuery};
use crate::lab::{Done, Lab, Slot};
use crate::panels::{Panel, image_ui};
use crate::widgets::grid::{GridChoice, grid_controls_ui, grid_view_ui};

/// The explorer's own settings (the selected cell and its drill-down are the lab's).
pub struct ExplorerState {
    pub choice: GridChoice,
    /// The baseline run of the Δ view.
    pub compare: Option<PathBuf>,
    pub delta: bool,
    pub threshold: f64,
    pub permutations: usize,
    pub k: usize,
}

impl Default for ExplorerState {
    fn default() -> Self {
        Self {
            choice: GridChoice::default(),
            compare: None,
            delta: false,
            threshold: 0.5,
            permutations: 100,
            k: 3,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ExportWhat {
    Heatmap,
    Curve,
    Table,
}

impl Panel for ExplorerState {
    fn name(&self) -> &'static str {
        "explorer"
    }

    fn label(&self) -> &'static str {
        "CKA explorer"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        let Some(run) = lab.selected_run() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("CKA explorer · {}", run.label()));
        grid_controls_ui(ui, run, &mut self.choice, "ex", true);
        if run.stores.is_empty() {
            return;
        }
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut self.delta, "Δ view (this run − baseline)");
            let current = self
                .compare
                .as_ref()
                .and_then(|p| lab.runs.iter().find(|r| &r.path == p))
                .map_or("(choose a baseline)".to_string(), |r| r.label());
            let label = ui.label("baseline");
            egui::ComboBox::from_id_salt("compare-run")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.compare, None, "(none)");
                    for r in &lab.runs {
                        if r.path != run.path && r.store(&self.choice.store).is_some() {
                            ui.selectable_value(&mut self.compare, Some(r.path.clone()), r.label());
                        }
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("threshold");
            ui.add(
                egui::DragValue::new(&mut self.threshold)
                    .speed(0.01)
                    .range(-1.0..=1.0),
            )
            .labelled_by(label.id);
            let label = ui.label("permutations");
            ui.add(egui::DragValue::new(&mut self.permutations).range(0..=10_000))
                .labelled_by(label.id);
            let label = ui.label("k");
            ui.add(egui::DragValue::new(&mut self.k).range(1..=50))
                .labelled_by(label.id);
        });
        let Some(query) = self.choice.query(run) else {
            return;
        };
        cmds.push(Command::Grid {
            slot: Slot::Explorer,
            query: query.clone(),
            live: run.status == RunStatus::Running,
        });
        if let Some(base) = self.compare.clone() {
            let query = GridQuery {
                run: base,
                ..query.clone()
            };
            cmds.push(Command::Grid {
                slot: Slot::Compare,
                query,
                live: false,
            });
        }
        let clicked = grid_view_ui(ui, &lab.grids, Slot::Explorer, self.delta, lab.cell);
        if let Some((r, c)) = clicked {
            cmds.push(Command::SelectCell((r, c)));
            if let Some(job) = self.detail_job(lab, &query, r, c) {
                cmds.push(Command::Detail(job));
            }
        }
        let Some(grid) = lab.grids[Slot::Explorer].grid.clone() else {
            return;
        };
        // The cell clicked in this frame is the selection from now on.
        let cell = clicked.or(lab.cell);
        let row = cell
            .map_or(0, |(r, _)| r)
            .min(grid.rows().len().saturating_sub(1));
        let col = cell.map(|(_, c)| c);
        ui.horizontal(|ui| {
            if ui
                .button("Export heatmap")
                .on_hover_text("PNG (3x) and SVG, the report's look")
                .clicked()
            {
                cmds.push(self.export(lab, ExportWhat::Heatmap, &grid, row));
            }
            if ui.button("Export curve").clicked() {
                cmds.push(self.export(lab, ExportWhat::Curve, &grid, row));
            }
            if ui
                .button("Export table")
                .on_hover_text("CSV and booktabs LaTeX")
                .clicked()
            {
                cmds.push(self.export(lab, ExportWhat::Table, &grid, row));
            }
        });
        ui.separator();
        let null_floor = match &lab.detail {
            Some(Ok(d)) => d.null.as_ref().map(|n| n.null_upper),
            _ => None,
        };
        self.curve_ui(ui, &grid, row, col, null_floor);
        ui.separator();
        detail_ui(ui, lab, cmds);
    }
}

impl ExplorerState {
    /// The drill-down job of cell (row, col) of the explorer's grid (none while it has no such
    /// cell or no seed).
    fn detail_job(&self, lab: &Lab, query: &GridQuery, row: usize, col: usize) -> Option<Job> {
        let grid = lab.grids[Slot::Explorer].grid.as_ref()?;
        let (Some(tap), Some(&step), Some(&seed)) = (
            grid.rows().get(row).cloned(),
            grid.steps().get(col),
            grid.seeds().first(),
        ) else {
            return None;
        };
        let (q, k, perms) = (query.clone(), self.k, self.permutations);
        Some(Job::new("detail", move || {
            Done::Detail(
                grid::cell_detail(&q, &tap, step, seed, k, perms).map_err(|e| format!("{e:#}")),
            )
        }))
    }

    fn curve_ui(
        &self,
        ui: &mut egui::Ui,
        grid: &Grid,
        row: usize,
        col: Option<usize>,
        null_floor: Option<f64>,
    ) {
        let Some(name) = grid.rows().get(row) else {
            return;
        };
        ui.strong(format!(
            "CKA({}, {name}) over solver time, mean ± SE over seeds",
            grid.query.a
        ));
        let mut mean = Vec::new();
        let mut upper = Vec::new();
        let mut lower = Vec::new();
        for c in 0..grid.steps().len() {
            if let Some(s) = grid.summary(row, c) {
                mean.push([grid.ts()[c], s.mean]);
                upper.push([grid.ts()[c], s.mean + s.se]);
                lower.push([grid.ts()[c], s.mean - s.se]);
            }
        }
        let summary: Option<Result<CurveSummary, String>> =
            Some(grid::row_summary(grid, row, self.threshold).map_err(|e| e.to_string()));
        let threshold = self.threshold;
        Plot::new("curve")
            .height(220.0)
            .legend(Legend::default())
            .include_y(0.0)
            .show(ui, |p| {
                if mean.len() > 1 {
                    let mut band = upper.clone();
                    band.extend(lower.iter().rev());
                    p.polygon(
                        Polygon::new("± SE", PlotPoints::from(band))
                            .fill_color(Color32::from_rgba_unmultiplied(0, 114, 178, 50))
                            .stroke(egui::Stroke::new(0.0, Color32::from_rgb(0, 114, 178))),
                    );
                }
                p.line(
                    Line::new(name.clone(), PlotPoints::from(mean.clone()))
                        .color(Color32::from_rgb(0, 114, 178)),
                );
                p.hline(HLine::new("threshold", threshold).color(Color32::from_rgb(230, 159, 0)));
                if let Some(f) = null_floor {
                    p.hline(HLine::new("permutation null (95 %)", f).color(Color32::GRAY));
                }
                if let Some(c) = col {
                    p.vline(VLine::new("selected step", grid.ts()[c]).color(Color32::WHITE));
                }
            });
        match summary {
            Some(Ok(s)) => {
                let crossing = match &s.crossing.reached {
                    Some(r) => format!(
                        "{:.3} ± {:.3} (SE; {} of {} seeds reached it)",
                        r.mean,
                        r.se,
                        s.crossing.n_reached,
                        s.crossing.n_reached + s.crossing.n_not_reached
                    ),
                    None => format!("not reached by any of {} seed(s)", s.crossing.n_not_reached),
                };
                ui.label(format!(
                    "AUC {:.4} ± {:.4} (SE) · time to {:.2}: {crossing}",
                    s.auc.mean, s.auc.se, s.threshold
                ));
            }
            Some(Err(e)) => {
                ui.weak(format!("AUC / time-to-threshold: {e}"));
            }
            None => {}
        }
    }

    /// The export job of the heatmap (or its Δ), a row's curve or the table, into
    /// `<runs>/exports/`.
    fn export(&self, lab: &Lab, what: ExportWhat, grid: &Grid, row: usize) -> Command {
        let dir = lab.root.join("exports");
        let delta_base = if self.delta {
            lab.grids[Slot::Compare].grid.clone()
        } else {
            None
        };
        let grid = grid.clone();
        let null = match &lab.detail {
            Some(Ok(d)) => d
                .null
                .as_ref()
                .map(|n| (n.null_upper, "permutation null (95 %)".to_string())),
            _ => None,
        };
        let threshold = self.threshold;
        Command::Submit(Job::new(format!("export:{what:?}"), move || {
            let run = grid
                .query
                .run
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = export::stem(&format!(
                "{run}_{}_{}_{}",
                grid.query.a,
                grid.query.b,
                grid.query.estimator.name()
            ));
            let result = match what {
                ExportWhat::Heatmap => match &delta_base {
                    Some(b) => export::heatmap(
                        &grid::delta(&grid, b),
                        true,
                        &dir,
                        &format!("{base}_delta"),
                    ),
                    None => export::heatmap(&grid, false, &dir, &base),
                },
                ExportWhat::Curve => {
                    let stem = export::stem(&format!("{base}_{}_curve", grid.rows()[row]));
                    export::curve(
                        &grid,
                        row,
                        null.or(Some((threshold, "threshold".into()))),
                        &dir,
                        &stem,
                    )
                }
                ExportWhat::Table => export::table(&grid, &dir, &base),
            };
            Done::Export(result.map_err(|e| format!("{e:#}")))
        }))
    }
}

/// The drill-down of the selected cell: its permutation null and the mutual k-NN neighbours of
/// each prompt in A and in B, with their images.
fn detail_ui(ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
    let detail = match &lab.detail {
        None if lab.cell.is_some() => {
            ui.spinner();
            return;
        }
        None => {
            ui.weak("Click a cell for its permutation null and the mutual k-NN neighbours of each prompt.");
            return;
        }
        Some(Err(e)) => {
            ui.colored_label(Color32::LIGHT_RED, e);
            return;
        }
        Some(Ok(d)) => d,
    };
    ui.strong(format!(
        "Cell {} · step {} · seed {}",
        detail.row, detail.step, detail.seed
    ));
    if let Some(n) = &detail.null {
        let verdict = if n.p_value <= flowlens_analysis::inference::ALPHA {
            "above the null"
        } else {
            "not distinguishable from the null"
        };
        ui.label(format!(
            "observed {:.4} · {verdict} (p = {:.3}, {} permutations of the pairing) · null mean {:.4} · 95 % floor {:.4}",
            n.observed, n.p_value, n.permutations, n.null_mean, n.null_upper
        ));
    }
    if let Some(i) = &detail.interval {
        ui.label(format!(
            "95 % bootstrap interval over the {} prompts of this seed: [{:.4}, {:.4}] ({} resamples{})",
            detail.prompts.len(),
            i.lower,
            i.upper,
            i.replicates,
            if i.dropped > 0 {
                format!(", {} undefined dropped", i.dropped)
            } else {
                String::new()
            }
        ));
    }
    let Some(knn) = &detail.knn else {
        ui.weak("mutual k-NN needs at least two prompts");
        return;
    };
    ui.label(format!(
        "mutual k-NN (k = {}): mean overlap {:.3}",
        knn.k, knn.mean
    ));
    egui::Grid::new("knn").striped(true).show(ui, |ui| {
        ui.strong("prompt");
        ui.strong("overlap");
        ui.strong("image");
        ui.strong("neighbours in A");
        ui.strong("neighbours in B");
        ui.end_row();
        for i in 0..knn.per_sample.len().min(64) {
            ui.label(detail.prompts.get(i).map_or("?", String::as_str));
            ui.label(format!("{:.2}", knn.per_sample[i]));
            match detail.images.get(i).cloned().flatten() {
                Some(p) => {
                    image_ui(ui, lab, &p, egui::vec2(48.0, 48.0), "—", cmds);
                }
                None => {
                    ui.weak("—");
                }
            }
            for list in [&knn.neighbours_a[i], &knn.neighbours_b[i]] {
                ui.horizontal(|ui| {
                    for &j in list {
                        let shared =
                            knn.neighbours_a[i].contains(&j) && knn.neighbours_b[i].contains(&j);
                        let tip = detail.prompts.get(j).cloned().unwrap_or_default();
                        match detail.images.get(j).cloned().flatten() {
                            Some(p) => {
                                if let Some(r) =
                                    image_ui(ui, lab, &p, egui::vec2(32.0, 32.0), "—", cmds)
                                {
                                    r.on_hover_text(format!(
                                        "#{j}: {tip}{}",
                                        if shared { " (shared)" } else { "" }
                                    ));
                                }
                            }
                            None => {
                                let text = RichText::new(format!("#{j}")).color(if shared {
                                    Color32::from_rgb(0, 158, 115)
                                } else {
                                    ui.visuals().text_color()
                                });
                                ui.label(text).on_hover_text(tip);
                            }
                        }
                    }
                });
            }
            ui.end_row();
        }
    });
}
