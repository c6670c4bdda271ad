//! The laboratory's shell (egui's wrap_app): [`LabApp`] draws each frame from scratch (immediate
//! mode): the top bar, the status bar, the run list and the open tab's [`Panel`]. Every file read
//! and computation goes to the worker threads; their results are applied at the start of the
//! next frame ([`LabApp::apply_results`]), live files are refreshed on a timer (`schedule`), and
//! what the panels asked for is applied once per frame, after them ([`LabApp::run_cmd`]). The
//! state is the read model [`Lab`] plus each panel's own settings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32};

use crate::catalog::{self, RunStatus};
use crate::command::{Command, Level, Message};
use crate::grid::{self, GridQuery};
use crate::lab::{Done, Lab, Slot};
use crate::metrics::MetricsTail;
use crate::panels::Panel;
use crate::panels::dashboard::DashboardState;
use crate::panels::explorer::ExplorerState;
use crate::panels::launch::LaunchState;
use crate::panels::results::ResultsState;
use crate::panels::runs::RunsState;
use crate::panels::sampling::SamplingState;
use crate::panels::study::StudyState;
use crate::panels::trajectory::TrajectoryState;
use crate::sampling::Session;
use crate::widgets::images::decode_png;

pub use crate::command::Tab;

/// The whole laboratory: the read model, the open tab and each tab's settings.
pub struct LabApp {
    pub lab: Lab,
    pub tab: Tab,
    /// The Runs tab and the run list.
    pub browser: RunsState,
    pub launch: LaunchState,
    pub dashboard: DashboardState,
    pub explorer: ExplorerState,
    pub trajectory: TrajectoryState,
    pub sampling: SamplingState,
    pub results: ResultsState,
    pub study: StudyState,
    /// The status bar's messages (the last 50).
    pub messages: Vec<Message>,
    /// Time of the last frame's UI code (ms), shown in the status bar.
    pub frame_ms: f64,
    /// Show `frame_ms` and the runs folder's path (off in snapshot tests, where both change
    /// from run to run).
    pub show_frame_time: bool,
}

impl LabApp {
    pub fn new(root: PathBuf) -> Self {
        let mut app = Self {
            lab: Lab::new(root),
            tab: Tab::Runs,
            browser: RunsState::default(),
            launch: LaunchState::default(),
            dashboard: DashboardState::default(),
            explorer: ExplorerState::default(),
            trajectory: TrajectoryState::default(),
            sampling: SamplingState::default(),
            results: ResultsState::default(),
            study: StudyState::default(),
            messages: Vec::new(),
            frame_ms: 0.0,
            show_frame_time: true,
        };
        app.rescan();
        app
    }

    /// The panel of a tab.
    pub fn panel(&self, tab: Tab) -> &dyn Panel {
        match tab {
            Tab::Runs => &self.browser,
            Tab::Launch => &self.launch,
            Tab::Dashboard => &self.dashboard,
            Tab::Explorer => &self.explorer,
            Tab::Trajectory => &self.trajectory,
            Tab::Sampling => &self.sampling,
            Tab::Results => &self.results,
            Tab::Study => &self.study,
        }
    }

    /// The tab whose panel is called `name` (`flowlens-lab --tab NAME`).
    pub fn tab_named(&self, name: &str) -> Option<Tab> {
        Tab::ALL
            .into_iter()
            .find(|t| self.panel(*t).name() == name.to_lowercase())
    }

    fn say(&mut self, level: Level, text: impl Into<String>) {
        self.messages.push(Message {
            level,
            text: text.into(),
        });
        if self.messages.len() > 50 {
            self.messages.remove(0);
        }
    }

    pub fn rescan(&mut self) {
        let root = self.lab.root.clone();
        self.lab.worker.submit("catalog", move || {
            Done::Catalog(catalog::scan(&root).map_err(|e| e.to_string()))
        });
    }

    /// Selects a run and points the views at its fullest feature store (a store picked by hand
    /// stays if the run has it).
    pub fn select(&mut self, path: PathBuf) {
        self.lab.selected = Some(path);
        self.lab.cell = None;
        self.lab.detail = None;
        self.point_views(true);
    }

    /// Keeps the views' stores and taps valid for the selected run; `selecting` also moves an
    /// unpinned store to the run's fullest one. A rescan only repairs what disappeared, so the
    /// selected cell and its drill-down stay.
    fn point_views(&mut self, selecting: bool) {
        let Some(run) = self.lab.selected_run() else {
            return;
        };
        self.dashboard.choice.point_at(run, selecting);
        self.explorer.choice.point_at(run, selecting);
        self.trajectory.point_at(run);
    }

