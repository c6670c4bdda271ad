//! The laboratory's tabs, one file each (egui's demo app: one file per demo): a [`Panel`] owns
//! its settings, draws itself from the read model [`Lab`] and pushes what it wants done as
//! [`Command`]s. Also the two helpers the panels share: images through the cache, and the
//! colour of a run's status.

pub mod dashboard;
pub mod explorer;
pub mod launch;
pub mod results;
pub mod runs;
pub mod sampling;
pub mod study;
pub mod trajectory;

use std::path::Path;

use eframe::egui::{self, Color32};

use crate::catalog::RunStatus;
use crate::command::Command;
use crate::lab::Lab;

/// One tab of the laboratory.
pub trait Panel {
    /// The panel's key: `flowlens-lab --tab NAME`.
    fn name(&self) -> &'static str;
    /// Its title in the top bar.
    fn label(&self) -> &'static str;
    /// Draws the panel; what it wants done beyond its own settings goes into `cmds`.
    fn ui(&mut self, ui: &mut egui::Ui, lab: &Lab, cmds: &mut Vec<Command>);
}

/// Shows a PNG of a run (asking for it to be decoded on a worker while it is not loaded), or
/// `missing` while there is no such file.
pub fn image_ui(
    ui: &mut egui::Ui,
    lab: &Lab,
    path: &Path,
    max: egui::Vec2,
    missing: &str,
    cmds: &mut Vec<Command>,
) -> Option<egui::Response> {
    if !lab.images.loaded(path) {
        cmds.push(Command::Image(path.to_path_buf()));
    }
    lab.images.show(ui, path, max, missing)
}

/// A run status's colour (the run list, the Runs tab, the dashboard).
pub fn status_colour(s: RunStatus) -> Color32 {
    match s {
        RunStatus::Running => Color32::from_rgb(0, 158, 115),
        RunStatus::Finished => Color32::from_rgb(86, 180, 233),
        RunStatus::Stopped => Color32::from_rgb(230, 159, 0),
        RunStatus::Crashed => Color32::from_rgb(213, 94, 0),
        RunStatus::Empty => Color32::GRAY,
        RunStatus::Unsupported => Color32::DARK_GRAY,
    }
}
