//! The Study tab: human preference studies (issue 17). Pick a study under `<runs>/studies/`
//! (or any path), see the blind monitor (progress, coverage, gold accuracy, side and time, all
//! without the key), rate as a rater (full-window rate mode: the prompt, two images, the
//! question, keys 1/2/3/4, undo with U, pause and resume across restarts through the
//! append-only session file), and after `unblind` (a confirmation, recorded in the audit log)
//! run the analysis and read its table and Figure 4. While the study is blind the tab holds
//! only opaque ids ([`BlindView`]) and never loads the key. Files are read and written off the
//! UI thread: worker jobs for the study list, the monitor, the view, unblinding and the
//! analysis; one writer thread per sitting for the answers ([`SessionWriter`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use eframe::egui::{self, Color32, RichText};
use flowlens_experiments::study::blind::BlindView;
use flowlens_experiments::study::files::StudyDir;

use crate::command::{Command, Job};
use crate::lab::{Done, Lab};
use crate::panels::{Panel, image_ui};
use crate::study::{OpenedView, SessionWriter, StudyAction, StudyInfo, studies_under, study_info};

/// A sitting of the rate mode.
pub struct RateMode {
    pub view: BlindView,
    writer: SessionWriter,
    /// The screen shown.
    pub current: Option<usize>,
    shown_at_ms: i64,
    shown: Instant,
    /// Screens answered in this sitting, for undo.
    history: Vec<usize>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl RateMode {
    fn show(&mut self, seq: Option<usize>) {
        self.current = seq;
        self.shown = Instant::now();
        self.shown_at_ms = now_ms();
    }

    fn answer(&mut self, choice: &str) -> anyhow::Result<()> {
        let Some(seq) = self.current else {
            return Ok(());
        };
        let j = self.view.judgment(
            seq,
            choice,
            self.shown_at_ms,
            now_ms().max(self.shown_at_ms),
        )?;
        self.writer.write(j.clone());
        self.view.keep(j);
        self.history.push(seq);
        let next = self.view.next_open();
        self.show(next);
        Ok(())
    }

    fn undo(&mut self) {
        if let Some(seq) = self.history.pop() {
            self.show(Some(seq));
        }
    }
}

/// The Study tab's settings.
#[derive(Default)]
pub struct StudyState {
    /// The study directory (text field; the first study under `<runs>/studies/` until edited).
    pub dir: String,
    pub code: String,
    pub confirm_unblind: bool,
    pub rate: Option<RateMode>,
    pub error: Option<String>,
    pub info: Option<Arc<StudyInfo>>,
    requested: Option<PathBuf>,
    listed_for: Option<Instant>,
    /// The blind view asked for (request number), until it arrives.
    opening: Option<u64>,
    requests: u64,
}

impl StudyState {
    fn request(&mut self, dir: PathBuf, action: StudyAction, cmds: &mut Vec<Command>) {
        self.requested = Some(dir.clone());
        cmds.push(Command::Submit(Job::new("study", move || {
            Done::Study(Box::new(study_info(&dir, action)))
        })));
    }

    /// Asks for the blind view of the rater whose code is typed (opened on a worker).
    pub fn start_rating(&mut self, cmds: &mut Vec<Command>) {
        self.requests += 1;
        let request = self.requests;
        self.opening = Some(request);
        let (dir, code) = (PathBuf::from(&self.dir), self.code.clone());
        cmds.push(Command::Submit(Job::new("study:view", move || {
            let view = BlindView::open(&dir, &code).map_err(|e| format!("{e:#}"));
            Done::StudyView(Box::new(OpenedView { request, view }))
        })));
    }

    /// Enters the rate mode when the asked-for view has arrived.
    fn take_view(&mut self, lab: &Lab) {
        let Some(request) = self.opening else {
            return;
        };
        let Some(opened) = lab.study_view.as_ref().filter(|v| v.request == request) else {
            return;
        };
        self.opening = None;
        match &opened.view {
            Ok(view) => {
                let mut mode = RateMode {
                    current: None,
                    writer: SessionWriter::start(view),
                    view: view.clone(),
                    shown_at_ms: 0,
                    shown: Instant::now(),
                    history: Vec::new(),
                };
                let next = mode.view.next_open();
                mode.show(next);
                self.rate = Some(mode);
                self.error = None;
            }
            Err(e) => self.error = Some(e.clone()),
        }
    }

    /// Waits until the answers given so far are on disk.
    pub fn flush(&self) {
        if let Some(m) = &self.rate {
            m.writer.flush();
        }
    }

    fn leave_rating(&mut self, cmds: &mut Vec<Command>) {
        if let Some(m) = self.rate.take() {
            m.writer.flush();
        }
        let dir = PathBuf::from(&self.dir);
        self.request(dir, StudyAction::Read, cmds);
    }

