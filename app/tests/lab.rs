//! The laboratory driven headless with egui_kittest: open a runs fixture, pick taps, click a
//! heatmap cell, drill down, export, launch children (one that fails, one that succeeds), and
//! compare snapshot images painted by the app's CPU renderer (`UPDATE_SNAPSHOTS=1` rewrites
//! them in app/tests/snapshots/).

use std::time::Duration;

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::{Harness, TestRenderer};
use flowlens_analysis::cka::Estimator;
use flowlens_app::LabApp;
use flowlens_app::app::Tab;
use flowlens_app::command::Level;
use flowlens_app::fixture::{self, FixtureSpec};
use flowlens_app::lab::Slot;
use flowlens_app::softrender::SoftRenderer;
use flowlens_core::store::{FeatureStore, Seeds, StoreName};

struct Soft(SoftRenderer);

impl TestRenderer for Soft {
    fn handle_delta(&mut self, delta: &mut eframe::egui::TexturesDelta) {
        self.0.set_textures(delta);
        self.0.free_textures(delta);
        delta.clear();
    }

    fn render(
        &mut self,
        ctx: &eframe::egui::Context,
        output: &eframe::egui::FullOutput,
    ) -> Result<image025::RgbaImage, String> {
        let px = self.0.paint_frame(ctx, output);
        image025::RgbaImage::from_raw(px.width, px.height, px.rgba).ok_or("bad buffer".into())
    }
}

fn harness(app: LabApp) -> Harness<'static, LabApp> {
    Harness::builder()
        .with_size([1300.0, 860.0])
        .with_step_dt(0.05)
        .with_max_steps(400)
        .renderer(Soft(SoftRenderer::default()))
        .build_ui_state(|ui, app: &mut LabApp| app.ui(ui), app)
}

/// Steps frames until the background jobs are done and their results applied.
fn settle(h: &mut Harness<'static, LabApp>) {
    for _ in 0..6 {
        h.step();
        let ctx = h.ctx.clone();
        assert!(
            h.state_mut().settle(&ctx, Duration::from_secs(60)),
            "jobs did not finish"
        );
    }
    h.step();
}

fn fixture_app() -> (tempfile::TempDir, LabApp) {
    let dir = tempfile::tempdir().unwrap();
    fixture::write(dir.path(), FixtureSpec::small()).unwrap();
    let mut app = LabApp::new(dir.path().to_path_buf());
    app.show_frame_time = false;
    (dir, app)
}

#[test]
fn the_run_browser_groups_runs_and_compares_configs() {
    let (dir, app) = fixture_app();
    let mut h = harness(app);
    settle(&mut h);
    assert_eq!(h.state().lab.runs.len(), 3);
    h.get_by_label("demo/ablation").hover();
    h.get_by_label("decoder-only/seed0").click();
    settle(&mut h);
    let selected = h.state().lab.selected.clone().unwrap();
    assert!(
        selected.ends_with("ablation/decoder-only/seed0"),
        "{}",
        selected.display()
    );
    h.state_mut().browser.compare_config = Some(dir.path().join("demo/ablation/baseline/seed0"));
    settle(&mut h);
    // Differences only: the variant differs, the learning rate does not.
    h.get_by_label("variant");
    assert!(h.query_by_label("lr").is_none());
    h.snapshot("runs_compare");
}

