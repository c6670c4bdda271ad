//! The Dashboard tab: a run's progress (step, loss, learning rate, throughput, ETA), its training
//! and evaluation curves (smoothed, exportable with the report's look), its latest sample grid,
//! and live CKA while it is sampled: the grid view of its feature store and the streaming
//! accumulators of `flowlens sample --cka-pairs`.

use eframe::egui::{self, Color32};
use egui_plot::{Line, Plot, PlotPoints};
use flowlens_analysis::cka::Estimator;

use crate::catalog::{RunEntry, RunStatus};
use crate::command::{Command, Job};
use crate::export;
use crate::grid;
use crate::lab::{Done, Lab, Slot};
use crate::metrics::{MetricsTail, smooth};
use crate::panels::{Panel, image_ui, status_colour};
use crate::widgets::grid::{GridChoice, grid_controls_ui, grid_view_ui};
use crate::widgets::heatmap::heatmap_ui;

/// The dashboard's settings.
pub struct DashboardState {
    /// The live CKA grid's store, taps and estimator.
    pub choice: GridChoice,
    pub smoothing: f64,
    /// The evaluation field the dashboard plots (`adherence.overall`, `mjhq.fid`, ...).
    pub eval_key: String,
}

impl Default for DashboardState {
    fn default() -> Self {
        Self {
            choice: GridChoice::default(),
            smoothing: 0.6,
            eval_key: String::new(),
        }
    }
}

impl Panel for DashboardState {
    fn name(&self) -> &'static str {
        "dashboard"
    }

    fn label(&self) -> &'static str {
        "Dashboard"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        let Some(run) = lab.selected_run() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("Dashboard · {}", run.label()));
        let tail = lab.metrics.get(&run.path);
        let last = tail.and_then(|t| t.steps.iter().next_back());
        ui.horizontal(|ui| {
            ui.colored_label(status_colour(run.status), run.status.label());
            if let (Some((step, rec)), Some(total)) = (last, run.steps_total) {
                // Records are numbered from 0: record k is the (k + 1)-th optimiser step.
                let done = (step + 1).max(run.checkpoint.unwrap_or(0)).min(total);
                let step = &done;
                let frac = *step as f32 / total.max(1) as f32;
                ui.add(
                    egui::ProgressBar::new(frac)
                        .desired_width(220.0)
                        .text(format!("{step} / {total}")),
                );
                ui.label(format!(
                    "loss {:.4} · lr {:.2e} · {:.1} samples/s · stage {}",
                    rec.loss, rec.lr, rec.samples_per_s, rec.stage
                ));
                let batch = run
                    .config
                    .get("batch_size")
                    .and_then(|b| b.as_u64())
                    .unwrap_or(1) as f64;
                if run.status == RunStatus::Running && rec.samples_per_s > 0.0 && total > *step {
                    let eta = (total - step) as f64 * batch / rec.samples_per_s;
                    ui.label(format!("· ETA {}", human_duration(eta)));
                }
            } else {
                ui.label("no training steps logged yet");
            }
        });
        ui.horizontal(|ui| {
            ui.add(egui::Slider::new(&mut self.smoothing, 0.0..=0.99).text("smoothing"));
        });
        let empty = MetricsTail::default();
        let tail = lab.metrics.get(&run.path).unwrap_or(&empty);
        let loss = tail.series(|r| r.loss);
        let lr = tail.series(|r| r.lr);
        let throughput = tail.series(|r| r.samples_per_s);
        let grad_norm = tail.series(|r| r.grad_norm);
        let eval_keys: Vec<String> = tail
            .eval_keys()
            .into_iter()
            .filter(|k| !k.starts_with("chance."))
            .collect();
        if !eval_keys.contains(&self.eval_key) {
            self.eval_key = eval_keys
                .iter()
                .find(|k| k.as_str() == "adherence.overall" || k.as_str() == "mjhq.fid")
                .or(eval_keys.first())
                .cloned()
                .unwrap_or_default();
        }
        let eval = tail.eval_series(&self.eval_key);
        ui.horizontal(|ui| {
            if ui
                .button("Export curves")
                .on_hover_text("loss and evaluations as PNG (3x) and SVG, the report's look")
                .clicked()
                && let Some(t) = lab.metrics.get(&run.path).cloned()
            {
                let (dir, label, smoothing) =
                    (lab.root.join("exports"), run.label(), self.smoothing);
                let key = self.eval_key.clone();
                cmds.push(Command::Submit(Job::new("export:curves", move || {
                    let name = export::stem(&label);
                    Done::Export(
                        export::training_curves(&t, &label, smoothing, &key, &dir, &name)
                            .map_err(|e| format!("{e:#}")),
                    )
                })));
            }
            if !eval_keys.is_empty() {
                let label = ui.label("evaluation");
                egui::ComboBox::from_id_salt("eval-key")
                    .selected_text(self.eval_key.clone())
                    .show_ui(ui, |ui| {
                        for k in &eval_keys {
                            ui.selectable_value(&mut self.eval_key, k.clone(), k);
                        }
                    })
                    .response
                    .labelled_by(label.id);
            }
        });
        let w = (ui.available_width() / 2.0 - 8.0).max(200.0);
        ui.horizontal(|ui| {
            metric_plot(ui, "loss", &loss, self.smoothing, w);
            metric_plot(ui, "learning rate", &lr, 0.0, w);
        });
        ui.horizontal(|ui| {
            metric_plot(ui, "samples / s", &throughput, self.smoothing, w);
            if eval.is_empty() {
                metric_plot(ui, "grad norm", &grad_norm, self.smoothing, w);
            } else {
                metric_plot(ui, &format!("eval: {}", self.eval_key), &eval, 0.0, w);
            }
        });
        ui.separator();
        ui.columns(2, |cols| {
            cols[0].strong("Latest sample grid");
            match &run.latest_grid {
                Some(p) => {
                    cols[0].weak(
                        p.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    );
                    image_ui(
                        &mut cols[0],
                        lab,
                        p,
                        egui::vec2(360.0, 360.0),
                        "not on disk any more",
                        cmds,
                    );
                }
                None => {
                    cols[0].label("none yet (written every sample_every steps)");
                }
            }
            cols[1].strong("Live CKA");
            grid_controls_ui(&mut cols[1], run, &mut self.choice, "db", false);
            let estimator = self.choice.estimator;
            if run.stores.is_empty() {
                live_cka_ui(&mut cols[1], lab, run, estimator, cmds);
                return;
            }
            // Refreshed every interval: probe files land while a run is sampled, and a
            // refresh only reads the cells that are new.
            if let Some(query) = self.choice.query(run) {
                cmds.push(Command::Grid {
                    slot: Slot::Dashboard,
                    query,
                    live: true,
                });
            }
            grid_view_ui(&mut cols[1], &lab.grids, Slot::Dashboard, false, None);
            live_cka_ui(&mut cols[1], lab, run, estimator, cmds);
        });
    }
}

