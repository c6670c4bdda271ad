//! The Launch tab: the form that starts a training run, the ablation, an experiment or the demo
//! as a `flowlens` child process ([`LaunchForm`] builds its arguments), and the children started
//! from this window with their status, log and a stop / resume button.

use eframe::egui::{self, Color32};
use flowlens_core::flow::{Preset, Variant};

use crate::command::Command;
use crate::lab::Lab;
use crate::launch::{JobKind, LaunchForm, variant_label};
use crate::panels::Panel;
use crate::widgets::device::device_picker_ui;

/// The launch form and why its last start failed.
#[derive(Default)]
pub struct LaunchState {
    pub form: LaunchForm,
    /// The form's fields or the child could not be started.
    pub error: Option<String>,
}

impl Panel for LaunchState {
    fn name(&self) -> &'static str {
        "launch"
    }

    fn label(&self) -> &'static str {
        "Launch"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        ui.heading("Launch a job");
        ui.label(format!(
            "Runs as a child process writing under {}; it keeps running if this window closes, and a crash stays in its own process.",
            lab.root.display()
        ));
        form_ui(ui, &mut self.form);
        if !cfg!(feature = "cuda") {
            ui.weak("CUDA devices appear here in a build with --features cuda.");
        }
        if ui.button("Start").clicked() {
            match self.form.command(&lab.root) {
                Ok((args, out)) => {
                    let label = format!("{} {}", self.form.kind.label(), self.form.name);
                    cmds.push(Command::Spawn {
                        said: Some(format!("started {label}")),
                        label,
                        args,
                        out,
                        form: true,
                    });
                }
                Err(e) => self.error = Some(format!("{e:#}")),
            }
        }
        if let Some(e) = &self.error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        ui.separator();
        ui.heading("Jobs");
        if lab.launcher.jobs.is_empty() {
            ui.label("None started from this window yet.");
        }
        let mut stop = None;
        let mut resume = None;
        for (i, job) in lab.launcher.jobs.iter().enumerate().rev() {
            ui.group(|ui| {
                ui.horizontal(|ui| {
                    ui.strong(&job.label);
                    let colour = if job.failed() {
                        Color32::LIGHT_RED
                    } else if job.running() {
                        Color32::from_rgb(0, 158, 115)
                    } else {
                        ui.visuals().text_color()
                    };
                    ui.colored_label(colour, job.status());
                    if job.running() && ui.button("Stop").clicked() {
                        stop = Some(i);
                    }
                    if !job.running()
                        && !job.exit.is_some_and(|e| e.success())
                        && ui.button("Resume").clicked()
                    {
                        resume = Some(i);
                    }
                });
                ui.weak(format!("flowlens {}", job.args.join(" ")));
                ui.weak(format!("log: {}", job.log.display()));
                if job.failed() {
                    ui.colored_label(Color32::LIGHT_RED, last_lines(&job.log_tail, 8));
                }
            });
        }
        if let Some(i) = stop {
            cmds.push(Command::Stop(i));
        }
        if let Some(i) = resume {
            let job = &lab.launcher.jobs[i];
            let mut args = job.args.clone();
            if args.first().is_some_and(|a| a == "train") && !args.iter().any(|a| a == "--resume") {
                args.push("--resume".into());
            }
            cmds.push(Command::Spawn {
                label: format!("{} (resumed)", job.label),
                args,
                out: job.out.clone(),
                said: None,
                form: false,
            });
        }
    }
}

/// The form's fields: those of the chosen job kind.
fn form_ui(ui: &mut egui::Ui, f: &mut LaunchForm) {
    egui::Grid::new("launch-form")
        .num_columns(2)
        .show(ui, |ui| {
            let label = ui.label("job");
            egui::ComboBox::from_id_salt("job-kind")
                .selected_text(f.kind.label())
                .show_ui(ui, |ui| {
                    for k in JobKind::ALL {
                        ui.selectable_value(&mut f.kind, k, k.label());
                    }
                })
                .response
                .labelled_by(label.id);
            ui.end_row();
            ui.label("name");
            ui.add(egui::TextEdit::singleline(&mut f.name).hint_text("run folder name"));
            ui.end_row();
            if matches!(f.kind, JobKind::Train | JobKind::Ablation) {
                let label = ui.label("preset");
                egui::ComboBox::from_id_salt("preset")
                    .selected_text(f.preset.name())
                    .show_ui(ui, |ui| {
                        for p in Preset::ALL {
                            ui.selectable_value(&mut f.preset, p, p.name());
                        }
                    })
                    .response
                    .labelled_by(label.id);
                ui.end_row();
                if f.kind == JobKind::Train {
                    let label = ui.label("variant");
                    egui::ComboBox::from_id_salt("variant")
                        .selected_text(variant_label(f.variant))
                        .show_ui(ui, |ui| {
                            for v in Variant::ALL {
                                ui.selectable_value(&mut f.variant, v, variant_label(v));
                            }
                        })
                        .response
                        .labelled_by(label.id);
                } else {
                    ui.label("variants");
                    ui.horizontal(|ui| {
                        for (v, on) in &mut f.variants {
                            ui.checkbox(on, variant_label(*v));
                        }
                    });
                }
                ui.end_row();
                ui.label("seeds");
                ui.add(egui::TextEdit::singleline(&mut f.seeds).hint_text("seeds, e.g. 0,1,2"));
                ui.end_row();
                let label = ui.label("steps");
                ui.add(egui::DragValue::new(&mut f.steps).range(1..=10_000_000))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("stage 1 steps (LLM frozen)");
                ui.add(egui::DragValue::new(&mut f.stage1_steps).range(0..=10_000_000))
                    .labelled_by(label.id);
                ui.end_row();
                let label = ui.label("evaluate every");
                ui.add(egui::DragValue::new(&mut f.eval_every).range(0..=10_000_000))
                    .labelled_by(label.id);
                ui.end_row();
                if f.kind == JobKind::Train {
                    let label = ui.label("data");
                    ui.add(egui::TextEdit::singleline(&mut f.data).hint_text(
                        "preset default (shapes) · folder:DIR · parquet:PATH · webdataset:PATH",
                    ))
                    .labelled_by(label.id);
                    ui.end_row();
                    let label = ui.label("LLM");
                    ui.add(egui::TextEdit::singleline(&mut f.llm).hint_text(
                        "preset default · prior · random · a Hugging Face Llama folder",
                    ))
                    .labelled_by(label.id);
                    ui.end_row();
                }
            }
            if f.kind == JobKind::Demo {
                ui.label("quick");
                ui.checkbox(&mut f.quick, "toy sizes (about a minute)");
                ui.end_row();
            }
            device_picker_ui(ui, "device", "device", &mut f.device);
            ui.end_row();
            if matches!(f.kind, JobKind::Train | JobKind::Ablation | JobKind::Exp2 | JobKind::Demo) {
                let label = ui.label("data-parallel");
                ui.add(egui::TextEdit::singleline(&mut f.devices).hint_text(
                    "empty: the device above · cuda:0,cuda:1,... (one replica each; cpu:0,cpu:1 for a check)",
                ))
                .labelled_by(label.id);
                ui.end_row();
            }
        });
}

/// The last `n` non-empty lines of a log.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
