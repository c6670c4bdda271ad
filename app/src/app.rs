//! The laboratory's state and its frame: one struct drawn from scratch every frame (immediate
//! mode), with every file read and computation sent to the worker threads and their results
//! applied at the start of the next frame.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32, RichText};
use egui_plot::{HLine, Legend, Line, Plot, PlotPoints, Polygon, VLine};
use flowlens_analysis::cka::Estimator;
use flowlens_analysis::curves::CurveSummary;
use flowlens_core::device::DeviceSpec;
use flowlens_core::flow::{Preset, Variant};

use crate::catalog::{self, RunEntry, RunStatus};
use crate::export;
use crate::grid::{self, CellDetail, Grid, GridQuery};
use crate::jobs::Worker;
use crate::launch::{JobKind, LaunchForm, Launcher, variant_label};
use crate::metrics::{MetricsTail, smooth};
use crate::sampling::{self, Session};
use crate::widgets::{self, Images};

/// What a worker job hands back.
pub enum Done {
    Catalog(Result<Vec<RunEntry>, String>),
    Metrics(PathBuf, Box<MetricsTail>, Result<bool, String>),
    Image(PathBuf, widgets::Decoded),
    Grid(Slot, Box<Result<Grid, String>>),
    Detail(Result<CellDetail, String>),
    Live(PathBuf, Result<grid::LiveCka, String>),
    Export(Result<Vec<PathBuf>, String>),
}

/// Which grid a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Dashboard,
    Explorer,
    Compare,
}

impl Slot {
    fn key(self) -> &'static str {
        match self {
            Slot::Dashboard => "grid:dashboard",
            Slot::Explorer => "grid:explorer",
            Slot::Compare => "grid:compare",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Runs,
    Launch,
    Dashboard,
    Explorer,
    Trajectory,
    Sampling,
}

impl Tab {
    pub const ALL: [Tab; 6] = [
        Tab::Runs,
        Tab::Launch,
        Tab::Dashboard,
        Tab::Explorer,
        Tab::Trajectory,
        Tab::Sampling,
    ];
    /// The name `flowlens-lab --tab` takes.
    pub fn cli_name(self) -> &'static str {
        match self {
            Tab::Runs => "runs",
            Tab::Launch => "launch",
            Tab::Dashboard => "dashboard",
            Tab::Explorer => "explorer",
            Tab::Trajectory => "trajectory",
            Tab::Sampling => "sampling",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Runs => "Runs",
            Tab::Launch => "Launch",
            Tab::Dashboard => "Dashboard",
            Tab::Explorer => "CKA explorer",
            Tab::Trajectory => "Trajectory",
            Tab::Sampling => "Sampling",
        }
    }
}

/// Tap pair and store shown by a grid view.
#[derive(Debug, Clone, PartialEq)]
pub struct GridChoice {
    pub store: String,
    pub a: String,
    pub b: String,
    pub estimator: Estimator,
    /// Seeds switched on (empty = all).
    pub seeds: Vec<u64>,
    /// The store was picked by hand: keep it when another run is selected (if it has it).
    pub store_pinned: bool,
}

impl Default for GridChoice {
    fn default() -> Self {
        Self {
            store: String::new(),
            a: "enc.noise".into(),
            b: "llm.h*.image".into(),
            estimator: Estimator::Debiased,
            seeds: Vec::new(),
            store_pinned: false,
        }
    }
}

/// A grid slot: the query last sent, the latest result, when to refresh.
#[derive(Default)]
pub struct GridView {
    /// Shared: the views clone the handle each frame, never the cells.
    pub grid: Option<std::sync::Arc<Grid>>,
    pub error: Option<String>,
    pub last_query: Option<GridQuery>,
    pub refreshed: Option<Instant>,
}

/// The explorer's own settings.
pub struct ExplorerState {
    pub choice: GridChoice,
    pub compare: Option<PathBuf>,
    pub delta: bool,
    pub selected: Option<(usize, usize)>,
    pub threshold: f64,
    pub permutations: usize,
    pub k: usize,
    pub detail: Option<Result<CellDetail, String>>,
}

impl Default for ExplorerState {
    fn default() -> Self {
        Self {
            choice: GridChoice::default(),
            compare: None,
            delta: false,
            selected: None,
            threshold: 0.5,
            permutations: 100,
            k: 3,
            detail: None,
        }
    }
}

/// The trajectory viewer's settings.
#[derive(Default)]
pub struct TrajectoryState {
    pub store: String,
    pub prompt: usize,
    pub seed: u64,
    pub step: usize,
}

/// The interactive sampler's settings.
pub struct SamplingState {
    pub prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub cfg: f32,
    pub session: Option<Session>,
}

impl Default for SamplingState {
    fn default() -> Self {
        Self {
            prompt: "a small red circle above a large blue square".into(),
            seed: 0,
            steps: 30,
            cfg: 2.0,
            session: None,
        }
    }
}