#[test]
fn the_explorer_selects_taps_drills_into_a_cell_and_exports() {
    let (dir, app) = fixture_app();
    let mut h = harness(app);
    settle(&mut h);
    h.get_by_label("CKA explorer").click();
    settle(&mut h);
    assert_eq!(h.state().tab, Tab::Explorer);
    {
        let app = h.state_mut();
        app.explorer.choice.a = "enc.text".into();
        app.explorer.choice.b = "llm.h*.text".into();
    }
    h.get_by_label("biased").click();
    settle(&mut h);
    assert_eq!(h.state().explorer.choice.estimator, Estimator::Biased);
    let grid = h.state().lab.grids[Slot::Explorer]
        .grid
        .clone()
        .expect("the grid was computed");
    assert_eq!(grid.rows().len(), 5);
    assert_eq!(grid.steps().len(), 8);
    assert_eq!(grid.complete_cells, 40);
    // The app's numbers are the analysis crate's.
    let store = FeatureStore::open(&grid.query.run, &StoreName::sample()).unwrap();
    let read = |tap: &str| {
        let f = store.read(tap, 1, 5, Seeds::Complete).unwrap();
        ndarray::Array2::from_shape_vec((f.rows, f.width), f.values).unwrap()
    };
    let (x, y) = (read("enc.text"), read("llm.h02.text"));
    let v = flowlens_analysis::cka::linear_cka(x.view(), y.view(), Estimator::Biased).unwrap();
    assert!((grid.values[2][5][&1] - v).abs() < 1e-12);

    let rect = h.get_by_label("CKA heatmap").rect();
    let at = flowlens_app::widgets::heatmap::heatmap_cell_centre(rect, 5, 8, 2, 5);
    h.hover_at(at);
    h.step();
    h.event(eframe::egui::Event::PointerButton {
        pos: at,
        button: eframe::egui::PointerButton::Primary,
        pressed: true,
        modifiers: Default::default(),
    });
    h.step();
    h.event(eframe::egui::Event::PointerButton {
        pos: at,
        button: eframe::egui::PointerButton::Primary,
        pressed: false,
        modifiers: Default::default(),
    });
    settle(&mut h);
    assert_eq!(h.state().lab.cell, Some((2, 5)));
    let detail = match &h.state().lab.detail {
        Some(Ok(d)) => d.clone(),
        other => panic!(
            "no cell detail: {:?}",
            other.as_ref().map(|r| r.as_ref().err())
        ),
    };
    assert_eq!(detail.row, "llm.h02.text");
    assert_eq!(detail.step, 5);
    let knn = detail.knn.expect("mutual k-NN");
    assert_eq!(knn.per_sample.len(), 12);
    assert!(
        detail.null.is_some_and(|n| n.observed > n.null_upper),
        "mid-depth layers carry the shared signal"
    );
    h.snapshot("explorer_cell");

    h.get_by_label("Export heatmap").click();
    h.get_by_label("Export table").click();
    settle(&mut h);
    let exports: Vec<String> = std::fs::read_dir(dir.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for ext in ["png", "svg", "csv", "tex"] {
        assert!(
            exports.iter().any(|f| f.ends_with(ext)),
            "{ext} missing from {exports:?}"
        );
    }
}

#[test]
fn the_delta_view_of_a_run_against_itself_is_zero_everywhere() {
    let (dir, app) = fixture_app();
    let mut h = harness(app);
    settle(&mut h);
    let run = dir.path().join("demo/ablation/baseline/seed0");
    {
        let app = h.state_mut();
        app.select(run.clone());
        app.tab = Tab::Explorer;
    }
    settle(&mut h);
    {
        let app = h.state_mut();
        app.explorer.compare = Some(dir.path().join("demo/ablation/decoder-only/seed0"));
        app.explorer.delta = true;
    }
    settle(&mut h);
    let ours = h.state().lab.grids[Slot::Explorer].grid.clone().unwrap();
    let base = h.state().lab.grids[Slot::Compare].grid.clone().unwrap();
    let d = flowlens_app::grid::delta(&ours, &base);
    let (r, c) = (1, 3);
    let want = ours.summary(r, c).unwrap().mean - base.summary(r, c).unwrap().mean;
    assert!((d.summary(r, c).unwrap().mean - want).abs() < 1e-12);
    assert!(
        flowlens_app::grid::delta(&ours, &ours)
            .mean()
            .iter()
            .all(|v| v.abs() < 1e-12)
    );
    h.snapshot("explorer_delta");
}

#[test]
fn dashboard_and_trajectory_show_a_run() {
    let (_dir, app) = fixture_app();
    let mut h = harness(app);
    settle(&mut h);
    h.get_by_label("Dashboard").click();
    settle(&mut h);
    let run = h.state().lab.selected.clone().unwrap();
    let tail = &h.state().lab.metrics[&run];
    assert_eq!(tail.steps.len(), 120);
    assert!(!tail.evals.is_empty());
    h.get_by_label("loss");
    h.snapshot("dashboard");
    h.get_by_label("Export curves").click();
    settle(&mut h);
    let exports = _dir.path().join("exports");
    assert!(
        exports
            .join("demo_ablation_baseline_seed0_loss.png")
            .is_file()
    );
    assert!(
        exports
            .join("demo_ablation_baseline_seed0_eval.svg")
            .is_file()
    );
    h.get_by_label("Trajectory").click();
    settle(&mut h);
    h.state_mut().trajectory.step = 4;
    settle(&mut h);
    h.get_by_label("x_t at step 4");
    h.snapshot("trajectory");
}

/// The Results tab shows an experiment directory's results as the report states them (read
/// live from `exp1/results.json`, here computed by experiment 1's analysis on the fixture's two
/// stores): the tables with each CKA and ΔCKA, its interval over prompts and its null verdict,
/// and the figures rendered in memory.
#[test]
fn the_results_tab_shows_experiment_1_with_intervals_and_null_verdicts() {
    let (dir, app) = fixture_app();
    let mut h = harness(app);
    settle(&mut h);
    h.get_by_label("Results").click();
    settle(&mut h);
    assert_eq!(h.state().tab, Tab::Results);
    let exp = dir.path().join("demo");
    assert_eq!(
        h.state().lab.experiments.as_deref(),
        Some(std::slice::from_ref(&exp))
    );
    let r = h.state().lab.results[&exp]
        .as_ref()
        .expect("the fixture's results read");
    let cells: Vec<&String> = r
        .blocks
        .iter()
        .filter_map(|b| match b {
            flowlens_experiments::report::blocks::Block::Table { rows, .. } => Some(rows),
            _ => None,
        })
        .flatten()
        .flatten()
        .collect();
    // The signal the fixture plants is far above the null somewhere, and layer 0 is the
    // identity (never evidence).
    assert!(
        cells.iter().any(|c| c.contains("above the null")),
        "{cells:?}"
    );
    assert!(
        cells.iter().any(|c| c.contains("by construction")),
        "{cells:?}"
    );
    assert!(!r.images.is_empty(), "the figures are rendered");
    h.snapshot("results");
}

/// The interactive sampler's form (prompt, seed, steps, CFG, the device picker) of a run with a
/// checkpoint, before anything is sampled.
#[test]
fn the_sampling_tab_shows_its_form_for_a_run_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write(dir.path(), FixtureSpec::small()).unwrap();
    // Before the app exists: its first scan starts at once.
    let checkpoint = dir
        .path()
        .join("demo/ablation/baseline/seed0/checkpoints/step-120");
    std::fs::create_dir_all(checkpoint).unwrap();
    let mut app = LabApp::new(dir.path().to_path_buf());
    app.show_frame_time = false;
    let mut h = harness(app);
    settle(&mut h);
    h.get_by_label("Sampling").click();
    settle(&mut h);
    assert_eq!(h.state().tab, Tab::Sampling);
    h.get_by_label("in this process on");
    assert!(h.state().lab.session.is_none());
    h.snapshot("sampling");
}

