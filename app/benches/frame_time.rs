//! Frame time of the laboratory with tens of runs and a full 23 x 30 CKA grid on screen: the UI
//! code of one frame plus egui's tessellation (what the UI thread does each frame; the GPU's
//! share is not included). `cargo bench -p flowlens-app --bench frame_time`.

use std::time::{Duration, Instant};

use eframe::egui;
use flowlens_app::LabApp;
use flowlens_app::app::Tab;
use flowlens_app::fixture::{self, FixtureSpec};
use flowlens_app::lab::Slot;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = FixtureSpec::large();
    let t0 = Instant::now();
    let runs = fixture::write(dir.path(), spec).expect("fixture");
    eprintln!(
        "fixture: {} runs, {} x {} grid, in {:.1} s",
        runs.len(),
        spec.layers,
        spec.solver_steps,
        t0.elapsed().as_secs_f64()
    );
    let mut app = LabApp::new(dir.path().to_path_buf());
    let ctx = egui::Context::default();
    let frame = |app: &mut LabApp, i: usize| {
        let input = flowlens_app::headless_input(1600.0, 1000.0, i as f64 / 60.0);
        let t = Instant::now();
        let mut out = ctx.run_ui(input, |ui| app.ui(ui));
        let prims = ctx.tessellate(std::mem::take(&mut out.shapes), out.pixels_per_point);
        out.textures_delta.clear();
        std::hint::black_box(prims);
        t.elapsed()
    };
    for (tab, name) in [
        (Tab::Runs, "runs"),
        (Tab::Dashboard, "dashboard"),
        (Tab::Explorer, "explorer (23 x 30 grid)"),
    ] {
        app.tab = tab;
        app.select(runs[0].clone());
        for i in 0..10 {
            frame(&mut app, i);
            app.settle(&ctx, Duration::from_secs(120));
        }
        if tab == Tab::Explorer {
            let g = app.lab.grids[Slot::Explorer].grid.as_ref().expect("grid");
            assert_eq!((g.rows().len(), g.steps().len()), (23, 30));
        }
        let mut times: Vec<f64> = (0..200)
            .map(|i| frame(&mut app, i).as_secs_f64() * 1e3)
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<26} median {:.2} ms, p95 {:.2} ms, max {:.2} ms over 200 frames ({} runs in the list)",
            times[100],
            times[190],
            times[199],
            app.lab.runs.len()
        );
    }
}