/// The whole laboratory.
pub struct LabApp {
    pub root: PathBuf,
    pub runs: Vec<RunEntry>,
    pub catalog_error: Option<String>,
    pub scanned: Option<Instant>,
    pub selected: Option<PathBuf>,
    pub tab: Tab,
    pub filter: String,
    pub compare_config: Option<PathBuf>,
    pub differences_only: bool,
    pub worker: Worker<Done>,
    pub launcher: Launcher,
    pub form: LaunchForm,
    pub form_error: Option<String>,
    pub metrics: BTreeMap<PathBuf, MetricsTail>,
    pub metrics_refreshed: Option<Instant>,
    pub smoothing: f64,
    /// The evaluation field the dashboard plots (`adherence.overall`, `mjhq.fid`, ...).
    pub eval_key: String,
    pub dashboard: GridChoice,
    pub grids: BTreeMap<&'static str, GridView>,
    pub explorer: ExplorerState,
    pub trajectory: TrajectoryState,
    pub sampling: SamplingState,
    pub images: Images,
    /// The streaming CKA files read so far, and when.
    pub live: BTreeMap<PathBuf, (Instant, Result<grid::LiveCka, String>)>,
    pub messages: Vec<(Instant, String, bool)>,
    pub device: String,
    /// Seconds between refreshes of live files.
    pub refresh: Duration,
    /// Time of the last frame's UI code (ms), shown in the status bar.
    pub frame_ms: f64,
    /// Show `frame_ms` and the runs folder's path (off in snapshot tests, where both change
    /// from run to run).
    pub show_frame_time: bool,
}

impl LabApp {
    pub fn new(root: PathBuf) -> Self {
        let program =
            crate::launch::cli_program().unwrap_or_else(|_| ("flowlens".into(), Vec::new()));
        let mut app = Self {
            root,
            runs: Vec::new(),
            catalog_error: None,
            scanned: None,
            selected: None,
            tab: Tab::Runs,
            filter: String::new(),
            compare_config: None,
            differences_only: true,
            worker: Worker::new(2),
            launcher: Launcher::new(program),
            form: LaunchForm::default(),
            form_error: None,
            metrics: BTreeMap::new(),
            metrics_refreshed: None,
            smoothing: 0.6,
            eval_key: String::new(),
            dashboard: GridChoice::default(),
            grids: BTreeMap::new(),
            explorer: ExplorerState::default(),
            trajectory: TrajectoryState::default(),
            sampling: SamplingState::default(),
            images: Images::default(),
            live: BTreeMap::new(),
            messages: Vec::new(),
            device: "cpu".into(),
            refresh: Duration::from_millis(1500),
            frame_ms: 0.0,
            show_frame_time: true,
        };
        app.rescan();
        app
    }

    fn say(&mut self, text: impl Into<String>, error: bool) {
        self.messages.push((Instant::now(), text.into(), error));
        if self.messages.len() > 50 {
            self.messages.remove(0);
        }
    }

    pub fn rescan(&mut self) {
        let root = self.root.clone();
        self.worker.submit("catalog", move || {
            Done::Catalog(catalog::scan(&root).map_err(|e| e.to_string()))
        });
    }

    pub fn selected_run(&self) -> Option<&RunEntry> {
        let p = self.selected.as_ref()?;
        self.runs.iter().find(|r| &r.path == p)
    }

    /// Selects a run and points the views at its fullest feature store (a store picked by hand
    /// stays if the run has it).
    pub fn select(&mut self, path: PathBuf) {
        self.selected = Some(path);
        self.explorer.selected = None;
        self.explorer.detail = None;
        self.point_views(true);
    }

    /// Keeps the views' stores and taps valid for the selected run; `selecting` also moves an
    /// unpinned store to the run's fullest one. A rescan only repairs what disappeared, so the
    /// selected cell and its drill-down stay.
    fn point_views(&mut self, selecting: bool) {
        let Some(run) = self.selected_run().cloned() else {
            return;
        };
        for choice in [&mut self.dashboard, &mut self.explorer.choice] {
            if run.store(&choice.store).is_none() || (selecting && !choice.store_pinned) {
                choice.store = preferred_store(&run);
            }
            fix_taps(choice, &run);
        }
        if run.store(&self.trajectory.store).is_none() {
            self.trajectory.store = run
                .stores
                .iter()
                .find(|s| s.previews)
                .or(run.stores.first())
                .map(|s| s.name.clone())
                .unwrap_or_default();
        }
    }