#[test]
fn a_crashing_child_shows_its_error_and_the_app_keeps_running() {
    let (dir, app) = fixture_app();
    let mut h = harness(app);
    settle(&mut h);
    {
        let app = h.state_mut();
        app.lab.launcher.program = (
            env!("CARGO_BIN_EXE_flowlens-lab").into(),
            vec!["cli".into()],
        );
        let bad = dir.path().join("bad");
        app.lab
            .launcher
            .spawn(
                dir.path(),
                "bad train".into(),
                vec![
                    "train".into(),
                    "--preset".into(),
                    "bogus".into(),
                    "--run".into(),
                    bad.display().to_string(),
                ],
                bad,
            )
            .unwrap();
        app.lab
            .launcher
            .spawn(
                dir.path(),
                "model info".into(),
                vec!["model-info".into(), "--preset".into(), "tiny".into()],
                dir.path().join("info"),
            )
            .unwrap();
        app.tab = Tab::Launch;
    }
    let t0 = std::time::Instant::now();
    while h.state().lab.launcher.running() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "children did not exit"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(50));
    }
    h.step();
    let jobs = &h.state().lab.launcher.jobs;
    assert!(jobs[0].failed());
    assert!(jobs[0].log_tail.contains("bogus"), "{}", jobs[0].log_tail);
    assert!(!jobs[1].failed() && jobs[1].exit.unwrap().success());
    h.get_by_label("bad train");
    assert!(
        h.state()
            .messages
            .iter()
            .any(|m| m.level == Level::Error && m.text.contains("bad train failed"))
    );
}

