//! The grid views shared by the dashboard and the CKA explorer: the choice of store, tap pair,
//! estimator and seeds a view shows ([`GridChoice`], kept valid for the selected run), its
//! pickers ([`grid_controls_ui`]) and the heatmap of its computed grid, or of its Δ against a
//! baseline ([`grid_view_ui`]).

use eframe::egui::{self, Color32};
use flowlens_analysis::cka::Estimator;
use flowlens_core::flow::TapRequest;

use crate::catalog::RunEntry;
use crate::grid::{self, GridQuery};
use crate::lab::{Grids, Slot};
use crate::widgets::heatmap::heatmap_ui;

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

impl GridChoice {
    /// The grid this choice shows of `run` (none while the run lacks the store).
    pub fn query(&self, run: &RunEntry) -> Option<GridQuery> {
        run.store(&self.store)?;
        Some(GridQuery {
            run: run.path.clone(),
            store: self.store.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
            estimator: self.estimator,
            seeds: self.seeds.clone(),
        })
    }

    /// Keeps the store and taps valid for `run`; `selecting` (the run was just selected) also
    /// moves an unpinned store to the run's fullest one.
    pub fn point_at(&mut self, run: &RunEntry, selecting: bool) {
        if run.store(&self.store).is_none() || (selecting && !self.store_pinned) {
            self.store = preferred_store(run);
        }
        self.fix_taps(run);
    }

    /// Keeps the tap choice valid for the run's store (first encoder tap, LLM family for B).
    fn fix_taps(&mut self, run: &RunEntry) {
        let Some(store) = run.store(&self.store) else {
            return;
        };
        let taps = &store.manifest.taps;
        if !taps.contains_key(&self.a) {
            self.a = ["enc.noise", "enc.text"]
                .iter()
                .find(|t| taps.contains_key(**t))
                .map(|t| t.to_string())
                .or_else(|| taps.keys().next().cloned())
                .unwrap_or_default();
        }
        let req = TapRequest::parse(&self.b);
        if !taps.keys().any(|t| req.wants(t) && t != &self.a) {
            self.b = ["llm.h*.image", "llm.h*.text", "llm.h*", "*"]
                .iter()
                .find(|p| {
                    let r = TapRequest::parse(p);
                    taps.keys().any(|t| r.wants(t) && t != &self.a)
                })
                .map(|p| p.to_string())
                .unwrap_or_else(|| "*".into());
        }
        self.seeds.retain(|s| store.manifest.seeds.contains(s));
    }
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

/// Store / tap / estimator pickers of `choice` (ids salted by `salt`); `seeds` adds the seed
/// switches (the explorer's).
pub fn grid_controls_ui(
    ui: &mut egui::Ui,
    run: &RunEntry,
    choice: &mut GridChoice,
    salt: &str,
    seeds: bool,
) {
    if run.stores.is_empty() {
        ui.label("This run has no feature store yet: sample it with taps (`flowlens sample --taps ...`) or use the Sampling tab.");
        return;
    }
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
    if seeds && let Some(store) = run.store(&choice.store) {
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
                    choice.seeds = if set.len() == store.manifest.seeds.len() || set.is_empty() {
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

/// The heatmap of the grid in `slot`, or with `delta` of its difference to the baseline grid
/// (`Slot::Compare`); `selected` is outlined. Returns the cell clicked.
pub fn grid_view_ui(
    ui: &mut egui::Ui,
    grids: &Grids,
    slot: Slot,
    delta: bool,
    selected: Option<(usize, usize)>,
) -> Option<(usize, usize)> {
    let view = &grids[slot];
    if let Some(e) = &view.error {
        ui.colored_label(Color32::LIGHT_RED, e);
        return None;
    }
    let Some(grid) = view.grid.as_ref() else {
        ui.spinner();
        return None;
    };
    let base = grids[Slot::Compare].grid.as_ref().filter(|_| delta);
    if delta && base.is_none() {
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
    let resp = heatmap_ui(
        ui,
        &shown.mean(),
        shown.rows(),
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