    /// Applies finished jobs.
    pub fn apply_results(&mut self, ctx: &egui::Context) {
        for (_, done) in self.lab.worker.poll() {
            match done {
                Done::Catalog(Ok(runs)) => {
                    let lab = &mut self.lab;
                    lab.runs = runs;
                    lab.catalog_error = None;
                    lab.scanned = Some(Instant::now());
                    for run in &mut lab.runs {
                        if lab.launcher.is_writing(&run.path) && run.status != RunStatus::Finished {
                            run.status = RunStatus::Running;
                        }
                    }
                    if lab.selected.is_none()
                        && let Some(first) = lab.runs.first()
                    {
                        let p = first.path.clone();
                        self.select(p);
                    } else {
                        // Stores may have appeared or gone since the last scan.
                        self.point_views(false);
                    }
                }
                Done::Catalog(Err(e)) => {
                    self.lab.catalog_error = Some(e);
                    self.lab.scanned = Some(Instant::now());
                }
                Done::Metrics(path, tail, result) => {
                    if let Err(e) = result {
                        self.say(Level::Error, format!("{}: {e}", tail.path.display()));
                    }
                    self.lab.metrics.insert(path, *tail);
                }
                Done::Image(path, img) => self.lab.images.insert(ctx, path, img),
                Done::Grid(slot, result) => {
                    let view = &mut self.lab.grids[slot];
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
                Done::Detail(d) => self.lab.detail = Some(d),
                Done::Live(path, r) => {
                    self.lab.live.insert(path, (Instant::now(), r));
                }
                Done::Export(Ok(paths)) => {
                    let list = paths
                        .iter()
                        .map(|p| {
                            p.strip_prefix(&self.lab.root)
                                .unwrap_or(p)
                                .display()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.say(
                        Level::Info,
                        format!("exported into the runs folder: {list}"),
                    );
                }
                Done::Export(Err(e)) => self.say(Level::Error, format!("export failed: {e}")),
                Done::Experiments(dirs) => self.lab.experiments = Some(dirs),
                Done::Results(dir, r) => {
                    self.lab.results.insert(dir, *r);
                }
                Done::Study(info) => self.lab.study = Some(std::sync::Arc::new(*info)),
                Done::Studies(dirs) => self.lab.studies = Some(dirs),
                Done::StudyView(v) => self.lab.study_view = Some(std::sync::Arc::new(*v)),
            }
        }
        for label in self.lab.launcher.poll() {
            self.say(Level::Error, format!("{label} failed: see the Launch tab"));
            self.rescan();
        }
        if let Some(s) = self.lab.session.as_mut()
            && s.poll()
            && let Some(Err(e)) = &s.result
        {
            let e = e.clone();
            self.say(Level::Error, format!("sampling failed: {e}"));
        }
    }

    /// Periodic refreshes of live files (catalog, metrics).
    fn schedule(&mut self) {
        let now = Instant::now();
        let lab = &mut self.lab;
        if lab.scanned.is_some_and(|t| now - t > lab.refresh * 2) {
            lab.scanned = Some(now);
            self.rescan();
        }
        let lab = &mut self.lab;
        if let Some(run) = lab.selected_run() {
            let path = run.path.clone();
            let due = lab.metrics_refreshed.is_none_or(|t| now - t > lab.refresh);
            if due && !lab.worker.is_running("metrics") {
                lab.metrics_refreshed = Some(now);
                let mut tail = lab
                    .metrics
                    .remove(&path)
                    .unwrap_or_else(|| MetricsTail::new(path.join("metrics.jsonl")));
                lab.worker.submit("metrics", move || {
                    let r = tail.refresh().map_err(|e| e.to_string());
                    Done::Metrics(path, Box::new(tail), r)
                });
            }
        }
    }

    /// Sends (or refreshes) a grid query; `live` grids refresh periodically.
    fn request_grid(&mut self, slot: Slot, query: GridQuery, live: bool) {
        let refresh = self.lab.refresh;
        let view = &mut self.lab.grids[slot];
        let changed = view.last_query.as_ref() != Some(&query);
        let stale = live && view.refreshed.is_none_or(|t| t.elapsed() > refresh);
        if !(changed || stale) || self.lab.worker.is_running(slot.key()) {
            return;
        }
        if changed {
            view.grid = None;
        }
        view.last_query = Some(query.clone());
        view.refreshed = Some(Instant::now());
        let previous = view.grid.clone();
        self.lab.worker.submit(slot.key(), move || {
            Done::Grid(
                slot,
                Box::new(
                    grid::compute_grid(&query, previous.as_deref()).map_err(|e| format!("{e:#}")),
                ),
            )
        });
    }

    /// Applies one command of a panel (or of the shell's own bars).
    pub fn run_cmd(&mut self, ctx: &egui::Context, cmd: Command) {
        match cmd {
            Command::Select(path) => self.select(path),
            Command::SelectCell(cell) => self.lab.cell = Some(cell),
            Command::Rescan => self.rescan(),
            Command::Open(tab) => self.tab = tab,
            Command::Spawn {
                label,
                args,
                out,
                said,
                form,
            } => match self.lab.launcher.spawn(&self.lab.root, label, args, out) {
                Ok(()) => {
                    if form {
                        self.launch.error = None;
                    }
                    if let Some(text) = said {
                        self.say(Level::Info, text);
                    }
                    if form {
                        self.rescan();
                    }
                }
                Err(e) if form => self.launch.error = Some(format!("{e:#}")),
                Err(e) => self.say(Level::Error, format!("{e:#}")),
            },
            Command::Stop(i) => self.lab.launcher.stop(i),
            Command::Submit(job) => {
                self.lab.worker.submit(job.key, job.work);
            }
            Command::Detail(job) => {
                self.lab.detail = None;
                self.lab.worker.submit(job.key, job.work);
            }
            Command::Grid { slot, query, live } => self.request_grid(slot, query, live),
            Command::Image(path) => {
                if self.lab.images.wanted(&path) {
                    self.lab
                        .worker
                        .submit(format!("img:{}", path.display()), move || {
                            Done::Image(path.clone(), decode_png(&path))
                        });
                }
            }
            Command::Sample {
                run,
                prompt,
                seed,
                steps,
                cfg,
                device,
            } => {
                self.lab.session = Some(Session::start(
                    run,
                    prompt,
                    seed,
                    steps,
                    cfg,
                    device,
                    ctx.clone(),
                ));
            }
            Command::Device(device) => self.lab.device = device,
            Command::Say(level, text) => self.say(level, text),
        }
    }

    /// Draws one frame.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        let ctx = ui.ctx().clone();
        self.lab.worker.set_context(&ctx);
        self.apply_results(&ctx);
        self.schedule();
        let mut cmds = Vec::new();
        egui::Panel::top("tabs").show(ui, |ui| self.top_bar_ui(ui, &mut cmds));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar_ui(ui));
        egui::Panel::left("runs")
            .resizable(true)
            .default_size(270.0)
            .show(ui, |ui| self.browser.run_list_ui(ui, &self.lab, &mut cmds));
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    let panel: &mut dyn Panel = match self.tab {
                        Tab::Runs => &mut self.browser,
                        Tab::Launch => &mut self.launch,
                        Tab::Dashboard => &mut self.dashboard,
                        Tab::Explorer => &mut self.explorer,
                        Tab::Trajectory => &mut self.trajectory,
                        Tab::Sampling => &mut self.sampling,
                        Tab::Results => &mut self.results,
                        Tab::Study => &mut self.study,
                    };
                    panel.ui(ui, &self.lab, &mut cmds);
                });
        });
        for cmd in cmds {
            self.run_cmd(&ctx, cmd);
        }
        ctx.request_repaint_after(Duration::from_millis(500));
        self.frame_ms = started.elapsed().as_secs_f64() * 1e3;
    }

    fn top_bar_ui(&self, ui: &mut egui::Ui, cmds: &mut Vec<Command>) {
        ui.horizontal(|ui| {
            ui.heading("flowlens lab");
            ui.separator();
            for tab in Tab::ALL {
                if ui
                    .selectable_label(self.tab == tab, self.panel(tab).label())
                    .clicked()
                    && self.tab != tab
                {
                    cmds.push(Command::Open(tab));
                }
            }
            ui.separator();
            if ui
                .button("Rescan")
                .on_hover_text("Read the runs folder again")
                .clicked()
            {
                cmds.push(Command::Rescan);
            }
        });
    }

    fn status_bar_ui(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if self.show_frame_time {
                ui.label(self.lab.root.display().to_string());
            }
            ui.label(format!("{} runs", self.lab.runs.len()));
            let running = self.lab.launcher.running();
            if running > 0 {
                ui.label(format!("· {running} job(s) running"));
            }
            if self.lab.worker.busy() > 0 {
                ui.spinner();
            }
            if self.show_frame_time {
                ui.label(format!("· frame {:.1} ms", self.frame_ms));
            }
            if let Some(m) = self.messages.last() {
                ui.separator();
                let colour = match m.level {
                    Level::Error => Color32::LIGHT_RED,
                    Level::Info => ui.visuals().text_color(),
                };
                ui.colored_label(colour, &m.text);
            }
        });
    }

    /// Blocks until every queued job has finished and been applied (tests, screenshots).
    pub fn settle(&mut self, ctx: &egui::Context, timeout: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            self.apply_results(ctx);
            if self.lab.worker.idle() {
                return true;
            }
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
