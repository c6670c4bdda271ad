//! The laboratory's read model (rerun's viewer context): what the workers have read and computed
//! (the runs, their metrics, the three grids, the streaming CKA files, the images, the drill-down
//! of a cell), the work in flight (worker threads, child processes, the interactive sample) and
//! what the panels share (the selected run and cell, the in-process device). Panels only read
//! it; the shell (app.rs) writes it, from finished jobs and from the panels' commands.

use std::collections::BTreeMap;
use std::ops::{Index, IndexMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::RunEntry;
use crate::grid::{CellDetail, Grid, GridQuery, LiveCka};
use crate::jobs::Worker;
use crate::launch::{Launcher, cli_program};
use crate::metrics::MetricsTail;
use crate::results::ExperimentResults;
use crate::sampling::Session;
use crate::widgets::images::{Decoded, Images};

/// What a worker job hands back.
pub enum Done {
    Catalog(Result<Vec<RunEntry>, String>),
    Metrics(PathBuf, Box<MetricsTail>, Result<bool, String>),
    Image(PathBuf, Decoded),
    Grid(Slot, Box<Result<Grid, String>>),
    Detail(Result<CellDetail, String>),
    Live(PathBuf, Result<LiveCka, String>),
    Export(Result<Vec<PathBuf>, String>),
    /// The experiment directories below the runs folder (the Results tab).
    Experiments(Vec<PathBuf>),
    /// One experiment directory's results, ready to draw.
    Results(PathBuf, Box<Result<Arc<ExperimentResults>, String>>),
    /// A study's blind monitor (and analysis once unblinded), for the Study tab.
    Study(Box<crate::study::StudyInfo>),
    /// The studies under `<runs>/studies/`.
    Studies(Vec<PathBuf>),
    /// A rater's blind view, for the rate mode.
    StudyView(Box<crate::study::OpenedView>),
}

/// Which grid a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Dashboard = 0,
    Explorer = 1,
    /// The explorer's baseline run (its Δ view).
    Compare = 2,
}

impl Slot {
    /// The worker key of the slot's grid job.
    pub fn key(self) -> &'static str {
        match self {
            Slot::Dashboard => "grid:dashboard",
            Slot::Explorer => "grid:explorer",
            Slot::Compare => "grid:compare",
        }
    }
}

/// A grid slot: the query last sent, the latest result, when to refresh.
#[derive(Default)]
pub struct GridView {
    /// Shared: the views clone the handle each frame, never the cells.
    pub grid: Option<Arc<Grid>>,
    pub error: Option<String>,
    pub last_query: Option<GridQuery>,
    pub refreshed: Option<Instant>,
}

/// The three grid slots, indexed by [`Slot`].
#[derive(Default)]
pub struct Grids([GridView; 3]);

impl Index<Slot> for Grids {
    type Output = GridView;
    fn index(&self, slot: Slot) -> &GridView {
        &self.0[slot as usize]
    }
}

impl IndexMut<Slot> for Grids {
    fn index_mut(&mut self, slot: Slot) -> &mut GridView {
        &mut self.0[slot as usize]
    }
}

/// The read model every panel draws from.
pub struct Lab {
    /// The runs folder.
    pub root: PathBuf,
    pub runs: Vec<RunEntry>,
    pub catalog_error: Option<String>,
    pub scanned: Option<Instant>,
    /// The selected run (the run list's).
    pub selected: Option<PathBuf>,
    /// The explorer's selected heatmap cell (row, column); the trajectory shows its row.
    pub cell: Option<(usize, usize)>,
    /// The permutation null and mutual k-NN of `cell`, once computed.
    pub detail: Option<Result<CellDetail, String>>,
    pub metrics: BTreeMap<PathBuf, MetricsTail>,
    pub metrics_refreshed: Option<Instant>,
    pub grids: Grids,
    /// The streaming CKA files read so far, and when.
    pub live: BTreeMap<PathBuf, (Instant, Result<LiveCka, String>)>,
    pub images: Images,
    pub worker: Worker<Done>,
    /// The `flowlens` children started from this window.
    pub launcher: Launcher,
    /// The interactive sample in flight or done.
    pub session: Option<Session>,
    /// The device of interactive sampling and of a resumed training run (`cpu`, `cuda:N`).
    pub device: String,
    /// The experiment directories found below the runs folder (`None`: not looked for yet).
    pub experiments: Option<Vec<PathBuf>>,
    /// The results of the experiment directories the Results tab has shown, by directory.
    pub results: BTreeMap<PathBuf, Result<Arc<ExperimentResults>, String>>,
    /// The study the Study tab last read.
    pub study: Option<Arc<crate::study::StudyInfo>>,
    /// The studies under `<runs>/studies/` (`None`: not looked for yet).
    pub studies: Option<Vec<PathBuf>>,
    /// The last blind view opened for the rate mode.
    pub study_view: Option<Arc<crate::study::OpenedView>>,
    /// Seconds between refreshes of live files.
    pub refresh: Duration,
}

impl Lab {
    /// An empty read model of the runs folder `root` (nothing scanned yet).
    pub fn new(root: PathBuf) -> Self {
        let program = cli_program().unwrap_or_else(|_| ("flowlens".into(), Vec::new()));
        Self {
            root,
            runs: Vec::new(),
            catalog_error: None,
            scanned: None,
            selected: None,
            cell: None,
            detail: None,
            metrics: BTreeMap::new(),
            metrics_refreshed: None,
            grids: Grids::default(),
            live: BTreeMap::new(),
            images: Images::default(),
            worker: Worker::new(2),
            launcher: Launcher::new(program),
            session: None,
            device: "cpu".into(),
            experiments: None,
            results: BTreeMap::new(),
            study: None,
            studies: None,
            study_view: None,
            refresh: Duration::from_millis(1500),
        }
    }

    pub fn selected_run(&self) -> Option<&RunEntry> {
        let p = self.selected.as_ref()?;
        self.runs.iter().find(|r| &r.path == p)
    }
}