    fn rate_ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        let Some(mode) = self.rate.as_mut() else {
            return;
        };
        let total = mode.view.screens.len();
        let done = mode.view.answers.len();
        let mut pause = false;
        ui.horizontal(|ui| {
            ui.heading(&mode.view.title);
            ui.separator();
            ui.label(format!("rater {}", mode.view.rater));
            ui.add(
                egui::ProgressBar::new(done as f32 / total.max(1) as f32)
                    .text(format!("{done} / {total}"))
                    .desired_width(220.0),
            );
            if ui
                .button("Pause")
                .on_hover_text("Back to the study; your answers are saved")
                .clicked()
            {
                pause = true;
            }
            if ui
                .add_enabled(!mode.history.is_empty(), egui::Button::new("Undo last (U)"))
                .clicked()
            {
                mode.undo();
            }
        });
        ui.separator();
        let Some(seq) = mode.current else {
            ui.label(RichText::new(format!("All {total} screens answered. Thank you.")).size(18.0));
            if ui.button("Back to the study").clicked() {
                pause = true;
            }
            if pause {
                self.leave_rating(cmds);
            }
            return;
        };
        let screen = mode.view.screens[seq].clone();
        ui.label(RichText::new(&screen.question).size(18.0).strong());
        if let Some(p) = &screen.prompt {
            ui.label(RichText::new(format!("“{p}”")).size(16.0).italics());
        }
        ui.add_space(6.0);
        let side = ((ui.available_width() - 40.0) / 2.0).clamp(160.0, 420.0);
        let mut clicked = None;
        ui.horizontal(|ui| {
            for (which, path) in [("left", &screen.left), ("right", &screen.right)] {
                ui.vertical(|ui| {
                    let r = image_ui(ui, lab, path, egui::vec2(side, side), "loading…", cmds);
                    if r.is_some_and(|r| r.interact(egui::Sense::click()).clicked()) {
                        clicked = Some(which);
                    }
                    ui.label(if which == "left" {
                        "Left image"
                    } else {
                        "Right image"
                    });
                });
                ui.add_space(20.0);
            }
        });
        let loaded = lab.images.loaded(&screen.left) && lab.images.loaded(&screen.right);
        let ready = loaded && mode.shown.elapsed().as_millis() as u64 >= mode.view.min_view_ms;
        if !ready {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(100));
        }
        let labels = [
            ("left", "1 Left"),
            ("right", "2 Right"),
            ("tie", "3 Tie"),
            ("both_bad", "4 Both bad"),
        ];
        let keys = [
            egui::Key::Num1,
            egui::Key::Num2,
            egui::Key::Num3,
            egui::Key::Num4,
        ];
        let mut choice = clicked.filter(|_| ready).map(str::to_string);
        ui.horizontal(|ui| {
            for ((value, text), key) in labels.iter().zip(keys) {
                if !mode.view.responses.iter().any(|r| r == value) {
                    continue;
                }
                let pressed = ready && ui.input(|i| i.key_pressed(key));
                if ui
                    .add_enabled(ready, egui::Button::new(RichText::new(*text).size(16.0)))
                    .clicked()
                    || pressed
                {
                    choice = Some(value.to_string());
                }
            }
        });
        if ui.input(|i| i.key_pressed(egui::Key::U)) {
            mode.undo();
            choice = None;
        }
        if let Some(c) = choice
            && let Err(e) = mode.answer(&c)
        {
            self.error = Some(format!("{e:#}"));
        }
        if let Some(e) = mode.writer.error() {
            self.error = Some(format!("an answer was not saved: {e}"));
        }
        if let Some(e) = &self.error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        if pause {
            self.leave_rating(cmds);
        }
    }

    fn analysis_ui(
        &mut self,
        ui: &mut egui::Ui,
        lab: &Lab,
        info: &StudyInfo,
        cmds: &mut Vec<Command>,
    ) {
        let Some(s) = &info.summary else {
            if ui.button("Analyze").on_hover_text("Every statistic, Figure 4, tables and the methods paragraph into <study>/analysis/").clicked() {
                self.request(info.dir.clone(), StudyAction::Analyze, cmds);
            }
            return;
        };
        if ui
            .button("Analyze again")
            .on_hover_text("After new ratings: every number, table and figure again")
            .clicked()
        {
            self.request(info.dir.clone(), StudyAction::Analyze, cmds);
        }
        egui::Grid::new("study-pairs")
            .striped(true)
            .spacing([14.0, 3.0])
            .show(ui, |ui| {
                for h in [
                    "criterion",
                    "comparison",
                    "A / B / tie",
                    "win rate",
                    "cluster CI",
                    "primary p",
                    "naive p (independent votes)",
                ] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                for p in &s.pairs {
                    ui.label(&p.criterion);
                    ui.label(format!("{} vs {}", p.a, p.b));
                    ui.label(format!("{} / {} / {}", p.tally.a, p.tally.b, p.tally.ties));
                    ui.label(
                        p.win_rate
                            .map_or("–".into(), |w| format!("{:.1} %", 100.0 * w)),
                    );
                    ui.label(p.cluster_ci.map_or("–".into(), |i| {
                        format!("[{:.1}, {:.1}]", 100.0 * i.lower, 100.0 * i.upper)
                    }));
                    ui.label(
                        p.holm_p
                            .or(p.sign_flip_p)
                            .map_or("–".into(), |x| format!("{x:.4}")),
                    );
                    ui.label(p.naive_p.map_or("–".into(), |x| format!("{x:.4}")));
                    ui.end_row();
                }
            });
        ui.label(format!(
            "{} raters ({} excluded by the pre-registered rules) × {} prompts; report, CSV and LaTeX in {}",
            s.raters_with_ratings,
            s.raters_excluded,
            s.prompts,
            StudyDir::new(&info.dir).analysis().display()
        ));
        let fig = StudyDir::new(&info.dir)
            .analysis()
            .join("figure_preference.png");
        let w = ui.available_width().min(900.0);
        image_ui(
            ui,
            lab,
            &fig,
            egui::vec2(w, w * 0.6),
            "(figure not written)",
            cmds,
        );
    }
}