    /// Applies finished jobs.
    pub fn apply_results(&mut self, ctx: &egui::Context) {
        for (_, done) in self.worker.poll() {
            match done {
                Done::Catalog(Ok(runs)) => {
                    self.runs = runs;
                    self.catalog_error = None;
                    self.scanned = Some(Instant::now());
                    for run in &mut self.runs {
                        if self.launcher.is_writing(&run.path) && run.status != RunStatus::Finished
                        {
                            run.status = RunStatus::Running;
                        }
                    }
                    if self.selected.is_none()
                        && let Some(first) = self.runs.first()
                    {
                        let p = first.path.clone();
                        self.select(p);
                    } else {
                        // Stores may have appeared or gone since the last scan.
                        self.point_views(false);
                    }
                }
                Done::Catalog(Err(e)) => {
                    self.catalog_error = Some(e);
                    self.scanned = Some(Instant::now());
                }
                Done::Metrics(path, tail, result) => {
                    if let Err(e) = result {
                        self.say(format!("{}: {e}", tail.path.display()), true);
                    }
                    self.metrics.insert(path, *tail);
                }
                Done::Image(path, img) => self.images.insert(ctx, path, img),
                Done::Grid(slot, result) => {
                    let view = self.grids.entry(slot.key()).or_default();
                    match *result {
                        Ok(g) => {
                            view.grid = Some(std::sync::Arc::new(g));
                            view.error = None;
                        }
                        Err(e) => {
                            view.error = Some(e);
                            view.grid = None;
                        }
                    }
                }
                Done::Detail(d) => self.explorer.detail = Some(d),
                Done::Live(path, r) => {
                    self.live.insert(path, (Instant::now(), r));
                }
                Done::Export(Ok(paths)) => {
                    let list = paths
                        .iter()
                        .map(|p| {
                            p.strip_prefix(&self.root)
                                .unwrap_or(p)
                                .display()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.say(format!("exported into the runs folder: {list}"), false);
                }
                Done::Export(Err(e)) => self.say(format!("export failed: {e}"), true),
            }
        }
        for label in self.launcher.poll() {
            self.say(format!("{label} failed: see the Launch tab"), true);
            self.rescan();
        }
        if let Some(s) = self.sampling.session.as_mut()
            && s.poll()
            && let Some(Err(e)) = &s.result
        {
            let e = e.clone();
            self.say(format!("sampling failed: {e}"), true);
        }
    }

    /// Periodic refreshes of live files (catalog, metrics, grids).
    fn schedule(&mut self) {
        let now = Instant::now();
        if self.scanned.is_some_and(|t| now - t > self.refresh * 2) {
            self.scanned = Some(now);
            self.rescan();
        }
        if let Some(run) = self.selected_run().cloned() {
            let due = self
                .metrics_refreshed
                .is_none_or(|t| now - t > self.refresh);
            if due && !self.worker.is_running("metrics") {
                self.metrics_refreshed = Some(now);
                let mut tail = self
                    .metrics
                    .remove(&run.path)
                    .unwrap_or_else(|| MetricsTail::new(run.path.join("metrics.jsonl")));
                let path = run.path.clone();
                self.worker.submit("metrics", move || {
                    let r = tail.refresh().map_err(|e| e.to_string());
                    Done::Metrics(path, Box::new(tail), r)
                });
            }
        }
    }

    /// Sends (or refreshes) a grid query; `live` runs refresh periodically.
    fn request_grid(&mut self, slot: Slot, query: GridQuery, live: bool) {
        let view = self.grids.entry(slot.key()).or_default();
        let changed = view.last_query.as_ref() != Some(&query);
        let stale = live && view.refreshed.is_none_or(|t| t.elapsed() > self.refresh);
        if !(changed || stale) || self.worker.is_running(slot.key()) {
            return;
        }
        if changed {
            view.grid = None;
        }
        view.last_query = Some(query.clone());
        view.refreshed = Some(Instant::now());
        let previous = view.grid.clone();
        self.worker.submit(slot.key(), move || {
            Done::Grid(
                slot,
                Box::new(
                    grid::compute_grid(&query, previous.as_deref()).map_err(|e| format!("{e:#}")),
                ),
            )
        });
    }

    /// Shows a PNG of a run (decoded on a worker), or `missing` while there is no such file.
    fn image(
        &mut self,
        ui: &mut egui::Ui,
        path: &Path,
        max: egui::Vec2,
        missing: &str,
    ) -> Option<egui::Response> {
        if self.images.wanted(path) {
            let p = path.to_path_buf();
            self.worker.submit(format!("img:{}", p.display()), move || {
                Done::Image(p.clone(), widgets::decode_png(&p))
            });
        }
        self.images.show(ui, path, max, missing)
    }

    /// Draws one frame.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        let ctx = ui.ctx().clone();
        self.worker.set_context(&ctx);
        self.apply_results(&ctx);
        self.schedule();
        egui::Panel::top("tabs").show(ui, |ui| self.top_bar_ui(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar_ui(ui));
        egui::Panel::left("runs")
            .resizable(true)
            .default_size(270.0)
            .show(ui, |ui| self.run_list_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| match self.tab {
                    Tab::Runs => self.runs_ui(ui),
                    Tab::Launch => self.launch_ui(ui),
                    Tab::Dashboard => self.dashboard_ui(ui),
                    Tab::Explorer => self.explorer_ui(ui),
                    Tab::Trajectory => self.trajectory_ui(ui),
                    Tab::Sampling => self.sampling_ui(ui),
                });
        });
        ctx.request_repaint_after(Duration::from_millis(500));
        self.frame_ms = started.elapsed().as_secs_f64() * 1e3;
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("flowlens lab");
            ui.separator();
            for tab in Tab::ALL {
                ui.selectable_value(&mut self.tab, tab, tab.label());
            }
            ui.separator();
            if ui
                .button("Rescan")
                .on_hover_text("Read the runs folder again")
                .clicked()
            {
                self.rescan();
            }
        });
    }

    fn status_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if self.show_frame_time {
                ui.label(self.root.display().to_string());
            }
            ui.label(format!("{} runs", self.runs.len()));
            let running = self.launcher.running();
            if running > 0 {
                ui.label(format!("· {running} job(s) running"));
            }
            if self.worker.busy() > 0 {
                ui.spinner();
            }
            if self.show_frame_time {
                ui.label(format!("· frame {:.1} ms", self.frame_ms));
            }
            if let Some((_, text, error)) = self.messages.last() {
                ui.separator();
                let colour = if *error {
                    Color32::LIGHT_RED
                } else {
                    ui.visuals().text_color()
                };
                ui.colored_label(colour, text);
            }
        });
    }

    fn run_list_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.add(egui::TextEdit::singleline(&mut self.filter).hint_text("filter runs"));
        });
        if let Some(e) = &self.catalog_error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        if self.runs.is_empty() && self.catalog_error.is_none() {
            ui.label("No runs here yet: launch one, or point --runs at a folder of runs (e.g. runs/demo).");
        }
        let mut pick = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            let mut groups: BTreeMap<&str, Vec<&RunEntry>> = BTreeMap::new();
            let filter = self.filter.to_lowercase();
            for r in &self.runs {
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
                            let selected = self.selected.as_ref() == Some(&r.path);
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
            self.select(p);
        }
    }

    fn runs_ui(&mut self, ui: &mut egui::Ui) {
        let Some(run) = self.selected_run().cloned() else {
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
        ui.horizontal(|ui| {
            let can_resume = matches!(
                run.status,
                RunStatus::Stopped | RunStatus::Crashed | RunStatus::Empty
            ) && !self.launcher.is_writing(&run.path);
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
                    self.device.clone(),
                ];
                match self.launcher.spawn(
                    &self.root,
                    format!("resume {}", run.label()),
                    args,
                    run.path.clone(),
                ) {
                    Ok(()) => self.say(format!("resuming {}", run.label()), false),
                    Err(e) => self.say(format!("{e:#}"), true),
                }
            }
            if ui.button("Open dashboard").clicked() {
                self.tab = Tab::Dashboard;
            }
            if ui.button("Open in the CKA explorer").clicked() {
                self.tab = Tab::Explorer;
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
                .and_then(|p| self.runs.iter().find(|r| &r.path == p))
                .map_or("(none)".to_string(), |r| r.label());
            let label = ui.label("compare the configuration with");
            egui::ComboBox::from_id_salt("compare-config")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.compare_config, None, "(none)");
                    for r in &self.runs {
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
            .and_then(|p| self.runs.iter().find(|r| &r.path == p))
            .cloned();
        let rows = match &other {
            Some(o) => catalog::diff(&run.config, &o.config),
            None => catalog::diff(&run.config, &run.config),
        };
        egui::CollapsingHeader::new("Configuration")
            .default_open(true)
            .show(ui, |ui| {
                egui::Grid::new("config-grid").striped(true).show(ui, |ui| {
                    ui.strong("field");
                    ui.strong(run.name.as_str());
                    if let Some(o) = &other {
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

    fn launch_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Launch a job");
        ui.label(format!(
            "Runs as a child process writing under {}; it keeps running if this window closes, and a crash stays in its own process.",
            self.root.display()
        ));
        let f = &mut self.form;
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
                let label = ui.label("device");
                egui::ComboBox::from_id_salt("device")
                    .selected_text(f.device.clone())
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut f.device, "cpu".to_string(), "cpu");
                        if cfg!(feature = "cuda") {
                            for i in 0..4 {
                                ui.selectable_value(
                                    &mut f.device,
                                    format!("cuda:{i}"),
                                    format!("cuda:{i}"),
                                );
                            }
                        }
                    })
                    .response
                    .labelled_by(label.id);
                ui.end_row();
            });
        if !cfg!(feature = "cuda") {
            ui.weak("CUDA devices appear here in a build with --features cuda.");
        }
        if ui.button("Start").clicked() {
            match self.form.command(&self.root) {
                Ok((args, out)) => {
                    let label = format!("{} {}", self.form.kind.label(), self.form.name);
                    match self.launcher.spawn(&self.root, label.clone(), args, out) {
                        Ok(()) => {
                            self.form_error = None;
                            self.say(format!("started {label}"), false);
                            self.rescan();
                        }
                        Err(e) => self.form_error = Some(format!("{e:#}")),
                    }
                }
                Err(e) => self.form_error = Some(format!("{e:#}")),
            }
        }
        if let Some(e) = &self.form_error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        ui.separator();
        ui.heading("Jobs");
        if self.launcher.jobs.is_empty() {
            ui.label("None started from this window yet.");
        }
        let mut stop = None;
        let mut resume = None;
        for (i, job) in self.launcher.jobs.iter().enumerate().rev() {
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
            self.launcher.stop(i);
        }
        if let Some(i) = resume {
            let job = &self.launcher.jobs[i];
            let mut args = job.args.clone();
            if args.first().is_some_and(|a| a == "train") && !args.iter().any(|a| a == "--resume") {
                args.push("--resume".into());
            }
            let (label, out) = (format!("{} (resumed)", job.label), job.out.clone());
            if let Err(e) = self.launcher.spawn(&self.root, label, args, out) {
                self.say(format!("{e:#}"), true);
            }
        }
    }

    fn dashboard_ui(&mut self, ui: &mut egui::Ui) {
        let Some(run) = self.selected_run().cloned() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("Dashboard · {}", run.label()));
        let tail = self.metrics.get(&run.path);
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
        let tail = self.metrics.get(&run.path).unwrap_or(&empty);
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
                && let Some(t) = self.metrics.get(&run.path).cloned()
            {
                let (dir, label, smoothing) =
                    (self.root.join("exports"), run.label(), self.smoothing);
                let key = self.eval_key.clone();
                self.worker.submit("export:curves", move || {
                    let name = export::stem(&label);
                    Done::Export(
                        export::training_curves(&t, &label, smoothing, &key, &dir, &name)
                            .map_err(|e| format!("{e:#}")),
                    )
                });
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
                    self.image(
                        &mut cols[0],
                        p,
                        egui::vec2(360.0, 360.0),
                        "not on disk any more",
                    );
                }
                None => {
                    cols[0].label("none yet (written every sample_every steps)");
                }
            }
            cols[1].strong("Live CKA");
            self.grid_controls_ui(&mut cols[1], &run, false);
            if run.stores.is_empty() {
                self.live_cka_ui(&mut cols[1], &run);
                return;
            }
            // Refreshed every interval: probe files land while a run is sampled, and a
            // refresh only reads the cells that are new.
            if let Some(q) = query_of(&run, &self.dashboard) {
                self.request_grid(Slot::Dashboard, q, true);
            }
            self.grid_view_ui(&mut cols[1], Slot::Dashboard, false);
            self.live_cka_ui(&mut cols[1], &run);
        });
    }

    /// The streaming accumulators of `flowlens sample --cka-pairs`, refreshed as batches land.
    fn live_cka_ui(&mut self, ui: &mut egui::Ui, run: &RunEntry) {
        for path in &run.live_cka {
            let due = self
                .live
                .get(path)
                .is_none_or(|(t, _)| t.elapsed() > self.refresh);
            let key = format!("live:{}", path.display());
            if due && !self.worker.is_running(&key) {
                let p = path.clone();
                self.worker.submit(key, move || {
                    Done::Live(p.clone(), grid::read_live(&p).map_err(|e| format!("{e:#}")))
                });
            }
            let store = path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            ui.separator();
            ui.strong(format!(
                "Streaming CKA while sampling ({store}/cka_live.json)"
            ));
            match self.live.get(path).map(|(_, r)| r) {
                None => {
                    ui.spinner();
                }
                Some(Err(e)) => {
                    ui.colored_label(Color32::LIGHT_RED, e);
                }
                Some(Ok(live)) => {
                    let est = self.dashboard.estimator;
                    ui.weak(format!(
                        "{} updates · {} estimate · all seeds so far",
                        live.updates,
                        est.name()
                    ));
                    let cols: Vec<String> = live.steps.iter().map(|s| s.to_string()).collect();
                    widgets::heatmap_ui(
                        ui,
                        live.values(est),
                        &live.rows,
                        &cols,
                        false,
                        None,
                        |r, c| {
                            format!(
                                "{} · step {}: {:.4} over {} rows",
                                live.rows[r],
                                live.steps[c],
                                live.values(est)[[r, c]],
                                live.n[[r, c]]
                            )
                        },
                    );
                }
            }
        }
    }

    /// Store / tap / estimator pickers for the dashboard (`explorer == false`) or the explorer.
    fn grid_controls_ui(&mut self, ui: &mut egui::Ui, run: &RunEntry, explorer: bool) {
        let choice = if explorer {
            &mut self.explorer.choice
        } else {
            &mut self.dashboard
        };
        if run.stores.is_empty() {
            ui.label("This run has no feature store yet: sample it with taps (`flowlens sample --taps ...`) or use the Sampling tab.");
            return;
        }
        let salt = if explorer { "ex" } else { "db" };
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("store");
            egui::ComboBox::from_id_salt(format!("{salt}-store"))
                .selected_text(choice.store.clone())
                .show_ui(ui, |ui| {
                    for s in &run.stores {
                        let picked = ui.selectable_value(
                            &mut choice.store,
                            s.name.clone(),
                            format!("{} ({})", s.name, s.manifest.pooling),
                        );
                        if picked.clicked() {
                            choice.store_pinned = true;
                        }
                    }
                })
                .response
                .labelled_by(label.id);
            let taps: Vec<String> = run
                .store(&choice.store)
                .map(|s| s.manifest.taps.keys().cloned().collect())
                .unwrap_or_default();
            let label = ui.label("tap A");
            egui::ComboBox::from_id_salt(format!("{salt}-a"))
                .selected_text(choice.a.clone())
                .show_ui(ui, |ui| {
                    for t in &taps {
                        ui.selectable_value(&mut choice.a, t.clone(), t);
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("tap B");
            egui::ComboBox::from_id_salt(format!("{salt}-b"))
                .selected_text(choice.b.clone())
                .show_ui(ui, |ui| {
                    for p in ["llm.h*.text", "llm.h*.image", "enc.*", "dec.*", "*"] {
                        ui.selectable_value(&mut choice.b, p.to_string(), p);
                    }
                    for t in &taps {
                        ui.selectable_value(&mut choice.b, t.clone(), t);
                    }
                })
                .response
                .labelled_by(label.id);
            ui.selectable_value(&mut choice.estimator, Estimator::Debiased, "debiased");
            ui.selectable_value(&mut choice.estimator, Estimator::Biased, "biased");
        });
        if explorer && let Some(store) = run.store(&choice.store) {
            ui.horizontal_wrapped(|ui| {
                ui.label("seeds");
                for &s in &store.manifest.seeds {
                    let mut on = choice.seeds.is_empty() || choice.seeds.contains(&s);
                    if ui.checkbox(&mut on, format!("{s}")).changed() {
                        let mut set: Vec<u64> = if choice.seeds.is_empty() {
                            store.manifest.seeds.clone()
                        } else {
                            choice.seeds.clone()
                        };
                        if on {
                            set.push(s);
                        } else {
                            set.retain(|x| *x != s);
                        }
                        set.sort_unstable();
                        set.dedup();
                        choice.seeds = if set.len() == store.manifest.seeds.len() || set.is_empty()
                        {
                            Vec::new()
                        } else {
                            set
                        };
                    }
                }
                ui.weak(format!(
                    "pooling: {} · {} prompts",
                    store.manifest.pooling,
                    store.manifest.prompts.len()
                ));
            });
        }
    }

    fn grid_view_ui(
        &mut self,
        ui: &mut egui::Ui,
        slot: Slot,
        explorer: bool,
    ) -> Option<(usize, usize)> {
        let Some(view) = self.grids.get(slot.key()) else {
            ui.spinner();
            return None;
        };
        if let Some(e) = &view.error {
            ui.colored_label(Color32::LIGHT_RED, e);
            return None;
        }
        let Some(grid) = view.grid.as_ref() else {
            ui.spinner();
            return None;
        };
        let base = self
            .grids
            .get(Slot::Compare.key())
            .and_then(|v| v.grid.as_ref())
            .filter(|_| explorer && self.explorer.delta);
        if explorer && self.explorer.delta && base.is_none() {
            ui.label("Δ view: choose a baseline run with the same store below.");
        }
        let delta_grid = base.map(|b| grid::delta(grid, b));
        let delta = delta_grid.is_some();
        let shown = delta_grid.as_ref().unwrap_or(grid);
        ui.weak(format!(
            "{} / {} cells complete · {} seed(s) · rows: {} · columns: solver steps",
            grid.complete_cells,
            grid.total_cells(),
            grid.seeds().len(),
            grid.query.b
        ));
        let cols: Vec<String> = shown.steps().iter().map(|s| s.to_string()).collect();
        let selected = if explorer {
            self.explorer.selected
        } else {
            None
        };
        let resp = widgets::heatmap_ui(
            ui,
            &shown.mean(),
            &shown.rows(),
            &cols,
            delta,
            selected,
            |r, c| match shown.summary(r, c) {
                Some(s) => format!(
                    "{} · step {} (t = {:.2})\n{}CKA {:.4} ± {:.4} (SE, n = {})",
                    shown.rows()[r],
                    shown.steps()[c],
                    shown.ts()[c],
                    if delta { "Δ " } else { "" },
                    s.mean,
                    s.se,
                    s.n
                ),
                None => format!(
                    "{} · step {}: not computed yet",
                    shown.rows()[r],
                    shown.steps()[c]
                ),
            },
        );
        resp.clicked
    }

    fn explorer_ui(&mut self, ui: &mut egui::Ui) {
        let Some(run) = self.selected_run().cloned() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("CKA explorer · {}", run.label()));
        self.grid_controls_ui(ui, &run, true);
        if run.stores.is_empty() {
            return;
        }
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut self.explorer.delta, "Δ view (this run − baseline)");
            let current = self
                .explorer
                .compare
                .as_ref()
                .and_then(|p| self.runs.iter().find(|r| &r.path == p))
                .map_or("(choose a baseline)".to_string(), |r| r.label());
            let label = ui.label("baseline");
            egui::ComboBox::from_id_salt("compare-run")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.explorer.compare, None, "(none)");
                    for r in &self.runs {
                        if r.path != run.path && r.store(&self.explorer.choice.store).is_some() {
                            ui.selectable_value(
                                &mut self.explorer.compare,
                                Some(r.path.clone()),
                                r.label(),
                            );
                        }
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("threshold");
            ui.add(
                egui::DragValue::new(&mut self.explorer.threshold)
                    .speed(0.01)
                    .range(-1.0..=1.0),
            )
            .labelled_by(label.id);
            let label = ui.label("permutations");
            ui.add(egui::DragValue::new(&mut self.explorer.permutations).range(0..=10_000))
                .labelled_by(label.id);
            let label = ui.label("k");
            ui.add(egui::DragValue::new(&mut self.explorer.k).range(1..=50))
                .labelled_by(label.id);
        });
        let Some(query) = query_of(&run, &self.explorer.choice) else {
            return;
        };
        self.request_grid(
            Slot::Explorer,
            query.clone(),
            run.status == RunStatus::Running,
        );
        if let Some(base) = self.explorer.compare.clone() {
            let q = GridQuery {
                run: base,
                ..query.clone()
            };
            self.request_grid(Slot::Compare, q, false);
        }
        if let Some((r, c)) = self.grid_view_ui(ui, Slot::Explorer, true) {
            self.explorer.selected = Some((r, c));
            self.request_detail(&query, r, c);
        }
        let Some(grid) = self
            .grids
            .get(Slot::Explorer.key())
            .and_then(|v| v.grid.clone())
        else {
            return;
        };
        let row = self
            .explorer
            .selected
            .map_or(0, |(r, _)| r)
            .min(grid.rows().len().saturating_sub(1));
        let col = self.explorer.selected.map(|(_, c)| c);
        ui.horizontal(|ui| {
            if ui
                .button("Export heatmap")
                .on_hover_text("PNG (3x) and SVG, the report's look")
                .clicked()
            {
                self.export(ExportWhat::Heatmap, &grid, row);
            }
            if ui.button("Export curve").clicked() {
                self.export(ExportWhat::Curve, &grid, row);
            }
            if ui
                .button("Export table")
                .on_hover_text("CSV and booktabs LaTeX")
                .clicked()
            {
                self.export(ExportWhat::Table, &grid, row);
            }
        });
        ui.separator();
        let null_floor = match &self.explorer.detail {
            Some(Ok(d)) => d.null.as_ref().map(|n| n.null_upper),
            _ => None,
        };
        self.curve_ui(ui, &grid, row, col, null_floor);
        ui.separator();
        self.detail_ui(ui);
    }

    fn request_detail(&mut self, query: &GridQuery, row: usize, col: usize) {
        let Some(grid) = self
            .grids
            .get(Slot::Explorer.key())
            .and_then(|v| v.grid.as_ref())
        else {
            return;
        };
        let (Some(tap), Some(&step), Some(&seed)) = (
            grid.rows().get(row).cloned(),
            grid.steps().get(col),
            grid.seeds().first(),
        ) else {
            return;
        };
        let (q, k, perms) = (query.clone(), self.explorer.k, self.explorer.permutations);
        self.explorer.detail = None;
        self.worker.submit("detail", move || {
            Done::Detail(
                grid::cell_detail(&q, &tap, step, seed, k, perms).map_err(|e| format!("{e:#}")),
            )
        });
    }

    fn curve_ui(
        &mut self,
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
            Some(grid::row_summary(grid, row, self.explorer.threshold).map_err(|e| e.to_string()));
        let threshold = self.explorer.threshold;
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

    fn detail_ui(&mut self, ui: &mut egui::Ui) {
        let detail = match &self.explorer.detail {
            None if self.explorer.selected.is_some() => {
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
            Some(Ok(d)) => d.clone(),
        };
        ui.strong(format!(
            "Cell {} · step {} · seed {}",
            detail.row, detail.step, detail.seed
        ));
        if let Some(n) = &detail.null {
            ui.label(format!(
                "observed {:.4} · null mean {:.4} · 95 % floor {:.4} · p = {:.3} ({} permutations)",
                n.observed, n.null_mean, n.null_upper, n.p_value, n.permutations
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
                        self.image(ui, &p, egui::vec2(48.0, 48.0), "—");
                    }
                    None => {
                        ui.weak("—");
                    }
                }
                for list in [&knn.neighbours_a[i], &knn.neighbours_b[i]] {
                    ui.horizontal(|ui| {
                        for &j in list {
                            let shared = knn.neighbours_a[i].contains(&j)
                                && knn.neighbours_b[i].contains(&j);
                            let tip = detail.prompts.get(j).cloned().unwrap_or_default();
                            match detail.images.get(j).cloned().flatten() {
                                Some(p) => {
                                    if let Some(r) = self.image(ui, &p, egui::vec2(32.0, 32.0), "—")
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

    fn export(&mut self, what: ExportWhat, grid: &Grid, row: usize) {
        let dir = self.root.join("exports");
        let delta_base = if self.explorer.delta {
            self.grids
                .get(Slot::Compare.key())
                .and_then(|v| v.grid.clone())
        } else {
            None
        };
        let grid = grid.clone();
        let null = match &self.explorer.detail {
            Some(Ok(d)) => d
                .null
                .as_ref()
                .map(|n| (n.null_upper, "permutation null (95 %)".to_string())),
            _ => None,
        };
        let threshold = self.explorer.threshold;
        self.worker.submit(format!("export:{what:?}"), move || {
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
        });
    }

    fn trajectory_ui(&mut self, ui: &mut egui::Ui) {
        let Some(run) = self.selected_run().cloned() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("Trajectory · {}", run.label()));
        if run.stores.is_empty() {
            ui.label("No feature store: sample with `flowlens sample --previews` or use the Sampling tab.");
            return;
        }
        let t = &mut self.trajectory;
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("store");
            egui::ComboBox::from_id_salt("traj-store")
                .selected_text(t.store.clone())
                .show_ui(ui, |ui| {
                    for s in &run.stores {
                        ui.selectable_value(&mut t.store, s.name.clone(), &s.name);
                    }
                })
                .response
                .labelled_by(label.id);
        });
        let Some(store) = run.store(&t.store).cloned() else {
            return;
        };
        let prompts = &store.manifest.prompts;
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("prompt");
            egui::ComboBox::from_id_salt("traj-prompt")
                .width(380.0)
                .selected_text(prompts.get(t.prompt).cloned().unwrap_or_default())
                .show_ui(ui, |ui| {
                    for (i, p) in prompts.iter().enumerate() {
                        ui.selectable_value(&mut t.prompt, i, format!("{i}: {p}"));
                    }
                })
                .response
                .labelled_by(label.id);
            let label = ui.label("seed");
            egui::ComboBox::from_id_salt("traj-seed")
                .selected_text(t.seed.to_string())
                .show_ui(ui, |ui| {
                    for &s in &store.manifest.seeds {
                        ui.selectable_value(&mut t.seed, s, s.to_string());
                    }
                })
                .response
                .labelled_by(label.id);
        });
        let steps = store.manifest.steps.max(1);
        t.step = t.step.min(steps - 1);
        ui.add(egui::Slider::new(&mut t.step, 0..=steps - 1).text("solver step"));
        let (prompt, seed, step) = (t.prompt, t.seed, t.step);
        let paths = grid::store_paths(&run.path, &store.name);
        let frame = paths.preview_png(seed, prompt, step);
        let final_image = paths.sample_png(seed, prompt);
        ui.label(format!("t = {:.3}", step as f64 / steps as f64));
        ui.horizontal(|ui| {
            ui.vertical(|ui| {
                ui.strong(format!("x_t at step {step}"));
                self.image(
                    ui,
                    &frame,
                    egui::vec2(256.0, 256.0),
                    "no preview for this step (sample with --previews)",
                );
            });
            ui.vertical(|ui| {
                ui.strong("final sample");
                self.image(ui, &final_image, egui::vec2(256.0, 256.0), "not saved");
            });
            ui.vertical(|ui| {
                let grid = self.grids.get(Slot::Explorer.key()).and_then(|v| v.grid.clone());
                match grid.filter(|g| g.query.run == run.path && g.query.store == store.name) {
                    Some(g) => {
                        let row = self.explorer.selected.map_or(0, |(r, _)| r).min(g.rows().len().saturating_sub(1));
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

    fn sampling_ui(&mut self, ui: &mut egui::Ui) {
        let Some(run) = self.selected_run().cloned() else {
            ui.label("Select a run on the left.");
            return;
        };
        ui.heading(format!("Interactive sampling · {}", run.label()));
        if run.checkpoint.is_none() {
            ui.label("This run has no checkpoint yet.");
            return;
        }
        let busy = self.sampling.session.as_ref().is_some_and(|s| s.running());
        let s = &mut self.sampling;
        ui.horizontal(|ui| {
            ui.label("prompt");
            ui.add(
                egui::TextEdit::singleline(&mut s.prompt)
                    .hint_text("prompt to sample")
                    .desired_width(420.0),
            )
            .on_hover_text("the prompt to sample");
        });
        ui.horizontal(|ui| {
            let label = ui.label("seed");
            ui.add(egui::DragValue::new(&mut s.seed))
                .labelled_by(label.id);
            let label = ui.label("steps");
            ui.add(egui::DragValue::new(&mut s.steps).range(1..=1000))
                .labelled_by(label.id);
            let label = ui.label("CFG");
            ui.add(
                egui::DragValue::new(&mut s.cfg)
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
            let label = ui.label("in this process on");
            egui::ComboBox::from_id_salt("sampling-device")
                .selected_text(self.device.clone())
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.device, "cpu".to_string(), "cpu");
                    if cfg!(feature = "cuda") {
                        for i in 0..4 {
                            ui.selectable_value(
                                &mut self.device,
                                format!("cuda:{i}"),
                                format!("cuda:{i}"),
                            );
                        }
                    }
                })
                .response
                .labelled_by(label.id);
        });
        if start {
            let device: DeviceSpec = match self.device.parse() {
                Ok(d) => d,
                Err(e) => {
                    self.say(format!("device `{}`: {e}", self.device), true);
                    return;
                }
            };
            self.sampling.session = Some(Session::start(
                run.path.clone(),
                self.sampling.prompt.clone(),
                self.sampling.seed,
                self.sampling.steps,
                self.sampling.cfg,
                device,
                ui.ctx().clone(),
            ));
        }
        let Some(session) = &self.sampling.session else {
            return;
        };
        let (srun, seed, steps) = (session.run.clone(), session.seed, session.steps);
        let latest = session.latest_step;
        let result = session.result.clone();
        let norms = session.norms.clone();
        match &result {
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
                let frame = grid::store_paths(&srun, sampling::STORE).preview_png(seed, 0, step);
                ui.vertical(|ui| {
                    ui.strong(format!("x_t, step {step}"));
                    self.image(ui, &frame, egui::vec2(256.0, 256.0), "being written");
                });
            }
            if matches!(result, Some(Ok(_))) {
                let final_image = grid::store_paths(&srun, sampling::STORE).sample_png(seed, 0);
                ui.vertical(|ui| {
                    ui.strong("sample");
                    self.image(ui, &final_image, egui::vec2(256.0, 256.0), "being written");
                });
            }
        });
        ui.strong("Taps as they arrive: L2 norm of each pooled tap per solver step");
        Plot::new("tap-norms")
            .height(260.0)
            .legend(Legend::default())
            .show(ui, |p| {
                for (tap, per_step) in &norms {
                    let pts: Vec<[f64; 2]> =
                        per_step.iter().map(|(s, v)| [*s as f64, *v]).collect();
                    p.line(Line::new(tap.clone(), PlotPoints::from(pts)));
                }
            });
    }

    /// Blocks until every queued job has finished and been applied (tests, screenshots).
    pub fn settle(&mut self, ctx: &egui::Context, timeout: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            self.apply_results(ctx);
            if self.worker.idle() {
                return true;
            }
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ExportWhat {
    Heatmap,
    Curve,
    Table,
}

fn query_of(run: &RunEntry, choice: &GridChoice) -> Option<GridQuery> {
    run.store(&choice.store)?;
    Some(GridQuery {
        run: run.path.clone(),
        store: choice.store.clone(),
        a: choice.a.clone(),
        b: choice.b.clone(),
        estimator: choice.estimator,
        seeds: choice.seeds.clone(),
    })
}

/// Keeps a tap choice valid for the run's store (first encoder tap, LLM family for B).
fn fix_taps(choice: &mut GridChoice, run: &RunEntry) {
    let Some(store) = run.store(&choice.store) else {
        return;
    };
    let taps = &store.manifest.taps;
    if !taps.contains_key(&choice.a) {
        choice.a = ["enc.noise", "enc.text"]
            .iter()
            .find(|t| taps.contains_key(**t))
            .map(|t| t.to_string())
            .or_else(|| taps.keys().next().cloned())
            .unwrap_or_default();
    }
    let req = flowlens_core::flow::TapRequest::parse(&choice.b);
    if !taps.keys().any(|t| req.wants(t) && t != &choice.a) {
        choice.b = ["llm.h*.image", "llm.h*.text", "llm.h*", "*"]
            .iter()
            .find(|p| {
                let r = flowlens_core::flow::TapRequest::parse(p);
                taps.keys().any(|t| r.wants(t) && t != &choice.a)
            })
            .map(|p| p.to_string())
            .unwrap_or_else(|| "*".into());
    }
    choice.seeds.retain(|s| store.manifest.seeds.contains(s));
}

/// The store with the most solver steps written (a full `probes` or `probes-grid` before an
/// experiment's few steps), then the most taps.
fn preferred_store(run: &RunEntry) -> String {
    run.stores
        .iter()
        .max_by_key(|s| {
            let steps = s
                .manifest
                .tap_steps
                .as_ref()
                .map_or(s.manifest.steps, Vec::len);
            (
                steps,
                s.manifest.taps.len(),
                std::cmp::Reverse(s.name.clone()),
            )
        })
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

fn status_colour(s: RunStatus) -> Color32 {
    match s {
        RunStatus::Running => Color32::from_rgb(0, 158, 115),
        RunStatus::Finished => Color32::from_rgb(86, 180, 233),
        RunStatus::Stopped => Color32::from_rgb(230, 159, 0),
        RunStatus::Crashed => Color32::from_rgb(213, 94, 0),
        RunStatus::Empty => Color32::GRAY,
    }
}

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

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
