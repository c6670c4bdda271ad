//! The Trajectory tab: step through a sampled prompt's solver trajectory (the x_t preview of each
//! step beside the final sample) with the CKA of the explorer's selected row at that step.

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints, VLine};

use crate::catalog::RunEntry;
use crate::command::Command;
use crate::grid;
use crate::lab::{Lab, Slot};
use crate::panels::{Panel, image_ui};

/// The trajectory viewer's settings.
#[derive(Default)]
pub struct TrajectoryState {
    pub store: String,
    pub prompt: usize,
    pub seed: u64,
    pub step: usize,
}

impl TrajectoryState {
    /// Keeps the store valid for `run` (the first with previews, else the first).
    pub fn point_at(&mut self, run: &RunEntry) {
        if run.store(&self.store).is_none() {
            self.store = run
                .stores
                .iter()
                .find(|s| s.previews)
                .or(run.stores.first())
                .map(|s| s.name.clone())
                .unwrap_or_default();
        }
    }
}

impl Panel for TrajectoryState {
    fn name(&self) -> &'static str {
        "trajectory"
    }

    fn label(&self) -> &'static str {
        "Trajectory"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        let Some(run) = lab.selected_run() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("Trajectory · {}", run.label()));
        if run.stores.is_empty() {
            ui.label("No feature store: sample with `flowlens sample --previews` or use the Sampling tab.");
            return;
        }
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("store");
            egui::ComboBox::from_id_salt("traj-store")
                .selected_text(self.store.clone())
                .show_ui(ui, |ui| {
                    for s in &run.stores {
                        ui.selectable_value(&mut self.store, s.name.clone(), &s.name);
                    }
                })
                .response
                .labelled_by(label.id);
        });
        let Some(store) = run.store(&self.store) else {
            return;
        };
        let prompts = &store.manifest.prompts;
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("prompt");
            egui::ComboBox::from_id_salt("traj-prompt")
                .width(380.0)
                .selected_text(prompts.get(self.prompt).cloned().unwrap_or_default())
                .show_ui(ui, |ui| {
                    for (i, p) in prompts.iter().enumerate() {
                        ui.selectable_value(&mut self.prompt, i, format!("{i}: {p}"));
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("seed");
            egui::ComboBox::from_id_salt("traj-seed")
                .selected_text(self.seed.to_string())
                .show_ui(ui, |ui| {
                    for &s in &store.manifest.seeds {
                        ui.selectable_value(&mut self.seed, s, s.to_string());
                    }
                })
                .response
                .labelled_by(label.id);
        });
        let steps = store.manifest.steps.max(1);
        self.step = self.step.min(steps - 1);
        ui.add(egui::Slider::new(&mut self.step, 0..=steps - 1).text("solver step"));
        let (prompt, seed, step) = (self.prompt, self.seed, self.step);
        let paths = grid::store_paths(&run.path, &store.name);
        let frame = paths.preview_png(seed, prompt, step);
        let final_image = paths.sample_png(seed, prompt);
        ui.label(format!("t = {:.3}", step as f64 / steps as f64));
        ui.horizontal(|ui| {
            ui.vertical(|ui| {
                ui.strong(format!("x_t at step {step}"));
                image_ui(
                    ui,
                    lab,
                    &frame,
                    egui::vec2(256.0, 256.0),
                    "no preview for this step (sample with --previews)",
                    cmds,
                );
            });
            ui.vertical(|ui| {
                ui.strong("final sample");
                image_ui(
                    ui,
                    lab,
                    &final_image,
                    egui::vec2(256.0, 256.0),
                    "not saved",
                    cmds,
                );
            });
            ui.vertical(|ui| {
                let grid = lab.grids[Slot::Explorer].grid.as_ref();
                match grid.filter(|g| g.query.run == run.path && g.query.store == store.name) {
                    Some(g) => {
                        let row = lab.cell.map_or(0, |(r, _)| r).min(g.rows().len().saturating_sub(1));
                        let col = g.steps().iter().position(|s| *s == step);
                        ui.strong(format!("CKA({}, {}) at this step", g.query.a, g.rows()[row]));
                        match col.and_then(|c| g.summary(row, c)) {
                            Some(s) => ui.label(format!("{:.4} ± {:.4} (SE)", s.mean, s.se)),
                            None => ui.label("not computed for this step"),
                        };
                        let pts: Vec<[f64; 2]> = (0..g.steps().len()).filter_map(|c| g.summary(row, c).map(|s| [g.ts()[c], s.mean])).collect();
                        Plot::new("traj-curve").width(320.0).height(200.0).show(ui, |p| {
                            p.line(Line::new(g.rows()[row].clone(), PlotPoints::from(pts)));
                            p.vline(VLine::new("t", step as f64 / steps as f64));
                        });
                    }
                    None => {
                        ui.label("Open this run and store in the CKA explorer to see its CKA curve here.");
                    }
                }
            });
        });
    }
}