/// A short real training run started as a child of the app, then sampled interactively in the
/// app's process while the taps arrive step by step.
#[test]
fn a_launched_training_run_is_sampled_interactively_with_its_taps_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fast.toml");
    std::fs::write(
        &config,
        "sample_every = 0\neval_every = 0\nbatch_size = 4\nstage1_steps = 1\n[prior]\nsteps = 12\nbatch_size = 16\n[data]\nkind = \"shapes\"\nseed = 0\nlen = 96\n",
    )
    .unwrap();
    let run = dir.path().join("tiny-run");
    let mut app = LabApp::new(dir.path().to_path_buf());
    app.show_frame_time = false;
    app.lab.launcher.program = (
        env!("CARGO_BIN_EXE_flowlens-lab").into(),
        vec!["cli".into()],
    );
    app.lab.launcher.env.push((
        "FLOWLENS_CACHE".into(),
        dir.path().join("cache").display().to_string(),
    ));
    let args: Vec<String> = [
        "train",
        "--config",
        &config.display().to_string(),
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--quiet",
        "--run",
        &run.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    app.lab
        .launcher
        .spawn(dir.path(), "train tiny".into(), args, run.clone())
        .unwrap();
    let mut h = harness(app);
    let t0 = std::time::Instant::now();
    while h.state().lab.launcher.running() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "training did not finish"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(100));
    }
    let job = &h.state().lab.launcher.jobs[0];
    assert!(job.exit.unwrap().success(), "{}", job.log_tail);
    h.get_by_label("Rescan").click();
    settle(&mut h);
    assert_eq!(h.state().lab.selected.as_deref(), Some(run.as_path()));
    h.get_by_label("Sampling").click();
    settle(&mut h);
    h.state_mut().sampling.steps = 4;
    let field = |h: &Harness<'static, LabApp>| {
        h.get_all_by_value("a small red circle above a large blue square")
            .find(|n| n.accesskit_node().role() == eframe::egui::accesskit::Role::TextInput)
            .map(|n| n.rect())
            .expect("the prompt field")
    };
    let at = field(&h).center();
    h.hover_at(at);
    h.event(eframe::egui::Event::PointerButton {
        pos: at,
        button: eframe::egui::PointerButton::Primary,
        pressed: true,
        modifiers: Default::default(),
    });
    h.event(eframe::egui::Event::PointerButton {
        pos: at,
        button: eframe::egui::PointerButton::Primary,
        pressed: false,
        modifiers: Default::default(),
    });
    h.step();
    h.key_press(eframe::egui::Key::End);
    h.step();
    h.event(eframe::egui::Event::Text(
        " and a small green triangle".into(),
    ));
    h.step();
    h.get_by_label("Sample").click();
    h.step();
    assert!(h.state().lab.session.is_some(), "sampling did not start");
    let t0 = std::time::Instant::now();
    while h.state().lab.session.as_ref().is_some_and(|s| s.running()) {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "sampling did not finish"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(50));
    }
    settle(&mut h);
    let s = h.state().lab.session.as_ref().unwrap();
    assert!(s.result.as_ref().unwrap().is_ok(), "{:?}", s.result);
    assert!(s.prompt.ends_with("and a small green triangle"));
    let enc = &s.norms["enc.noise"];
    assert_eq!(
        enc.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "one pooled tap per solver step"
    );
    assert!(run.join("probes-lab/manifest.json").is_file());
    assert!(
        run.join("probes-lab/samples/seed0/xt/0000_step03.png")
            .is_file()
    );
    assert!(run.join("probes-lab/samples/seed0/0000.png").is_file());
}

#[test]
fn a_run_whose_writer_holds_its_lock_is_running_and_cannot_be_resumed_twice() {
    // The files are set up before the app exists: its first catalog scan starts at once.
    let dir = tempfile::tempdir().unwrap();
    fixture::write(dir.path(), FixtureSpec::small()).unwrap();
    // The fixture's unfinished run, written now by this process (as `flowlens train` would).
    let run = dir.path().join("demo/ablation/encoder-only/seed0");
    let lock = flowlens_core::run::RunLock::acquire(&run).unwrap();
    // Another run of a format this flowlens does not read.
    let other = dir
        .path()
        .join("demo/ablation/baseline/seed0/manifest.json");
    let text = std::fs::read_to_string(&other)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    std::fs::write(&other, text).unwrap();
    let mut app = LabApp::new(dir.path().to_path_buf());
    app.show_frame_time = false;
    let mut h = harness(app);
    settle(&mut h);
    let status = |h: &Harness<'static, LabApp>, suffix: &str| {
        h.state()
            .lab
            .runs
            .iter()
            .find(|r| r.path.ends_with(suffix))
            .map(|r| r.status)
            .unwrap()
    };
    use flowlens_app::catalog::RunStatus;
    assert_eq!(status(&h, "encoder-only/seed0"), RunStatus::Running);
    assert_eq!(status(&h, "baseline/seed0"), RunStatus::Unsupported);
    h.get_by_label("encoder-only/seed0").click();
    settle(&mut h);
    h.get_by_label_contains(&format!("being written by pid {}", std::process::id()));
    assert!(
        h.get_by_label("Resume training")
            .accesskit_node()
            .is_disabled(),
        "a second writer is not offered"
    );
    // The writer ends: the run is stopped (its step budget is not reached) and resumable.
    drop(lock);
    h.state_mut().rescan();
    settle(&mut h);
    assert_eq!(status(&h, "encoder-only/seed0"), RunStatus::Stopped);
    assert!(
        !h.get_by_label("Resume training")
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_label("baseline/seed0").click();
    settle(&mut h);
    h.get_by_label_contains("format version 99");
}
