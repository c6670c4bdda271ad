//! The Results tab: an experiment directory's results (ablation, experiments 1 and 2, grids) as
//! `flowlens report` states them, read live from their `results.json`: every CKA, ΔCKA, curve,
//! AUC and adherence margin with its interval over prompts, its null verdict (coloured) and the
//! resolution warnings, and every figure (CI bands, crossed-out cells). The report's text is
//! the one source: what the lab says and what the paper's material says cannot drift apart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use eframe::egui::{self, Color32, RichText, TextureHandle, TextureOptions};
use flowlens_experiments::report::blocks::Block;

use crate::command::{Command, Job};
use crate::lab::{Done, Lab};
use crate::panels::Panel;
use crate::results::{ExperimentResults, Verdict, experiment_dirs, load, verdict_of};

/// The Results tab's settings and textures.
#[derive(Default)]
pub struct ResultsState {
    /// The experiment directory shown (the first one found until another is picked).
    pub dir: Option<PathBuf>,
    /// The catalog scan the directory list was last asked for.
    listed_for: Option<Instant>,
    /// The directory whose results were last asked for.
    loaded_for: Option<PathBuf>,
    /// Textures of the shown results' figures, by stem (uploaded on first draw).
    textures: HashMap<String, TextureHandle>,
    textures_of: Option<PathBuf>,
}

impl ResultsState {
    fn request(&mut self, dir: PathBuf, root: PathBuf, cmds: &mut Vec<Command>) {
        self.loaded_for = Some(dir.clone());
        let key = format!("results:load:{}", dir.display());
        cmds.push(Command::Submit(Job::new(key, move || {
            let r = load(&dir, &root);
            Done::Results(dir, Box::new(r.map(Arc::new)))
        })));
    }

    fn texture(
        &mut self,
        ctx: &egui::Context,
        r: &ExperimentResults,
        key: &str,
    ) -> Option<TextureHandle> {
        if self.textures_of.as_ref() != Some(&r.dir) {
            self.textures.clear();
            self.textures_of = Some(r.dir.clone());
        }
        if let Some(t) = self.textures.get(key) {
            return Some(t.clone());
        }
        let img = r.images.get(key)?;
        let t = ctx.load_texture(
            format!("results:{key}"),
            img.clone(),
            TextureOptions::LINEAR,
        );
        self.textures.insert(key.to_string(), t.clone());
        Some(t)
    }

    fn image(&mut self, ui: &mut egui::Ui, r: &ExperimentResults, key: &str, caption: &str) {
        match self.texture(ui.ctx(), r, key) {
            Some(t) => {
                let size = t.size_vec2();
                let w = size.x.min(ui.available_width()).min(900.0);
                ui.add(egui::Image::new(&t).fit_to_exact_size(egui::vec2(w, size.y * w / size.x)));
            }
            None => {
                ui.weak(format!("({key}: not rendered)"));
            }
        }
        ui.label(RichText::new(plain(caption)).small().italics());
        ui.add_space(8.0);
    }

    fn blocks_ui(&mut self, ui: &mut egui::Ui, r: &ExperimentResults) {
        for (i, block) in r.blocks.iter().enumerate() {
            match block {
                Block::Heading(level, text) => {
                    ui.add_space(6.0);
                    let t = RichText::new(plain(text)).strong();
                    ui.label(if *level <= 2 {
                        t.size(18.0)
                    } else {
                        t.size(15.0)
                    });
                }
                Block::Para(text) => {
                    ui.label(plain(text));
                }
                Block::Table { header, rows } => table_ui(ui, i, header, rows),
                Block::Figure { stem, caption } => self.image(ui, r, stem, caption),
                Block::Image { path, caption } => self.image(ui, r, path, caption),
                Block::Files(files) => {
                    ui.weak(format!(
                        "written by `flowlens report`: {}",
                        files.join(", ")
                    ));
                }
            }
        }
    }
}

/// A table with the verdict cells coloured (above the null: green, below: orange, not
/// distinguishable: grey).
fn table_ui(ui: &mut egui::Ui, id: usize, header: &[String], rows: &[Vec<String>]) {
    egui::ScrollArea::horizontal()
        .id_salt(("results-table", id))
        .show(ui, |ui| {
            egui::Grid::new(("results-grid", id))
                .striped(true)
                .spacing([14.0, 3.0])
                .show(ui, |ui| {
                    for h in header {
                        ui.label(RichText::new(plain(h)).strong());
                    }
                    ui.end_row();
                    for row in rows {
                        for cell in row {
                            let text = RichText::new(plain(cell));
                            ui.label(match verdict_of(cell) {
                                Verdict::Above => text.color(Color32::from_rgb(0, 158, 115)),
                                Verdict::Below => text.color(Color32::from_rgb(213, 94, 0)),
                                Verdict::Indistinguishable => text.color(Color32::GRAY),
                                Verdict::None => text,
                            });
                        }
                        ui.end_row();
                    }
                });
        });
    ui.add_space(8.0);
}

/// The report's markdown emphasis and code marks left out (the lab shows plain text).
fn plain(text: &str) -> String {
    text.replace("**", "").replace('`', "")
}

impl Panel for ResultsState {
    fn name(&self) -> &'static str {
        "results"
    }

    fn label(&self) -> &'static str {
        "Results"
    }

    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>) {
        if lab.scanned.is_some() && self.listed_for != lab.scanned {
            self.listed_for = lab.scanned;
            let root = lab.root.clone();
            cmds.push(Command::Submit(Job::new("results:dirs", move || {
                Done::Experiments(experiment_dirs(&root))
            })));
        }
        let Some(dirs) = &lab.experiments else {
            ui.label("Looking for experiment results…");
            return;
        };
        if dirs.is_empty() {
            ui.label(format!(
                "No experiment results under {}: `flowlens demo`, or `flowlens ablation|exp1|exp2|grid \
                 --config FILE`, writes them (its `out` folder); this tab then shows what \
                 `flowlens report` states, with every interval and null verdict.",
                lab.root.display()
            ));
            return;
        }
        if self.dir.as_ref().is_none_or(|d| !dirs.contains(d)) {
            self.dir = dirs.first().cloned();
        }
        let shown = |d: &PathBuf| {
            let rel = d.strip_prefix(&lab.root).unwrap_or(d).display().to_string();
            if rel.is_empty() { ".".to_string() } else { rel }
        };
        let mut reload = false;
        ui.horizontal_wrapped(|ui| {
            let label = ui.label("experiment directory");
            let current = self.dir.as_ref().map(shown).unwrap_or_default();
            egui::ComboBox::from_id_salt("results-dir")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for d in dirs {
                        ui.selectable_value(&mut self.dir, Some(d.clone()), shown(d));
                    }
                })
                .response
                .labelled_by(label.id);
            reload = ui
                .button("Reload")
                .on_hover_text("read the results files again (after a rerun)")
                .clicked();
        });
        let Some(dir) = self.dir.clone() else {
            return;
        };
        if reload || self.loaded_for.as_ref() != Some(&dir) {
            self.request(dir.clone(), lab.root.clone(), cmds);
        }
        match lab.results.get(&dir) {
            Some(Ok(r)) => {
                let r = r.clone();
                egui::ScrollArea::vertical()
                    .id_salt("results-scroll")
                    .show(ui, |ui| self.blocks_ui(ui, &r));
            }
            Some(Err(e)) => {
                ui.colored_label(Color32::LIGHT_RED, e);
            }
            None => {
                ui.label(format!("Reading the results of {}…", shown(&dir)));
            }
        }
    }
}
