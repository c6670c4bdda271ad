//! What UI code asks of the shell (egui's wrap_app `Command`): a panel never changes the app's
//! state while it draws; it pushes [`Command`]s, and the shell applies them once per frame, after
//! the panels ([`crate::app::LabApp::run_cmd`]). Also the [`Tab`]s a command opens and the
//! status bar's [`Message`]s.

use std::path::PathBuf;

use flowlens_core::device::DeviceSpec;

use crate::grid::GridQuery;
use crate::lab::{Done, Slot};

/// The laboratory's tabs, in the top bar's order (each is a [`crate::panels::Panel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Runs,
    Launch,
    Dashboard,
    Explorer,
    Trajectory,
    Sampling,
    Results,
    Study,
}

impl Tab {
    pub const ALL: [Tab; 8] = [
        Tab::Runs,
        Tab::Launch,
        Tab::Dashboard,
        Tab::Explorer,
        Tab::Trajectory,
        Tab::Sampling,
        Tab::Results,
        Tab::Study,
    ];
}

/// How a message reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// A line of the status bar (the latest one shows).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub level: Level,
    pub text: String,
}

/// A closure for the worker threads, run once at a time per key.
pub struct Job {
    pub key: String,
    pub work: Box<dyn FnOnce() -> Done + Send>,
}

impl Job {
    pub fn new(key: impl Into<String>, work: impl FnOnce() -> Done + Send + 'static) -> Self {
        Self {
            key: key.into(),
            work: Box::new(work),
        }
    }
}

/// What a panel wants done.
#[must_use]
pub enum Command {
    /// Select a run (the views follow it to its fullest feature store).
    Select(PathBuf),
    /// Select a cell of the explorer's heatmap.
    SelectCell((usize, usize)),
    /// Read the runs folder again.
    Rescan,
    Open(Tab),
    /// Start a `flowlens` child with `args`, writing `out`. `said` is said once it started;
    /// `form`: started by the launch form, so a failure to start shows under the form (not in
    /// the status bar) and a start rescans the runs folder.
    Spawn {
        label: String,
        args: Vec<String>,
        out: PathBuf,
        said: Option<String>,
        form: bool,
    },
    /// Kill the child with this index in `Launcher::jobs`.
    Stop(usize),
    /// Run a job on the worker threads (exports, live-file reads).
    Submit(Job),
    /// Compute the drill-down of the selected cell (the previous one is dropped).
    Detail(Job),
    /// Send (or refresh) the grid query of a slot; a `live` grid refreshes periodically.
    Grid {
        slot: Slot,
        query: GridQuery,
        live: bool,
    },
    /// Decode a PNG for the image cache (unless it is loaded or on its way).
    Image(PathBuf),
    /// Sample one prompt of a run interactively, in this process.
    Sample {
        run: PathBuf,
        prompt: String,
        seed: u64,
        steps: usize,
        cfg: f32,
        device: DeviceSpec,
    },
    /// Use this device for interactive sampling and resumed training.
    Device(String),
    Say(Level, String),
}