impl Panel for StudyState {
    fn name(&self) -> &'static str {
        "study"
    }

    fn label(&self) -> &'static str {
        "Study"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        self.take_view(lab);
        if self.rate.is_some() {
            self.rate_ui(ui, lab, cmds);
            return;
        }
        if lab.scanned.is_some() && self.listed_for != lab.scanned {
            self.listed_for = lab.scanned;
            let root = lab.root.clone();
            cmds.push(Command::Submit(Job::new("study:list", move || {
                Done::Studies(studies_under(&root))
            })));
        }
        let found = lab.studies.clone().unwrap_or_default();
        if self.dir.is_empty()
            && let Some(first) = found.first()
        {
            self.dir = first.display().to_string();
        }
        ui.horizontal_wrapped(|ui| {
            let l = ui.label("study directory");
            ui.add(egui::TextEdit::singleline(&mut self.dir).desired_width(420.0))
                .labelled_by(l.id);
            for s in &found {
                let name = s
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if ui.small_button(&name).clicked() {
                    self.dir = s.display().to_string();
                }
            }
        });
        if self.dir.is_empty() {
            ui.label(format!(
                "No study under {}/studies. Create one with `flowlens study new {}/studies/NAME --systems A=RUN B=RUN --prompts FILE`, then `flowlens study lock`.",
                lab.root.display(),
                lab.root.display()
            ));
            return;
        }
        let dir = PathBuf::from(&self.dir);
        let stale = self.info.as_ref().is_none_or(|i| i.dir != dir)
            && self.requested.as_ref().is_none_or(|r| *r != dir);
        if stale {
            self.request(dir.clone(), StudyAction::Read, cmds);
        }
        if let Some(info) = lab.study.as_ref().filter(|i| i.dir == dir) {
            self.info = Some(info.clone());
        }
        let Some(info) = self.info.clone().filter(|i| i.dir == dir) else {
            ui.label("Reading the study…");
            return;
        };
        if !info.locked {
            ui.label(format!(
                "This study is not locked. Lock it before collecting ratings: `flowlens study lock {}` (it freezes the design and the pre-registered analysis).",
                dir.display()
            ));
            return;
        }
        ui.horizontal(|ui| {
            let l = ui.label("rater code");
            ui.add(egui::TextEdit::singleline(&mut self.code).desired_width(90.0))
                .labelled_by(l.id);
            if ui
                .add_enabled(self.opening.is_none(), egui::Button::new("Rate"))
                .clicked()
            {
                self.start_rating(cmds);
            }
            if ui.button("Refresh").clicked() {
                self.request(dir.clone(), StudyAction::Read, cmds);
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        if let Some(e) = &info.error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        let unblinded = info.monitor.as_ref().is_some_and(|m| m.unblinded);
        if unblinded {
            self.analysis_ui(ui, lab, &info, cmds);
            ui.separator();
        }
        if let Some(m) = &info.monitor {
            ui.label(RichText::new("Blind monitor (no key read)").strong());
            let (head, table) = m.text.split_once('\n').unwrap_or((m.text.as_str(), ""));
            ui.label(head);
            egui::CollapsingHeader::new(format!(
                "{} raters: progress, gold, side, time",
                m.raters.len()
            ))
            .id_salt("study-monitor-raters")
            .default_open(m.raters.len() <= 16 && !unblinded)
            .show(ui, |ui| {
                ui.label(RichText::new(table).monospace());
            });
        }
        if !unblinded {
            ui.separator();
            ui.label("The analysis stays locked until the study is unblinded.");
            ui.checkbox(
                &mut self.confirm_unblind,
                "Collection is finished: open the key (recorded in audit.log)",
            );
            if ui
                .add_enabled(self.confirm_unblind, egui::Button::new("Unblind"))
                .clicked()
            {
                self.confirm_unblind = false;
                self.request(dir.clone(), StudyAction::UnblindAndAnalyze, cmds);
            }
        }
    }
}