/// The streaming accumulators of `flowlens sample --cka-pairs`, refreshed as batches land.
fn live_cka_ui(
    ui: &mut egui::Ui,
    lab: &Lab,
    run: &RunEntry,
    est: Estimator,
    cmds: &mut Vec<Command>,
) {
    for path in &run.live_cka {
        let due = lab
            .live
            .get(path)
            .is_none_or(|(t, _)| t.elapsed() > lab.refresh);
        let key = format!("live:{}", path.display());
        if due && !lab.worker.is_running(&key) {
            let p = path.clone();
            cmds.push(Command::Submit(Job::new(key, move || {
                Done::Live(p.clone(), grid::read_live(&p).map_err(|e| format!("{e:#}")))
            })));
        }
        // The file relative to its run: `probes/cka_live.json`.
        let shown: std::path::PathBuf = path
            .iter()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        ui.separator();
        ui.strong(format!(
            "Streaming CKA while sampling ({})",
            shown.display()
        ));
        match lab.live.get(path).map(|(_, r)| r) {
            None => {
                ui.spinner();
            }
            Some(Err(e)) => {
                ui.colored_label(Color32::LIGHT_RED, e);
            }
            Some(Ok(live)) => {
                ui.weak(format!(
                    "{} updates · {} estimate · mean ± SE over sampling seeds, each seed's CKA over its own prompts",
                    live.updates,
                    est.name()
                ));
                let cols: Vec<String> = live.steps.iter().map(|s| s.to_string()).collect();
                heatmap_ui(
                    ui,
                    live.values(est),
                    &live.rows,
                    &cols,
                    false,
                    None,
                    |r, c| {
                        let se = live.se(est)[[r, c]];
                        format!(
                            "{} · step {}: {:.4}{} over {} seed(s), {} prompts per seed",
                            live.rows[r],
                            live.steps[c],
                            live.values(est)[[r, c]],
                            if se.is_finite() {
                                format!(" ± {se:.4} (SE)")
                            } else {
                                String::new()
                            },
                            live.seeds[[r, c]],
                            live.n[[r, c]]
                        )
                    },
                );
            }
        }
    }
}

/// One training curve (raw and smoothed when `smoothing` > 0).
fn metric_plot(ui: &mut egui::Ui, name: &str, points: &[[f64; 2]], smoothing: f64, width: f32) {
    ui.vertical(|ui| {
        ui.strong(name);
        Plot::new(format!("plot-{name}"))
            .width(width)
            .height(160.0)
            .show(ui, |p| {
                if smoothing > 0.0 && points.len() > 1 {
                    p.line(
                        Line::new("raw", PlotPoints::from(points.to_vec()))
                            .color(Color32::from_rgba_unmultiplied(0, 114, 178, 70)),
                    );
                    p.line(
                        Line::new(
                            name.to_string(),
                            PlotPoints::from(smooth(points, smoothing)),
                        )
                        .color(Color32::from_rgb(0, 114, 178)),
                    );
                } else {
                    p.line(
                        Line::new(name.to_string(), PlotPoints::from(points.to_vec()))
                            .color(Color32::from_rgb(0, 114, 178)),
                    );
                }
            });
    });
}

fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
