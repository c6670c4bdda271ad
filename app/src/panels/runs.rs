//! The run list beside every tab (runs grouped by experiment folder and protocol, filtered,
//! coloured by status) and the Runs tab: a run's status, feature stores, configuration (diffed
//! against another run's) and manifest, resuming a stopped run, opening it in another tab.

use std::collections::BTreeMap;
use std::path::PathBuf;

use eframe::egui::{self, Color32, RichText};

use crate::catalog::{self, RunEntry, RunStatus};
use crate::command::{Command, Tab};
use crate::lab::Lab;
use crate::panels::{Panel, status_colour};

/// The run browser's settings.
pub struct RunsState {
    /// The run list's filter.
    pub filter: String,
    /// The run whose configuration is compared with the selected one's.
    pub compare_config: Option<PathBuf>,
    pub differences_only: bool,
}

impl Default for RunsState {
    fn default() -> Self {
        Self {
            filter: String::new(),
            compare_config: None,
            differences_only: true,
        }
    }
}

impl RunsState {
    /// The run list: a click selects a run.
    pub fn run_list_ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        ui.horizontal(|ui| {
            ui.add(egui::TextEdit::singleline(&mut self.filter).hint_text("filter runs"));
        });
        if let Some(e) = &lab.catalog_error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        if lab.runs.is_empty() && lab.catalog_error.is_none() {
            ui.label("No runs here yet: launch one, or point --runs at a folder of runs (e.g. runs/demo).");
        }
        let mut pick = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            let mut groups: BTreeMap<&str, Vec<&RunEntry>> = BTreeMap::new();
            let filter = self.filter.to_lowercase();
            for r in &lab.runs {
                if filter.is_empty()
                    || r.label().to_lowercase().contains(&filter)
                    || r.variant.contains(&filter)
                {
                    groups.entry(r.group.as_str()).or_default().push(r);
                }
            }
            for (group, runs) in groups {
                egui::CollapsingHeader::new(RichText::new(group).strong())
                    .default_open(true)
                    .show(ui, |ui| {
                        for r in runs {
                            let selected = lab.selected.as_ref() == Some(&r.path);
                            let text =
                                RichText::new(r.name.as_str()).color(status_colour(r.status));
                            let resp = ui.selectable_label(selected, text).on_hover_text(format!(
                                "{} · {} · {}{}",
                                r.status.label(),
                                r.variant,
                                r.preset,
                                r.last_step
                                    .map(|s| format!(" · step {s}"))
                                    .unwrap_or_default()
                            ));
                            if resp.clicked() {
                                pick = Some(r.path.clone());
                            }
                        }
                    });
            }
        });
        if let Some(p) = pick {
            cmds.push(Command::Select(p));
        }
    }
}

impl Panel for RunsState {
    fn name(&self) -> &'static str {
        "runs"
    }

    fn label(&self) -> &'static str {
        "Runs"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        let Some(run) = lab.selected_run() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(run.label());
        ui.horizontal(|ui| {
            ui.colored_label(status_colour(run.status), run.status.label());
            ui.label(format!(
                "· {} · {} · step {} / {}",
                run.variant,
                run.preset,
                run.checkpoint
                    .max(run.last_step.map(|s| s + 1))
                    .map_or("-".into(), |s| s.to_string()),
                run.steps_total.map_or("?".into(), |s| s.to_string())
            ));
            if let Some(l) = run.last_loss {
                ui.label(format!("· loss {l:.4}"));
            }
        });
        if let Some(d) = &run.nan_diagnosis {
            ui.colored_label(Color32::LIGHT_RED, format!("non-finite training step: {d}"));
        }
        if let Some(w) = &run.writer {
            ui.label(format!("being written by {w}"));
        }
        if run.status == RunStatus::Unsupported {
            ui.colored_label(
                Color32::LIGHT_RED,
                format!(
                    "format version {} (this flowlens reads version {}): open it with the flowlens that wrote it",
                    run.manifest["format_version"],
                    flowlens_core::run::RUN_FORMAT_VERSION
                ),
            );
        }
        ui.horizontal(|ui| {
            let can_resume = matches!(
                run.status,
                RunStatus::Stopped | RunStatus::Crashed | RunStatus::Empty
            ) && run.writer.is_none()
                && !lab.launcher.is_writing(&run.path);
            if ui
                .add_enabled(can_resume, egui::Button::new("Resume training"))
                .on_hover_text(
                    "flowlens train --run DIR --resume: continues from the last checkpoint",
                )
                .clicked()
            {
                let args = vec![
                    "train".into(),
                    "--run".into(),
                    run.path.display().to_string(),
                    "--resume".into(),
                    "--device".into(),
                    lab.device.clone(),
                ];
                cmds.push(Command::Spawn {
                    label: format!("resume {}", run.label()),
                    args,
                    out: run.path.clone(),
                    said: Some(format!("resuming {}", run.label())),
                    form: false,
                });
            }
            if ui.button("Open dashboard").clicked() {
                cmds.push(Command::Open(Tab::Dashboard));
            }
            if ui.button("Open in the CKA explorer").clicked() {
                cmds.push(Command::Open(Tab::Explorer));
            }
        });
        ui.separator();
        ui.label(format!(
            "Feature stores: {}",
            if run.stores.is_empty() {
                "none (sample the run with taps)".to_string()
            } else {
                run.stores
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({} prompts, {} seeds, {} taps, {})",
                            s.name,
                            s.manifest.prompts.len(),
                            s.manifest.seeds.len(),
                            s.manifest.taps.len(),
                            s.manifest.pooling
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        ));
        ui.separator();
        ui.horizontal(|ui| {
            let current = self
                .compare_config
                .as_ref()
                .and_then(|p| lab.runs.iter().find(|r| &r.path == p))
                .map_or("(none)".to_string(), |r| r.label());
            let label = ui.label("compare the configuration with");
            egui::ComboBox::from_id_salt("compare-config")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.compare_config, None, "(none)");
                    for r in &lab.runs {
                        if r.path != run.path {
                            ui.selectable_value(
                                &mut self.compare_config,
                                Some(r.path.clone()),
                                r.label(),
                            );
                        }
                    }
                })
                .response
                .labelled_by(label.id);
            ui.checkbox(&mut self.differences_only, "differences only");
        });
        let other = self
            .compare_config
            .as_ref()
            .and_then(|p| lab.runs.iter().find(|r| &r.path == p));
        let rows = match other {
            Some(o) => catalog::diff(&run.config, &o.config),
            None => catalog::diff(&run.config, &run.config),
        };
        egui::CollapsingHeader::new("Configuration")
            .default_open(true)
            .show(ui, |ui| {
                egui::Grid::new("config-grid").striped(true).show(ui, |ui| {
                    ui.strong("field");
                    ui.strong(run.name.as_str());
                    if let Some(o) = other {
                        ui.strong(o.name.as_str());
                    }
                    ui.end_row();
                    for row in rows
                        .iter()
                        .filter(|r| other.is_none() || !self.differences_only || r.differs())
                    {
                        ui.label(&row.key);
                        ui.label(row.a.as_deref().unwrap_or("—"));
                        if other.is_some() {
                            let text = row.b.as_deref().unwrap_or("—");
                            if row.differs() {
                                ui.colored_label(Color32::from_rgb(230, 159, 0), text);
                            } else {
                                ui.label(text);
                            }
                        }
                        ui.end_row();
                    }
                });
            });
        egui::CollapsingHeader::new("Manifest").show(ui, |ui| {
            for (k, v) in catalog::flatten(&run.manifest) {
                ui.label(format!("{k}: {v}"));
            }
        });
    }
}
