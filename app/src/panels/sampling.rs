//! The Sampling tab: sample one prompt of the selected run's latest checkpoint in this process,
//! every tap on, and watch x_t and the pooled taps' norms arrive solver step by solver step (the
//! session itself is the lab's: [`crate::sampling::Session`]).

use eframe::egui::{self, Color32};
use egui_plot::{Legend, Line, Plot, PlotPoints};
use flowlens_core::device::DeviceSpec;

use crate::command::{Command, Level};
use crate::grid;
use crate::lab::Lab;
use crate::panels::{Panel, image_ui};
use crate::sampling;
use crate::widgets::device::device_picker_ui;

/// The interactive sampler's settings.
pub struct SamplingState {
    pub prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub cfg: f32,
}

impl Default for SamplingState {
    fn default() -> Self {
        Self {
            prompt: "a small red circle above a large blue square".into(),
            seed: 0,
            steps: 30,
            cfg: 2.0,
        }
    }
}

impl Panel for SamplingState {
    fn name(&self) -> &'static str {
        "sampling"
    }

    fn label(&self) -> &'static str {
        "Sampling"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        let Some(run) = lab.selected_run() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("Interactive sampling · {}", run.label()));
        if run.checkpoint.is_none() {
            ui.label("This run has no checkpoint yet.");
            return;
        }
        let busy = lab.session.as_ref().is_some_and(|s| s.running());
        ui.horizontal(|ui| {
            ui.label("prompt");
            ui.add(
                egui::TextEdit::singleline(&mut self.prompt)
                    .hint_text("prompt to sample")
                    .desired_width(420.0),
            )
            .on_hover_text("the prompt to sample");
        });
        ui.horizontal(|ui| {
            let label = ui.label("seed");
            ui.add(egui::DragValue::new(&mut self.seed))
                .labelled_by(label.id);
            let label = ui.label("steps");
            ui.add(egui::DragValue::new(&mut self.steps).range(1..=1000))
                .labelled_by(label.id);
            let label = ui.label("CFG");
            ui.add(
                egui::DragValue::new(&mut self.cfg)
                    .speed(0.1)
                    .range(1.0..=20.0),
            )
            .labelled_by(label.id);
        });
        let mut start = false;
        ui.horizontal(|ui| {
            start = ui
                .add_enabled(!busy, egui::Button::new("Sample"))
                .on_hover_text(
                    "EMA weights of the latest checkpoint, every tap on, into probes-lab/",
                )
                .clicked();
            let mut device = lab.device.clone();
            device_picker_ui(ui, "in this process on", "sampling-device", &mut device);
            if device != lab.device {
                cmds.push(Command::Device(device));
            }
        });
        if start {
            let device: DeviceSpec = match lab.device.parse() {
                Ok(d) => d,
                Err(e) => {
                    let text = format!("device `{}`: {e}", lab.device);
                    cmds.push(Command::Say(Level::Error, text));
                    return;
                }
            };
            cmds.push(Command::Sample {
                run: run.path.clone(),
                prompt: self.prompt.clone(),
                seed: self.seed,
                steps: self.steps,
                cfg: self.cfg,
                device,
            });
        }
        let Some(session) = &lab.session else {
            return;
        };
        let (srun, seed, steps) = (&session.run, session.seed, session.steps);
        let latest = session.latest_step;
        match &session.result {
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("step {} / {steps}", latest.map_or(0, |s| s + 1)));
                });
            }
            Some(Ok(p)) => {
                ui.label(format!("done: {}", p.display()));
            }
            Some(Err(e)) => {
                ui.colored_label(Color32::LIGHT_RED, e);
            }
        }
        ui.horizontal(|ui| {
            if let Some(step) = latest {
                let frame = grid::store_paths(srun, sampling::STORE).preview_png(seed, 0, step);
                ui.vertical(|ui| {
                    ui.strong(format!("x_t, step {step}"));
                    image_ui(
                        ui,
                        lab,
                        &frame,
                        egui::vec2(256.0, 256.0),
                        "being written",
                        cmds,
                    );
                });
            }
            if matches!(session.result, Some(Ok(_))) {
                let final_image = grid::store_paths(srun, sampling::STORE).sample_png(seed, 0);
                ui.vertical(|ui| {
                    ui.strong("sample");
                    image_ui(
                        ui,
                        lab,
                        &final_image,
                        egui::vec2(256.0, 256.0),
                        "being written",
                        cmds,
                    );
                });
            }
        });
        ui.strong("Taps as they arrive: L2 norm of each pooled tap per solver step");
        Plot::new("tap-norms")
            .height(260.0)
            .legend(Legend::default())
            .show(ui, |p| {
                for (tap, per_step) in &session.norms {
                    let pts: Vec<[f64; 2]> =
                        per_step.iter().map(|(s, v)| [*s as f64, *v]).collect();
                    p.line(Line::new(tap.clone(), PlotPoints::from(pts)));
                }
            });
    }
}
